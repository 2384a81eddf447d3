package wire

import "fmt"

// Health is the state of a service or of one of its checks, the one
// health type of the module (package health's checks, gossip's tags, DNS
// answers and the agent's local API all use it).
//
// The zero Health is Passing: a service without checks is healthy, as in
// Consul. Whatever must not read "no result yet" as healthy (a check that
// has not run) sets Critical explicitly. A worse Health is a larger one,
// so the worst of several is their max.
type Health uint8

// The health values, best first.
const (
	Passing Health = iota
	Warning
	Critical
)

// String returns "passing", "warning" or "critical", the names JSON and
// the API use.
func (h Health) String() string {
	switch h {
	case Passing:
		return "passing"
	case Warning:
		return "warning"
	case Critical:
		return "critical"
	}
	return fmt.Sprintf("Health(%d)", uint8(h))
}

// Valid reports whether h is Passing, Warning or Critical.
func (h Health) Valid() bool { return h <= Critical }

// ParseHealth reads "passing", "warning" or "critical", and the short
// forms the agent's local API takes: "pass", "warn" and "fail".
func ParseHealth(s string) (Health, error) {
	switch s {
	case "passing", "pass":
		return Passing, nil
	case "warning", "warn":
		return Warning, nil
	case "critical", "fail":
		return Critical, nil
	}
	return Critical, fmt.Errorf("bad health %q: want passing, warning or critical (or pass, warn, fail)", s)
}

// MarshalText writes h as String does; an invalid Health is an error.
func (h Health) MarshalText() ([]byte, error) {
	if !h.Valid() {
		return nil, fmt.Errorf("bad health %d", uint8(h))
	}
	return []byte(h.String()), nil
}

// UnmarshalText reads what ParseHealth reads.
func (h *Health) UnmarshalText(b []byte) error {
	v, err := ParseHealth(string(b))
	if err == nil {
		*h = v
	}
	return err
}
