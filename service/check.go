package service

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/tailscale/hujson"
	"github.com/wiremesh/wiremesh/internal/hudoc"
)

// check parses check i of service svc (named svcWhat in messages). It
// reports whether the check is valid.
func (ps *parser) check(v *hujson.Value, svc, svcWhat string, i int) (CheckDef, bool) {
	var c CheckDef
	if id, ok := stringMember(v, "id"); ok {
		c.ID = id
	} else if svc != "" {
		c.ID = fmt.Sprintf("%s:%d", svc, i+1)
	}
	what := fmt.Sprintf("check %q", c.ID)
	if c.ID == "" {
		what = fmt.Sprintf("check #%d of %s", i+1, svcWhat)
	}
	errs := len(ps.Errs)
	idAt := ps.Pos(v)
	keys := map[string]*hujson.Value{} // key → its name, for later messages
	vals := map[string]*hujson.Value{} // key → its value
	for _, m := range ps.object(v, what, checkKeys...) {
		k, val := hudoc.Key(&m), &m.Value
		keys[k], vals[k] = &m.Name, val
		switch k {
		case "id":
			idAt = ps.Pos(val)
			if s, ok := ps.Str(val, `"id" of `+what); ok && !idRE.MatchString(s) {
				ps.Errorf(val, "bad check ID %q: want letters, digits and '.', ':', '_', '-' (at most 128)", s)
			}
		case KindHTTP, KindTCP, KindExec, KindTTL:
			if c.Kind != "" {
				ps.Errorf(&m.Name, "%s has both %q and %q; want exactly one", what, c.Kind, k)
				continue
			}
			c.Kind = k
			ps.target(val, what, &c)
		case "interval":
			c.Interval, _ = ps.duration(val, k, what)
		case "timeout":
			c.Timeout, _ = ps.duration(val, k, what)
		case "success_before_passing":
			c.SuccessBeforePassing = ps.threshold(val, k, what)
		case "failures_before_critical":
			c.FailuresBeforeCritical = ps.threshold(val, k, what)
		}
	}
	start := ps.Pos(v)
	switch c.Kind {
	case "":
		ps.ErrorAt(start, "%s has no \"http\", \"tcp\", \"exec\" or \"ttl\"", what)
	case KindTTL:
		for _, k := range checkKeys[5:] {
			if keys[k] != nil {
				ps.Errorf(keys[k], "%s is a ttl check; it takes no %q", what, k)
			}
		}
		c.Interval, c.Timeout = 0, 0
		c.SuccessBeforePassing, c.FailuresBeforeCritical = 1, 1
	default:
		ps.timing(&c, what, start, vals)
	}
	if c.ID != "" {
		if first, dup := ps.ids[c.ID]; dup {
			ps.ErrorAt(idAt, "duplicate check ID %q (first at %d:%d)", c.ID, first.Line, first.Col)
		} else {
			ps.ids[c.ID] = idAt
		}
	}
	return c, len(ps.Errs) == errs
}

// timing checks the interval and timeout of an http, tcp or exec check and
// fills in the defaults.
func (ps *parser) timing(c *CheckDef, what string, start Pos, vals map[string]*hujson.Value) {
	switch {
	case vals["interval"] == nil:
		ps.ErrorAt(start, "%s has no \"interval\"", what)
	case c.Interval < MinInterval && ps.isDuration(vals["interval"]):
		ps.Errorf(vals["interval"], "interval of %s is %s; the minimum is %s", what, c.Interval, MinInterval)
	}
	if vals["timeout"] == nil {
		c.Timeout = DefaultTimeout(c.Interval)
	} else if c.Timeout < 0 || c.Timeout == 0 && ps.isDuration(vals["timeout"]) {
		ps.Errorf(vals["timeout"], "timeout of %s is %s; it must be positive", what, c.Timeout)
	}
	if c.SuccessBeforePassing == 0 {
		c.SuccessBeforePassing = 1
	}
	if c.FailuresBeforeCritical == 0 {
		c.FailuresBeforeCritical = 1
	}
}

// isDuration reports whether v is a string that parses as a duration.
func (ps *parser) isDuration(v *hujson.Value) bool {
	lit, ok := v.Value.(hujson.Literal)
	if !ok || lit.Kind() != '"' {
		return false
	}
	_, err := time.ParseDuration(lit.String())
	return err == nil
}

// threshold parses a success_before_passing or failures_before_critical
// value; it returns 0 after an error.
func (ps *parser) threshold(v *hujson.Value, name, what string) int {
	s, ok := ps.number(v, fmt.Sprintf("%q of %s", name, what))
	if !ok {
		return 0
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil || n < 1 || n > MaxThreshold {
		ps.Errorf(v, "bad %s %s in %s: want a whole number from 1 to %d", name, s, what, MaxThreshold)
		return 0
	}
	return int(n)
}

// target parses the value of the kind key: a URL, an address, an argv or
// a TTL.
func (ps *parser) target(v *hujson.Value, what string, c *CheckDef) {
	if c.Kind == KindExec {
		ps.argv(v, what, c)
		return
	}
	if c.Kind == KindTTL {
		d, ok := ps.duration(v, KindTTL, what)
		if ok && d < MinInterval {
			ps.Errorf(v, "ttl of %s is %s; the minimum is %s", what, d, MinInterval)
		}
		c.TTL = d
		return
	}
	s, ok := ps.Str(v, fmt.Sprintf("%q of %s", c.Kind, what))
	if !ok {
		return
	}
	c.Target = s
	if c.Kind == KindHTTP {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			ps.Errorf(v, "bad http URL %q in %s: want http://HOST[:PORT]/PATH or https://…", s, what)
		}
		return
	}
	host, port, err := net.SplitHostPort(s)
	if n, perr := strconv.ParseUint(port, 10, 16); err != nil || host == "" || perr != nil || n == 0 {
		ps.Errorf(v, "bad tcp address %q in %s: want HOST:PORT with a port from 1 to 65535", s, what)
	}
}

func (ps *parser) argv(v *hujson.Value, what string, c *CheckDef) {
	elems := ps.Array(v, `"exec" of `+what)
	for i := range elems {
		if s, ok := ps.Str(&elems[i], "an exec argument"); ok {
			c.Args = append(c.Args, s)
		}
	}
	switch {
	case len(elems) == 0 && v.Value.Kind() == '[':
		ps.Errorf(v, "\"exec\" of %s is empty: want [\"PROGRAM\", \"ARG\", …]", what)
	case len(c.Args) > 0 && c.Args[0] == "":
		ps.Errorf(&elems[0], "empty program name in %s", what)
	}
}
