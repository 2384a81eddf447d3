// Package health runs the checks of an agent's local services — http, tcp,
// exec and ttl, as package service defines them — and keeps each check's
// status, with Consul's meaning: http 2xx/3xx passes, 429 warns, anything
// else is critical; tcp passes when it connects; exec passes on exit 0,
// warns on 1 and is critical otherwise; a ttl check is critical unless the
// service reported in within its TTL.
package health

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wiremesh/wiremesh/wire"
)

// Status is the state of a check or a service: wire.Health. Its zero is
// Passing; a new check starts Critical explicitly ("no result yet"), so
// an unset status never reads as healthy. A worse status is a larger one.
type Status = wire.Health

// The statuses, as wire names them.
const (
	Passing  = wire.Passing
	Warning  = wire.Warning
	Critical = wire.Critical
)

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
		worst = max(worst, r.Status)
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
