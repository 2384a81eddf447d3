package relay

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
)

// benchWindow bounds the packets in flight, below the relay's queue
// depth, so that the relay never drops and the figure is one of
// throughput, not of loss.
const benchWindow = 32

// sink counts the packets a receiver got, releases a window slot for
// each, and says when the expected number arrived.
type sink struct {
	tokens chan struct{}
	got    atomic.Int64
	want   atomic.Int64
	done   chan struct{}
}

func newSink() *sink {
	return &sink{tokens: make(chan struct{}, benchWindow), done: make(chan struct{}, 1)}
}

func (s *sink) onPacket([32]byte, []byte) {
	<-s.tokens
	if s.got.Add(1) == s.want.Load() {
		s.done <- struct{}{}
	}
}

// run sends n packets with send, keeping the window, and returns the
// time per packet until the last one arrived, and the allocations (all
// goroutines) per packet.
func (s *sink) run(n int, send func() error) (time.Duration, float64) {
	s.got.Store(0)
	s.want.Store(int64(n))
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	for range n {
		s.tokens <- struct{}{}
		for send() == ErrQueueFull {
			runtime.Gosched()
		}
	}
	<-s.done
	d := time.Since(start)
	runtime.ReadMemStats(&m1)
	return d / time.Duration(n), float64(m1.Mallocs-m0.Mallocs) / float64(n)
}

// BenchmarkRelay forwards packets from one client to another through
// the relay on loopback TLS, and, in the same run, sends the same frames
// over one direct loopback TLS connection with the same certificate,
// written and read by the client's own writer and reader: the baseline.
// An op is one packet through each (ns/op is their sum); relay-ns/pkt,
// tls-ns/pkt and relay/tls report the two apart and their ratio;
// relay-allocs/pkt counts the allocations of every goroutine (both
// clients and the relay; crypto/tls allocates one per socket read).
func BenchmarkRelay(b *testing.B) {
	for _, size := range []int{64, 1400, 16 << 10} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			r := newTestRelay(b, nil)
			ka, kb := r.node(b), r.node(b)
			relaySink, tlsSink := newSink(), newSink()
			a := r.client(b, ka, nil)
			rb := r.client(b, kb, func(c *ClientConfig) { c.OnPacket = relaySink.onPacket })
			a.waitState(b, true)
			rb.waitState(b, true)
			base := newBaseline(b, r, tlsSink.onPacket)
			pkt := make([]byte, size)
			dst := kb.PublicKey()
			b.ResetTimer()
			tlsNs, _ := tlsSink.run(b.N, func() error { return base.send(pkt) })
			relayNs, allocs := relaySink.run(b.N, func() error { return a.Send(dst, pkt) })
			b.StopTimer()
			b.ReportMetric(float64(relayNs.Nanoseconds()), "relay-ns/pkt")
			b.ReportMetric(float64(tlsNs.Nanoseconds()), "tls-ns/pkt")
			b.ReportMetric(float64(relayNs)/float64(tlsNs), "relay/tls")
			b.ReportMetric(1e9/float64(relayNs.Nanoseconds()), "relay-pkts/s")
			b.ReportMetric(float64(size)*1e3/float64(relayNs.Nanoseconds()), "relay-MB/s")
			b.ReportMetric(allocs, "relay-allocs/pkt")
		})
	}
}

// baseline is a direct TLS connection on loopback: a clientConn's writer
// on one end, a clientConn's reader on the other.
type baseline struct {
	out *clientConn
}

func newBaseline(b *testing.B, r *testRelay, onPacket func([32]byte, []byte)) *baseline {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: r.ts.TLS.Certificates})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		tc := c.(*tls.Conn)
		tc.Handshake() // tls.Dial below waits for it
		accepted <- tc
	}()
	cfg := credential.ClientTLS(r.pins)
	conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	in := <-accepted
	if in == nil {
		b.Fatal("accept failed")
	}
	noPings := func(c *ClientConfig) { c.PingInterval = time.Hour }
	sender, receiver := testClientOf(b, nil, noPings), testClientOf(b, onPacket, noPings)
	out := &clientConn{c: sender, conn: conn, raw: conn.NetConn(), queue: make(chan *frameBuf, DefaultClientQueueDepth), done: make(chan struct{})}
	rcv := &clientConn{c: receiver, conn: in, raw: in.NetConn(), fr: frameReader{r: bufio.NewReaderSize(in, 32<<10)},
		queue: make(chan *frameBuf, DefaultClientQueueDepth), done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(out.writeLoop)
	wg.Go(func() { rcv.readLoop() })
	b.Cleanup(func() {
		out.closeWith(nil)
		rcv.closeWith(nil)
		wg.Wait()
	})
	return &baseline{out: out}
}

// send queues pkt as the frame the relay would deliver.
func (bl *baseline) send(pkt []byte) error {
	fb := getBuf(frameRecv, keyLen+len(pkt))
	copy(fb.payload()[keyLen:], pkt)
	if !bl.out.enqueue(fb) {
		fb.free()
		return ErrQueueFull
	}
	return nil
}
