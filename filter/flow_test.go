package filter

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/wiremesh/wiremesh/wire"
)

// drain returns the records waiting in ch.
func drain(ch chan Flow) []Flow {
	var out []Flow
	for {
		select {
		case fl := <-ch:
			out = append(out, fl)
		default:
			return out
		}
	}
}

func TestFlowRecords(t *testing.T) {
	ch := make(chan Flow, 64)
	rules := []wire.FilterRule{
		rule([]string{bob + "/32"}, []uint8{protoUDP}, port(53)),
		rule([]string{alice + "/32"}, nil, port(22)),
		rule([]string{"100.64.0.0/10"}, []uint8{protoICMP}),
	}
	f, _ := newFilter(t, nil, func(c *Config) {
		c.Flows, c.NewFlows = ch, true
		c.AlwaysAllow = DefaultConfig().AlwaysAllow
	})
	rs := CompilePolicy(7, local, rules)
	f.SetRules(rs)

	f.Inbound(tcp(alice, me, 40000, 22, tcpSYN)) // new flow, rule 1
	f.Inbound(tcp(alice, me, 40000, 22, tcpACK)) // same flow: no record
	f.Inbound(tcp(bob, me, 40001, 23, tcpSYN))   // denied
	f.Inbound(ping(bob, me, 9, false))           // new flow, rule 2
	f.Inbound(udp(bob, me, 7946, 7946))          // new flow, mesh port
	f.Inbound([]byte{0x45, 0, 0})                // malformed
	f.Outbound(udp(me, bob, 5353, 53))
	f.Inbound(udp(bob, me, 53, 5353)) // a reply: no record

	a, b, m := netip.MustParseAddr(alice), netip.MustParseAddr(bob), netip.MustParseAddr(me)
	want := []Flow{
		{Verdict: Accept, Src: a, Dst: m, Proto: protoTCP, Ports: true, SrcPort: 40000, DstPort: 22, Rules: rs},
		{Verdict: DropNoRule, Src: b, Dst: m, Proto: protoTCP, Ports: true, SrcPort: 40001, DstPort: 23, Rules: rs},
		{Verdict: Accept, Src: b, Dst: m, Proto: protoICMP, Rules: rs},
		{Verdict: Accept, Src: b, Dst: m, Proto: protoUDP, Ports: true, SrcPort: 7946, DstPort: 7946, Always: true, Rules: rs},
		{Verdict: DropMalformed, Rules: rs},
	}
	got := drain(ch)
	if diff := cmp.Diff(want, got, cmp.Comparer(func(x, y *Rules) bool { return x == y }), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Fatalf("flow records (-want +got):\n%s", diff)
	}
	for i, wantRule := range []int{1, -1, 2, -1} {
		fl := got[i]
		if r := fl.Rules.Match(fl.Src, fl.Proto, fl.DstPort); r != wantRule {
			t.Errorf("record %d: Match = %d, want %d", i, r, wantRule)
		}
	}
	if p := got[0].Rules.Policy(); p != 7 {
		t.Errorf("Policy() = %d, want 7", p)
	}
}

func TestFlowRecordsOff(t *testing.T) {
	ch := make(chan Flow, 8)
	f, _ := newFilter(t, []wire.FilterRule{rule([]string{alice + "/32"}, nil, port(22))}, func(c *Config) { c.Flows = ch })
	f.Inbound(tcp(alice, me, 1, 22, tcpSYN))
	f.Inbound(tcp(alice, me, 1, 23, tcpSYN))
	got := drain(ch)
	if len(got) != 1 || got[0].Verdict != DropNoRule {
		t.Fatalf("without NewFlows got records %+v, want only the drop", got)
	}
}

// TestFlowRecordsLimited: a flood is cut down by the limiters, the next
// record says how many were suppressed, and a full channel loses records
// without blocking.
func TestFlowRecordsLimited(t *testing.T) {
	ch := make(chan Flow, 2*newFlowBurst)
	f, clock := newFilter(t, []wire.FilterRule{rule([]string{"0.0.0.0/0"}, nil, port(80))}, func(c *Config) {
		c.Flows, c.NewFlows = ch, true
	})
	for i := range 3000 {
		f.Inbound(tcp(alice, me, uint16(1000+i), 80, tcpSYN))
		f.Inbound(tcp(bob, me, uint16(1000+i), 81, tcpSYN))
	}
	got := drain(ch)
	var news, drops int
	for _, fl := range got {
		if fl.Verdict == Accept {
			news++
		} else {
			drops++
		}
	}
	if news != newFlowBurst || drops != logBurst {
		t.Errorf("a flood gave %d new-flow and %d drop records, want %d and %d", news, drops, newFlowBurst, logBurst)
	}
	step(f, clock, time.Second)
	f.Inbound(tcp(alice, me, 1, 80, tcpSYN))
	f.Inbound(tcp(bob, me, 1, 81, tcpSYN))
	got = drain(ch)
	if len(got) != 2 || got[0].Suppressed != 3000-newFlowBurst || got[1].Suppressed != 3000-logBurst {
		t.Errorf("records after the flood: %+v; want suppressed %d and %d", got, 3000-newFlowBurst, 3000-logBurst)
	}
	st := f.Stats()
	if st.Suppressed != 3000-logBurst || st.NewFlowsSuppressed != 3000-newFlowBurst || st.FlowsLost != 0 {
		t.Errorf("Stats = %+v", st)
	}

	// A full channel: records are lost, counted, and nothing blocks.
	small := make(chan Flow, 1)
	f2, _ := newFilter(t, nil, func(c *Config) { c.Flows = small })
	for i := range 5 {
		f2.Inbound(tcp(bob, me, uint16(i), 81, tcpSYN))
	}
	if st := f2.Stats(); st.FlowsLost != 4 {
		t.Errorf("FlowsLost = %d, want 4", st.FlowsLost)
	}
}

// TestMatchAgreesWithAllows: Match finds a rule exactly when the compiled
// matcher accepts, and the rule it names accepts the packet.
func TestMatchAgreesWithAllows(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := range 500 {
		rules := randRules(rng, rng.IntN(12))
		r := CompilePolicy(1, local, rules)
		for range 100 {
			src := randAddr(rng)
			proto := []uint8{protoTCP, protoUDP, protoICMP, protoICMPv6, protoSCTP, 47}[rng.IntN(6)]
			port := randPort(rng)
			i := r.Match(src, proto, port)
			if allows := r.Allows(src, proto, port); (i >= 0) != allows {
				t.Fatalf("iteration %d: Match(%s, %d, %d) = %d but Allows = %v\nrules: %s", iter, src, proto, port, i, allows, fmtRules(rules))
			}
			if i >= 0 && !slowAllows(rules[i:i+1], src, proto, port) {
				t.Fatalf("iteration %d: Match names rule %d, which does not accept %s %d %d", iter, i, src, proto, port)
			}
		}
	}
	if Compile(nil, nil).Match(netip.MustParseAddr(alice), protoTCP, 22) != -1 || (*Rules)(nil).Match(netip.MustParseAddr(alice), protoTCP, 22) != -1 {
		t.Error("Match on rules without sources found one")
	}
}

// TestNoAllocsFlows: recording flows allocates nothing either.
func TestNoAllocsFlows(t *testing.T) {
	ch := make(chan Flow, 16)
	f, clock := newFilter(t, nil, func(c *Config) { c.Flows, c.NewFlows, c.MaxConns = ch, true, 4096 })
	f.SetRules(CompilePolicy(3, local, []wire.FilterRule{rule([]string{alice + "/32", alice6 + "/128"}, nil, port(22))}))
	newFlow := tcp(alice, me, 1, 22, tcpSYN)
	newFlow6 := tcp(alice6, me6, 1, 22, tcpSYN)
	denied := tcp(bob, me, 1, 23, tcpSYN)
	var i uint16
	tests := []struct {
		name string
		fn   func()
	}{
		{"new flow recorded", func() {
			i++
			binary.BigEndian.PutUint16(newFlow[20:], i)
			step(f, clock, time.Second) // the limiter lets every one through
			f.Inbound(newFlow)
			<-ch
		}},
		{"new flow v6 recorded", func() {
			i++
			binary.BigEndian.PutUint16(newFlow6[40:], i)
			step(f, clock, time.Second)
			f.Inbound(newFlow6)
			<-ch
		}},
		{"new flow, channel full", func() {
			i++
			binary.BigEndian.PutUint16(newFlow[20:], i)
			step(f, clock, time.Second)
			f.Inbound(newFlow)
		}},
		{"new flow suppressed", func() {
			i++
			binary.BigEndian.PutUint16(newFlow[20:], i)
			f.Inbound(newFlow)
		}},
		{"drop recorded", func() {
			for len(ch) > 0 {
				<-ch
			}
			step(f, clock, time.Second)
			f.Inbound(denied)
			<-ch
		}},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(1000, tt.fn); n != 0 {
			t.Errorf("%s: %v allocations per packet, want 0", tt.name, n)
		}
	}
	if st := f.Stats(); st.FlowsLost == 0 || st.NewFlowsSuppressed == 0 {
		t.Errorf("the full-channel and suppressed cases did not happen: %+v", st)
	}
}
