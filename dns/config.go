package dns

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"time"

	miekg "github.com/miekg/dns"
)

// DefaultDomain is the domain mesh names live under when Config.Domain is
// empty.
const DefaultDomain = "mesh.internal"

// Config configures a Server. Only cmd/ fills it from flags and files.
type Config struct {
	// Domain is the zone the server answers for, without a trailing dot.
	// Names are matched case-insensitively. Empty: DefaultDomain.
	Domain string
	// NodeTTL is the TTL of NODE.node answers, PTR answers and the
	// additional records of SRV answers. Zero: 60 s.
	NodeTTL time.Duration
	// ServiceTTL is the TTL of service answers. Keep it short: it bounds
	// how long a client keeps using an instance that went critical.
	// Zero: 5 s.
	ServiceTTL time.Duration
	// NegativeTTL is the TTL and minimum of the SOA sent with NXDOMAIN and
	// empty answers, so resolvers cache negative answers that long (RFC
	// 2308). Zero: 5 s.
	NegativeTTL time.Duration
	// MaxAnswers caps how many instances one service answer lists. Answers
	// are shuffled on every query, so a cap spreads clients over all
	// instances while keeping messages small; it is a load-balancing
	// choice, not a size limit (a message too large for the transport is
	// trimmed with the TC bit set). Zero: 16. Negative: no cap.
	MaxAnswers int
	// OnlyPassing leaves instances with a Warning check out of service
	// answers. False: Warning counts as passing; Critical never does.
	OnlyPassing bool
	// NearByDefault orders every service answer nearest first, as if the
	// query named SVC.service.near.DOMAIN. False: shuffled only.
	NearByDefault bool
	// Prefixes are the overlay prefixes whose reverse names (PTR) the
	// server is authoritative for: an address in them without a node is
	// NXDOMAIN. Nil: reverse names of node addresses are still answered,
	// all others are forwarded.
	Prefixes []netip.Prefix
	// Upstreams are the resolvers, as HOST:PORT or a bare IP (port 53),
	// that names outside Domain and Prefixes are forwarded to, tried in
	// order. The caller reads them with ReadResolvConf and must leave out
	// this server's own address. Empty: such queries get REFUSED.
	// Validate keeps nil apart from empty, so that a caller can tell "not
	// set" (read the host's resolvers) from "none".
	Upstreams []string
	// ForwardTimeout bounds one exchange with one upstream. Zero: 2 s.
	ForwardTimeout time.Duration
	// AllowQuerier decides which clients are answered at all, by their
	// source address; others get REFUSED for every query, forwarded ones
	// included. It must be safe for concurrent use and must not block.
	// Nil: every client is answered.
	AllowQuerier func(netip.Addr) bool
	// Rand shuffles service answers; tests pass a seeded source. Calls are
	// serialised by the server. Nil: a randomly seeded source.
	Rand rand.Source
	// Logger receives the server's logs. Nil: slog.Default().
	Logger *slog.Logger
	// Observe, if set, is called once for every query the server
	// answers (not for those it drops), after the answer is written, with
	// the type of its question (0: none), the response code sent, and
	// whether the query was forwarded: then the code is the upstream's,
	// or SERVFAIL or REFUSED when none answered. It runs on the query's
	// goroutine, so it must be cheap, safe for concurrent use, and must
	// not block (metrics count with it). Nil: nothing is observed.
	Observe func(qtype uint16, rcode int, forwarded bool)
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{
		Domain:         DefaultDomain,
		NodeTTL:        60 * time.Second,
		ServiceTTL:     5 * time.Second,
		NegativeTTL:    5 * time.Second,
		MaxAnswers:     16,
		ForwardTimeout: 2 * time.Second,
	}
}

// Validate checks c and fills in defaults; it normalises Domain (lower
// case, no trailing dot) and Upstreams (HOST:PORT; nil stays nil).
func (c *Config) Validate() error {
	d := DefaultConfig()
	if c.Domain == "" {
		c.Domain = d.Domain
	}
	c.Domain = strings.ToLower(strings.TrimSuffix(c.Domain, "."))
	if _, ok := miekg.IsDomainName(c.Domain); !ok || c.Domain == "" {
		return fmt.Errorf("bad domain %q", c.Domain)
	}
	for _, ttl := range []*time.Duration{&c.NodeTTL, &c.ServiceTTL, &c.NegativeTTL, &c.ForwardTimeout} {
		if *ttl < 0 {
			return fmt.Errorf("negative duration %v", *ttl)
		}
	}
	if c.NodeTTL == 0 {
		c.NodeTTL = d.NodeTTL
	}
	if c.ServiceTTL == 0 {
		c.ServiceTTL = d.ServiceTTL
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = d.NegativeTTL
	}
	if c.ForwardTimeout == 0 {
		c.ForwardTimeout = d.ForwardTimeout
	}
	if c.MaxAnswers == 0 {
		c.MaxAnswers = d.MaxAnswers
	}
	for _, p := range c.Prefixes {
		if !p.IsValid() {
			return errors.New("invalid overlay prefix")
		}
	}
	if c.Upstreams == nil {
		return nil
	}
	ups := make([]string, 0, len(c.Upstreams))
	for _, u := range c.Upstreams {
		hp, err := upstreamAddr(u)
		if err != nil {
			return err
		}
		ups = append(ups, hp)
	}
	c.Upstreams = ups
	return nil
}

// upstreamAddr returns u as HOST:PORT, adding port 53 to a bare IP.
func upstreamAddr(u string) (string, error) {
	if a, err := netip.ParseAddr(u); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	host, port, err := net.SplitHostPort(u)
	if err != nil || host == "" || port == "" {
		return "", fmt.Errorf("bad upstream %q: want HOST:PORT or an IP", u)
	}
	return u, nil
}

// ttl converts d to whole seconds for a record header, at least 1.
func ttl(d time.Duration) uint32 {
	s := d / time.Second
	if s < 1 {
		return 1
	}
	if s > 1<<31-1 {
		return 1<<31 - 1
	}
	return uint32(s)
}
