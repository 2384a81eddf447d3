package filter

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// Addresses in these tests: this node is "me"; peers are "alice", "bob".
const (
	me     = "100.64.0.1"
	alice  = "100.64.0.2"
	bob    = "100.64.0.3"
	me6    = "fd7a::1"
	alice6 = "fd7a::2"
)

// local holds this node's own addresses: the filters of these tests
// accept packets for them only.
var local = []netip.Prefix{netip.MustParsePrefix(me + "/32"), netip.MustParsePrefix(me6 + "/128")}

func TestInboundByRules(t *testing.T) {
	rules := []wire.FilterRule{
		rule([]string{alice + "/32", alice6 + "/128"}, nil, port(22), ports(8000, 8100)),
		rule([]string{"100.64.0.0/10"}, []uint8{protoICMP}),
		rule([]string{bob + "/32"}, []uint8{protoUDP}, port(53)),
		rule([]string{bob + "/32"}, []uint8{protoSCTP, 47}, port(9)),
	}
	tests := []struct {
		name string
		pkt  []byte
		want Verdict
	}{
		{"alice tcp 22", tcp(alice, me, 40000, 22, tcpSYN), Accept},
		{"alice udp 22", udp(alice, me, 40000, 22), Accept},
		{"alice tcp 8000", tcp(alice, me, 40000, 8000, tcpSYN), Accept},
		{"alice tcp 8100", tcp(alice, me, 40000, 8100, tcpSYN), Accept},
		{"alice tcp 8101", tcp(alice, me, 40000, 8101, tcpSYN), DropNoRule},
		{"alice tcp 23", tcp(alice, me, 40000, 23, tcpSYN), DropNoRule},
		{"alice ping", ping(alice, me, 1, false), Accept},
		{"alice v6 tcp 22", tcp(alice6, me6, 40000, 22, tcpSYN), Accept},
		{"alice v6 ping", ping(alice6, me6, 1, false), Accept},
		{"alice v6 udp 53", udp(alice6, me6, 40000, 53), DropNoRule},
		{"bob tcp 22", tcp(bob, me, 40000, 22, tcpSYN), DropNoRule},
		{"bob ping (overlay icmp rule)", ping(bob, me, 1, false), Accept},
		{"bob udp 53", udp(bob, me, 5353, 53), Accept},
		{"bob tcp 53", tcp(bob, me, 5353, 53, tcpSYN), DropNoRule},
		{"bob sctp 9", hdr{src: bob, dst: me, proto: protoSCTP, sport: 1, dport: 9}.bytes(), Accept},
		{"bob sctp 10", hdr{src: bob, dst: me, proto: protoSCTP, sport: 1, dport: 10}.bytes(), DropNoRule},
		{"bob gre", hdr{src: bob, dst: me, proto: 47, payload: 8}.bytes(), Accept},
		{"alice gre", hdr{src: alice, dst: me, proto: 47, payload: 8}.bytes(), DropNoRule},
		{"outsider ping", ping("192.168.1.1", me, 1, false), DropNoRule},
		{"alice icmp timestamp (rule allows icmp)", hdr{src: alice, dst: me, proto: protoICMP, icmpType: 13}.bytes(), Accept},
		{"bob icmpv6 in v4 (not in rule)", hdr{src: bob, dst: me, proto: protoICMPv6, icmpType: icmp6Echo}.bytes(), DropNoRule},
		{"malformed", tcp(alice, me, 40000, 22, tcpSYN)[:30], DropMalformed},
	}
	f, _ := newFilter(t, rules)
	for _, tt := range tests {
		if got := f.Inbound(tt.pkt); got != tt.want {
			t.Errorf("%s: Inbound = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestEmptyRulesDenyAll(t *testing.T) {
	f, _ := newFilter(t, nil)
	for _, pkt := range [][]byte{
		tcp(alice, me, 1, 22, tcpSYN), udp(alice, me, 1, 53), ping(alice, me, 1, false),
		ping(alice6, me6, 1, false), hdr{src: alice, dst: me, proto: 47}.bytes(),
	} {
		if v := f.Inbound(pkt); v != DropNoRule {
			t.Errorf("no rules: Inbound = %v, want %v", v, DropNoRule)
		}
	}
}

// TestTCPFlagsCannotBypass: no combination of flags gets a packet past
// the rules, and the rules do not care about flags.
func TestTCPFlagsCannotBypass(t *testing.T) {
	f, _ := newFilter(t, []wire.FilterRule{rule([]string{alice + "/32"}, []uint8{protoTCP}, port(22))})
	for flags := range 256 {
		if v := f.Inbound(tcp(alice, me, 40000, 23, uint8(flags))); v != DropNoRule {
			t.Errorf("flags %#02x to a closed port: %v, want %v", flags, v, DropNoRule)
		}
		if v := f.Inbound(tcp(bob, me, 40000, 22, uint8(flags))); v != DropNoRule {
			t.Errorf("flags %#02x from a stranger: %v, want %v", flags, v, DropNoRule)
		}
		if v := f.Inbound(tcp(alice, me, 40000, 22, uint8(flags))); v != Accept {
			t.Errorf("flags %#02x to the open port: %v, want accept", flags, v)
		}
	}
}

func TestAlwaysAllow(t *testing.T) {
	f, _ := newFilter(t, nil, func(c *Config) { c.AlwaysAllow = DefaultConfig().AlwaysAllow })
	tests := []struct {
		name string
		pkt  []byte
		want Verdict
	}{
		{"serf tcp", tcp(alice, me, 1, 7946, tcpSYN), Accept},
		{"serf udp", udp(bob, me, 7946, 7946), Accept},
		{"serf udp v6", udp(alice6, me6, 7946, 7946), Accept},
		{"next port", udp(bob, me, 7946, 7947), DropNoRule},
		{"sctp 7946", hdr{src: bob, dst: me, proto: protoSCTP, sport: 1, dport: 7946}.bytes(), DropNoRule},
	}
	for _, tt := range tests {
		if got := f.Inbound(tt.pkt); got != tt.want {
			t.Errorf("%s: Inbound = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestConntrackReplies: with no rules at all, replies to what this node
// sent come in; nothing else does.
func TestConntrackReplies(t *testing.T) {
	quote := func(p []byte) []byte { return p[:min(len(p), 48)] }
	unreach := func(from, to string, quoted []byte) []byte {
		h := hdr{src: from, dst: to, proto: protoICMP, icmpType: icmp4Unreachable, quote: quote(quoted)}
		if strings.Contains(from, ":") {
			h.proto, h.icmpType = protoICMPv6, icmp6Unreachable
		}
		return h.bytes()
	}
	synOut := tcp(me, alice, 40000, 22, tcpSYN)
	udpOut := udp(me, alice, 5353, 53)
	tests := []struct {
		name string
		out  []byte
		in   []byte
		want Verdict
	}{
		{"tcp reply", synOut, tcp(alice, me, 22, 40000, tcpSYN|tcpACK), Accept},
		{"tcp reply from another port", synOut, tcp(alice, me, 23, 40000, tcpSYN|tcpACK), DropNoRule},
		{"tcp reply to another port", synOut, tcp(alice, me, 22, 40001, tcpSYN|tcpACK), DropNoRule},
		{"tcp reply from another host", synOut, tcp(bob, me, 22, 40000, tcpSYN|tcpACK), DropNoRule},
		{"tcp non-SYN does not open", tcp(me, alice, 40000, 22, tcpACK), tcp(alice, me, 22, 40000, tcpACK), DropNoRule},
		{"tcp SYN-ACK does not open", tcp(me, alice, 22, 40000, tcpSYN|tcpACK), tcp(alice, me, 40000, 22, tcpACK), DropNoRule},
		{"tcp v6 reply", tcp(me6, alice6, 40000, 443, tcpSYN), tcp(alice6, me6, 443, 40000, tcpSYN|tcpACK), Accept},
		{"udp reply", udpOut, udp(alice, me, 53, 5353), Accept},
		{"udp reply to another port", udpOut, udp(alice, me, 53, 5354), DropNoRule},
		{"udp is not tcp", udpOut, tcp(alice, me, 53, 5353, tcpACK), DropNoRule},
		{"udp v6 reply", udp(me6, alice6, 5353, 53), udp(alice6, me6, 53, 5353), Accept},
		{"sctp reply", hdr{src: me, dst: alice, proto: protoSCTP, sport: 5, dport: 6}.bytes(), hdr{src: alice, dst: me, proto: protoSCTP, sport: 6, dport: 5}.bytes(), Accept},
		{"gre is not tracked", hdr{src: me, dst: alice, proto: 47}.bytes(), hdr{src: alice, dst: me, proto: 47}.bytes(), DropNoRule},
		{"echo reply", ping(me, alice, 7, false), ping(alice, me, 7, true), Accept},
		{"echo reply, other id", ping(me, alice, 7, false), ping(alice, me, 8, true), DropNoRule},
		{"echo reply from another host", ping(me, alice, 7, false), ping(bob, me, 7, true), DropNoRule},
		{"our ping does not let theirs in", ping(me, alice, 7, false), ping(alice, me, 7, false), DropNoRule},
		{"our echo reply does not open", ping(me, alice, 7, true), ping(alice, me, 7, false), DropNoRule},
		{"icmpv6 echo reply", ping(me6, alice6, 7, false), ping(alice6, me6, 7, true), Accept},
		{"icmp unreachable for our udp", udpOut, unreach(alice, me, udpOut), Accept},
		{"icmp unreachable from another peer", udpOut, unreach(bob, me, udpOut), DropNoRule},
		{"icmp unreachable from an address no peer has", udpOut, unreach("100.64.9.9", me, udpOut), DropNoRule},
		{"icmp time exceeded from another peer", udpOut,
			hdr{src: bob, dst: me, proto: protoICMP, icmpType: icmp4TimeExceed, quote: udpOut}.bytes(), DropNoRule},
		{"icmp unreachable for our ping from another peer", ping(me, alice, 7, false), unreach(bob, me, ping(me, alice, 7, false)), DropNoRule},
		{"icmp unreachable to an address not ours", udpOut, unreach(alice, "100.64.0.9", udpOut), DropNotOwnAddr},
		{"icmp unreachable for our tcp", synOut, unreach(alice, me, synOut), Accept},
		{"icmp unreachable for our ping", ping(me, alice, 7, false), unreach(alice, me, ping(me, alice, 7, false)), Accept},
		{"icmp unreachable for an untracked flow", udpOut, unreach(alice, me, udp(me, alice, 5353, 54)), DropNoRule},
		{"icmp unreachable quoting someone else's packet", udpOut, unreach(alice, me, udp(bob, alice, 5353, 53)), DropNoRule},
		{"icmp unreachable with a short quote", udpOut, unreach(alice, me, udpOut[:27]), DropNoRule},
		{"icmpv6 too big for our tcp", tcp(me6, alice6, 40000, 443, tcpSYN),
			hdr{src: alice6, dst: me6, proto: protoICMPv6, icmpType: icmp6TooBig, quote: tcp(me6, alice6, 40000, 443, tcpSYN)[:48]}.bytes(), Accept},
		{"icmpv6 time exceeded for our udp", udp(me6, alice6, 1, 2),
			hdr{src: alice6, dst: me6, proto: protoICMPv6, icmpType: icmp6TimeExceed, quote: udp(me6, alice6, 1, 2)}.bytes(), Accept},
		{"icmpv6 too big from another peer", tcp(me6, alice6, 40000, 443, tcpSYN),
			hdr{src: "fd7a::3", dst: me6, proto: protoICMPv6, icmpType: icmp6TooBig, quote: tcp(me6, alice6, 40000, 443, tcpSYN)[:48]}.bytes(), DropNoRule},
		{"icmpv6 echo request is not an error", udp(me6, alice6, 1, 2),
			hdr{src: alice6, dst: me6, proto: protoICMPv6, icmpType: icmp6Echo, quote: udp(me6, alice6, 1, 2)}.bytes(), DropNoRule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := newFilter(t, nil)
			f.Outbound(tt.out)
			if got := f.Inbound(tt.in); got != tt.want {
				t.Errorf("Inbound after Outbound = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestICMPErrorForPeersFlow: an ICMP error about a flow a peer opened
// (quoting this node's reply) comes in from that peer only.
func TestICMPErrorForPeersFlow(t *testing.T) {
	f, _ := newFilter(t, []wire.FilterRule{rule([]string{alice + "/32"}, []uint8{protoUDP}, port(53))})
	if v := f.Inbound(udp(alice, me, 5353, 53)); v != Accept {
		t.Fatalf("alice's query: %v, want accept", v)
	}
	reply := udp(me, alice, 53, 5353)
	f.Outbound(reply)
	for _, tt := range []struct {
		from string
		want Verdict
	}{{bob, DropNoRule}, {alice, Accept}} {
		pkt := hdr{src: tt.from, dst: me, proto: protoICMP, icmpType: icmp4Unreachable, quote: reply}.bytes()
		if v := f.Inbound(pkt); v != tt.want {
			t.Errorf("icmp unreachable about our reply to alice, from %s: %v, want %v", tt.from, v, tt.want)
		}
	}
}

// TestOwnAddressesOnly: whatever the rules, AlwaysAllow and the
// connection table say, only packets for the node's own addresses (the
// local prefixes) come in; the others are counted and logged as
// DropNotOwnAddr. A routed subnet is one more local prefix.
func TestOwnAddressesOnly(t *testing.T) {
	const lan, underlay = "172.31.0.2", "10.77.0.2"
	rules := []wire.FilterRule{rule([]string{alice + "/32", alice6 + "/128"}, nil, port(443))}
	tests := []struct {
		name string
		out  []byte // sent first, if any
		in   []byte
		want Verdict
	}{
		{"allowed port, own address", nil, tcp(alice, me, 40000, 443, tcpSYN), Accept},
		{"allowed port, own v6 address", nil, tcp(alice6, me6, 40000, 443, tcpSYN), Accept},
		{"ping, own address", nil, ping(alice, me, 1, false), Accept},
		{"allowed port, a host behind the node", nil, tcp(alice, lan, 40000, 443, tcpSYN), DropNotOwnAddr},
		{"allowed port, the node's underlay address", nil, tcp(alice, underlay, 40000, 443, tcpSYN), DropNotOwnAddr},
		{"allowed port, another peer's address", nil, tcp(alice, bob, 40000, 443, tcpSYN), DropNotOwnAddr},
		{"allowed port, another v6 address", nil, tcp(alice6, "fd7a::99", 40000, 443, tcpSYN), DropNotOwnAddr},
		{"allowed port, v4-mapped own address", nil, tcp(alice6, "::ffff:"+me, 40000, 443, tcpSYN), DropNotOwnAddr},
		{"allowed port, broadcast", nil, udp(alice, "255.255.255.255", 40000, 443), DropNotOwnAddr},
		{"gossip port, a host behind the node", nil, udp(alice, lan, 7946, 7946), DropNotOwnAddr},
		{"gossip port tcp, the node's underlay address", nil, tcp(alice, underlay, 40000, 7946, tcpSYN), DropNotOwnAddr},
		{"ping, a host behind the node", nil, ping(alice, lan, 1, false), DropNotOwnAddr},
		{"first fragment, a host behind the node", nil,
			hdr{src: alice, dst: lan, proto: protoUDP, sport: 1, dport: 443, more: true, fragID: 9, payload: 16}.bytes(), DropNotOwnAddr},
		{"reply to a flow a host behind the node opened", udp(lan, alice, 5353, 53), udp(alice, lan, 53, 5353), DropNotOwnAddr},
		{"reply to our flow, to another address", udp(me, alice, 5353, 53), udp(alice, lan, 53, 5353), DropNotOwnAddr},
		{"reply to our flow", udp(me, alice, 5353, 53), udp(alice, me, 53, 5353), Accept},
		{"icmp error quoting a packet of a host behind the node", udp(lan, alice, 5353, 53),
			hdr{src: alice, dst: lan, proto: protoICMP, icmpType: icmp4Unreachable, quote: udp(lan, alice, 5353, 53)}.bytes(), DropNotOwnAddr},
		{"malformed stays malformed", nil, tcp(alice, lan, 40000, 443, tcpSYN)[:30], DropMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _ := newFilter(t, rules, func(c *Config) { c.AlwaysAllow = DefaultConfig().AlwaysAllow })
			if tt.out != nil {
				f.Outbound(tt.out)
			}
			if got := f.Inbound(tt.in); got != tt.want {
				t.Errorf("Inbound = %v, want %v", got, tt.want)
			}
		})
	}

	t.Run("routed subnet", func(t *testing.T) {
		f, _ := newFilter(t, nil)
		f.SetRules(Compile(append(slices.Clone(local), netip.MustParsePrefix("172.31.0.0/24")), rules))
		if v := f.Inbound(tcp(alice, lan, 40000, 443, tcpSYN)); v != Accept {
			t.Errorf("allowed port, a host in a local subnet: %v, want accept", v)
		}
		if v := f.Inbound(tcp(alice, "172.31.1.2", 40000, 443, tcpSYN)); v != DropNotOwnAddr {
			t.Errorf("allowed port, a host outside the local subnet: %v, want %v", v, DropNotOwnAddr)
		}
	})

	t.Run("counted and logged", func(t *testing.T) {
		var out lockedBuffer
		flows := make(chan Flow, 4)
		f, _ := newFilter(t, rules, func(c *Config) {
			c.Logger = slog.New(slog.NewJSONHandler(&out, nil))
			c.Flows = flows
		})
		f.Inbound(tcp(alice, lan, 40000, 443, tcpSYN))
		if n := f.Stats().Dropped[DropNotOwnAddr]; n != 1 {
			t.Errorf("Stats().Dropped[%v] = %d, want 1", DropNotOwnAddr, n)
		}
		lines := logLines(t, out.String())
		if len(lines) != 1 || lines[0]["why"] != "not own address" || lines[0]["dst"] != lan {
			t.Errorf("log: %v, want one line with why \"not own address\" and dst %s", lines, lan)
		}
		select {
		case fl := <-flows:
			if fl.Verdict != DropNotOwnAddr || fl.Dst.String() != lan {
				t.Errorf("flow record %+v, want verdict %v and dst %s", fl, DropNotOwnAddr, lan)
			}
		default:
			t.Error("no flow record of the drop")
		}
	})

	t.Run("new local prefixes end flows to the old ones", func(t *testing.T) {
		f, _ := newFilter(t, rules)
		pkt := tcp(alice, me, 40000, 443, tcpACK)
		if v := f.Inbound(pkt); v != Accept {
			t.Fatalf("before: %v, want accept", v)
		}
		f.SetRules(Compile([]netip.Prefix{netip.MustParsePrefix("100.64.0.99/32")}, rules))
		if n := f.Stats().Conns; n != 0 {
			t.Errorf("Stats().Conns = %d after %s stopped being local, want 0", n, me)
		}
		if v := f.Inbound(pkt); v != DropNotOwnAddr {
			t.Errorf("after: %v, want %v", v, DropNotOwnAddr)
		}
	})
}

func TestConntrackExpiry(t *testing.T) {
	tests := []struct {
		name    string
		out, in []byte
		timeout time.Duration
	}{
		{"udp", udp(me, alice, 5353, 53), udp(alice, me, 53, 5353), 3 * time.Minute},
		{"tcp", tcp(me, alice, 40000, 22, tcpSYN), tcp(alice, me, 22, 40000, tcpACK), time.Hour},
		{"icmp", ping(me, alice, 9, false), ping(alice, me, 9, true), 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, clock := newFilter(t, nil)
			f.Outbound(tt.out)
			step(f, clock, tt.timeout-time.Second)
			if v := f.Inbound(tt.in); v != Accept {
				t.Fatalf("reply just before the timeout: %v, want accept", v)
			}
			step(f, clock, tt.timeout-time.Second) // the reply renewed the flow
			if v := f.Inbound(tt.in); v != Accept {
				t.Fatalf("reply within a timeout of the last one: %v, want accept", v)
			}
			step(f, clock, tt.timeout)
			if v := f.Inbound(tt.in); v != DropNoRule {
				t.Fatalf("reply after an idle timeout: %v, want %v", v, DropNoRule)
			}
			if n := f.Stats().Conns; n != 0 {
				t.Errorf("Stats().Conns = %d after expiry, want 0", n)
			}
		})
	}
}

func TestConntrackBounded(t *testing.T) {
	// MaxConns 8 is a single bucket: the oldest flow makes room.
	f, clock := newFilter(t, []wire.FilterRule{rule([]string{bob + "/32"}, nil, wire.AllPorts)},
		func(c *Config) { c.MaxConns = 8 })
	for i := range 20 {
		f.Outbound(udp(me, alice, uint16(1000+i), 53))
		step(f, clock, time.Second)
	}
	st := f.Stats()
	if st.Conns != 8 || st.Evicted != 12 {
		t.Errorf("after 20 flows in a table of 8: Conns %d, Evicted %d; want 8 and 12", st.Conns, st.Evicted)
	}
	for i := range 20 {
		want := DropNoRule
		if i >= 12 {
			want = Accept
		}
		if v := f.Inbound(udp(alice, me, 53, uint16(1000+i))); v != want {
			t.Errorf("reply to flow %d: %v, want %v", i, v, want)
		}
	}
	// Flows peers open are let in by the rules but never push out ours.
	for i := range 50 {
		if v := f.Inbound(udp(bob, me, uint16(2000+i), 80)); v != Accept {
			t.Fatalf("inbound flow %d: %v, want accept (a full table never drops)", i, v)
		}
	}
	for i := 12; i < 20; i++ {
		if v := f.Inbound(udp(alice, me, 53, uint16(1000+i))); v != Accept {
			t.Errorf("reply to flow %d after a flood of inbound flows: %v, want accept", i, v)
		}
	}
}

func TestSetRulesRecheck(t *testing.T) {
	r1 := Compile(local, []wire.FilterRule{
		rule([]string{alice + "/32"}, []uint8{protoUDP}, port(53)),
		rule([]string{alice + "/32"}, []uint8{protoTCP}, port(80)),
		rule([]string{bob + "/32"}, []uint8{protoTCP}, port(22)),
	})
	r2 := Compile(local, []wire.FilterRule{rule([]string{bob + "/32"}, []uint8{protoTCP}, port(22))})
	f, _ := newFilter(t, nil)
	f.SetRules(r1)

	aliceDNS := udp(alice, me, 5353, 53)
	aliceWeb := tcp(alice, me, 40000, 80, tcpACK)
	bobSSH := tcp(bob, me, 40000, 22, tcpACK)
	ourReply := udp(alice, me, 443, 50000) // reply to our own flow
	for name, p := range map[string][]byte{"alice dns": aliceDNS, "alice web": aliceWeb, "bob ssh": bobSSH} {
		if v := f.Inbound(p); v != Accept {
			t.Fatalf("%s under the first rules: %v, want accept", name, v)
		}
	}
	f.Outbound(udp(me, alice, 50000, 443))
	if n := f.Stats().Conns; n != 4 {
		t.Fatalf("Stats().Conns = %d, want 4", n)
	}

	f.SetRules(r2)
	if n := f.Stats().Conns; n != 2 {
		t.Errorf("after new rules: Stats().Conns = %d, want 2 (bob's and ours)", n)
	}
	// The host still answers on the ended flows: that must not reopen them.
	f.Outbound(udp(me, alice, 53, 5353))
	f.Outbound(tcp(me, alice, 80, 40000, tcpACK))
	for _, tc := range []struct {
		name string
		pkt  []byte
		want Verdict
	}{
		{"alice dns", aliceDNS, DropNoRule},
		{"alice web", aliceWeb, DropNoRule},
		{"bob ssh", bobSSH, Accept},
		{"reply to our flow", ourReply, Accept},
	} {
		if v := f.Inbound(tc.pkt); v != tc.want {
			t.Errorf("%s under the new rules: %v, want %v", tc.name, v, tc.want)
		}
	}

	f.SetRules(r1)
	if v := f.Inbound(aliceDNS); v != Accept {
		t.Errorf("alice dns with the first rules back: %v, want accept", v)
	}
	f.SetRules(Compile(local, nil))
	for name, p := range map[string][]byte{"alice dns": aliceDNS, "bob ssh": bobSSH} {
		if v := f.Inbound(p); v != DropNoRule {
			t.Errorf("%s with no rules: %v, want %v", name, v, DropNoRule)
		}
	}
	if v := f.Inbound(ourReply); v != Accept {
		t.Errorf("reply to our flow with no rules: %v, want accept", v)
	}
}

// TestStaleEntryRechecked: an entry made under old rules (as by a packet
// racing SetRules) is judged again by the current rules.
func TestStaleEntryRechecked(t *testing.T) {
	f, _ := newFilter(t, []wire.FilterRule{rule([]string{alice + "/32"}, []uint8{protoUDP}, port(53))})
	pkt := udp(alice, me, 5353, 53)
	old := f.rules.Load()
	f.SetRules(Compile(local, nil))
	if v := f.inbound(pkt, f.now.Load(), old); v != Accept { // decided with the old rules
		t.Fatalf("with the old rules: %v, want accept", v)
	}
	if v := f.Inbound(pkt); v != DropNoRule {
		t.Errorf("with the current rules: %v, want %v", v, DropNoRule)
	}
}

func TestFragments(t *testing.T) {
	rules := []wire.FilterRule{rule([]string{alice + "/32", alice6 + "/128"}, []uint8{protoUDP}, port(53))}
	frag := func(src, dst string, dport uint16, id uint32, off int, more bool) []byte {
		return hdr{src: src, dst: dst, proto: protoUDP, sport: 5353, dport: dport, fragID: id, fragOff: off, more: more, payload: 16}.bytes()
	}
	for _, fam := range []struct{ alice, bob, me string }{{alice, bob, me}, {alice6, "fd7a::3", me6}} {
		t.Run(fam.me, func(t *testing.T) {
			f, clock := newFilter(t, rules)
			steps := []struct {
				name string
				pkt  []byte
				want Verdict
			}{
				{"later fragment first", frag(fam.alice, fam.me, 0, 1, 1480, false), DropFragment},
				{"first fragment to a closed port", frag(fam.alice, fam.me, 54, 2, 0, true), DropNoRule},
				{"its later fragment", frag(fam.alice, fam.me, 0, 2, 1480, false), DropFragment},
				{"first fragment to the open port", frag(fam.alice, fam.me, 53, 3, 0, true), Accept},
				{"its second fragment", frag(fam.alice, fam.me, 0, 3, 1480, true), Accept},
				{"its last fragment", frag(fam.alice, fam.me, 0, 3, 2960, false), Accept},
				{"another datagram's fragment", frag(fam.alice, fam.me, 0, 4, 1480, false), DropFragment},
				{"same id from another host", frag(fam.bob, fam.me, 0, 3, 1480, false), DropFragment},
			}
			for _, s := range steps {
				if v := f.Inbound(s.pkt); v != s.want {
					t.Errorf("%s: %v, want %v", s.name, v, s.want)
				}
			}
			step(f, clock, fragTimeout)
			if v := f.Inbound(frag(fam.alice, fam.me, 0, 3, 4440, false)); v != DropFragment {
				t.Errorf("fragment after the reassembly timeout: %v, want %v", v, DropFragment)
			}
		})
	}
	t.Run("v6 options after the fragment header", func(t *testing.T) {
		f, _ := newFilter(t, rules)
		// The first fragment: fragment header (next: destination options),
		// options, UDP. Later fragments: fragment header (next: options).
		first := hdr{src: alice6, dst: me6, proto: protoUDP, sport: 5353, dport: 53, exts: []uint8{44, 60}, more: true, fragID: 5}.bytes()
		later := hdr{src: alice6, dst: me6, proto: protoUDP, exts: []uint8{44, 60}, fragOff: 64, fragID: 5, payload: 8}.bytes()
		if v := f.Inbound(first); v != Accept {
			t.Fatalf("first fragment: %v, want accept", v)
		}
		if v := f.Inbound(later); v != Accept {
			t.Errorf("later fragment: %v, want accept", v)
		}
	})
	t.Run("reply", func(t *testing.T) {
		f, _ := newFilter(t, nil)
		f.Outbound(udp(me, bob, 5353, 53))
		first := hdr{src: bob, dst: me, proto: protoUDP, sport: 53, dport: 5353, fragID: 9, more: true, payload: 16}.bytes()
		later := hdr{src: bob, dst: me, proto: protoUDP, fragID: 9, fragOff: 24, payload: 16}.bytes()
		if v := f.Inbound(first); v != Accept {
			t.Errorf("first fragment of a reply: %v, want accept", v)
		}
		if v := f.Inbound(later); v != Accept {
			t.Errorf("later fragment of a reply: %v, want accept", v)
		}
	})
}

// logLine is a JSON log line of the filter.
type logLine map[string]any

func logLines(t *testing.T, out string) []logLine {
	t.Helper()
	var lines []logLine
	for _, s := range strings.Split(strings.TrimSpace(out), "\n") {
		if s == "" {
			continue
		}
		var l logLine
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("log line %q: %v", s, err)
		}
		lines = append(lines, l)
	}
	return lines
}

func TestLogDenied(t *testing.T) {
	var out lockedBuffer
	names := map[string]string{alice: "alice"}
	f, clock := newFilter(t, nil, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&out, nil))
		c.NameOf = func(a netip.Addr) string { return names[a.String()] }
	})
	f.Inbound(tcp(alice, me, 40000, 23, tcpSYN))
	lines := logLines(t, out.String())
	if len(lines) != 1 {
		t.Fatalf("got %d log lines, want 1:\n%s", len(lines), out.String())
	}
	want := logLine{"level": "INFO", "msg": "packet denied", "src": alice, "dst": me, "proto": "tcp", "port": 23.0, "peer": "alice", "why": "no rule"}
	for k, v := range want {
		if lines[0][k] != v {
			t.Errorf("log field %s = %v, want %v (line %v)", k, lines[0][k], v, lines[0])
		}
	}

	for range 1000 {
		f.Inbound(udp(bob, me, 1, 2))
	}
	if n := len(logLines(t, out.String())); n > logBurst+1 {
		t.Errorf("a flood of 1000 denied packets logged %d lines, want at most %d", n, logBurst+1)
	}
	step(f, clock, time.Second)
	f.Inbound(ping(bob, me, 1, false))
	lines = logLines(t, out.String())
	last := lines[len(lines)-1]
	if last["proto"] != "icmp" || last["port"] != nil || last["peer"] != nil {
		t.Errorf("denied ping from an unnamed peer logged as %v; want proto icmp, no port, no peer", last)
	}
	if s, _ := last["suppressed"].(float64); s < 900 {
		t.Errorf("the line after a flood says suppressed=%v, want the count of lines not written (about 990)", last["suppressed"])
	}
}

func TestStats(t *testing.T) {
	f, _ := newFilter(t, []wire.FilterRule{rule([]string{alice + "/32"}, nil, port(22))})
	f.Inbound(tcp(alice, me, 1, 22, tcpSYN))
	f.Inbound(tcp(alice, me, 1, 22, tcpACK))
	f.Inbound(tcp(alice, me, 1, 23, tcpSYN))
	f.Inbound([]byte{0x45})
	f.Inbound(hdr{src: alice, dst: me, proto: protoUDP, fragOff: 800, payload: 8}.bytes())
	f.Outbound(udp(me, bob, 1, 2))
	got := f.Stats()
	want := Stats{Accepted: 2, Dropped: map[Verdict]uint64{DropNoRule: 1, DropMalformed: 1, DropFragment: 1}, Conns: 2,
		DroppedFrom: map[netip.Addr]uint64{netip.MustParseAddr(alice): 2, {}: 1}} // the malformed one has no source
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestConfig(t *testing.T) {
	for _, c := range []Config{
		{MaxConns: -1},
		{MaxConns: 1 << 25},
		{TCPTimeout: -time.Second},
		{UDPTimeout: time.Microsecond},
		{AlwaysAllow: []ProtoPort{{Proto: protoICMP, Port: 1}}},
	} {
		if f, err := New(c); err == nil {
			f.Close()
			t.Errorf("New(%+v) succeeded, want an error", c)
		}
	}
	c := Config{}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if d := DefaultConfig(); c.MaxConns != d.MaxConns || c.TCPTimeout != d.TCPTimeout || c.AlwaysAllow != nil || c.Logger == nil || c.Clock == nil {
		t.Errorf("Validate filled %+v", c)
	}
	f, err := New(Config{MaxConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	f.Close() // twice is fine
}

// TestConcurrent runs the packet path, SetRules and Stats at once (for the
// race detector) and checks that a stranger never gets in.
func TestConcurrent(t *testing.T) {
	f, _ := newFilter(t, nil, func(c *Config) { c.MaxConns = 64 })
	r1 := Compile(local, []wire.FilterRule{rule([]string{alice + "/32"}, nil, wire.AllPorts)})
	r2 := Compile(local, []wire.FilterRule{rule([]string{alice + "/32"}, []uint8{protoUDP}, ports(0, 1000))})
	var wg sync.WaitGroup
	done := make(chan struct{})
	errs := make(chan error, 8)
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 0))
			for range 20000 {
				sp, dp := uint16(rng.IntN(50)), uint16(rng.IntN(2000))
				f.Outbound(udp(me, alice, sp, dp))
				f.Inbound(udp(alice, me, dp, sp))
				f.Inbound(tcp(alice, me, sp, dp, tcpSYN))
				if v := f.Inbound(udp(bob, me, dp, sp)); v == Accept {
					errs <- fmt.Errorf("a stranger's packet got in")
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	for i := 0; ; i++ {
		select {
		case <-done:
		default:
			f.SetRules([]*Rules{r1, r2}[i%2])
			_ = f.Stats()
			continue
		}
		break
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
