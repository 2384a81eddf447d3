package bind

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/wiremesh/wiremesh/relay/stun"
)

func wgMsg(typ byte, size int) []byte {
	p := make([]byte, size)
	p[0] = typ
	return p
}

func TestClassify(t *testing.T) {
	priv, _ := newKey(t)
	_, pub := newKey(t)
	aead, err := discoAEAD(priv, pub)
	if err != nil {
		t.Fatal(err)
	}
	disco := seal(aead, pub, pingBody([12]byte{1}))
	notZero := wgMsg(4, 64)
	notZero[2] = 1
	cases := []struct {
		name string
		pkt  []byte
		want packetKind
	}{
		{"initiation", wgMsg(1, 148), kindWireGuard},
		{"response", wgMsg(2, 92), kindWireGuard},
		{"cookie reply", wgMsg(3, 64), kindWireGuard},
		{"transport", wgMsg(4, 1420), kindWireGuard},
		{"keepalive", wgMsg(4, 32), kindWireGuard},
		{"initiation wrong size", wgMsg(1, 147), kindGarbage},
		{"response wrong size", wgMsg(2, 148), kindGarbage},
		{"transport too short", wgMsg(4, 31), kindGarbage},
		{"type 5", wgMsg(5, 148), kindGarbage},
		{"reserved byte set", notZero, kindGarbage},
		{"stun request", stun.Request([12]byte{7}), kindSTUN},
		{"stun response", stun.Response([12]byte{7}, netip.MustParseAddrPort("192.0.2.1:1")), kindSTUN},
		{"disco", disco, kindDisco},
		{"disco truncated", disco[:discoMinLen-1], kindGarbage},
		{"empty", nil, kindGarbage},
		{"text", []byte("GET / HTTP/1.1\r\n\r\n"), kindGarbage},
	}
	for _, c := range cases {
		if got := classify(c.pkt); got != c.want {
			t.Errorf("%s: classify = %d, want %d", c.name, got, c.want)
		}
	}
}

// demuxFixture is a Bind (not open) with one peer whose address is proven,
// and a batch of WireGuard packets from it and from an unknown address.
type demuxFixture struct {
	b          *Bind
	p          *peer
	bufs       [][]byte
	sizes      []int
	eps        []conn.Endpoint
	fromPeer   *conn.StdNetEndpoint
	fromOthers *conn.StdNetEndpoint
}

func newDemuxFixture(tb testing.TB, batch int) *demuxFixture {
	b, err := newBind(Config{}, conn.NewStdNetBind())
	if err != nil {
		tb.Fatal(err)
	}
	_, pub := newKey(tb)
	known := netip.MustParseAddrPort("198.51.100.7:41641")
	b.SetPeers(map[[32]byte]PeerInfo{pub: {Candidates: []netip.AddrPort{known}}})
	p := b.peer(pub)
	p.paths[known].lastPong = 0 // as if it had answered a ping
	b.rebuildIndex()
	f := &demuxFixture{b: b, p: p, fromPeer: &conn.StdNetEndpoint{AddrPort: known},
		fromOthers: &conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort("203.0.113.9:1234")}}
	for i := range batch {
		f.bufs = append(f.bufs, wgMsg(4, 1420))
		f.sizes = append(f.sizes, 0)
		f.eps = append(f.eps, nil)
		_ = i
	}
	return f
}

// refill resets the batch as the inner bind would have filled it.
func (f *demuxFixture) refill() {
	for i := range f.bufs {
		f.sizes[i] = len(f.bufs[i])
		f.eps[i] = f.fromPeer
		if i%2 == 1 {
			f.eps[i] = f.fromOthers
		}
	}
}

func TestDemuxMapsProvenSourcesOnly(t *testing.T) {
	f := newDemuxFixture(t, 4)
	f.refill()
	f.b.demux(f.bufs, f.sizes, f.eps)
	for i := range f.bufs {
		if f.sizes[i] != 1420 {
			t.Fatalf("packet %d: size %d, WireGuard must pass", i, f.sizes[i])
		}
		want := conn.Endpoint(f.p)
		if i%2 == 1 {
			want = f.fromOthers
		}
		if f.eps[i] != want {
			t.Fatalf("packet %d: endpoint %v, want %v", i, f.eps[i], want)
		}
	}
	// A candidate that never answered is not proven: not mapped.
	unproven := netip.MustParseAddrPort("198.51.100.8:41641")
	f.b.SetPeers(map[[32]byte]PeerInfo{f.p.key: {Candidates: []netip.AddrPort{f.fromPeer.AddrPort, unproven}}})
	ep := &conn.StdNetEndpoint{AddrPort: unproven}
	eps := []conn.Endpoint{ep}
	f.b.demux([][]byte{wgMsg(1, 148)}, []int{148}, eps)
	if eps[0] != ep {
		t.Fatal("a packet from an unproven candidate was mapped to the peer")
	}
	// Non-WireGuard is consumed.
	for _, pkt := range [][]byte{stun.Request([12]byte{}), []byte("garbage!")} {
		sizes := []int{len(pkt)}
		f.b.demux([][]byte{pkt}, sizes, []conn.Endpoint{f.fromOthers})
		if sizes[0] != 0 {
			t.Fatalf("%q not consumed", pkt)
		}
	}
}

func TestDemuxNoAllocs(t *testing.T) {
	f := newDemuxFixture(t, 128)
	allocs := testing.AllocsPerRun(100, func() {
		f.refill()
		f.b.demux(f.bufs, f.sizes, f.eps)
	})
	if allocs != 0 {
		t.Fatalf("demux of 128 WireGuard packets: %v allocations, want 0", allocs)
	}
	if f.eps[0] != conn.Endpoint(f.p) || f.sizes[0] == 0 {
		t.Fatal("the measured run did not take the mapping path")
	}
	if st := f.b.Stats(); st.DirectRx.Packets == 0 {
		t.Fatal("no packets counted")
	}
}

// BenchmarkDemux measures the per-packet cost of the demultiplexing of a
// full batch of WireGuard data packets, half from a proven peer address.
// Compare with BenchmarkDemuxBaseline, the loop that only reads the
// endpoints (what wireguard-go itself would do).
func BenchmarkDemux(b *testing.B) {
	f := newDemuxFixture(b, conn.IdealBatchSize)
	b.ReportAllocs()
	for b.Loop() {
		f.refill()
		f.b.demux(f.bufs, f.sizes, f.eps)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*conn.IdealBatchSize), "ns/packet")
}

func BenchmarkDemuxBaseline(b *testing.B) {
	f := newDemuxFixture(b, conn.IdealBatchSize)
	b.ReportAllocs()
	var sink int
	for b.Loop() {
		f.refill()
		for i := range f.sizes {
			if _, ok := f.eps[i].(*conn.StdNetEndpoint); ok {
				sink += f.sizes[i]
			}
		}
	}
	_ = sink
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*conn.IdealBatchSize), "ns/packet")
}

func TestEndpoints(t *testing.T) {
	rn := newRelayNet()
	a, b := newNode(t, rn, nil), newNode(t, rn, nil)
	ep, err := a.b.ParseEndpoint("192.0.2.1:51820")
	if se, ok := ep.(*conn.StdNetEndpoint); err != nil || !ok || se.AddrPort != netip.MustParseAddrPort("192.0.2.1:51820") {
		t.Fatalf("plain ip:port: %T %v %v", ep, ep, err)
	}
	for _, bad := range []string{"wm-", "wm-zz", "wm-" + EndpointString(b.pub)[3:40], "nonsense"} {
		if _, err := a.b.ParseEndpoint(bad); err == nil {
			t.Errorf("ParseEndpoint(%q) accepted", bad)
		}
	}
	ep, err = a.b.ParseEndpoint(EndpointString(b.pub))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := a.b.ParseEndpoint(EndpointString(b.pub))
	if ep != again {
		t.Fatal("two endpoints for one key")
	}
	// DstToString is always something wgctrl parses (net.ResolveUDPAddr):
	// no path, relay, direct.
	check := func(state, want string) {
		t.Helper()
		s := ep.DstToString()
		if _, err := net.ResolveUDPAddr("udp", s); err != nil || (want != "" && s != want) {
			t.Fatalf("%s: DstToString %q (want %q): %v", state, s, want, err)
		}
	}
	check("unknown peer, no relay chosen yet", "192.0.2.10:443") // relays up: the relay's address
	rn.setDown("r1", true)
	rn.setDown("r2", true)
	check("nothing at all", "0.0.0.0:0")
	rn.setDown("r1", false)
	rn.setDown("r2", false)
	a.setPeer(b, b.addr())
	b.setPeer(a, a.addr())
	a.traffic(b)
	waitFor(t, "direct", wait, func() bool { return a.path(b).Kind == PathDirect })
	check("direct", b.addr().String())
}

// TestHandshakeCopiesForget: a message is known as a copy while it is
// among the last 256 handshake messages received.
func TestHandshakeCopiesForget(t *testing.T) {
	var h handshakeCopies
	msg := func(i int) []byte {
		p := make([]byte, wgResponseSize)
		p[0] = 2
		binary.BigEndian.PutUint32(p[len(p)-32:], uint32(i))
		return p
	}
	for i := range 256 {
		if h.copied(msg(i)) {
			t.Fatalf("message %d taken for a copy", i)
		}
	}
	if !h.copied(msg(0)) || !h.copied(msg(255)) {
		t.Fatal("a copy of one of the last 256 messages not recognised")
	}
	h.copied(msg(256)) // evicts message 0
	if h.copied(msg(0)) {
		t.Fatal("message 0 still remembered after 256 others")
	}
}
