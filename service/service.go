// Package service holds the definitions of the services an agent declares
// locally — name, port, protocol, tags and health checks — and parses them
// from HuJSON, the way Consul reads its service definitions.
//
// A services file looks like this:
//
//	{
//	  "services": [
//	    {"name": "web", "port": 8080, "tags": ["v2", "primary"],
//	     "checks": [
//	       {"http": "http://127.0.0.1:8080/healthz", "interval": "2s", "timeout": "1s"},
//	       {"tcp": "127.0.0.1:8080", "interval": "1s"},
//	     ]},
//	  ],
//	}
//
// Running the checks is package health's business; this package only says
// what they are.
package service

import (
	"fmt"
	"github.com/wiremesh/wiremesh/internal/hudoc"
	"slices"
	"time"
)

// Protocols a service can declare.
const (
	TCP = "tcp"
	UDP = "udp"
)

// Check kinds.
const (
	KindHTTP = "http" // GET Target; 2xx/3xx passes, 429 warns, else critical
	KindTCP  = "tcp"  // connect to Target (host:port)
	KindExec = "exec" // run Args; exit 0 passes, 1 warns, else critical
	KindTTL  = "ttl"  // the service reports in within TTL, or it is critical
)

// Limits and defaults for checks.
const (
	// MinInterval is the shortest interval (and TTL) a check may have.
	MinInterval = time.Second
	// MaxDefaultTimeout caps the default timeout, which is the interval.
	MaxDefaultTimeout = 10 * time.Second
	// MaxThreshold bounds SuccessBeforePassing and FailuresBeforeCritical.
	MaxThreshold = 100
)

// Definition is one local service.
type Definition struct {
	// Name is a DNS label: lowercase letters, digits and '-'.
	Name string
	// Port is the service's port, 1-65535.
	Port uint16
	// Protocol is TCP or UDP; the parser fills in TCP when it is omitted.
	Protocol string
	// Tags are DNS labels, in the order given, without duplicates; nil
	// means none.
	Tags []string
	// Checks are the service's health checks; nil means none, and a
	// service without checks counts as passing.
	Checks []CheckDef
}

// CheckDef is one health check of a service.
type CheckDef struct {
	// ID names the check among all of the agent's checks: the "id" given,
	// or "SERVICE:N" for the Nth check (1-based) of SERVICE.
	ID string
	// Kind is KindHTTP, KindTCP, KindExec or KindTTL.
	Kind string
	// Target is the URL (http) or host:port (tcp); empty otherwise.
	Target string
	// Args is the argv of an exec check; nil otherwise.
	Args []string
	// TTL is how long a ttl check's report stays valid; zero otherwise.
	TTL time.Duration
	// Interval is the time between two runs of an http, tcp or exec check
	// (at least MinInterval); zero for ttl checks.
	Interval time.Duration
	// Timeout bounds one run; the parser fills in min(Interval,
	// MaxDefaultTimeout) when it is omitted. Zero for ttl checks.
	Timeout time.Duration
	// SuccessBeforePassing and FailuresBeforeCritical are how many
	// results in a row it takes to turn passing (or warning) and critical;
	// the parser fills in 1. They are 1 for ttl checks.
	SuccessBeforePassing, FailuresBeforeCritical int
}

// DefaultTimeout is the timeout of a check that gives none.
func DefaultTimeout(interval time.Duration) time.Duration {
	return min(interval, MaxDefaultTimeout)
}

// Equal reports whether c and d are the same check.
func (c CheckDef) Equal(d CheckDef) bool {
	return c.ID == d.ID && c.Kind == d.Kind && c.Target == d.Target &&
		slices.Equal(c.Args, d.Args) && c.TTL == d.TTL &&
		c.Interval == d.Interval && c.Timeout == d.Timeout &&
		c.SuccessBeforePassing == d.SuccessBeforePassing &&
		c.FailuresBeforeCritical == d.FailuresBeforeCritical
}

// String describes the check in a line, as in "web:1 http http://…".
func (c CheckDef) String() string {
	switch c.Kind {
	case KindExec:
		return fmt.Sprintf("%s exec %q", c.ID, c.Args)
	case KindTTL:
		return fmt.Sprintf("%s ttl %s", c.ID, c.TTL)
	}
	return c.ID + " " + c.Kind + " " + c.Target
}

// Pos is a position in a services file (1-based; Line 0 means the whole
// file).
type Pos = hudoc.Pos

// Error is a problem in a services file, at a position.
type Error = hudoc.Error

// ErrorList is every problem found in a services file, in text order.
type ErrorList = hudoc.ErrorList
