package gossip

import (
	"fmt"
	"log"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Stats counts the gossip traffic of a member's transport since it
// started: UDP packets, and the bytes of UDP packets and TCP streams
// (joins, push/pull syncs, TCP fallback probes). Bytes are payload bytes
// as memberlist hands them over, encryption included, without IP, UDP or
// TCP headers.
type Stats struct {
	BytesSent       uint64
	BytesReceived   uint64
	PacketsSent     uint64
	PacketsReceived uint64
}

// counters are the live Stats of a transport.
type counters struct {
	bytesSent, bytesReceived, packetsSent, packetsReceived atomic.Uint64
}

func (c *counters) stats() Stats {
	return Stats{
		BytesSent:       c.bytesSent.Load(),
		BytesReceived:   c.bytesReceived.Load(),
		PacketsSent:     c.packetsSent.Load(),
		PacketsReceived: c.packetsReceived.Load(),
	}
}

// transport is memberlist's NetTransport with encryption and counters: it
// delegates every call, seals what goes out and opens what comes in with
// its keyring (see crypt.go), counts what goes through, and relays incoming
// packets and streams through two goroutines of its own, which Shutdown
// stops and waits for. A packet that no key opens is dropped.
type transport struct {
	inner    *memberlist.NetTransport
	ring     atomic.Pointer[keyring]
	log      *log.Logger
	count    counters
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	closing  chan struct{} // closed when Shutdown starts: relays drop what they get
	stop     chan struct{} // closed by Shutdown once inner is down: relays return
	wg       sync.WaitGroup
	once     sync.Once
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

// newTransport binds UDP and TCP on addr:port and starts the relays.
func newTransport(addr netip.Addr, port int, ring *keyring, logger *log.Logger) (*transport, error) {
	inner, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{addr.String()},
		BindPort:  port,
		Logger:    logger,
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", net.JoinHostPort(addr.String(), strconv.Itoa(port)), err)
	}
	t := &transport{
		inner:    inner,
		log:      logger,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		closing:  make(chan struct{}),
		stop:     make(chan struct{}),
	}
	t.ring.Store(ring)
	t.wg.Add(2)
	go t.relayPackets()
	go t.relayStreams()
	return t, nil
}

// relayPackets counts and forwards the packets inner receives.
func (t *transport) relayPackets() {
	defer t.wg.Done()
	in := t.inner.PacketCh()
	for {
		select {
		case p := <-in:
			t.count.packetsReceived.Add(1)
			t.count.bytesReceived.Add(uint64(len(p.Buf)))
			plain, err := t.ring.Load().open(p.Buf, nil)
			if err != nil {
				t.log.Printf("[DEBUG] gossip: dropping a packet from %s: %v", p.From, err)
				continue
			}
			p.Buf = plain
			select {
			case t.packetCh <- p:
			case <-t.closing:
			}
		case <-t.stop:
			return
		}
	}
}

// relayStreams wraps and forwards the connections inner accepts.
func (t *transport) relayStreams() {
	defer t.wg.Done()
	in := t.inner.StreamCh()
	for {
		select {
		case c := <-in:
			select {
			case t.streamCh <- t.wrap(c):
			case <-t.closing:
				_ = c.Close()
			}
		case <-t.stop:
			return
		}
	}
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo implements memberlist.Transport.
func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *transport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	b = t.ring.Load().seal(make([]byte, 0, len(b)+cryptOverhead), b, nil)
	ts, err := t.inner.WriteToAddress(b, addr)
	if err == nil {
		t.count.packetsSent.Add(1)
		t.count.bytesSent.Add(uint64(len(b)))
	}
	return ts, err
}

// PacketCh implements memberlist.Transport.
func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout implements memberlist.Transport.
func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *transport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := t.inner.DialAddressTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return t.wrap(c), nil
}

// wrap encrypts and counts a stream connection.
func (t *transport) wrap(c net.Conn) net.Conn {
	return &cryptConn{Conn: &countedConn{Conn: c, count: &t.count}, ring: &t.ring}
}

// StreamCh implements memberlist.Transport.
func (t *transport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown implements memberlist.Transport: it closes the listeners, then
// stops the relays and waits for them. While the listeners close, the
// relays keep taking what they deliver (NetTransport's listeners block
// until it is taken) and drop it, so Shutdown cannot hang even when
// nothing reads PacketCh or StreamCh any more.
func (t *transport) Shutdown() error {
	var err error
	t.once.Do(func() {
		close(t.closing)
		err = t.inner.Shutdown()
		close(t.stop)
		t.wg.Wait()
	})
	return err
}

// Stats returns the counters.
func (t *transport) Stats() Stats { return t.count.stats() }

// countedConn counts the bytes of a stream connection.
type countedConn struct {
	net.Conn
	count *counters
}

// Read implements net.Conn.
func (c *countedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.count.bytesReceived.Add(uint64(n))
	return n, err
}

// Write implements net.Conn.
func (c *countedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.count.bytesSent.Add(uint64(n))
	return n, err
}
