package filter

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// parsed is what TestParse compares.
type parsed struct {
	v            Verdict
	proto        uint8
	sport, dport uint16
	frag         uint8
}

func (p parsed) String() string {
	return fmt.Sprintf("%v proto=%d ports=%d->%d frag=%d", p.v, p.proto, p.sport, p.dport, p.frag)
}

func TestParse(t *testing.T) {
	const a4, b4, a6, b6 = "10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"
	set := func(b []byte, i int, v byte) []byte { b[i] = v; return b }
	put16 := func(b []byte, i int, v uint16) []byte { binary.BigEndian.PutUint16(b[i:], v); return b }
	ok := func(proto uint8, sport, dport uint16) parsed {
		return parsed{v: Accept, proto: proto, sport: sport, dport: dport}
	}
	bad := parsed{v: DropMalformed}
	fragDrop := parsed{v: DropFragment}
	tests := []struct {
		name string
		pkt  []byte
		want parsed
	}{
		{"v4 tcp", tcp(a4, b4, 1000, 22, tcpSYN), ok(protoTCP, 1000, 22)},
		{"v4 udp", udp(a4, b4, 1000, 53), ok(protoUDP, 1000, 53)},
		{"v4 sctp", hdr{src: a4, dst: b4, proto: protoSCTP, sport: 7, dport: 9}.bytes(), ok(protoSCTP, 7, 9)},
		{"v4 icmp echo", ping(a4, b4, 77, false), ok(protoICMP, 77, 0)},
		{"v4 gre", hdr{src: a4, dst: b4, proto: 47, payload: 4}.bytes(), ok(47, 0, 0)},
		{"v4 options ihl=6", hdr{src: a4, dst: b4, proto: protoTCP, sport: 1, dport: 22, opts: 4}.bytes(), ok(protoTCP, 1, 22)},
		{"v4 options ihl=15", hdr{src: a4, dst: b4, proto: protoUDP, sport: 1, dport: 53, opts: 40}.bytes(), ok(protoUDP, 1, 53)},
		{"v4 trailing bytes past total length", append(udp(a4, b4, 1, 53), 0, 0, 0, 0), ok(protoUDP, 1, 53)},
		{"v4 atomic df", put16(udp(a4, b4, 1, 53), 6, 0x4000), ok(protoUDP, 1, 53)},
		{"v6 tcp", tcp(a6, b6, 1000, 22, tcpSYN), ok(protoTCP, 1000, 22)},
		{"v6 udp", udp(a6, b6, 1000, 53), ok(protoUDP, 1000, 53)},
		{"v6 icmpv6 echo", ping(a6, b6, 5, false), ok(protoICMPv6, 5, 0)},
		{"v6 hop-by-hop", hdr{src: a6, dst: b6, proto: protoUDP, sport: 1, dport: 53, exts: []uint8{0}}.bytes(), ok(protoUDP, 1, 53)},
		{"v6 routing, no segments left", hdr{src: a6, dst: b6, proto: protoTCP, sport: 1, dport: 22, exts: []uint8{43}}.bytes(), ok(protoTCP, 1, 22)},
		{"v6 dest options", hdr{src: a6, dst: b6, proto: protoTCP, sport: 1, dport: 22, exts: []uint8{60}}.bytes(), ok(protoTCP, 1, 22)},
		{"v6 ah", hdr{src: a6, dst: b6, proto: protoTCP, sport: 1, dport: 22, exts: []uint8{51}}.bytes(), ok(protoTCP, 1, 22)},
		{"v6 hbh+routing+destopts", hdr{src: a6, dst: b6, proto: protoUDP, sport: 1, dport: 53, exts: []uint8{0, 43, 60}}.bytes(), ok(protoUDP, 1, 53)},
		{"v6 eight headers", hdr{src: a6, dst: b6, proto: protoUDP, sport: 1, dport: 53, exts: []uint8{0, 60, 60, 60, 60, 60, 60, 60}}.bytes(), ok(protoUDP, 1, 53)},
		{"v6 esp", hdr{src: a6, dst: b6, proto: 50, payload: 16}.bytes(), ok(50, 0, 0)},
		{"v6 no next header", hdr{src: a6, dst: b6, proto: 59}.bytes(), ok(59, 0, 0)},
		{"v6 atomic fragment", hdr{src: a6, dst: b6, proto: protoUDP, sport: 1, dport: 53, exts: []uint8{44}}.bytes(), ok(protoUDP, 1, 53)},

		{"v4 first fragment", hdr{src: a4, dst: b4, proto: protoUDP, sport: 1, dport: 53, more: true, payload: 16}.bytes(),
			parsed{v: Accept, proto: protoUDP, sport: 1, dport: 53, frag: fragFirst}},
		{"v4 later fragment", hdr{src: a4, dst: b4, proto: protoUDP, fragOff: 1480, payload: 16}.bytes(),
			parsed{v: Accept, proto: protoUDP, frag: fragLater}},
		{"v6 first fragment", hdr{src: a6, dst: b6, proto: protoTCP, sport: 1, dport: 22, more: true}.bytes(),
			parsed{v: Accept, proto: protoTCP, sport: 1, dport: 22, frag: fragFirst}},
		{"v6 later fragment", hdr{src: a6, dst: b6, proto: protoTCP, fragOff: 1232, payload: 8}.bytes(),
			parsed{v: Accept, proto: protoTCP, frag: fragLater}},
		{"v4 later fragment overlapping tcp header", hdr{src: a4, dst: b4, proto: protoTCP, fragOff: 8, payload: 16}.bytes(), fragDrop},
		{"v6 later fragment overlapping tcp header", hdr{src: a6, dst: b6, proto: protoTCP, fragOff: 16, payload: 16}.bytes(), fragDrop},
		{"v4 first fragment without whole tcp header", fixLen(hdr{src: a4, dst: b4, proto: protoTCP, more: true}.bytes()[:30]), fragDrop},
		{"v6 first fragment without whole header chain", fixLen(hdr{src: a6, dst: b6, proto: protoTCP, more: true, exts: []uint8{44, 60}}.bytes()[:52]), fragDrop},
		{"v6 first fragment without whole udp header", fixLen(hdr{src: a6, dst: b6, proto: protoUDP, more: true}.bytes()[:52]), fragDrop},

		{"empty", nil, bad},
		{"version 5", set(udp(a4, b4, 1, 53), 0, 0x55), bad},
		{"version 0", set(udp(a4, b4, 1, 53), 0, 0x05), bad},
		{"ihl 4", set(udp(a4, b4, 1, 53), 0, 0x44), bad},
		{"ihl past packet", set(udp(a4, b4, 1, 53), 0, 0x4f), bad},
		{"v4 total length past packet", put16(udp(a4, b4, 1, 53), 2, 100), bad},
		{"v4 total length below header", put16(udp(a4, b4, 1, 53), 2, 19), bad},
		{"v4 total length cuts udp header", put16(udp(a4, b4, 1, 53), 2, 24), bad},
		{"v6 payload length past packet", put16(udp(a6, b6, 1, 53), 4, 9), bad},
		{"v6 jumbogram", put16(udp(a6, b6, 1, 53), 4, 0), bad},
		{"v6 nine headers", hdr{src: a6, dst: b6, proto: protoUDP, sport: 1, dport: 53, exts: []uint8{0, 60, 60, 60, 60, 60, 60, 60, 60}}.bytes(), bad},
		{"v6 hop-by-hop not first", hdr{src: a6, dst: b6, proto: protoUDP, sport: 1, dport: 53, exts: []uint8{60, 0}}.bytes(), bad},
		{"v6 routing with segments left", set(hdr{src: a6, dst: b6, proto: protoTCP, sport: 1, dport: 22, exts: []uint8{43}}.bytes(), 43, 1), bad},
		{"v6 two fragment headers", hdr{src: a6, dst: b6, proto: protoUDP, sport: 1, dport: 53, exts: []uint8{44, 44}, more: true}.bytes(), bad},
		{"v6 ext header length past packet", set(hdr{src: a6, dst: b6, proto: protoUDP, sport: 1, dport: 53, exts: []uint8{60}}.bytes(), 41, 9), bad},
		{"tcp data offset 4", set(tcp(a4, b4, 1, 22, tcpSYN), 32, 4<<4), bad},
		{"tcp data offset past packet", set(tcp(a4, b4, 1, 22, tcpSYN), 32, 6<<4), bad},
		{"v6 truncated icmpv6", fixLen(ping(a6, b6, 1, false)[:47]), bad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p packet
			got := parsed{v: parse(tt.pkt, &p)}
			if got.v == Accept {
				got.proto, got.frag = p.proto, p.frag
				if hasPorts(p.proto) || isICMP(p.proto) {
					got.sport, got.dport = p.sport, p.dport
				}
			}
			if got != tt.want {
				t.Errorf("parse:\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

// TestParseTruncated cuts valid packets at every length, with the IP length
// fields adjusted to the cut (and not): the parser never panics and only
// accepts a cut that keeps the whole header chain and transport header.
func TestParseTruncated(t *testing.T) {
	pkts := map[string]struct {
		pkt  []byte
		need int // shortest acceptable cut
	}{
		"v4 tcp":                 {tcp("10.0.0.1", "10.0.0.2", 1, 22, tcpSYN), 40},
		"v4 tcp with options":    {hdr{src: "10.0.0.1", dst: "10.0.0.2", proto: protoTCP, sport: 1, dport: 22, opts: 12}.bytes(), 52},
		"v4 udp":                 {udp("10.0.0.1", "10.0.0.2", 1, 53), 28},
		"v4 icmp":                {ping("10.0.0.1", "10.0.0.2", 1, false), 28},
		"v4 sctp":                {hdr{src: "10.0.0.1", dst: "10.0.0.2", proto: protoSCTP, sport: 1, dport: 2}.bytes(), 32},
		"v6 tcp":                 {tcp("fd00::1", "fd00::2", 1, 22, tcpSYN), 60},
		"v6 udp after three ext": {hdr{src: "fd00::1", dst: "fd00::2", proto: protoUDP, sport: 1, dport: 53, exts: []uint8{0, 43, 60}}.bytes(), 72},
		"v6 icmpv6 after ah":     {hdr{src: "fd00::1", dst: "fd00::2", proto: protoICMPv6, icmpType: icmp6Echo, exts: []uint8{51}}.bytes(), 56},
	}
	for name, tc := range pkts {
		for n := 0; n < len(tc.pkt); n++ {
			for _, fix := range []bool{false, true} {
				b := append([]byte(nil), tc.pkt[:n]...)
				if fix {
					b = fixLen(b)
				}
				var p packet
				v := parse(b, &p)
				if want := fix && n >= tc.need; (v == Accept) != want {
					t.Errorf("%s cut at %d (lengths fixed: %v): parse = %v, want accept %v", name, n, fix, v, want)
				}
			}
		}
	}
}

func TestParseInnerNeedsEightBytes(t *testing.T) {
	q := tcp("10.0.0.2", "10.0.0.1", 40000, 22, tcpSYN)[:28] // IP header + 8 bytes, as ICMP quotes
	var p packet
	if v := parseInner(q, &p); v != Accept || p.sport != 40000 || p.dport != 22 {
		t.Errorf("parseInner(quote) = %v, ports %d->%d; want accept 40000->22", v, p.sport, p.dport)
	}
	if v := parseInner(q[:27], &p); v == Accept {
		t.Errorf("parseInner(quote cut to 7 transport bytes) = accept, want a drop")
	}
}
