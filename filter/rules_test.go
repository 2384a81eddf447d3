package filter

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

// slowAllows is the obvious matcher the compiled one must agree with.
func slowAllows(rules []wire.FilterRule, src netip.Addr, proto uint8, port uint16) bool {
	for _, r := range rules {
		protos := r.Protos
		if len(protos) == 0 {
			protos = []uint8{wire.ProtoTCP, wire.ProtoUDP, wire.ProtoICMP, wire.ProtoICMPv6}
		}
		if !slices.Contains(protos, proto) {
			continue
		}
		if !slices.ContainsFunc(r.Srcs, func(p netip.Prefix) bool { return p.Contains(src) }) {
			continue
		}
		if proto != wire.ProtoTCP && proto != wire.ProtoUDP && proto != protoSCTP {
			return true
		}
		for _, pr := range r.Ports {
			if port >= pr.First && port <= pr.Last {
				return true
			}
		}
	}
	return false
}

func TestRulesAllows(t *testing.T) {
	any4, any6 := []string{"0.0.0.0/0"}, []string{"::/0"}
	type probe struct {
		src   string
		proto uint8
		port  uint16
		want  bool
	}
	tests := []struct {
		name   string
		rules  []wire.FilterRule
		probes []probe
	}{
		{"no rules deny all", nil, []probe{
			{"10.0.0.1", protoTCP, 22, false}, {"fd00::1", protoICMPv6, 0, false}, {"0.0.0.0", protoICMP, 0, false},
		}},
		{"default protos", []wire.FilterRule{rule([]string{"10.0.0.1/32"}, nil, port(22))}, []probe{
			{"10.0.0.1", protoTCP, 22, true}, {"10.0.0.1", protoUDP, 22, true},
			{"10.0.0.1", protoICMP, 0, true}, {"10.0.0.1", protoICMPv6, 0, true},
			{"10.0.0.1", protoSCTP, 22, false}, {"10.0.0.1", 47, 0, false},
			{"10.0.0.1", protoTCP, 23, false}, {"10.0.0.2", protoTCP, 22, false},
		}},
		{"no ports: only portless protocols", []wire.FilterRule{rule(any4, nil)}, []probe{
			{"1.2.3.4", protoTCP, 22, false}, {"1.2.3.4", protoUDP, 0, false}, {"1.2.3.4", protoICMP, 0, true},
		}},
		{"sctp and gre by proto", []wire.FilterRule{rule(any4, []uint8{protoSCTP, 47}, port(9))}, []probe{
			{"1.2.3.4", protoSCTP, 9, true}, {"1.2.3.4", protoSCTP, 10, false},
			{"1.2.3.4", 47, 0, true}, {"1.2.3.4", 47, 9, true}, {"1.2.3.4", protoTCP, 9, false},
		}},
		{"port bounds", []wire.FilterRule{rule(any4, []uint8{protoTCP}, port(0), port(1), port(65535))}, []probe{
			{"1.1.1.1", protoTCP, 0, true}, {"1.1.1.1", protoTCP, 1, true}, {"1.1.1.1", protoTCP, 2, false},
			{"1.1.1.1", protoTCP, 65534, false}, {"1.1.1.1", protoTCP, 65535, true},
		}},
		{"range edges", []wire.FilterRule{rule(any4, []uint8{protoUDP}, ports(1000, 1999), ports(3000, 3000))}, []probe{
			{"1.1.1.1", protoUDP, 999, false}, {"1.1.1.1", protoUDP, 1000, true}, {"1.1.1.1", protoUDP, 1999, true},
			{"1.1.1.1", protoUDP, 2000, false}, {"1.1.1.1", protoUDP, 2999, false}, {"1.1.1.1", protoUDP, 3000, true},
			{"1.1.1.1", protoUDP, 3001, false},
		}},
		{"all ports", []wire.FilterRule{rule(any4, []uint8{protoTCP}, wire.AllPorts)}, []probe{
			{"9.9.9.9", protoTCP, 0, true}, {"9.9.9.9", protoTCP, 65535, true}, {"9.9.9.9", protoUDP, 1, false},
		}},
		{"empty range matches nothing", []wire.FilterRule{rule(any4, []uint8{protoTCP}, ports(10, 5))}, []probe{
			{"1.1.1.1", protoTCP, 5, false}, {"1.1.1.1", protoTCP, 7, false}, {"1.1.1.1", protoTCP, 10, false},
		}},
		{"multiple srcs", []wire.FilterRule{rule([]string{"10.0.0.1/32", "10.1.0.0/16", "fd00::/64"}, []uint8{protoTCP}, port(443))}, []probe{
			{"10.0.0.1", protoTCP, 443, true}, {"10.0.0.2", protoTCP, 443, false},
			{"10.1.255.255", protoTCP, 443, true}, {"10.2.0.0", protoTCP, 443, false}, {"10.0.255.255", protoTCP, 443, false},
			{"fd00::ffff", protoTCP, 443, true}, {"fd00:0:0:1::", protoTCP, 443, false},
		}},
		{"v4 and v6 apart", []wire.FilterRule{rule(any4, []uint8{protoTCP}, port(1)), rule([]string{"fd00::/8"}, []uint8{protoUDP}, port(2))}, []probe{
			{"1.1.1.1", protoTCP, 1, true}, {"::1", protoTCP, 1, false}, {"::ffff:1.1.1.1", protoTCP, 1, false},
			{"fd12::1", protoUDP, 2, true}, {"1.1.1.1", protoUDP, 2, false},
		}},
		{"nested prefixes each keep their ports", []wire.FilterRule{
			rule(any6, []uint8{protoTCP}, port(80)),
			rule([]string{"fd00::/8"}, []uint8{protoTCP}, port(22)),
			rule([]string{"fd00::5/128"}, []uint8{protoTCP}, port(5432)),
		}, []probe{
			{"fd00::5", protoTCP, 80, true}, {"fd00::5", protoTCP, 22, true}, {"fd00::5", protoTCP, 5432, true},
			{"fd00::6", protoTCP, 5432, false}, {"fd00::6", protoTCP, 22, true}, {"fe00::", protoTCP, 22, false},
			{"fe00::", protoTCP, 80, true}, {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", protoTCP, 80, true},
		}},
		{"unmasked prefix and zero prefix", []wire.FilterRule{{Srcs: []netip.Prefix{netip.MustParsePrefix("10.0.0.77/8"), {}}, Ports: []wire.PortRange{port(1)}}}, []probe{
			{"10.200.0.1", protoTCP, 1, true}, {"11.0.0.0", protoTCP, 1, false},
		}},
		{"last address of the space", []wire.FilterRule{rule([]string{"255.255.255.255/32"}, nil, port(1))}, []probe{
			{"255.255.255.255", protoTCP, 1, true}, {"255.255.255.254", protoTCP, 1, false},
		}},
	}
	for _, tt := range tests {
		r := Compile(nil, tt.rules)
		for _, p := range tt.probes {
			src := netip.MustParseAddr(p.src)
			if got := r.Allows(src, p.proto, p.port); got != p.want {
				t.Errorf("%s: Allows(%s, proto %d, port %d) = %v, want %v", tt.name, p.src, p.proto, p.port, got, p.want)
			}
			if slow := slowAllows(tt.rules, src, p.proto, p.port); slow != p.want {
				t.Errorf("%s: the slow matcher says %v for %s proto %d port %d; the test is wrong", tt.name, slow, p.src, p.proto, p.port)
			}
		}
	}
}

// randRules makes n random rules over a small address and port space, so
// that prefixes nest, overlap and share ports.
func randRules(rng *rand.Rand, n int) []wire.FilterRule {
	rules := make([]wire.FilterRule, n)
	for i := range rules {
		r := &rules[i]
		for range 1 + rng.IntN(3) {
			r.Srcs = append(r.Srcs, randPrefix(rng))
		}
		if rng.IntN(3) > 0 {
			for range 1 + rng.IntN(3) {
				r.Protos = append(r.Protos, []uint8{protoTCP, protoUDP, protoICMP, protoICMPv6, protoSCTP, 47}[rng.IntN(6)])
			}
		}
		for range rng.IntN(4) {
			a, b := randPort(rng), randPort(rng)
			if rng.IntN(8) > 0 && a > b {
				a, b = b, a
			}
			r.Ports = append(r.Ports, wire.PortRange{First: a, Last: b})
		}
	}
	return rules
}

func randPrefix(rng *rand.Rand) netip.Prefix {
	if rng.IntN(2) == 0 {
		a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(4)), byte(rng.IntN(8))})
		return netip.PrefixFrom(a, []int{0, 8, 16, 24, 30, 32, 32}[rng.IntN(7)])
	}
	a := netip.AddrFrom16([16]byte{0: 0xfd, 7: byte(rng.IntN(4)), 15: byte(rng.IntN(8))})
	return netip.PrefixFrom(a, []int{0, 8, 64, 125, 128, 128}[rng.IntN(6)])
}

func randPort(rng *rand.Rand) uint16 {
	if rng.IntN(4) == 0 {
		return []uint16{0, 1, 65534, 65535}[rng.IntN(4)]
	}
	return uint16(rng.IntN(40))
}

func randAddr(rng *rand.Rand) netip.Addr {
	if rng.IntN(2) == 0 {
		return netip.AddrFrom4([4]byte{byte(9 + rng.IntN(3)), byte(rng.IntN(5)), byte(rng.IntN(5)), byte(rng.IntN(9))})
	}
	return netip.AddrFrom16([16]byte{0: byte(0xfc + rng.IntN(3)), 7: byte(rng.IntN(5)), 15: byte(rng.IntN(9))})
}

// TestRulesDifferential checks the compiled matcher against slowAllows on
// random rule sets and random packets.
func TestRulesDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	probes := 0
	for iter := range 2000 {
		rules := randRules(rng, rng.IntN(12))
		r := Compile(nil, rules)
		for range 200 {
			src := randAddr(rng)
			proto := []uint8{protoTCP, protoUDP, protoICMP, protoICMPv6, protoSCTP, 47, 99}[rng.IntN(7)]
			port := randPort(rng)
			probes++
			if got, want := r.Allows(src, proto, port), slowAllows(rules, src, proto, port); got != want {
				t.Fatalf("iteration %d: Allows(%s, proto %d, port %d) = %v, slow matcher says %v\nrules: %s",
					iter, src, proto, port, got, want, fmtRules(rules))
			}
		}
	}
	t.Logf("%d probes agree", probes)
}

func fmtRules(rules []wire.FilterRule) string {
	s := ""
	for _, r := range rules {
		s += fmt.Sprintf("\n  srcs=%v protos=%v ports=%v", r.Srcs, r.Protos, r.Ports)
	}
	return s
}

// TestRulesScale checks that many rules sharing ports compile to few
// policies and intervals in proportion to the prefixes.
func TestRulesScale(t *testing.T) {
	rules := meshRules(rand.New(rand.NewPCG(3, 4)), 10000)
	r := Compile(nil, rules)
	if len(r.policies) > len(r.nodes)/4 {
		t.Errorf("10,000 rules compiled to %d policies for %d prefixes; want them shared", len(r.policies), len(r.nodes))
	}
	if n := len(r.v4.starts) + len(r.v6.starts); n > 4*len(r.nodes)+2 {
		t.Errorf("%d intervals for %d prefixes", n, len(r.nodes))
	}
	t.Logf("10,000 rules: %d prefixes, %d policies, %d+%d intervals", len(r.nodes), len(r.policies), len(r.v4.starts), len(r.v6.starts))
}
