package acl

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

// This file checks Compiled against a slow, obvious evaluator that works on
// the random policy as generated, before it is written out and parsed.

// rdst is a destination: a selector as written and its port ranges (First
// 0, Last 65535 for "*"); nil for "svc:NAME" without ports.
type rdst struct {
	sel   string
	ports []wire.PortRange
}

// own reports whether d is "svc:NAME" without ports.
func (d rdst) own() bool { return d.ports == nil }

type rrule struct {
	src   []string
	dst   []rdst
	proto string // as written after "proto": (a JSON value), "" for absent
}

// rtest is a test: from src, with proto (as written, "" for absent), every
// destination in accept is reachable and none in deny is.
type rtest struct {
	src          string
	proto        string
	accept, deny []rdst
}

type rpolicy struct {
	groups map[string][]string // "group:gN" → members; gN holds only gM with M < N
	hosts  map[string]string   // name → address or prefix
	rules  []rrule
	tests  []rtest
}

func (p *rpolicy) text() string {
	var b strings.Builder
	b.WriteString("{\n  \"groups\": {\n")
	for _, g := range sortedKeys(p.groups) {
		fmt.Fprintf(&b, "    %q: [%s],\n", g, quoteAll(p.groups[g]))
	}
	b.WriteString("  },\n  \"hosts\": {\n")
	for _, h := range sortedKeys(p.hosts) {
		fmt.Fprintf(&b, "    %q: %q,\n", h, p.hosts[h])
	}
	b.WriteString("  },\n  \"acls\": [\n")
	for _, r := range p.rules {
		var dsts []string
		for _, d := range r.dst {
			dsts = append(dsts, d.text())
		}
		fmt.Fprintf(&b, "    {\"action\": \"accept\", \"src\": [%s], \"dst\": [%s]", quoteAll(r.src), quoteAll(dsts))
		if r.proto != "" {
			fmt.Fprintf(&b, ", \"proto\": %s", r.proto)
		}
		b.WriteString("},\n")
	}
	b.WriteString("  ],\n  \"tests\": [\n")
	for _, t := range p.tests {
		fmt.Fprintf(&b, "    {\"src\": %q, \"accept\": [%s], \"deny\": [%s]", t.src, quoteAll(dstTexts(t.accept)), quoteAll(dstTexts(t.deny)))
		if t.proto != "" {
			fmt.Fprintf(&b, ", \"proto\": %s", t.proto)
		}
		b.WriteString("},\n")
	}
	b.WriteString("  ],\n}\n")
	return b.String()
}

func dstTexts(ds []rdst) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.text())
	}
	return out
}

func (d rdst) text() string {
	if d.own() {
		return d.sel
	}
	sel := d.sel
	if strings.Count(sel, ":") > 1 && !strings.HasPrefix(sel, "tag:") && !strings.HasPrefix(sel, "node:") && !strings.HasPrefix(sel, "group:") && !strings.HasPrefix(sel, "svc:") {
		sel = "[" + sel + "]"
	}
	return sel + ":" + portsText(d.ports)
}

func quoteAll(ss []string) string {
	var out []string
	for _, s := range ss {
		out = append(out, fmt.Sprintf("%q", s))
	}
	return strings.Join(out, ", ")
}

// rnode is a node of the random inventory.
type rnode struct {
	name     string
	tags     []string
	addrs    []netip.Addr
	services []NodeService
}

// servicePorts returns the ports n runs service name on, one per instance.
func (n rnode) servicePorts(name string) []uint16 {
	var out []uint16
	for _, s := range n.services {
		if s.Name == name {
			out = append(out, s.Port)
		}
	}
	return out
}

// slow is the obvious evaluator of a random policy over an inventory.
type slow struct {
	p     *rpolicy
	nodes []rnode
}

// has reports whether selector sel covers node n: by definition, with no
// precomputation.
func (s slow) has(sel string, n rnode) bool {
	switch {
	case sel == "*":
		return true
	case strings.HasPrefix(sel, "node:"):
		return n.name == sel[len("node:"):]
	case strings.HasPrefix(sel, "tag:"):
		return slices.Contains(n.tags, sel)
	case strings.HasPrefix(sel, "svc:"):
		return len(n.servicePorts(sel[len("svc:"):])) > 0
	case strings.HasPrefix(sel, "group:"):
		for _, m := range s.p.groups[sel] {
			if s.has(m, n) {
				return true
			}
		}
		return false
	}
	if h, ok := s.p.hosts[sel]; ok {
		sel = h
	}
	pfx, err := netip.ParsePrefix(sel)
	if err != nil {
		a := netip.MustParseAddr(sel)
		pfx = netip.PrefixFrom(a, a.BitLen())
	}
	for _, a := range n.addrs {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

func (s slow) anyHas(sels []string, n rnode) bool {
	return slices.ContainsFunc(sels, func(sel string) bool { return s.has(sel, n) })
}

func protosOf(proto string) []uint8 {
	switch proto {
	case "":
		return []uint8{wire.ProtoTCP, wire.ProtoUDP, wire.ProtoICMP, wire.ProtoICMPv6}
	case `"tcp"`:
		return []uint8{wire.ProtoTCP}
	case `"udp"`:
		return []uint8{wire.ProtoUDP}
	case `"icmp"`:
		return []uint8{wire.ProtoICMP, wire.ProtoICMPv6}
	}
	n, _ := strconv.ParseUint(strings.Trim(proto, `"`), 10, 8)
	return []uint8{uint8(n)}
}

func withPorts(proto uint8) bool {
	return proto == wire.ProtoTCP || proto == wire.ProtoUDP || proto == 132
}

func inRanges(ps []wire.PortRange, port uint16) bool {
	return slices.ContainsFunc(ps, func(r wire.PortRange) bool { return r.First <= port && port <= r.Last })
}

// allows is the meaning of the policy: some rule has src among its
// sources, proto among its protocols and dst among its destinations, on
// that destination's ports if proto has ports (for svc:NAME without ports:
// a port dst runs NAME on).
func (s slow) allows(src, dst rnode, proto uint8, port uint16) bool {
	for _, r := range s.p.rules {
		if !s.anyHas(r.src, src) || !slices.Contains(protosOf(r.proto), proto) {
			continue
		}
		for _, d := range r.dst {
			if !s.has(d.sel, dst) {
				continue
			}
			switch {
			case !withPorts(proto),
				d.own() && slices.Contains(dst.servicePorts(d.sel[len("svc:"):]), port),
				!d.own() && inRanges(d.ports, port):
				return true
			}
		}
	}
	return false
}

// testFailures is the meaning of the tests: one line for each test,
// destination, source node and other destination node where a probe with
// one of the test's protocols (absent: tcp) gets the wrong verdict. The
// probes are both ends of each port range (port 0 stands for 1), or for
// svc:NAME without ports, each port the destination node runs NAME on.
func (s slow) testFailures() []string {
	var out []string
	for ti, t := range s.p.tests {
		protos := []uint8{wire.ProtoTCP}
		if t.proto != "" {
			protos = protosOf(t.proto)
		}
		for _, list := range []struct {
			ds   []rdst
			want bool
		}{{t.accept, true}, {t.deny, false}} {
			for _, d := range list.ds {
				for _, src := range s.nodes {
					for _, dst := range s.nodes {
						if src.name == dst.name || !s.has(t.src, src) || !s.has(d.sel, dst) {
							continue
						}
						if slices.ContainsFunc(protos, func(proto uint8) bool {
							return slices.ContainsFunc(s.probes(d, dst, proto), func(port uint16) bool {
								return s.allows(src, dst, proto, port) != list.want
							})
						}) {
							out = append(out, failureLine(ti+1, src.name, dst.name, d.canonical().text(), list.want))
						}
					}
				}
			}
		}
	}
	return out
}

// canonical returns d as Dest.String writes it: a /32 or /128 prefix as
// an address.
func (d rdst) canonical() rdst {
	if p, err := netip.ParsePrefix(d.sel); err == nil && p.IsSingleIP() {
		d.sel = p.Addr().String()
	}
	return d
}

func (s slow) probes(d rdst, dst rnode, proto uint8) []uint16 {
	switch {
	case !withPorts(proto):
		return []uint16{0}
	case d.own():
		return dst.servicePorts(d.sel[len("svc:"):])
	}
	var out []uint16
	for _, r := range d.ports {
		out = append(out, max(r.First, 1), r.Last)
	}
	return out
}

func failureLine(test int, src, dst, d string, accept bool) string {
	return fmt.Sprintf("test %d: %s → %s %q accept=%v", test, src, dst, d, accept)
}

var runTestsRE = regexp.MustCompile(`^random\.hujson:\d+:\d+: test (\d+) failed: (\S+) → (\S+) on \S+ is (?:denied|allowed by rule \d+ \(line \d+\)), but "(.*)" is in "(accept|deny)"$`)

// runTestsFailures runs c's tests and returns their failures as
// testFailures does.
func runTestsFailures(c *Compiled) ([]string, error) {
	err := c.RunTests()
	if err == nil {
		return nil, nil
	}
	list, ok := err.(ErrorList)
	if !ok {
		return nil, fmt.Errorf("RunTests error is %T, not ErrorList", err)
	}
	var out []string
	for _, e := range list {
		m := runTestsRE.FindStringSubmatch(e.Error())
		if m == nil {
			return nil, fmt.Errorf("RunTests error %q does not read as a failure", e)
		}
		n, _ := strconv.Atoi(m[1])
		out = append(out, failureLine(n, m[2], m[3], m[4], m[5] == "accept"))
	}
	return out, nil
}

// peers is the definition: the nodes n may talk to or that may talk to n,
// by any rule, on any protocol.
func (s slow) peers(n rnode) []string {
	var out []string
	for _, m := range s.nodes {
		if m.name == n.name {
			continue
		}
		for _, r := range s.p.rules {
			dstHas := func(x rnode) bool {
				return slices.ContainsFunc(r.dst, func(d rdst) bool { return s.has(d.sel, x) })
			}
			if s.anyHas(r.src, n) && dstHas(m) || s.anyHas(r.src, m) && dstHas(n) {
				out = append(out, m.name)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// gen makes random inventories and policies over few names, so that
// selectors overlap often.
type gen struct {
	r *rand.Rand
	// v6 lets CIDR selectors and hosts be IPv6 prefixes.
	v6 bool
}

func (g gen) inventory() ([]rnode, []Node) {
	n := 8 + g.r.IntN(12)
	var rn []rnode
	var nodes []Node
	for i := range n {
		var tags []string
		for t := range 6 {
			if g.r.IntN(4) == 0 {
				tags = append(tags, fmt.Sprintf("tag:t%d", t))
			}
		}
		svcs := g.services()
		for _, sv := range svcs { // the policies have no "services": a node provides the services named like its tags
			if t := "tag:" + sv.Name; !slices.Contains(tags, t) {
				tags = append(tags, t)
			}
		}
		node := testNode(i+1, fmt.Sprintf("n%d", i), tags...)
		node.Services = svcs
		nodes = append(nodes, node)
		rn = append(rn, rnode{name: node.Name, tags: tags, addrs: []netip.Addr{node.Addrs[0].Addr(), node.Addrs[1].Addr()}, services: node.Services})
	}
	return rn, nodes
}

// servicePorts are the ports services run on: a few shared, so that
// instances on the same port are common, ports next to each other, and the
// last one.
var servicePorts = []uint16{10, 11, 12, 25, 65535}

// services returns the services of a node: some of s0 to s3 (s4: no node
// runs it), each on one to three ports, over TCP or UDP; sometimes the
// same port over both.
func (g gen) services() []NodeService {
	var out []NodeService
	for i := range 4 {
		if g.r.IntN(3) != 0 {
			continue
		}
		name := fmt.Sprintf("s%d", i)
		for range 1 + g.r.IntN(3) {
			port := uint16(1 + g.r.IntN(40))
			if g.r.IntN(2) == 0 {
				port = servicePorts[g.r.IntN(len(servicePorts))]
			}
			proto := []uint8{wire.ProtoTCP, wire.ProtoUDP}[g.r.IntN(2)]
			out = append(out, NodeService{Name: name, Port: port, Proto: proto})
			if g.r.IntN(5) == 0 {
				out = append(out, NodeService{Name: name, Port: port, Proto: wire.ProtoTCP + wire.ProtoUDP - proto})
			}
		}
	}
	g.r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func (g gen) cidr() string {
	if g.v6 && g.r.IntN(2) == 0 {
		bits := 120 + g.r.IntN(9)
		p := netip.PrefixFrom(v6Addr(1+g.r.IntN(24)), bits).Masked()
		if bits == 128 && g.r.IntN(2) == 0 {
			return p.Addr().String()
		}
		return p.String()
	}
	if g.r.IntN(8) == 0 {
		return "10.0.0.0/8" // no node
	}
	bits := 27 + g.r.IntN(6)
	p := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(1 + g.r.IntN(24))}), bits).Masked()
	if bits == 32 && g.r.IntN(2) == 0 {
		return p.Addr().String()
	}
	return p.String()
}

// selector returns a selector; groups below limit may be named.
func (g gen) selector(p *rpolicy, limit int) string {
	switch k := g.r.IntN(23); {
	case k < 7:
		return fmt.Sprintf("tag:t%d", g.r.IntN(7)) // t6: no node has it
	case k < 10:
		return fmt.Sprintf("node:n%d", g.r.IntN(22)) // some do not exist
	case k < 13 && limit > 0:
		return fmt.Sprintf("group:g%d", g.r.IntN(limit))
	case k < 15 && len(p.hosts) > 0:
		return sortedKeys(p.hosts)[g.r.IntN(len(p.hosts))]
	case k < 18:
		return g.cidr()
	case k < 21:
		return fmt.Sprintf("svc:s%d", g.r.IntN(5)) // s4: no node runs it
	}
	return "*"
}

// dest returns a destination; a service is given without ports half the
// time.
func (g gen) dest(p *rpolicy) rdst {
	d := rdst{sel: g.selector(p, len(p.groups)), ports: g.ports()}
	if strings.HasPrefix(d.sel, "svc:") && g.r.IntN(2) == 0 {
		d.ports = nil
	}
	return d
}

func (g gen) ports() []wire.PortRange {
	var out []wire.PortRange
	for range 1 + g.r.IntN(3) {
		switch k := g.r.IntN(10); {
		case k == 0:
			out = append(out, wire.AllPorts)
		case k < 5:
			p := uint16(1 + g.r.IntN(30))
			out = append(out, wire.PortRange{First: p, Last: p})
		case k < 9:
			a := uint16(1 + g.r.IntN(30))
			out = append(out, wire.PortRange{First: a, Last: a + uint16(g.r.IntN(10))})
		default:
			out = append(out, wire.PortRange{First: 65530, Last: 65535})
		}
	}
	return out
}

var randProtos = []string{"", "", "", `"tcp"`, `"udp"`, `"icmp"`, "1", "58", "6", "17", "47", "132", `"17"`}

func (g gen) policy() *rpolicy {
	p := &rpolicy{groups: map[string][]string{}, hosts: map[string]string{}}
	for i := range g.r.IntN(3) {
		p.hosts[fmt.Sprintf("h%d", i)] = g.cidr()
	}
	ngroups := g.r.IntN(4)
	for i := range ngroups {
		var ms []string
		for range g.r.IntN(4) {
			s := g.selector(p, i)
			if s != "*" {
				ms = append(ms, s)
			}
		}
		p.groups[fmt.Sprintf("group:g%d", i)] = ms
	}
	for range 1 + g.r.IntN(7) {
		p.rules = append(p.rules, g.rule(p))
	}
	for range g.r.IntN(3) {
		p.tests = append(p.tests, g.test(p))
	}
	return p
}

var randTestProtos = []string{"", "", `"tcp"`, `"udp"`, `"icmp"`, "132", "47"}

// test returns a random test over the groups and hosts of p.
func (g gen) test(p *rpolicy) rtest {
	t := rtest{src: g.selector(p, len(p.groups)), proto: randTestProtos[g.r.IntN(len(randTestProtos))]}
	for range g.r.IntN(3) {
		t.accept = append(t.accept, g.dest(p))
	}
	for range g.r.IntN(3) {
		t.deny = append(t.deny, g.dest(p))
	}
	return t
}

// rule returns a random rule over the groups and hosts of p.
func (g gen) rule(p *rpolicy) rrule {
	var r rrule
	for range 1 + g.r.IntN(3) {
		r.src = append(r.src, g.selector(p, len(p.groups)))
	}
	for range 1 + g.r.IntN(3) {
		r.dst = append(r.dst, g.dest(p))
	}
	r.proto = randProtos[g.r.IntN(len(randProtos))]
	return r
}

// near returns p with one rule changed: replaced, its proto changed, or
// its ports.
func (g gen) near(p *rpolicy) *rpolicy {
	q := &rpolicy{groups: p.groups, hosts: p.hosts, rules: slices.Clone(p.rules)}
	i := g.r.IntN(len(q.rules))
	switch g.r.IntN(3) {
	case 0:
		q.rules[i] = g.rule(p)
	case 1:
		q.rules[i].proto = randProtos[g.r.IntN(len(randProtos))]
	default:
		q.rules[i].dst = slices.Clone(q.rules[i].dst)
		q.rules[i].dst[0].ports = g.ports()
	}
	return q
}

// packetAccepts is a packet filter over Rules: a packet from addr with
// proto to port passes when some rule has addr in its sources, proto in its
// protocols (empty: tcp, udp, icmp, icmpv6) and, for protocols with ports,
// port in its ports.
func packetAccepts(rules []wire.FilterRule, addr netip.Addr, proto uint8, port uint16) bool {
	for _, r := range rules {
		if !slices.ContainsFunc(r.Srcs, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			continue
		}
		if len(r.Protos) == 0 && !slices.Contains([]uint8{wire.ProtoTCP, wire.ProtoUDP, wire.ProtoICMP, wire.ProtoICMPv6}, proto) ||
			len(r.Protos) > 0 && !slices.Contains(r.Protos, proto) {
			continue
		}
		if !withPorts(proto) || inRanges(r.Ports, port) {
			return true
		}
	}
	return false
}

var probeProtos = []uint8{wire.ProtoTCP, wire.ProtoUDP, wire.ProtoICMP, wire.ProtoICMPv6, 47, 132}

func probePorts(r *rand.Rand) []uint16 {
	return []uint16{0, 1, uint16(1 + r.IntN(40)), uint16(1 + r.IntN(40)), 65535}
}

func TestCompileRandom(t *testing.T) {
	rounds := 300
	if testing.Short() || raceEnabled {
		rounds = 80
	}
	r := rand.New(rand.NewPCG(1, 2))
	for round := range rounds {
		// Even rounds: IPv4 CIDRs only, so the packet check with the
		// source's IPv4 address must agree with Allows exactly.
		g := gen{r: r, v6: round%2 == 1}
		rn, nodes := g.inventory()
		rp := g.policy()
		text := rp.text()
		p, err := Parse("random.hujson", []byte(text))
		if err != nil {
			t.Fatalf("round %d: generated policy does not parse: %v\n%s", round, err, text)
		}
		c := Compile(p, nodes)
		s := slow{p: rp, nodes: rn}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("round %d: %s\npolicy:\n%s", round, fmt.Sprintf(format, args...), text)
		}
		for di, dst := range rn {
			if got, want := peerNames(c, nodes, nodes[di].ID), s.peers(dst); !slices.Equal(got, want) {
				fail("peers of %s: %v, want %v", dst.name, got, want)
			}
			rules := resolved(c, nodes[di].ID)
			ports := probePorts(r)
			for _, svc := range dst.services { // its own ports, and the next
				if !slices.Contains(ports, svc.Port) {
					ports = append(ports, svc.Port, svc.Port+1)
				}
			}
			for si, src := range rn {
				for _, proto := range probeProtos {
					for _, port := range ports {
						want := s.allows(src, dst, proto, port)
						got, rule := c.Allows(nodes[si].ID, nodes[di].ID, proto, port)
						if got != want {
							fail("Allows(%s → %s, %d/%d) = %v (rule %d), want %v", src.name, dst.name, proto, port, got, rule, want)
						}
						if got != (rule != 0) || rule < 0 || rule > len(rp.rules) {
							fail("Allows(%s → %s, %d/%d) = %v with rule %d", src.name, dst.name, proto, port, got, rule)
						}
						if got && !s.allows2(rp.rules[rule-1], src, dst, proto, port) {
							fail("Allows(%s → %s, %d/%d) names rule %d, which does not allow it", src.name, dst.name, proto, port, rule)
						}
						v4 := packetAccepts(rules, src.addrs[0], proto, port)
						v6 := packetAccepts(rules, src.addrs[1], proto, port)
						// With IPv4 CIDRs only, the source's IPv4 address
						// gets the verdict of Allows. In general a CIDR may
						// cover one address of a node and not the other,
						// and Allows speaks for the node: some address of
						// it gets through.
						if !g.v6 && v4 != got {
							fail("Rules(%s) on a packet from %s (%s), %d/%d: %v; Allows says %v", dst.name, src.name, src.addrs[0], proto, port, v4, got)
						}
						if got != (v4 || v6) {
							fail("Rules(%s) on packets from %s's addresses, %d/%d: v4 %v v6 %v; Allows says %v", dst.name, src.name, proto, port, v4, v6, got)
						}
					}
				}
			}
		}
		got, err := runTestsFailures(c)
		if err != nil {
			fail("%v", err)
		}
		if want := s.testFailures(); !slices.Equal(sorted(got), sorted(want)) {
			fail("RunTests failures:\n%s\nwant:\n%s", lines(sorted(got)), lines(sorted(want)))
		}
	}
}

// allows2 is slow.allows for one rule.
func (s slow) allows2(r rrule, src, dst rnode, proto uint8, port uint16) bool {
	return slow{p: &rpolicy{groups: s.p.groups, hosts: s.p.hosts, rules: []rrule{r}}, nodes: s.nodes}.allows(src, dst, proto, port)
}

// portChanges returns the ports of proto that src may open to dst under
// b and not under a, as ranges, probing each piece between the boundaries
// of the two policies' port ranges.
func portChanges(a, b slow, src, dst rnode, proto uint8) []wire.PortRange {
	cuts := map[uint32]bool{0: true, 65536: true}
	for _, n := range a.nodes {
		for _, s := range n.services {
			cuts[uint32(s.Port)] = true
			cuts[uint32(s.Port)+1] = true
		}
	}
	for _, p := range [...]*rpolicy{a.p, b.p} {
		for _, r := range p.rules {
			for _, d := range r.dst {
				for _, pr := range d.ports {
					cuts[uint32(pr.First)] = true
					cuts[uint32(pr.Last)+1] = true
				}
			}
		}
	}
	var points []uint32
	for c := range cuts {
		points = append(points, c)
	}
	slices.Sort(points)
	var out []wire.PortRange
	for i := 0; i+1 < len(points); i++ {
		lo, hi := points[i], points[i+1]-1
		if !b.allows(src, dst, proto, uint16(lo)) || a.allows(src, dst, proto, uint16(lo)) {
			continue
		}
		if n := len(out); n > 0 && uint32(out[n-1].Last)+1 == lo {
			out[n-1].Last = uint16(hi)
		} else {
			out = append(out, wire.PortRange{First: uint16(lo), Last: uint16(hi)})
		}
	}
	return out
}

func TestDiffRandom(t *testing.T) {
	rounds := 150
	if testing.Short() || raceEnabled {
		rounds = 40
	}
	r := rand.New(rand.NewPCG(3, 4))
	icmpFailures := 0
	defer func() {
		if icmpFailures > 1 {
			t.Errorf("%d ICMP changes in all were wrong or missing", icmpFailures)
		}
	}()
	for round := range rounds {
		g := gen{r: r, v6: true}
		rn, nodes := g.inventory()
		ra := g.policy()
		rb := g.near(ra)
		if round%3 == 0 {
			rb = g.policy()
		}
		pa, err := Parse("a", []byte(ra.text()))
		if err != nil {
			t.Fatal(err)
		}
		pb, err := Parse("b", []byte(rb.text()))
		if err != nil {
			t.Fatal(err)
		}
		ca, cb := Compile(pa, nodes), Compile(pb, nodes)
		sa, sb := slow{p: ra, nodes: rn}, slow{p: rb, nodes: rn}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("round %d: %s\nold:\n%s\nnew:\n%s", round, fmt.Sprintf(format, args...), ra.text(), rb.text())
		}
		// ICMP failures are reported once, and the test goes on to check
		// the other protocols exactly.
		icmpFail := func(format string, args ...any) {
			t.Helper()
			if icmpFailures++; icmpFailures == 1 {
				t.Errorf("round %d: %s\nold:\n%s\nnew:\n%s", round, fmt.Sprintf(format, args...), ra.text(), rb.text())
			}
		}
		changes := Diff(ca, cb)
		var got, want []string
		for _, ch := range changes {
			if ch.Proto != "icmp" && ch.Proto != "icmpv6" {
				got = append(got, ch.String())
			}
		}
		for _, src := range rn {
			for _, dst := range rn {
				if src.name == dst.name {
					continue
				}
				for _, proto := range []uint8{wire.ProtoTCP, wire.ProtoUDP, 132} {
					name := map[uint8]string{wire.ProtoTCP: "tcp", wire.ProtoUDP: "udp", 132: "132"}[proto]
					if g := portChanges(sa, sb, src, dst, proto); len(g) > 0 {
						want = append(want, fmt.Sprintf("+ %s → %s %s/%s", src.name, dst.name, name, portsText(g)))
					}
					if l := portChanges(sb, sa, src, dst, proto); len(l) > 0 {
						want = append(want, fmt.Sprintf("- %s → %s %s/%s", src.name, dst.name, name, portsText(l)))
					}
				}
				for _, proto := range []uint8{47, wire.ProtoICMP, wire.ProtoICMPv6} {
					was, is := sa.allows(src, dst, proto, 0), sb.allows(src, dst, proto, 0)
					if was == is {
						continue
					}
					if proto == 47 {
						want = append(want, fmt.Sprintf("%s %s → %s 47", map[bool]string{true: "+", false: "-"}[is], src.name, dst.name))
						continue
					}
					// ICMP: the naming of icmp and icmpv6 is loose; some
					// change of the right direction must be there.
					if !slices.ContainsFunc(changes, func(ch Change) bool {
						return ch.Src == src.name && ch.Dst == dst.name && ch.Gained == is && (ch.Proto == "icmp" || ch.Proto == ProtoName(proto))
					}) {
						icmpFail("%s → %s %s went from %v to %v, but Diff has no such change:\n%s", src.name, dst.name, ProtoName(proto), was, is, changeLines(changes))
					}
				}
			}
		}
		for _, ch := range changes {
			var protos []uint8
			switch ch.Proto {
			case "icmp":
				protos = []uint8{wire.ProtoICMP, wire.ProtoICMPv6}
			case "icmpv6":
				protos = []uint8{wire.ProtoICMPv6}
			default:
				continue
			}
			src, dst := rn[slices.IndexFunc(rn, func(n rnode) bool { return n.name == ch.Src })], rn[slices.IndexFunc(rn, func(n rnode) bool { return n.name == ch.Dst })]
			if !slices.ContainsFunc(protos, func(p uint8) bool {
				return sa.allows(src, dst, p, 0) != ch.Gained && sb.allows(src, dst, p, 0) == ch.Gained
			}) {
				icmpFail("Diff reports %q, which Allows does not bear out", ch)
			}
		}
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			fail("Diff (tcp, udp, 132, 47):\n%s\nwant:\n%s", lines(got), lines(want))
		}
		var back []string
		for _, ch := range Diff(cb, ca) {
			back = append(back, ch.String())
		}
		var all []string
		for _, ch := range changes {
			all = append(all, ch.String())
		}
		if !slices.Equal(sorted(back), sorted(flip(all))) {
			fail("Diff(new, old) is not Diff(old, new) with gains and losses swapped:\n%s\nvs\n%s", lines(sorted(back)), lines(sorted(flip(all))))
		}
	}
}

func changeLines(cs []Change) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.String())
	}
	return lines(out)
}
