//go:build !race

// The race detector makes sync.Pool drop buffers at random, so these run
// without it.

package relay

import (
	"bufio"
	"net"
	"testing"

	"github.com/wiremesh/wiremesh/credential"
)

// repeatReader repeats b forever.
type repeatReader struct {
	b   []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], r.b[r.off:])
		n += k
		r.off = (r.off + k) % len(r.b)
	}
	return n, nil
}

// A received packet costs the client no allocation.
func TestClientReceiveNoAllocs(t *testing.T) {
	got := 0
	c := testClientOf(t, func(src [32]byte, pkt []byte) {
		if len(pkt) == 1280 && src[0] == 9 {
			got++
		}
	}, nil)
	payload := make([]byte, keyLen+1280)
	payload[0] = 9
	cc := &clientConn{c: c, fr: frameReader{r: bufio.NewReaderSize(&repeatReader{b: frameBytes(frameRecv, payload)}, 32<<10)}}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := cc.readFrame(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per received packet, want 0", allocs)
	}
	if got != 1001 {
		t.Errorf("OnPacket got %d packets, want 1001: the test did not take the packet path", got)
	}
}

// Send costs no allocation once the pool holds buffers.
func TestClientSendNoAllocs(t *testing.T) {
	c := testClientOf(t, nil, nil)
	cc := &clientConn{c: c, queue: make(chan *frameBuf, 1)}
	c.cur.Store(cc)
	pkt := make([]byte, 1280)
	var dst [32]byte
	allocs := testing.AllocsPerRun(1000, func() {
		if err := c.Send(dst, pkt); err != nil {
			t.Fatal(err)
		}
		(<-cc.queue).free()
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per sent packet, want 0", allocs)
	}
}

// Forwarding a packet costs the relay no allocation: the send frame is
// read into a pooled buffer that becomes the recv frame.
func TestServerForwardNoAllocs(t *testing.T) {
	key, _ := credential.NewProofKey()
	s, err := NewServer(ServerConfig{Key: key, Allowed: func([32]byte) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	dst := newSession(s, c1, nil, "dst")
	dst.key = [32]byte{2}
	s.clients[dst.key] = dst
	payload := make([]byte, keyLen+1280)
	copy(payload, dst.key[:])
	src := newSession(s, c2, bufio.NewReaderSize(&repeatReader{b: frameBytes(frameSend, payload)}, 32<<10), "src")
	src.key = [32]byte{1}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := src.readFrame(); err != nil {
			t.Fatal(err)
		}
		fb := <-dst.queue
		if fb.b[0] != byte(frameRecv) || fb.payload()[0] != 1 {
			t.Fatalf("forwarded frame %x…, want a recv from key 01…", fb.b[:headerLen+1])
		}
		fb.free()
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per forwarded packet, want 0", allocs)
	}
}
