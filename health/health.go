// Package health runs the checks of an agent's local services — http, tcp,
// exec and ttl, as package service defines them — and keeps each check's
// status, with Consul's meaning: http 2xx/3xx passes, 429 warns, anything
// else is critical; tcp passes when it connects; exec passes on exit 0,
// warns on 1 and is critical otherwise; a ttl check is critical unless the
// service reported in within its TTL.
package health

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Status is the state of a check or a service. The zero Status is
// Critical, so an unset status never reads as healthy; a worse status
// is a smaller one.
type Status uint8

// The statuses, worst first.
const (
	Critical Status = iota
	Warning
	Passing
)

func (s Status) String() string {
	switch s {
	case Critical:
		return "critical"
	case Warning:
		return "warning"
	case Passing:
		return "passing"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// ParseStatus reads a status as the local API takes it: "pass", "warn" or
// "fail", or the names String gives.
func ParseStatus(s string) (Status, error) {
	switch s {
	case "pass", "passing":
		return Passing, nil
	case "warn", "warning":
		return Warning, nil
	case "fail", "critical":
		return Critical, nil
	}
	return 0, fmt.Errorf("bad status %q: want pass, warn or fail", s)
}

// MarshalText writes the status as String does.
func (s Status) MarshalText() ([]byte, error) {
	if s > Passing {
		return nil, fmt.Errorf("bad status %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText reads what ParseStatus reads.
func (s *Status) UnmarshalText(b []byte) error {
	st, err := ParseStatus(string(b))
	if err == nil {
		*s = st
	}
	return err
}

// Result is the current state of one check.
type Result struct {
	CheckID string
	Service string
	Status  Status
	// Output is what the check last said with this status (the response
	// body, the script's output, the TTL note or the error), trimmed of
	// space and at most MaxOutput bytes.
	Output string
	// Updated is when Status or Output last changed.
	Updated time.Time
}

// Aggregate is the health of a service from the results of its checks: the
// worst of them, or Passing for a service without checks.
func Aggregate(results []Result) Status {
	worst := Passing
	for _, r := range results {
		worst = min(worst, r.Status)
	}
	return worst
}

// MaxOutput bounds Result.Output, in bytes.
const MaxOutput = 4 << 10

const truncated = " …(truncated)"

// trimOutput trims space from s, makes it valid UTF-8 and cuts it to
// MaxOutput bytes, marking the cut.
func trimOutput(s string) string {
	s = strings.ToValidUTF8(strings.TrimSpace(s), "\uFFFD")
	if len(s) <= MaxOutput {
		return s
	}
	cut := MaxOutput - len(truncated)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncated
}
