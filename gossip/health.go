package gossip

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/wiremesh/wiremesh/wire"
)

// Health is the health of one service of a node, as that node's checks
// found it: wire.Health, whose zero is Passing.
type Health = wire.Health

// The health values, as wire names them.
const (
	Passing  = wire.Passing
	Warning  = wire.Warning
	Critical = wire.Critical
)

// tagHealth is the serf tag that carries a node's service health.
//
// Its value lists the node's services sorted by name, separated by ',',
// each as NAME=S where S is one letter: p (passing), w (warning) or
// c (critical); for example "api=w,db=c,web=p". A name is a DNS label as
// package service requires: 1 to 63 lowercase letters, digits and '-'.
// A node with no services has no such tag.
const tagHealth = "svc"

// maxServiceName is the longest service name the encoding accepts.
const maxServiceName = 63

// errBadHealth marks a health map that cannot be encoded or a tag that
// cannot be decoded.
var errBadHealth = errors.New("bad service health")

// encodeHealth returns the tag value for services, "" for none.
func encodeHealth(services map[string]Health) (string, error) {
	names := make([]string, 0, len(services))
	for name, h := range services {
		if !validServiceName(name) {
			return "", fmt.Errorf("%w: service name %q: want 1 to %d of a-z, 0-9 and '-'", errBadHealth, name, maxServiceName)
		}
		if h > Critical {
			return "", fmt.Errorf("%w: service %q: %v", errBadHealth, name, h)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	var b strings.Builder
	for i, name := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteByte(healthLetter[services[name]])
	}
	return b.String(), nil
}

// healthLetter is the letter of each Health in the tag.
var healthLetter = [...]byte{Passing: 'p', Warning: 'w', Critical: 'c'}

// decodeHealth parses a tag value written by encodeHealth. It is strict:
// an empty entry, a bad name or letter, or a name given twice makes the
// whole value malformed. "" decodes to nil.
func decodeHealth(v string) (map[string]Health, error) {
	if v == "" {
		return nil, nil
	}
	out := make(map[string]Health, strings.Count(v, ",")+1)
	for entry := range strings.SplitSeq(v, ",") {
		name, letter, ok := strings.Cut(entry, "=")
		if !ok || !validServiceName(name) {
			return nil, fmt.Errorf("%w: entry %q", errBadHealth, entry)
		}
		h, ok := parseHealthLetter(letter)
		if !ok {
			return nil, fmt.Errorf("%w: entry %q: unknown status", errBadHealth, entry)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%w: service %q given twice", errBadHealth, name)
		}
		out[name] = h
	}
	return out, nil
}

func parseHealthLetter(s string) (Health, bool) {
	switch s {
	case "p":
		return Passing, true
	case "w":
		return Warning, true
	case "c":
		return Critical, true
	}
	return 0, false
}

// validServiceName reports whether name is a DNS label of lowercase
// letters, digits and '-'.
func validServiceName(name string) bool { return wire.IsLabel(name) }
