package acl

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tailscale/hujson"
	"github.com/wiremesh/wiremesh/internal/hudoc"
	"github.com/wiremesh/wiremesh/wire"
)

// MaxPolicySize bounds the policy text.
const MaxPolicySize = 1 << 20

// parser walks the HuJSON tree, collecting errors with positions.
type parser struct {
	*hudoc.Doc
	p *Policy
}

// Parse parses and validates a policy. file names the text in messages. The
// error, if any, is an ErrorList with every problem found.
func Parse(file string, text []byte) (*Policy, error) {
	if len(text) > MaxPolicySize {
		return nil, ErrorList{{File: file, Msg: fmt.Sprintf("policy is %d bytes; the limit is %d", len(text), MaxPolicySize)}}
	}
	root, doc, err := hudoc.Parse(file, text, MaxPolicySize)
	if err != nil {
		return nil, err
	}
	ps := &parser{Doc: doc, p: &Policy{Groups: map[string][]Selector{}, Hosts: map[string]netip.Prefix{}, Text: text, File: file}}
	ps.top(&root)
	ps.resolve()
	if err := ps.Err(); err != nil {
		return nil, err
	}
	return ps.p, nil
}

// object returns the members of v, checking it is an object, that every key
// is among known (if given) and that none repeats.
func (ps *parser) object(v *hujson.Value, what string, known ...string) []hujson.ObjectMember {
	isKnown := func(k string) bool { return len(known) == 0 || slices.Contains(known, k) }
	return ps.Members(v, what, isKnown, func(m *hujson.ObjectMember, k string) {
		ps.Errorf(&m.Name, "unknown key %q in %s%s (want %s)", k, what, suggest(k, known), strings.Join(known, ", "))
	})
}

func (ps *parser) top(v *hujson.Value) {
	for _, m := range ps.object(v, "the policy", "groups", "hosts", "services", "acls", "tests") {
		val := m.Value
		switch hudoc.Key(&m) {
		case "groups":
			ps.groups(&val)
		case "hosts":
			ps.hosts(&val)
		case "services":
			ps.services(&val)
		case "acls":
			for i, r := range ps.Array(&val, `"acls"`) {
				ps.rule(&r, i)
			}
		case "tests":
			for i, t := range ps.Array(&val, `"tests"`) {
				ps.test(&t, i)
			}
		}
	}
}

func (ps *parser) groups(v *hujson.Value) {
	for _, m := range ps.object(v, `"groups"`) {
		name := hudoc.Key(&m)
		g, ok := strings.CutPrefix(name, "group:")
		if !ok || !wire.IsLabel(g) {
			ps.Errorf(&m.Name, "bad group name %q: want group:NAME (lowercase letters, digits, '-')", name)
			continue
		}
		val := m.Value
		members := []Selector{}
		for _, e := range ps.Array(&val, "group "+strconv.Quote(name)) {
			s, ok := ps.Str(&e, "a group member")
			if !ok {
				continue
			}
			sel, ok := ps.selector(&e, s)
			if !ok {
				continue
			}
			if sel.Kind == SelAny {
				ps.Errorf(&e, `"*" cannot be a group member; use "*" in the rule instead`)
				continue
			}
			members = append(members, sel)
		}
		ps.p.Groups[name] = members
	}
}

func (ps *parser) hosts(v *hujson.Value) {
	for _, m := range ps.object(v, `"hosts"`) {
		name := hudoc.Key(&m)
		if !wire.IsLabel(name) {
			ps.Errorf(&m.Name, "bad host name %q: want lowercase letters, digits and '-'", name)
			continue
		}
		val := m.Value
		s, ok := ps.Str(&val, "host "+strconv.Quote(name))
		if !ok {
			continue
		}
		p, err := parsePrefix(s)
		if err != nil {
			ps.Errorf(&val, "host %q: bad address or prefix %q", name, s)
			continue
		}
		ps.p.Hosts[name] = p
	}
}

// services reads the "services" section: for each service name, the
// tag:NAME and node:NAME selectors of the nodes that may provide it.
func (ps *parser) services(v *hujson.Value) {
	ps.p.Services = map[string][]Selector{}
	for _, m := range ps.object(v, `"services"`) {
		name := hudoc.Key(&m)
		if !wire.IsLabel(name) {
			ps.Errorf(&m.Name, "bad service name %q in \"services\": want a DNS label (lowercase letters, digits, '-'), without \"svc:\"", name)
			continue
		}
		val := m.Value
		owners := []Selector{}
		for _, e := range ps.Array(&val, "service "+strconv.Quote(name)) {
			s, ok := ps.Str(&e, "a service owner")
			if !ok {
				continue
			}
			if !strings.HasPrefix(s, "tag:") && !strings.HasPrefix(s, "node:") {
				ps.Errorf(&e, "bad owner %q of service %q: want tag:NAME or node:NAME (only a node's identity may provide a service)", s, name)
				continue
			}
			if sel, ok := ps.selector(&e, s); ok {
				owners = append(owners, sel)
			}
		}
		ps.p.Services[name] = owners
	}
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		if p != p.Masked() {
			return p, fmt.Errorf("prefix %s has host bits set (did you mean %s?)", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// selector parses a source selector. Group and host names are checked
// later, when every group and host is known.
func (ps *parser) selector(v *hujson.Value, s string) (Selector, bool) {
	pos := ps.Pos(v)
	switch {
	case s == "*":
		return Selector{Kind: SelAny, Pos: pos}, true
	case strings.HasPrefix(s, "node:"):
		n := s[len("node:"):]
		if !wire.IsLabel(n) {
			ps.Errorf(v, "bad node name in %q: want node:NAME (lowercase letters, digits, '-')", s)
			return Selector{}, false
		}
		return Selector{Kind: SelNode, Name: n, Pos: pos}, true
	case strings.HasPrefix(s, "tag:"):
		if !wire.IsLabel(s[len("tag:"):]) {
			ps.Errorf(v, "bad tag %q: want tag:NAME (lowercase letters, digits, '-')", s)
			return Selector{}, false
		}
		return Selector{Kind: SelTag, Name: s, Pos: pos}, true
	case strings.HasPrefix(s, "svc:"):
		if !wire.IsLabel(s[len("svc:"):]) {
			ps.Errorf(v, "bad service %q: want svc:NAME (lowercase letters, digits, '-')", s)
			return Selector{}, false
		}
		return Selector{Kind: SelSvc, Name: s, Pos: pos}, true
	case strings.HasPrefix(s, "group:"):
		return Selector{Kind: SelGroup, Name: s, Pos: pos}, true
	case strings.ContainsAny(s, ".:/") || (s != "" && s[0] >= '0' && s[0] <= '9' && strings.Trim(s, "0123456789") == ""):
		p, err := parsePrefix(s)
		if err != nil {
			if strings.Contains(err.Error(), "host bits") {
				ps.Errorf(v, "bad CIDR %q: %v", s, err)
			} else {
				ps.Errorf(v, "bad address or CIDR %q", s)
			}
			return Selector{}, false
		}
		return Selector{Kind: SelCIDR, Prefix: p, Pos: pos}, true
	case wire.IsLabel(s):
		return Selector{Kind: SelHost, Name: s, Pos: pos}, true
	}
	ps.Errorf(v, "bad selector %q: want *, node:NAME, tag:NAME, group:NAME, a host name or a CIDR", s)
	return Selector{}, false
}

// dest parses "SELECTOR:PORTS", and "svc:NAME" without ports.
func (ps *parser) dest(v *hujson.Value, s string) (Dest, bool) {
	var selText, portText string
	if name, ok := strings.CutPrefix(s, "svc:"); ok {
		i := strings.LastIndexByte(name, ':')
		if i < 0 { // the service's own ports
			sel, ok := ps.selector(v, s)
			return Dest{Sel: sel, Pos: sel.Pos}, ok
		}
		selText, portText = s[:len("svc:")+i], name[i+1:]
	} else if strings.HasPrefix(s, "[") { // [IPv6]:PORTS or [IPv6/len]:PORTS
		end := strings.Index(s, "]:")
		if end < 0 {
			ps.Errorf(v, "bad destination %q: want [IPv6]:PORTS", s)
			return Dest{}, false
		}
		selText, portText = s[1:end], s[end+2:]
	} else {
		i := strings.LastIndexByte(s, ':')
		if i < 0 {
			ps.Errorf(v, "destination %q has no ports: want %s:PORTS, e.g. %s:443 or %s:*", s, s, s, s)
			return Dest{}, false
		}
		selText, portText = s[:i], s[i+1:]
		if selText == "tag" || selText == "node" || selText == "group" {
			ps.Errorf(v, "destination %q has no ports: want %s:PORTS, e.g. %s:443 or %s:*", s, s, s, s)
			return Dest{}, false
		}
		_, wholeErr := parsePrefix(s)
		if wholeErr == nil || strings.Count(selText, ":") > 1 && !strings.HasPrefix(selText, "tag:") && !strings.HasPrefix(selText, "group:") && !strings.HasPrefix(selText, "node:") {
			ps.Errorf(v, "bad destination %q: write IPv6 addresses as [ADDR]:PORTS", s)
			return Dest{}, false
		}
	}
	sel, ok := ps.selector(v, selText)
	if !ok {
		return Dest{}, false
	}
	ports, err := parsePorts(portText)
	if err != nil {
		// Point at the ports: the column of the text after the last ':'.
		p := ps.Pos(v)
		p.Col += 1 + strings.LastIndex(s, portText)
		ps.ErrorAt(p, "bad ports %q in %q: %v", portText, s, err)
		return Dest{}, false
	}
	return Dest{Sel: sel, Ports: ports, Pos: sel.Pos}, true
}

// parsePorts reads "*", "N", "N-M" and comma lists of them.
func parsePorts(s string) ([]wire.PortRange, error) {
	if s == "" {
		return nil, fmt.Errorf("no ports (want *, N, N-M or a comma list)")
	}
	var out []wire.PortRange
	for _, part := range strings.Split(s, ",") {
		if part == "*" {
			out = append(out, wire.AllPorts)
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := parsePort(lo)
		if err != nil {
			return nil, err
		}
		last := first
		if isRange {
			if last, err = parsePort(hi); err != nil {
				return nil, err
			}
			if last < first {
				return nil, fmt.Errorf("range %s is backwards", part)
			}
		}
		out = append(out, wire.PortRange{First: first, Last: last})
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return uint16(n), nil
}

// proto reads a "proto" value: a name or a protocol number.
func (ps *parser) proto(v *hujson.Value) ([]uint8, bool) {
	lit, ok := v.Value.(hujson.Literal)
	if !ok {
		ps.Errorf(v, `"proto" must be a string or a number, not %s`, hudoc.KindName(v))
		return nil, false
	}
	s := lit.String()
	switch s {
	case "tcp":
		return []uint8{wire.ProtoTCP}, true
	case "udp":
		return []uint8{wire.ProtoUDP}, true
	case "icmp":
		return []uint8{wire.ProtoICMP, wire.ProtoICMPv6}, true
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		ps.Errorf(v, `bad proto %q: want tcp, udp, icmp or a protocol number 0-255%s`, s, suggest(s, []string{"tcp", "udp", "icmp"}))
		return nil, false
	}
	return []uint8{uint8(n)}, true
}

func (ps *parser) rule(v *hujson.Value, i int) {
	what := fmt.Sprintf("rule %d of \"acls\"", i+1)
	r := Rule{Pos: ps.Pos(v)}
	var haveSrc, haveDst, haveAction bool
	for _, m := range ps.object(v, what, "action", "src", "dst", "proto") {
		val := m.Value
		switch hudoc.Key(&m) {
		case "action":
			haveAction = true
			if s, ok := ps.Str(&val, `"action"`); ok && s != "accept" {
				ps.Errorf(&val, `bad action %q: rules only accept (want "accept"); what no rule accepts is denied`, s)
			}
		case "src":
			haveSrc = true
			for _, e := range ps.Array(&val, `"src"`) {
				if s, ok := ps.Str(&e, "a source"); ok {
					if sel, ok := ps.selector(&e, s); ok {
						r.Src = append(r.Src, sel)
					}
				}
			}
		case "dst":
			haveDst = true
			for _, e := range ps.Array(&val, `"dst"`) {
				if s, ok := ps.Str(&e, "a destination"); ok {
					if d, ok := ps.dest(&e, s); ok {
						r.Dst = append(r.Dst, d)
					}
				}
			}
		case "proto":
			r.Protos, _ = ps.proto(&val)
		}
	}
	if !haveAction {
		ps.ErrorAt(r.Pos, `%s has no "action" (want "action": "accept")`, what)
	}
	if !haveSrc {
		ps.ErrorAt(r.Pos, `%s has no "src"`, what)
	}
	if !haveDst {
		ps.ErrorAt(r.Pos, `%s has no "dst"`, what)
	}
	ps.p.ACLs = append(ps.p.ACLs, r)
}

func (ps *parser) test(v *hujson.Value, i int) {
	what := fmt.Sprintf("test %d of \"tests\"", i+1)
	t := Test{Pos: ps.Pos(v)}
	haveSrc := false
	for _, m := range ps.object(v, what, "src", "proto", "accept", "deny") {
		val := m.Value
		switch k := hudoc.Key(&m); k {
		case "src":
			if s, ok := ps.Str(&val, `"src"`); ok {
				t.Src, haveSrc = ps.selector(&val, s)
			}
		case "proto":
			t.Protos, _ = ps.proto(&val)
		case "accept", "deny":
			for _, e := range ps.Array(&val, strconv.Quote(k)) {
				if s, ok := ps.Str(&e, "a destination"); ok {
					if d, ok := ps.dest(&e, s); ok {
						if k == "accept" {
							t.Accept = append(t.Accept, d)
						} else {
							t.Deny = append(t.Deny, d)
						}
					}
				}
			}
		}
	}
	if !haveSrc {
		ps.ErrorAt(t.Pos, `%s has no "src"`, what)
	}
	ps.p.Tests = append(ps.p.Tests, t)
}

// resolve checks group and host references and group cycles, and fills
// in host prefixes.
func (ps *parser) resolve() {
	check := func(s *Selector) {
		switch s.Kind {
		case SelGroup:
			if _, ok := ps.p.Groups[s.Name]; !ok {
				ps.ErrorAt(s.Pos, "unknown group %q%s", s.Name, suggest(s.Name, sortedKeys(ps.p.Groups)))
			}
		case SelSvc:
			name := strings.TrimPrefix(s.Name, "svc:")
			if _, ok := ps.p.Services[name]; ps.p.Services != nil && !ok {
				hint := ""
				if c := closest(name, sortedKeys(ps.p.Services)); c != "" {
					hint = fmt.Sprintf(" (did you mean %q?)", "svc:"+c)
				}
				ps.ErrorAt(s.Pos, "unknown service %q: with a \"services\" section, only the services it lists have providers%s", s.Name, hint)
			}
		case SelHost:
			p, ok := ps.p.Hosts[s.Name]
			if !ok {
				ps.ErrorAt(s.Pos, "unknown host %q%s (hosts are defined in \"hosts\"; nodes are node:NAME)", s.Name, suggest(s.Name, sortedKeys(ps.p.Hosts)))
			}
			s.Prefix = p
		}
	}
	for _, name := range sortedKeys(ps.p.Groups) {
		for i := range ps.p.Groups[name] {
			check(&ps.p.Groups[name][i])
		}
	}
	for i := range ps.p.ACLs {
		r := &ps.p.ACLs[i]
		for j := range r.Src {
			check(&r.Src[j])
		}
		for j := range r.Dst {
			check(&r.Dst[j].Sel)
		}
	}
	for i := range ps.p.Tests {
		t := &ps.p.Tests[i]
		check(&t.Src)
		for j := range t.Accept {
			check(&t.Accept[j].Sel)
		}
		for j := range t.Deny {
			check(&t.Deny[j].Sel)
		}
	}
	ps.cycles()
}

// cycles reports groups that contain themselves, directly or not.
func (ps *parser) cycles() {
	const (
		unseen = iota
		active
		done
	)
	state := map[string]int{}
	var path []string
	var visit func(name string, ref Pos) bool
	visit = func(name string, ref Pos) bool {
		switch state[name] {
		case active:
			cycle := append(append([]string{}, path[slices.Index(path, name):]...), name)
			ps.ErrorAt(ref, "group cycle: %s", strings.Join(cycle, " → "))
			return true
		case done:
			return false
		}
		state[name] = active
		path = append(path, name)
		defer func() { path = path[:len(path)-1]; state[name] = done }()
		for _, m := range ps.p.Groups[name] {
			if m.Kind == SelGroup && visit(m.Name, m.Pos) {
				return true
			}
		}
		return false
	}
	for _, name := range sortedKeys(ps.p.Groups) {
		if state[name] == unseen {
			visit(name, Pos{})
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// suggest returns ` (did you mean "X"?)` for the closest candidate within
// a small edit distance, or "".
func suggest(s string, candidates []string) string {
	best := closest(s, candidates)
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// closest returns the candidate closest to s within a small edit
// distance, or "".
func closest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD || d == bestD && best == "" && d <= len(s)/3 {
			best, bestD = c, d
		}
	}
	if best == "" || bestD > max(1, len(s)/3) {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
