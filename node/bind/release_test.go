package bind

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/internal/pages"
	"golang.zx2c4.com/wireguard/conn"
)

// dirtyBatch is a batch of wireguard-go sized buffers, every page written.
func dirtyBatch(n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = bytes.Repeat([]byte{0xab}, 65535)
	}
	return bufs
}

func residentPages(t *testing.T, bufs [][]byte) int {
	t.Helper()
	n, err := pages.Resident(bufs)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

type recvResult struct {
	n     int
	sizes []int
	err   error
}

// TestReleaseBuffers: ReleaseBuffers makes every ReceiveFunc of a Bind on
// real sockets drop the pages of the buffers it waits with, and they
// receive packets as before afterwards.
func TestReleaseBuffers(t *testing.T) {
	priv, _ := newKey(t)
	_, peerPub := newKey(t)
	b, err := newBind(Config{PrivateKey: priv, Timing: fastTiming(),
		InterfaceAddrs: func() ([]netip.Prefix, error) { return nil, nil }}, conn.NewStdNetBind())
	if err != nil {
		t.Fatal(err)
	}
	b.SetPeers(map[[32]byte]PeerInfo{peerPub: {}})
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if len(fns) < 2 {
		t.Fatalf("Open gave %d ReceiveFuncs, want the sockets' and the relayed one", len(fns))
	}
	batch := b.BatchSize() // the inner bind reads into the batch's last buffers
	type call struct {
		bufs [][]byte
		done chan recvResult
	}
	calls := make([]call, len(fns))
	start := func(i int) {
		c := call{bufs: dirtyBatch(batch), done: make(chan recvResult, 1)}
		calls[i] = c
		go func() {
			sizes, eps := make([]int, batch), make([]conn.Endpoint, batch)
			n, err := fns[i](c.bufs, sizes, eps)
			c.done <- recvResult{n, sizes, err}
		}()
	}
	for i := range fns {
		start(i)
	}
	full := residentPages(t, calls[0].bufs)
	if full < batch*15 {
		t.Fatalf("%d pages of the written batch resident, want about %d", full, batch*16)
	}
	b.ReleaseBuffers()

	direct := len(fns) - 1
	for i := range direct {
		select {
		case r := <-calls[i].done:
			if r.err != nil {
				t.Fatalf("direct ReceiveFunc %d: %v", i, r.err)
			}
			for j, s := range r.sizes[:r.n] {
				if s != 0 {
					t.Errorf("direct ReceiveFunc %d woken with a packet of %d bytes at %d; the wake-up must not reach wireguard-go", i, s, j)
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("direct ReceiveFunc %d of %d not woken by ReleaseBuffers", i, direct)
		}
		if n := residentPages(t, calls[i].bufs); n > batch {
			t.Errorf("direct ReceiveFunc %d: %d pages still resident after ReleaseBuffers, want at most the %d partial ones", i, n, batch)
		}
	}
	// The relayed ReceiveFunc releases and keeps waiting.
	relayed := calls[direct]
	waitFor(t, "relayed ReceiveFunc releases its buffers", 5*time.Second, func() bool {
		return residentPages(t, relayed.bufs) <= batch
	})
	select {
	case r := <-relayed.done:
		t.Fatalf("relayed ReceiveFunc returned %d, %v on ReleaseBuffers; it should keep waiting", r.n, r.err)
	default:
	}
	b.DeliverRelayed("r1", peerPub, data(7))
	select {
	case r := <-relayed.done:
		if r.err != nil || r.n != 1 || r.sizes[0] != len(data(7)) || !bytes.Equal(relayed.bufs[0][:r.sizes[0]], data(7)) {
			t.Fatalf("relayed packet after release: n=%d sizes=%v err=%v", r.n, r.sizes[:r.n], r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relayed packet not received after ReleaseBuffers")
	}

	// A released direct batch receives WireGuard packets as before.
	start(0)
	send := conn.NewStdNetBind()
	if _, _, err := send.Open(0); err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	ep, err := send.ParseEndpoint(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String())
	if err != nil {
		t.Fatal(err)
	}
	if err := send.Send([][]byte{data(9)}, ep); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-calls[0].done:
		if r.err != nil || r.n != 1 || r.sizes[0] != len(data(9)) || !bytes.Equal(calls[0].bufs[0][:r.sizes[0]], data(9)) {
			t.Fatalf("packet after release: n=%d sizes=%v err=%v", r.n, r.sizes[:r.n], r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("packet not received after ReleaseBuffers")
	}
}

// TestReleaseCallNeedsTag: a datagram that looks like ReleaseBuffers' but
// lacks its random tag, or comes from another port, is garbage and
// releases nothing.
func TestReleaseCallNeedsTag(t *testing.T) {
	n := newNode(t, nil, nil)
	s := n.b.sess.Load()
	own := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), s.port)
	other := netip.AddrPortFrom(own.Addr(), s.port+1)
	forged := append([]byte(releaseMagic), make([]byte, 16)...)
	for _, c := range []struct {
		name string
		pkt  []byte
		src  netip.AddrPort
		want bool
	}{
		{"own", n.b.releaseMsg, own, true},
		{"own over IPv6", n.b.releaseMsg, netip.AddrPortFrom(netip.IPv6Loopback(), s.port), true},
		{"forged tag", forged, own, false},
		{"other port", n.b.releaseMsg, other, false},
		{"not loopback", n.b.releaseMsg, netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), s.port), false},
	} {
		if got := n.b.isReleaseCall(c.pkt, c.src); got != c.want {
			t.Errorf("%s: isReleaseCall = %v, want %v", c.name, got, c.want)
		}
	}
	if classify(n.b.releaseMsg) != kindGarbage {
		t.Errorf("the release datagram classifies as %v, want garbage (not WireGuard, STUN or disco)", classify(n.b.releaseMsg))
	}
}
