package wire

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that is written in JSON as a Go duration
// string ("90s", "24h") and read from one.
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string such as "1h30m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"90s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q: %w", s, err)
	}
	if v < 0 {
		return fmt.Errorf("bad duration %q: negative", s)
	}
	*d = Duration(v)
	return nil
}

// LastSeen is the LAST SEEN of a node as the CLI and the UI show it: "now"
// while it is online, else how long ago it was last seen ("12s ago",
// "3h ago", "5d ago"), "never" if it never was.
func LastSeen(online bool, last, now time.Time) string {
	if online {
		return "now"
	}
	return Ago(last, now)
}

// Ago says how long before now t was: "12s ago", "3m ago", "3h ago" (up to
// 48h), "5d ago"; "never" for the zero time.
func Ago(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}
