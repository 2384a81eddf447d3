package filter

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed corpora under testdata/fuzz")

// slowPkt is a packet as slowParse reads it.
type slowPkt struct {
	why          Verdict // Accept: parsed
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16 // ICMP: sport is the echo identifier
	icmpType     uint8
	flags        uint8
	frag         string // "", "first" or "later"
	body         []byte // from the transport header to the end of the packet
}

// slowParse is the reference parser: plain code after the RFCs, written
// apart from parse, with the same policy on what is dropped.
func slowParse(b []byte, quote bool) slowPkt {
	var p slowPkt
	p.why = DropMalformed
	if len(b) < 1 {
		return p
	}
	var rest []byte
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return p
		}
		hlen := int(b[0]&15) * 4
		if hlen < 20 || len(b) < hlen {
			return p
		}
		if !quote {
			tot := int(b[2])<<8 | int(b[3])
			if tot < hlen || tot > len(b) {
				return p
			}
			b = b[:tot]
		}
		p.src = netip.AddrFrom4([4]byte(b[12:16]))
		p.dst = netip.AddrFrom4([4]byte(b[16:20]))
		p.proto = b[9]
		offset := (int(b[6])<<8 | int(b[7])) & 0x1fff
		more := b[6]&0x20 != 0
		if offset > 0 {
			p.frag = "later"
			if offset*8 < minHdr(p.proto) {
				p.why = DropFragment
				return p
			}
			p.why = Accept
			return p
		}
		if more {
			p.frag = "first"
		}
		rest = b[hlen:]
	case 6:
		if len(b) < 40 {
			return p
		}
		if !quote {
			n := 40 + (int(b[4])<<8 | int(b[5]))
			if n > len(b) {
				return p
			}
			b = b[:n]
		}
		p.src = netip.AddrFrom16([16]byte(b[8:24]))
		p.dst = netip.AddrFrom16([16]byte(b[24:40]))
		next := b[6]
		rest = b[40:]
		short := func() slowPkt {
			if p.frag == "first" {
				p.why = DropFragment
			}
			return p
		}
		seenFrag, past := false, false // past: a header claimed more bytes than there are
		for headers := 0; slices.Contains([]uint8{0, 43, 44, 51, 60, 135, 139, 140, 253, 254}, next); headers++ {
			if headers == 8 {
				return p
			}
			if past || len(rest) < 8 {
				return short()
			}
			size := 8 * (int(rest[1]) + 1)
			switch next {
			case 0:
				if headers != 0 {
					return p
				}
			case 43:
				if rest[3] != 0 {
					return p
				}
			case 51:
				size = 4 * (int(rest[1]) + 2)
			case 44:
				if seenFrag {
					return p
				}
				seenFrag, size = true, 8
				if offset := int(binary.BigEndian.Uint16(rest[2:4]) >> 3); offset > 0 {
					p.frag, p.proto = "later", rest[0]
					if offset*8 < minHdr(p.proto) {
						p.why = DropFragment
						return p
					}
					p.why = Accept
					return p
				}
				if rest[3]&1 == 1 {
					p.frag = "first"
				}
			}
			next = rest[0]
			if size > len(rest) {
				past, rest = true, nil
			} else {
				rest = rest[size:]
			}
		}
		if past {
			return short()
		}
		p.proto = next
	default:
		return p
	}
	need := minHdr(p.proto)
	if quote && need > 8 {
		need = 8
	}
	if len(rest) < need {
		if p.frag == "first" {
			p.why = DropFragment
		}
		return p
	}
	p.body = rest
	switch p.proto {
	case 6:
		p.sport, p.dport = binary.BigEndian.Uint16(rest), binary.BigEndian.Uint16(rest[2:])
		if !quote {
			if hl := int(rest[12]>>4) * 4; hl < 20 || hl > len(rest) {
				if p.frag == "first" {
					p.why = DropFragment
				}
				return p
			}
			p.flags = rest[13]
		}
	case 17, 132:
		p.sport, p.dport = binary.BigEndian.Uint16(rest), binary.BigEndian.Uint16(rest[2:])
	case 1, 58:
		p.icmpType = rest[0]
		p.sport = binary.BigEndian.Uint16(rest[4:])
	}
	p.why = Accept
	return p
}

// minHdr is how many transport header bytes the filter needs per protocol.
func minHdr(proto uint8) int {
	return map[uint8]int{6: 20, 132: 12, 17: 8, 1: 8, 58: 8}[proto]
}

func FuzzParse(f *testing.F) {
	for _, s := range seedPackets() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p packet
		v := parse(b, &p)
		sp := slowParse(b, false)
		if v != sp.why {
			t.Fatalf("parse = %v, reference parser = %v, packet %x", v, sp.why, b)
		}
		if v != Accept {
			return
		}
		frag := map[uint8]string{fragNone: "", fragFirst: "first", fragLater: "later"}[p.frag]
		got := fmt.Sprintf("%v>%v proto %d frag %q", p.src.netip(p.fam == 6), p.dst.netip(p.fam == 6), p.proto, frag)
		want := fmt.Sprintf("%v>%v proto %d frag %q", sp.src, sp.dst, sp.proto, sp.frag)
		if p.frag != fragLater {
			got += fmt.Sprintf(" ports %d>%d icmp %d flags %#x", p.sport, p.dport, p.icmpType, p.flags)
			want += fmt.Sprintf(" ports %d>%d icmp %d flags %#x", sp.sport, sp.dport, sp.icmpType, sp.flags)
			if p.l4+minL4(p.proto) > p.end || p.end > len(b) {
				t.Fatalf("transport header at %d (needs %d) past the end %d of %d bytes", p.l4, minL4(p.proto), p.end, len(b))
			}
		}
		if got != want {
			t.Fatalf("parse and the reference parser disagree on %x:\n  parse: %s\n  slow:  %s", b, got, want)
		}
	})
}

// fuzzRules are the rules FuzzInbound runs with.
var fuzzRules = []wire.FilterRule{
	rule([]string{"10.0.0.0/8"}, []uint8{protoTCP}, port(22), ports(8000, 8080)),
	rule([]string{"10.1.2.3/32", "fd00::/8"}, nil, port(53)),
	rule([]string{"0.0.0.0/0"}, []uint8{protoSCTP, 47}, port(9)),
}

// fuzzAlways is FuzzInbound's AlwaysAllow.
var fuzzAlways = []ProtoPort{{Proto: protoUDP, Port: 7946}}

// fuzzLocal are the local prefixes of FuzzInbound's filter: its own
// addresses and a subnet.
var fuzzLocal = []netip.Prefix{
	netip.MustParsePrefix("10.9.9.9/32"), netip.MustParsePrefix("fd00::9/128"), netip.MustParsePrefix("10.9.8.0/24"),
}

// FuzzInbound feeds an outbound then an inbound packet to a filter with
// fuzzRules and fuzzLocal. It never panics, and what it lets in is
// justified by the reference parser: addressed to a local prefix, and a
// rule, a reply to the outbound packet, or an ICMP error about it from
// the address it was sent to. What a rule accepts for a local address is
// let in.
func FuzzInbound(f *testing.F) {
	seeds := seedPackets()
	f.Add(udp("10.9.9.9", "10.1.2.3", 5353, 53), udp("10.1.2.3", "10.9.9.9", 53, 5353))
	f.Add(tcp("10.9.9.9", "10.1.2.4", 40000, 443, tcpSYN), tcp("10.1.2.4", "10.9.9.9", 443, 40000, tcpSYN|tcpACK))
	f.Add(ping("fd00::9", "fe80::1", 5, false), ping("fe80::1", "fd00::9", 5, true))
	out := udp("10.9.9.9", "10.1.2.4", 5353, 53)
	f.Add(out, hdr{src: "10.1.2.4", dst: "10.9.9.9", proto: protoICMP, icmpType: icmp4Unreachable, quote: out}.bytes())
	// An ICMP error about that flow from another address than its peer's.
	f.Add(out, hdr{src: "10.1.2.5", dst: "10.9.9.9", proto: protoICMP, icmpType: icmp4Unreachable, quote: out}.bytes())
	// What the rules accept, but for an address that is not local: the
	// node's other address, a host behind it.
	f.Add(out, udp("10.1.2.3", "10.9.9.8", 5353, 53))
	f.Add(out, udp("10.1.2.3", "172.31.0.2", 5353, 7946))
	f.Add(out, udp("10.1.2.3", "10.9.8.7", 5353, 53))
	// A reply to a flow a host behind the node opened.
	f.Add(udp("172.31.0.2", "10.1.2.4", 5353, 53), udp("10.1.2.4", "172.31.0.2", 53, 5353))
	for i, s := range seeds {
		f.Add(seeds[(i+1)%len(seeds)], s)
	}
	f.Fuzz(func(t *testing.T, out, in []byte) {
		fl, _ := newFilter(t, nil, func(c *Config) { c.AlwaysAllow = fuzzAlways; c.MaxConns = 64 })
		fl.SetRules(Compile(fuzzLocal, fuzzRules))
		fl.Outbound(out)
		v := fl.Inbound(in)
		if again := fl.Inbound(in); again != v {
			t.Fatalf("the same packet twice: %v, then %v", v, again)
		}
		sp := slowParse(in, false)
		toLocal := slices.ContainsFunc(fuzzLocal, func(p netip.Prefix) bool { return p.Contains(sp.dst) })
		ruleOK := sp.why == Accept && sp.frag != "later" && toLocal && (slowAllows(fuzzRules, sp.src, sp.proto, sp.dport) ||
			hasPorts(sp.proto) && sp.proto == fuzzAlways[0].Proto && sp.dport == fuzzAlways[0].Port)
		if ruleOK && v != Accept {
			t.Fatalf("a packet the rules accept was dropped (%v): %x", v, in)
		}
		if v != Accept || ruleOK {
			return
		}
		if sp.why != Accept || sp.frag == "later" {
			t.Fatalf("accepted a packet the reference parser refuses (%v, fragment %q): %x", sp.why, sp.frag, in)
		}
		if !toLocal {
			t.Fatalf("accepted a packet for %v, not a local address: %x", sp.dst, in)
		}
		so := slowParse(out, false)
		if so.why != Accept || so.frag == "later" {
			t.Fatalf("accepted %x with no rule and no usable outbound packet", in)
		}
		if isReply(so, sp) {
			return
		}
		if isICMPErrorAbout(so, sp) {
			return
		}
		t.Fatalf("accepted %x: no rule, not a reply to or an ICMP error about %x", in, out)
	})
}

// isReply reports whether in answers the flow that out opens.
func isReply(out, in slowPkt) bool {
	if in.src != out.dst || in.dst != out.src || in.proto != out.proto {
		return false
	}
	switch out.proto {
	case protoTCP:
		return out.flags&(tcpSYN|tcpACK) == tcpSYN && in.sport == out.dport && in.dport == out.sport
	case protoUDP, protoSCTP:
		return in.sport == out.dport && in.dport == out.sport
	case protoICMP:
		return out.icmpType == icmp4Echo && in.icmpType == icmp4EchoReply && in.sport == out.sport
	case protoICMPv6:
		return out.icmpType == icmp6Echo && in.icmpType == icmp6EchoReply && in.sport == out.sport
	}
	return false
}

// isICMPErrorAbout reports whether in is an ICMP error quoting a packet of
// the flow out opens, sent by the address that flow goes to.
func isICMPErrorAbout(out, in slowPkt) bool {
	isErr := in.proto == protoICMP && (in.icmpType == 3 || in.icmpType == 11 || in.icmpType == 12) ||
		in.proto == protoICMPv6 && in.icmpType >= 1 && in.icmpType <= 4
	if !isErr || len(in.body) < 8 {
		return false
	}
	q := slowParse(in.body[8:], true)
	if q.why != Accept || q.frag == "later" || q.src != in.dst || q.dst != in.src || q.src.Is4() != in.src.Is4() {
		return false
	}
	if q.src != out.src || q.dst != out.dst || q.proto != out.proto {
		return false
	}
	switch out.proto {
	case protoTCP:
		return out.flags&(tcpSYN|tcpACK) == tcpSYN && q.sport == out.sport && q.dport == out.dport
	case protoUDP, protoSCTP:
		return q.sport == out.sport && q.dport == out.dport
	case protoICMP, protoICMPv6:
		return (out.icmpType == icmp4Echo || out.icmpType == icmp6Echo) && q.icmpType == out.icmpType && q.sport == out.sport
	}
	return false
}

// seedPackets are valid and broken packets of every kind the parser knows.
func seedPackets() [][]byte {
	const a4, b4, a6, b6 = "10.1.2.3", "10.9.9.9", "fd00::1", "fd00::9"
	return [][]byte{
		tcp(a4, b4, 40000, 22, tcpSYN),
		tcp(a6, b6, 40000, 8080, tcpSYN|tcpACK),
		udp(a4, b4, 5353, 53),
		udp(a6, b6, 7946, 7946),
		ping(a4, b4, 1, false),
		ping(a6, b6, 1, true),
		hdr{src: a4, dst: b4, proto: protoSCTP, sport: 1, dport: 9}.bytes(),
		hdr{src: a4, dst: b4, proto: 47, payload: 8}.bytes(),
		hdr{src: a4, dst: b4, proto: protoTCP, sport: 1, dport: 22, opts: 8}.bytes(),
		hdr{src: a6, dst: b6, proto: protoUDP, sport: 1, dport: 53, exts: []uint8{0, 43, 60, 51}}.bytes(),
		hdr{src: a4, dst: b4, proto: protoUDP, sport: 1, dport: 53, more: true, fragID: 7, payload: 16}.bytes(),
		hdr{src: a4, dst: b4, proto: protoUDP, fragOff: 24, fragID: 7, payload: 16}.bytes(),
		hdr{src: a6, dst: b6, proto: protoUDP, sport: 1, dport: 53, more: true, fragID: 7}.bytes(),
		hdr{src: a6, dst: b6, proto: protoUDP, fragOff: 1232, fragID: 7, payload: 8}.bytes(),
		hdr{src: a4, dst: b4, proto: protoICMP, icmpType: icmp4Unreachable, quote: udp(b4, a4, 53, 5353)}.bytes(),
		hdr{src: a6, dst: b6, proto: protoICMPv6, icmpType: icmp6TooBig, quote: tcp(b6, a6, 22, 40000, tcpACK)[:48]}.bytes(),
		tcp(a4, b4, 1, 22, tcpSYN)[:33],
		{0x45, 0, 0, 20},
		{0x60},
	}
}

// TestWriteFuzzSeeds writes seedPackets as the checked-in seed corpora
// (go test -run TestWriteFuzzSeeds -update-seeds ./filter/).
func TestWriteFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to rewrite testdata/fuzz")
	}
	seeds := seedPackets()
	write := func(target string, i int, args ...[]byte) {
		s := "go test fuzz v1\n"
		for _, a := range args {
			s += "[]byte(" + strconv.Quote(string(a)) + ")\n"
		}
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range seeds {
		write("FuzzParse", i, s)
		write("FuzzInbound", i, seeds[(i+3)%len(seeds)], s)
	}
}
