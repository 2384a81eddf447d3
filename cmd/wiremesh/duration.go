package main

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// durationValue is a pflag.Value for a duration that may also be given in
// days: 7d, 1d12h, or any Go duration (90s, 45m, 12h).
type durationValue time.Duration

// durationVar defines a duration flag that accepts days.
func durationVar(fs *pflag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	fs.Var((*durationValue)(p), name, usage)
}

func (d *durationValue) Set(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = durationValue(v)
	return nil
}

func (d *durationValue) Type() string { return "duration" }

// String prints whole days as Nd, and zero as 0 (so that help omits a
// zero default).
func (d *durationValue) String() string {
	v := time.Duration(*d)
	switch {
	case v == 0:
		return "0"
	case v%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(v/(24*time.Hour)), 10) + "d"
	}
	return v.String()
}

// parseDuration reads a Go duration with an optional leading count of
// days: 7d, 1d12h, 36h, 90s.
func parseDuration(s string) (time.Duration, error) {
	bad := errors.New("want a duration such as 90s, 45m, 12h, 7d or 1d12h")
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		v, err := time.ParseDuration(s)
		if err != nil {
			return 0, bad
		}
		return v, nil
	}
	n, err := strconv.ParseUint(days, 10, 16)
	if err != nil {
		return 0, bad
	}
	v := time.Duration(n) * 24 * time.Hour
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil || r < 0 {
			return 0, bad
		}
		v += r
	}
	return v, nil
}
