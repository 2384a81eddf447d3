package filter

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hdr describes a test packet; bytes builds it.
type hdr struct {
	src, dst string // addresses; the family follows from them
	proto    uint8
	sport    uint16 // TCP, UDP, SCTP; ICMP echo: identifier
	dport    uint16
	flags    uint8 // TCP flags
	icmpType uint8
	opts     int     // IPv4 option bytes (a multiple of 4, up to 40)
	exts     []uint8 // IPv6 extension headers before the transport header, 8 bytes each
	fragOff  int     // fragment offset in bytes (a multiple of 8)
	more     bool    // more fragments follow
	fragID   uint32
	quote    []byte // ICMP error: the quoted packet
	payload  int    // payload bytes after the transport header
}

// bytes returns the packet h describes.
func (h hdr) bytes() []byte {
	src, dst := netip.MustParseAddr(h.src), netip.MustParseAddr(h.dst)
	var l4 []byte
	if h.fragOff == 0 {
		l4 = h.transport()
	}
	l4 = append(l4, bytes.Repeat([]byte{0xab}, h.payload)...)
	if src.Is4() {
		ihl := 20 + h.opts
		b := make([]byte, ihl, ihl+len(l4))
		b[0] = 0x40 | byte(ihl/4)
		binary.BigEndian.PutUint16(b[2:], uint16(ihl+len(l4)))
		binary.BigEndian.PutUint16(b[4:], uint16(h.fragID))
		ff := uint16(h.fragOff / 8)
		if h.more {
			ff |= 0x2000
		}
		binary.BigEndian.PutUint16(b[6:], ff)
		b[8] = 64
		b[9] = h.proto
		s, d := src.As4(), dst.As4()
		copy(b[12:], s[:])
		copy(b[16:], d[:])
		for i := 20; i < ihl; i++ {
			b[i] = 1 // NOP options
		}
		return append(b, l4...)
	}
	exts := h.exts
	if (h.fragOff != 0 || h.more) && !slices.Contains(exts, 44) {
		exts = append(append([]uint8(nil), exts...), 44)
	}
	var chain []byte
	for i, e := range exts {
		next := h.proto
		if i+1 < len(exts) {
			next = exts[i+1]
		}
		x := make([]byte, 8)
		x[0] = next
		switch e {
		case 44:
			binary.BigEndian.PutUint16(x[2:], uint16(h.fragOff))
			if h.more {
				x[3] |= 1
			}
			binary.BigEndian.PutUint32(x[4:], h.fragID)
		case 51:
			x[1] = 0 // (0+2)*4 = 8 bytes
		}
		chain = append(chain, x...)
	}
	b := make([]byte, 40, 40+len(chain)+len(l4))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(chain)+len(l4)))
	b[6] = h.proto
	if len(exts) > 0 {
		b[6] = exts[0]
	}
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(append(b, chain...), l4...)
}

// transport returns h's transport header.
func (h hdr) transport() []byte {
	switch h.proto {
	case protoTCP:
		b := make([]byte, 20)
		binary.BigEndian.PutUint16(b[0:], h.sport)
		binary.BigEndian.PutUint16(b[2:], h.dport)
		b[12] = 5 << 4
		b[13] = h.flags
		return b
	case protoUDP:
		b := make([]byte, 8)
		binary.BigEndian.PutUint16(b[0:], h.sport)
		binary.BigEndian.PutUint16(b[2:], h.dport)
		binary.BigEndian.PutUint16(b[4:], uint16(8+h.payload))
		return b
	case protoSCTP:
		b := make([]byte, 12)
		binary.BigEndian.PutUint16(b[0:], h.sport)
		binary.BigEndian.PutUint16(b[2:], h.dport)
		return b
	case protoICMP, protoICMPv6:
		b := make([]byte, 8)
		b[0] = h.icmpType
		binary.BigEndian.PutUint16(b[4:], h.sport)
		return append(b, h.quote...)
	}
	return nil
}

// Handy packet makers.

func tcp(src, dst string, sport, dport uint16, flags uint8) []byte {
	return hdr{src: src, dst: dst, proto: protoTCP, sport: sport, dport: dport, flags: flags}.bytes()
}

func udp(src, dst string, sport, dport uint16) []byte {
	return hdr{src: src, dst: dst, proto: protoUDP, sport: sport, dport: dport}.bytes()
}

// ping makes an ICMP or ICMPv6 (by family) echo request, or reply.
func ping(src, dst string, id uint16, reply bool) []byte {
	h := hdr{src: src, dst: dst, proto: protoICMP, sport: id, icmpType: icmp4Echo}
	if netip.MustParseAddr(src).Is6() {
		h.proto, h.icmpType = protoICMPv6, icmp6Echo
	}
	if reply {
		h.icmpType = map[uint8]uint8{icmp4Echo: icmp4EchoReply, icmp6Echo: icmp6EchoReply}[h.icmpType]
	}
	return h.bytes()
}

// fixLen sets b's IPv4 total length or IPv6 payload length to fit b.
func fixLen(b []byte) []byte {
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	case len(b) >= 40 && b[0]>>4 == 6:
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
	}
	return b
}

// rule makes a FilterRule from prefixes, protocols and "N" / "N-M" ports.
func rule(srcs []string, protos []uint8, ports ...wire.PortRange) wire.FilterRule {
	r := wire.FilterRule{Protos: protos, Ports: ports}
	for _, s := range srcs {
		r.Srcs = append(r.Srcs, netip.MustParsePrefix(s))
	}
	return r
}

func port(n uint16) wire.PortRange            { return wire.PortRange{First: n, Last: n} }
func ports(first, last uint16) wire.PortRange { return wire.PortRange{First: first, Last: last} }

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newFilter returns a filter with rules, a fake clock and a small table,
// closed when the test ends. Extra config tweaks come in cfgs.
func newFilter(t testing.TB, rules []wire.FilterRule, cfgs ...func(*Config)) (*Filter, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	cfg := Config{MaxConns: 1024, Clock: clock.Now, Logger: slog.New(slog.DiscardHandler)}
	for _, c := range cfgs {
		c(&cfg)
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	f.SetRules(Compile(local, rules))
	return f, clock
}

// step moves clock by d and lets f see it.
func step(f *Filter, clock *fakeClock, d time.Duration) {
	clock.advance(d)
	f.readClock()
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// meshAddrs returns node i's overlay addresses in a large mesh.
func meshAddrs(i int) (v4, v6 netip.Addr) {
	i++
	v4 = netip.AddrFrom4([4]byte{100, byte(64 + i>>16&63), byte(i >> 8), byte(i)})
	v6 = netip.AddrFrom16([16]byte{0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
	return v4, v6
}

// meshRules makes n rules like those a policy compiles for one node of a
// 10,000-node mesh: single nodes (by both addresses) reaching a few port
// sets, plus ICMP from the whole overlay and a host CIDR for HTTPS.
func meshRules(rng *rand.Rand, n int) []wire.FilterRule {
	palette := [][]wire.PortRange{
		{port(22)}, {port(80), port(443)}, {port(5432)}, {port(6379)}, {ports(8000, 8999)},
		{port(9100)}, {port(53)}, {ports(3000, 3010)}, {port(443)}, {wire.AllPorts},
	}
	rules := []wire.FilterRule{
		rule([]string{"100.64.0.0/10", "fd7a:115c:a1e0::/48"}, []uint8{protoICMP, protoICMPv6}),
		rule([]string{"192.168.10.0/24"}, []uint8{protoTCP}, port(443)),
	}
	for len(rules) < n {
		var r wire.FilterRule
		for range 1 + rng.IntN(3) {
			v4, v6 := meshAddrs(rng.IntN(10000))
			r.Srcs = append(r.Srcs, netip.PrefixFrom(v4, 32), netip.PrefixFrom(v6, 128))
		}
		switch x := rng.IntN(10); {
		case x == 0:
			r.Protos = []uint8{protoUDP}
		case x < 3:
			r.Protos = []uint8{protoTCP}
		}
		r.Ports = palette[rng.IntN(len(palette))]
		rules = append(rules, r)
	}
	return rules[:n]
}
