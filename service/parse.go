package service

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tailscale/hujson"
	"github.com/wiremesh/wiremesh/internal/hudoc"
	"github.com/wiremesh/wiremesh/wire"
)

// MaxFileSize bounds the text of a services file.
const MaxFileSize = 1 << 20

var (
	idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

	serviceKeys = []string{"name", "port", "protocol", "tags", "checks"}
	checkKeys   = []string{"id", "http", "tcp", "exec", "ttl", "interval", "timeout", "success_before_passing", "failures_before_critical"}
)

// Parse parses and validates a services file: an object whose "services"
// holds a list of service objects. file names the text in messages. The
// error, if any, is an ErrorList with every problem found, and then no
// definitions are returned.
func Parse(file string, text []byte) ([]Definition, error) {
	return parse(file, text, false)
}

// ParseRegistration parses what the local API's `services register`
// accepts: a single service object, or a services file as Parse reads it
// (an object with a "services" key).
func ParseRegistration(file string, text []byte) ([]Definition, error) {
	return parse(file, text, true)
}

// parser walks the HuJSON tree, collecting errors with positions.
type parser struct {
	*hudoc.Doc
	defs  []Definition
	names map[string]Pos // service name → where it is first defined
	ids   map[string]Pos // check ID → where it is first defined
}

func parse(file string, text []byte, single bool) ([]Definition, error) {
	root, doc, err := hudoc.Parse(file, text, MaxFileSize)
	if err != nil {
		return nil, err
	}
	ps := &parser{Doc: doc, names: map[string]Pos{}, ids: map[string]Pos{}}
	if _, isFile := member(&root, "services"); single && !isFile {
		if _, ok := root.Value.(*hujson.Object); ok {
			ps.service(&root, "the service")
		} else {
			ps.Errorf(&root, "a registration must be a service object or an object with \"services\", not %s", hudoc.KindName(&root))
		}
	} else {
		ps.top(&root)
	}
	if err := ps.Err(); err != nil {
		return nil, err
	}
	return ps.defs, nil
}

// member returns the value of the first member of object v named k.
func member(v *hujson.Value, k string) (*hujson.Value, bool) {
	obj, ok := v.Value.(*hujson.Object)
	if !ok {
		return nil, false
	}
	for i := range obj.Members {
		if hudoc.Key(&obj.Members[i]) == k {
			return &obj.Members[i].Value, true
		}
	}
	return nil, false
}

// stringMember returns the value of member k of object v if it is a string.
func stringMember(v *hujson.Value, k string) (string, bool) {
	m, ok := member(v, k)
	if !ok {
		return "", false
	}
	lit, ok := m.Value.(hujson.Literal)
	if !ok || lit.Kind() != '"' {
		return "", false
	}
	return lit.String(), true
}

// object returns the members of v, checking it is an object, that every key
// is among known and that none repeats.
func (ps *parser) object(v *hujson.Value, what string, known ...string) []hujson.ObjectMember {
	return ps.Members(v, what, func(k string) bool { return slices.Contains(known, k) }, func(m *hujson.ObjectMember, k string) {
		hint := suggest(k, known)
		if hint == "" {
			hint = " (want " + strings.Join(known, ", ") + ")"
		}
		ps.Errorf(&m.Name, "unknown key %q in %s%s", k, what, hint)
	})
}

// number returns the text of a JSON number.
func (ps *parser) number(v *hujson.Value, what string) (string, bool) {
	lit, ok := v.Value.(hujson.Literal)
	if !ok || lit.Kind() != '0' {
		ps.Errorf(v, "%s must be a number, not %s", what, hudoc.KindName(v))
		return "", false
	}
	return string(lit), true
}

func (ps *parser) duration(v *hujson.Value, name, what string) (time.Duration, bool) {
	s, ok := ps.Str(v, fmt.Sprintf("%q of %s", name, what))
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		ps.Errorf(v, "bad %s %q in %s: want a duration like \"10s\" or \"1m30s\"", name, s, what)
		return 0, false
	}
	return d, true
}

func (ps *parser) top(v *hujson.Value) {
	for _, m := range ps.object(v, "the services file", "services") {
		for i, s := range ps.Array(&m.Value, `"services"`) {
			ps.service(&s, fmt.Sprintf("service #%d", i+1))
		}
	}
}

// service parses one service object. what names it in messages until its
// name is known.
func (ps *parser) service(v *hujson.Value, what string) {
	if name, ok := stringMember(v, "name"); ok {
		what = fmt.Sprintf("service %q", name)
	}
	if _, ok := v.Value.(*hujson.Object); !ok {
		ps.Errorf(v, "%s must be an object, not %s", what, hudoc.KindName(v))
		return
	}
	start := ps.Pos(v)
	d := Definition{Protocol: TCP}
	var haveName, havePort bool
	var checks []hujson.Value
	for _, m := range ps.object(v, what, serviceKeys...) {
		val := &m.Value
		switch hudoc.Key(&m) {
		case "name":
			haveName = true
			ps.name(val, &d)
		case "port":
			havePort = true
			ps.port(val, what, &d)
		case "protocol":
			if s, ok := ps.Str(val, `"protocol" of `+what); ok {
				if s != TCP && s != UDP {
					ps.Errorf(val, "bad protocol %q in %s: want \"tcp\" or \"udp\"%s", s, what, suggest(s, []string{TCP, UDP}))
				}
				d.Protocol = s
			}
		case "tags":
			ps.tags(val, what, &d)
		case "checks":
			checks = ps.Array(val, `"checks" of `+what)
		}
	}
	if !haveName {
		ps.ErrorAt(start, "%s has no \"name\"", what)
	}
	if !havePort {
		ps.ErrorAt(start, "%s has no \"port\"", what)
	}
	for i := range checks {
		if c, ok := ps.check(&checks[i], d.Name, what, i); ok {
			d.Checks = append(d.Checks, c)
		}
	}
	ps.defs = append(ps.defs, d)
}

func (ps *parser) name(v *hujson.Value, d *Definition) {
	s, ok := ps.Str(v, `"name" of a service`)
	if !ok {
		return
	}
	if !wire.IsLabel(s) {
		ps.Errorf(v, "bad service name %q: want a DNS label (lowercase letters, digits and '-')", s)
		return
	}
	if first, dup := ps.names[s]; dup {
		ps.Errorf(v, "duplicate service %q (first at %d:%d)", s, first.Line, first.Col)
		return
	}
	ps.names[s] = ps.Pos(v)
	d.Name = s
}

func (ps *parser) port(v *hujson.Value, what string, d *Definition) {
	s, ok := ps.number(v, `"port" of `+what)
	if !ok {
		return
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		ps.Errorf(v, "bad port %s in %s: want 1-65535", s, what)
		return
	}
	d.Port = uint16(n)
}

func (ps *parser) tags(v *hujson.Value, what string, d *Definition) {
	for _, e := range ps.Array(v, `"tags" of `+what) {
		s, ok := ps.Str(&e, "a tag")
		switch {
		case !ok:
		case !wire.IsLabel(s):
			ps.Errorf(&e, "bad tag %q in %s: want a DNS label (lowercase letters, digits and '-')", s, what)
		case slices.Contains(d.Tags, s):
			ps.Errorf(&e, "duplicate tag %q in %s", s, what)
		default:
			d.Tags = append(d.Tags, s)
		}
	}
}

// suggest returns ` (did you mean "X"?)` for the candidate s most likely
// stands for — one that s begins (at least 3 letters), or the closest
// within a small edit distance — or "".
func suggest(s string, candidates []string) string {
	best, bestD := "", max(1, len(s)/3)+1
	for _, c := range candidates {
		if len(s) >= 3 && strings.HasPrefix(c, s) {
			return fmt.Sprintf(" (did you mean %q?)", c)
		}
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and swaps of neighbours each count 1.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
