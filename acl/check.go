package acl

import (
	"fmt"
	"slices"
	"strings"

	"github.com/wiremesh/wiremesh/wire"
)

// RunTests evaluates the policy's tests against the compiled inventory. The
// error, if any, is an ErrorList naming every failing assertion.
func (c *Compiled) RunTests() error {
	if c.policy == nil {
		return nil
	}
	var errs ErrorList
	fail := func(t Test, format string, args ...any) {
		errs = append(errs, &Error{File: c.policy.File, Pos: t.Pos, Msg: fmt.Sprintf(format, args...)})
	}
	r := newResolver(c.policy, c.nodes)
	for ti, t := range c.policy.Tests {
		protos := t.Protos
		if protos == nil {
			protos = []uint8{wire.ProtoTCP}
		}
		srcs := r.match(t.Src)
		check := func(d Dest, want bool) {
			dst := r.dest(d)
			srcs.each(func(si int) {
				dst.nodes.each(func(di int) {
					if si == di {
						return
					}
					for _, proto := range protos {
						for _, port := range testPorts(dst, di, proto) {
							ok, rule := c.Allows(c.nodes[si].ID, c.nodes[di].ID, proto, port)
							if ok == want {
								continue
							}
							what := fmt.Sprintf("%s → %s on %s", c.nodes[si].Name, c.nodes[di].Name, flowString(proto, port))
							if want {
								fail(t, "test %d failed: %s is denied, but %q is in \"accept\"", ti+1, what, d.String())
							} else {
								fail(t, "test %d failed: %s is allowed by rule %d (line %d), but %q is in \"deny\"", ti+1, what, rule, c.rules[rule-1].pos.Line, d.String())
							}
							return
						}
					}
				})
			})
		}
		for _, d := range t.Accept {
			check(d, true)
		}
		for _, d := range t.Deny {
			check(d, false)
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// testPorts returns the ports to probe on node di for a test destination:
// both ends of every range or, for a svc destination without ports, every
// port the node runs the service on (one port for protocols without
// ports).
func testPorts(d cdest, di int, proto uint8) []uint16 {
	if !hasPorts(proto) {
		return []uint16{0}
	}
	var out []uint16
	if d.svc != nil {
		for _, p := range d.portsOf(di) { // single ports, merged when adjacent
			for port := uint32(p.First); port <= uint32(p.Last); port++ {
				out = append(out, uint16(port))
			}
		}
		return out
	}
	for _, p := range d.ports {
		first := max(p.First, 1) // port 0 is not a port anyone connects to
		out = append(out, first)
		if p.Last != first {
			out = append(out, p.Last)
		}
	}
	return out
}

func flowString(proto uint8, port uint16) string {
	if !hasPorts(proto) {
		return ProtoName(proto)
	}
	return fmt.Sprintf("%s/%d", ProtoName(proto), port)
}

// Change is one difference in access between two compiled policies over the
// same nodes: Src may now (Gained) or no longer reach Dst with Proto on
// Ports.
type Change struct {
	Gained bool             `json:"gained"`
	Src    string           `json:"src"`
	Dst    string           `json:"dst"`
	Proto  string           `json:"proto"`
	Ports  []wire.PortRange `json:"ports,omitempty"`
}

// String returns "+ web-1 → api-1 tcp/443,8080-8090" (or "-" for a loss).
func (ch Change) String() string {
	sign := "-"
	if ch.Gained {
		sign = "+"
	}
	s := fmt.Sprintf("%s %s → %s %s", sign, ch.Src, ch.Dst, ch.Proto)
	if len(ch.Ports) > 0 {
		s += "/" + portsString(ch.Ports)
	}
	return s
}

// defaultProtos is what a rule without "proto" allows.
var defaultProtos = []uint8{wire.ProtoTCP, wire.ProtoUDP, wire.ProtoICMP, wire.ProtoICMPv6}

// access is what one source may open to one destination: per protocol,
// the port ranges (nil slice for protocols without ports).
type access map[uint8][]wire.PortRange

// accessOf computes what node index si may open to node index di.
func (c *Compiled) accessOf(si, di int) access {
	a := access{}
	for _, ri := range c.classes[c.classOf[di]].in {
		r := &c.rules[ri]
		if !r.src.has(si) {
			continue
		}
		protos := r.protos
		if protos == nil {
			protos = defaultProtos
		}
		for _, p := range protos {
			if !hasPorts(p) {
				a[p] = nil
				continue
			}
			for _, d := range r.dsts {
				if d.nodes.has(di) {
					a[p] = append(a[p], d.portsOf(di)...)
				}
			}
		}
	}
	for p, ps := range a {
		a[p] = normalizePorts(ps)
	}
	return a
}

// Diff lists the access that new grants and old does not (Gained) and the
// reverse, for every ordered pair of distinct nodes, ordered by source and
// destination. Both must have been compiled against the same nodes. Only
// pairs that a rule present in one policy and not the other connects are
// examined, so a small edit to a large policy is cheap.
func Diff(old, new *Compiled) []Change {
	oldKeys, oldCount := ruleKeys(old)
	newKeys, newCount := ruleKeys(new)
	cand := make([]bitset, len(new.nodes)) // per destination: sources to examine
	mark := func(c *Compiled, r *crule) {
		for _, d := range r.dsts {
			d.nodes.each(func(di int) {
				if cand[di] == nil {
					cand[di] = newBitset(len(new.nodes))
				}
				cand[di].or(r.src)
			})
		}
	}
	for i := range old.rules {
		if newCount[oldKeys[i]] == 0 {
			mark(old, &old.rules[i])
		}
	}
	for i := range new.rules {
		if oldCount[newKeys[i]] == 0 {
			mark(new, &new.rules[i])
		}
	}
	var out []Change
	for si := range new.nodes {
		for di := range new.nodes {
			if si == di || cand[di] == nil || !cand[di].has(si) {
				continue
			}
			out = append(out, diffAccess(old.accessOf(si, di), new.accessOf(si, di), new.nodes[si].Name, new.nodes[di].Name)...)
		}
	}
	slices.SortStableFunc(out, func(a, b Change) int {
		return strings.Compare(a.Src+"\x00"+a.Dst, b.Src+"\x00"+b.Dst)
	})
	return out
}

// ruleKey identifies what a compiled rule allows: its source nodes and
// prefixes, destinations, ports and protocols. svcKeys memoises the text
// of each service's ports, which names every node that runs it.
func ruleKey(r *crule, svcKeys map[*svcPorts]string) string {
	var b strings.Builder
	fmt.Fprint(&b, r.src, r.srcPrefixes, r.protos == nil, r.protos)
	for _, d := range r.dsts {
		if d.svc == nil {
			fmt.Fprint(&b, d.nodes, d.ports)
			continue
		}
		k, ok := svcKeys[d.svc]
		if !ok {
			var sb strings.Builder
			sb.WriteString("svc")
			d.nodes.each(func(i int) { fmt.Fprint(&sb, " ", i, d.portsOf(i)) })
			k = sb.String()
			svcKeys[d.svc] = k
		}
		b.WriteString(k)
	}
	return b.String()
}

// ruleKeys returns the key of each rule of c and how many rules have each.
func ruleKeys(c *Compiled) ([]string, map[string]int) {
	keys := make([]string, len(c.rules))
	count := make(map[string]int, len(c.rules))
	svcKeys := map[*svcPorts]string{}
	for i := range c.rules {
		keys[i] = ruleKey(&c.rules[i], svcKeys)
		count[keys[i]]++
	}
	return keys, count
}

func diffAccess(a, b access, src, dst string) []Change {
	var out []Change
	var protos []uint8
	for p := range a {
		protos = append(protos, p)
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			protos = append(protos, p)
		}
	}
	slices.Sort(protos)
	// ICMP and ICMPv6 that change together show as one "icmp" line.
	_, a1 := a[wire.ProtoICMP]
	_, b1 := b[wire.ProtoICMP]
	_, a58 := a[wire.ProtoICMPv6]
	_, b58 := b[wire.ProtoICMPv6]
	mergeICMP := a1 != b1 && a1 == a58 && b1 == b58
	for _, p := range protos {
		pa, inA := a[p]
		pb, inB := b[p]
		name := ProtoName(p)
		if !hasPorts(p) {
			if p == wire.ProtoICMPv6 && mergeICMP {
				continue
			}
			if inA != inB {
				out = append(out, Change{Gained: inB, Src: src, Dst: dst, Proto: name})
			}
			continue
		}
		if g := subtractPorts(pb, pa); len(g) > 0 {
			out = append(out, Change{Gained: true, Src: src, Dst: dst, Proto: name, Ports: g})
		}
		if l := subtractPorts(pa, pb); len(l) > 0 {
			out = append(out, Change{Gained: false, Src: src, Dst: dst, Proto: name, Ports: l})
		}
	}
	return out
}

// subtractPorts returns a − b for normalised range lists.
func subtractPorts(a, b []wire.PortRange) []wire.PortRange {
	var out []wire.PortRange
	for _, r := range a {
		lo, hi := uint32(r.First), uint32(r.Last)
		for _, x := range b {
			if uint32(x.Last) < lo || uint32(x.First) > hi {
				continue
			}
			if uint32(x.First) > lo {
				out = append(out, wire.PortRange{First: uint16(lo), Last: x.First - 1})
			}
			lo = uint32(x.Last) + 1
			if lo > hi {
				break
			}
		}
		if lo <= hi {
			out = append(out, wire.PortRange{First: uint16(lo), Last: uint16(hi)})
		}
	}
	return out
}

// Grant is one protocol that a node may open flows with to another, and
// its destination ports (nil for protocols without ports).
type Grant struct {
	Proto uint8
	Ports []wire.PortRange
}

// String returns "tcp/443,8080-8090" or "icmp".
func (g Grant) String() string {
	if len(g.Ports) == 0 {
		return ProtoName(g.Proto)
	}
	return ProtoName(g.Proto) + "/" + portsString(g.Ports)
}

// Access returns what node src may open to node dst, by protocol number;
// nil if nothing or if either is unknown.
func (c *Compiled) Access(src, dst int64) []Grant {
	si, ok1 := c.index[src]
	di, ok2 := c.index[dst]
	if !ok1 || !ok2 || si == di || c.policy == nil {
		return nil
	}
	a := c.accessOf(si, di)
	out := make([]Grant, 0, len(a))
	for p, ps := range a {
		out = append(out, Grant{Proto: p, Ports: ps})
	}
	slices.SortFunc(out, func(x, y Grant) int { return int(x.Proto) - int(y.Proto) })
	return out
}
