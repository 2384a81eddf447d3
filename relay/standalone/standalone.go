// Package standalone runs a relay on its own (`wiremesh relay`): it
// enrolls with a relay join key like an agent, holds its netmap stream
// with proofs of its key, lets attach exactly the node keys its last
// netmap lists (wire.Netmap.RelayClients), and serves the relay protocol
// over TLS, STUN and metrics.
//
// One X25519 key pair is both its node key (its proofs to the coordinator)
// and its relay proof key (the key nodes prove theirs to). Its state dir
// holds that key, its identity (credential, coordinator URL and pins) and
// the last netmap, from which it serves at once on start: a coordinator
// outage neither stops a running relay nor one that restarts.
package standalone

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// Config configures a standalone relay.
type Config struct {
	// StateDir holds the key, the identity and the cached netmap; it is
	// made 0700, and one that group or others can access is refused.
	// Required.
	StateDir string
	// JoinKey is the relay join key to enroll with on the first start.
	// Empty: the state dir must hold an identity.
	JoinKey string
	// Name is the relay's node name and its name in the relay map (a
	// region, such as "eu-1"). Required.
	Name string
	// Listen is the TCP HOST:PORT of the relay's TLS server. Required.
	Listen string
	// AdvertiseURL is the https://HOST:PORT nodes reach Listen at, in
	// the relay map. Required.
	AdvertiseURL string
	// Certificate is the TLS identity served, and Pins the pins nodes
	// trust it by (in the relay map). Required by New.
	Certificate tls.Certificate
	Pins        credential.Pins
	// STUNListen is the UDP HOST:PORT of the STUN server, which also
	// answers on the next port. Empty: no STUN server.
	STUNListen string
	// MetricsListen is the HOST:PORT of a plain-HTTP /metrics endpoint.
	// Empty: none.
	MetricsListen string
	// Logger gets the relay's logs. Nil: discarded.
	Logger *slog.Logger
	// Version is reported to the coordinator. Empty: not told.
	Version string
	// RetryMin and RetryMax bound the backoff between attempts to reach
	// the coordinator. Zero: DefaultRetryMin, DefaultRetryMax.
	RetryMin, RetryMax time.Duration
}

// Defaults of Config.
const (
	DefaultSTUNListen = ":3478"
	DefaultRetryMin   = time.Second
	DefaultRetryMax   = 30 * time.Second
)

// DefaultConfig returns a Config with the defaults set.
func DefaultConfig() Config {
	return Config{STUNListen: DefaultSTUNListen, RetryMin: DefaultRetryMin, RetryMax: DefaultRetryMax}
}

// Validate reports the first problem with c and fills in the defaults of
// its zero fields. It leaves out Certificate and Pins, which New checks,
// so that a caller can check the rest before it makes a certificate.
func (c *Config) Validate() error {
	switch {
	case c.StateDir == "":
		return errors.New("relay: no state dir")
	case c.Listen == "":
		return errors.New("relay: no listen address")
	}
	if err := wire.CheckLabel("relay name", c.Name); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("relay: bad listen address %q: %w", c.Listen, err)
	}
	u, err := url.Parse(c.AdvertiseURL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("relay: bad advertise URL %q: want https://HOST:PORT", c.AdvertiseURL)
	}
	if c.STUNListen != "" {
		if _, err := stunPort(c.STUNListen); err != nil {
			return err
		}
	}
	if c.JoinKey != "" {
		if _, err := credential.ParseJoinKey(c.JoinKey); err != nil {
			return fmt.Errorf("relay: join key: %w", err)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.RetryMin <= 0 {
		c.RetryMin = DefaultRetryMin
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(DefaultRetryMax, c.RetryMin)
	}
	return nil
}

// stunPort returns the port of a STUN listen address; the next one must
// exist too.
func stunPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	p, perr := strconv.Atoi(port)
	if err != nil || perr != nil || p < 1 || p > 65534 {
		return 0, fmt.Errorf("relay: bad STUN listen address %q: want HOST:PORT with a port from 1 to 65534 (it also takes the next one)", addr)
	}
	return p, nil
}

// describe is the relay as the relay map shows it, with key pub.
func (c *Config) describe(pub string) wire.Relay {
	r := wire.Relay{Name: c.Name, URL: c.AdvertiseURL, Pins: c.Pins.Strings(), Key: pub}
	if c.STUNListen != "" {
		u, _ := url.Parse(c.AdvertiseURL) // checked by Validate
		p, _ := stunPort(c.STUNListen)
		r.STUN = []string{net.JoinHostPort(u.Hostname(), strconv.Itoa(p)), net.JoinHostPort(u.Hostname(), strconv.Itoa(p+1))}
	}
	return r
}
