// Package coordinator is the control plane of a mesh: it keeps the
// registry of nodes and join keys in a store (SQLite or PostgreSQL),
// admits agents, and streams to each agent its netmap, pushing a new one
// on every change.
package coordinator

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
)

// Config configures a Coordinator. Only cmd/ fills it from flags.
type Config struct {
	// DataDir holds the database, TLS material and the first admin token.
	// Required; created (0700) if missing.
	DataDir string
	// Listen is the HOST:PORT of the HTTPS API. Required.
	Listen string
	// AdvertiseURL is the https URL agents and admins reach the API at; it
	// goes into join keys and admin tokens. Empty: https:// + Listen, when
	// Listen names a host.
	AdvertiseURL string
	// OtherURLs are further https URLs this coordinator is reached at
	// (another name, another network), after AdvertiseURL. With several
	// coordinators on one database, join keys and netmaps carry the URLs
	// of them all.
	OtherURLs []string
	// Database is the URL of a PostgreSQL database to keep the state in,
	// postgres://USER:PASSWORD@HOST:PORT/DATABASE (see store.Config).
	// Empty: SQLite, wiremesh.db in DataDir.
	Database string
	// Prefix4 and Prefix6 are the overlay prefixes. Zero: what the database
	// was created with, or store.DefaultPrefix4/store.DefaultPrefix6 for a
	// new one.
	Prefix4, Prefix6 netip.Prefix
	// TLSCert and TLSKey are PEM files of an operator's certificate chain
	// (leaf first) and key. The pin is that of the leaf's public key
	// (credential.PinKey): a renewal that keeps the key keeps the pin.
	// Empty: a CA and certificate generated in DataDir, pinned by that CA
	// (credential.PinCA), which signs nothing else.
	TLSCert, TLSKey string
	// TLSNextPins are pins the coordinator announces for its next
	// certificate, in join keys, admin tokens and netmaps, so that agents
	// already trust it when the operator switches. Empty: none.
	TLSNextPins []credential.Pin
	// KeepAlive is how often an idle netmap stream gets a keep-alive.
	// Zero: 15 s.
	KeepAlive time.Duration
	// WriteTimeout bounds each write to a netmap stream; a client that
	// does not read for that long is dropped. Zero: 10 s.
	WriteTimeout time.Duration
	// MetricsListen is the HOST:PORT (plain HTTP) where Run serves
	// Prometheus metrics at /metrics. Empty: no metrics endpoint.
	// DefaultConfig: 127.0.0.1:9471, this host only.
	MetricsListen string
	// EnrollRate is how many enrollment attempts a second one source
	// address (an IPv4 address, or an IPv6 /64) may make once its burst is
	// spent; attempts refused for a bad join key are also held to a tenth
	// of it. Zero: DefaultEnrollRate. Negative: no limit.
	EnrollRate float64
	// EnrollBurst is how many enrollment attempts one source address may
	// make at once; a quarter of it (at least 1) is its burst of attempts
	// refused for a bad join key. Zero: DefaultEnrollBurst.
	EnrollBurst int
	// EndpointInterval is, after a burst of endpointBurst, the time
	// between two changes of one node's endpoints that reach its peers: a
	// change made before its turn is held, and the newest held value
	// applied when the turn comes. Zero: DefaultEndpointInterval.
	EndpointInterval time.Duration
	// EphemeralTimeout is how long an ephemeral node may be offline before
	// it is deleted. Zero: DefaultEphemeralTimeout.
	EphemeralTimeout time.Duration
	// RelayName names the embedded relay in the relay map (a region, such
	// as "eu-1"). Empty: DefaultRelayName.
	RelayName string
	// NoRelay turns the embedded relay off: netmaps carry no relay map
	// unless standalone relays are enrolled, and nodes reach only peers
	// they have a direct path to.
	NoRelay bool
	// STUNListen is the HOST:PORT (UDP) of the embedded STUN server; it
	// also answers on the next port. Empty: none. DefaultConfig:
	// DefaultSTUNListen.
	STUNListen string
	// PollInterval is how often a coordinator on PostgreSQL reads the
	// state version even when no change was announced (store.Listen).
	// Zero: store.DefaultPollInterval.
	PollInterval time.Duration
	// Logger receives the coordinator's logs. Nil: slog.Default().
	Logger *slog.Logger
	// Version is the coordinator's wiremesh version, named in the errors
	// that refuse an agent's protocol. Empty: not named.
	Version string

	// beat is how often the coordinator says it is up and renews its
	// lease (tests shorten it). Zero: defaultBeat.
	beat time.Duration
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{
		Listen:        ":8443",
		KeepAlive:     15 * time.Second,
		MetricsListen: "127.0.0.1:9471",
		STUNListen:    DefaultSTUNListen,
		EnrollRate:    DefaultEnrollRate,
		EnrollBurst:   DefaultEnrollBurst,

		EndpointInterval: DefaultEndpointInterval,
		EphemeralTimeout: DefaultEphemeralTimeout,
	}
}

// Validate checks c and fills in defaults.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data dir is required")
	}
	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("bad listen address %q: %w", c.Listen, err)
	}
	if c.AdvertiseURL == "" {
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			return fmt.Errorf("advertise URL is required when listening on %q (all addresses): give --advertise-url https://HOST:PORT, the address nodes reach the coordinator at", c.Listen)
		}
		c.AdvertiseURL = "https://" + c.Listen
	}
	u, err := url.Parse(c.AdvertiseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("bad advertise URL %q: want https://HOST:PORT", c.AdvertiseURL)
	}
	c.AdvertiseURL = "https://" + u.Host
	for i, o := range c.OtherURLs {
		u, err := url.Parse(o)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("bad advertise URL %q: want https://HOST:PORT", o)
		}
		c.OtherURLs[i] = "https://" + u.Host
	}
	if c.RelayName == "" {
		c.RelayName = DefaultRelayName
	}
	if err := wire.CheckLabel("relay name", c.RelayName); err != nil {
		return err
	}
	if c.Database != "" {
		if err := store.CheckURL(c.Database); err != nil {
			return err
		}
	}
	if c.Prefix4.IsValid() && (!c.Prefix4.Addr().Is4() || c.Prefix4.Bits() > 30) {
		return fmt.Errorf("bad IPv4 overlay prefix %s: want an IPv4 prefix of /30 or larger", c.Prefix4)
	}
	if c.Prefix6.IsValid() && (c.Prefix6.Addr().Is4() || c.Prefix6.Bits() > 126) {
		return fmt.Errorf("bad IPv6 overlay prefix %s", c.Prefix6)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("TLS certificate and key must be given together")
	}
	for _, p := range c.TLSNextPins {
		if p.IsZero() {
			return errors.New("next TLS pin is unset")
		}
	}
	if len(c.TLSNextPins) >= credential.MaxPins {
		return fmt.Errorf("%d next TLS pins: at most %d", len(c.TLSNextPins), credential.MaxPins-1)
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 15 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return fmt.Errorf("bad metrics address %q: %w", c.MetricsListen, err)
		}
	}
	if math.IsNaN(c.EnrollRate) || math.IsInf(c.EnrollRate, 0) {
		return fmt.Errorf("bad enrollment rate %v: want attempts a second, or a negative number for no limit", c.EnrollRate)
	}
	if c.EnrollRate == 0 {
		c.EnrollRate = DefaultEnrollRate
	}
	if c.EnrollBurst < 0 {
		return fmt.Errorf("bad enrollment burst %d: want 1 or more", c.EnrollBurst)
	}
	if c.EndpointInterval < 0 {
		return fmt.Errorf("bad endpoint interval %s: want a positive duration", c.EndpointInterval)
	}
	if c.EndpointInterval == 0 {
		c.EndpointInterval = DefaultEndpointInterval
	}
	if c.EphemeralTimeout < 0 {
		return fmt.Errorf("bad ephemeral timeout %s: want a positive duration", c.EphemeralTimeout)
	}
	if c.EphemeralTimeout == 0 {
		c.EphemeralTimeout = DefaultEphemeralTimeout
	}
	if c.EnrollBurst == 0 {
		c.EnrollBurst = DefaultEnrollBurst
	}
	if c.PollInterval < 0 {
		return fmt.Errorf("bad poll interval %s: want a positive duration", c.PollInterval)
	}
	if c.PollInterval == 0 {
		c.PollInterval = store.DefaultPollInterval
	}
	if c.beat <= 0 {
		c.beat = defaultBeat
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
