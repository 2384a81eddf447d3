// Package bind is wiremesh's conn.Bind for wireguard-go: one UDP socket
// that carries WireGuard, path probes ("disco") and STUN, and that sends
// each peer's packets on the best path it knows, a direct UDP address or a
// relay.
//
// Receiving. Bind wraps wireguard-go's standard bind (conn.StdNetBind, with
// its batched I/O and GSO/GRO) and looks at every datagram's first bytes
// (classify): WireGuard messages pass; STUN answers and disco messages are
// handled and reported to wireguard-go with size 0, as the conn.Bind
// contract allows; anything else is dropped the same way. A WireGuard
// packet from an address that a peer has proven its own (it answered a
// ping there, authenticated with its key) is handed to wireguard-go with
// that peer's endpoint, so the peer stays on it; from any other address
// it keeps the plain endpoint, and wireguard-go's own roaming answers
// there directly. This costs a few ns per packet and allocates nothing.
// Packets arriving through relays come in through DeliverRelayed and an
// extra ReceiveFunc.
//
// Endpoints. The agent sets each peer's endpoint with the UAPI to
// EndpointString(key) ("wm-" and the key in hex); ParseEndpoint turns it
// into the peer's endpoint, whose DstToString is always an ip:port (the
// direct path, else the relay's address, else an address being tried,
// else 0.0.0.0:0) so that wgctrl and `wg show` can read it. Plain ip:port
// endpoints still work and are sent to directly.
//
// Paths. A peer's candidates (from the netmap, from call-me-maybe, from
// pings that arrive from new addresses) are probed with disco pings; a
// pong, sealed with the peer's key, bound to a transaction id we issued,
// from the address we pinged and within PongTimeout, makes a direct path
// trusted for TrustDuration. The rules, with their timings in config.go:
//
//   - A trusted direct path carries the traffic alone; heartbeats every
//     HeartbeatInterval keep it trusted while traffic flows. Without a
//     trusted path, traffic goes through a relay at once (the one the peer
//     last sent through, else its home relay, else ours) and also to a
//     direct path that worked before; so a path that dies or goes one-way
//     is abandoned within TrustDuration, and one that only works one way
//     is never trusted (trust needs a pong).
//   - Among working direct paths: LAN before public, then lower RTT, with
//     hysteresis (BetterRTTRatio and BetterRTTMin) so similar paths do not
//     flap. When a peer moves from the relay to a direct path, the relay
//     keeps a copy of the traffic for UpgradeOverlap.
//   - While a peer with traffic has no trusted path, all its candidates
//     are pinged and a call-me-maybe (our candidates) goes to it through
//     the relay every ProbeRetryInterval for FastProbeRounds rounds, then
//     every ReprobeInterval; the receiver pings them all at once, which
//     opens both NATs (simultaneous opening). Idle peers are not probed.
//   - A ping from a new address of a known peer adds that address and is
//     answered and pinged back, and the current path is pinged at once:
//     if it stays silent for a heartbeat interval and silentGrace while
//     the new address answered, the new address takes over before the
//     current path's trust ends. Roaming and NAT rebinding recover so.
//   - Disco from keys not in the netmap, or failing to open, is dropped and
//     counted, never answered.
//
// Local candidates are the interface addresses with the bound port, the
// reflexive addresses STUN servers see (asked from the same socket every
// STUNIntervalMin..Max while active, and on Rebind or an address change)
// and the operator's endpoints; the NAT type follows from two servers'
// answers.
package bind

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wiremesh/wiremesh/internal/pages"
	"golang.zx2c4.com/wireguard/conn"
)

// endpointPrefix starts the endpoint strings of peers (EndpointString).
const endpointPrefix = "wm-"

// EndpointString is the UAPI endpoint value that makes wireguard-go send
// to the peer with public key key through this Bind's path selection.
func EndpointString(key [32]byte) string {
	return endpointPrefix + hex.EncodeToString(key[:])
}

// Bind is a conn.Bind; see the package documentation.
type Bind struct {
	cfg   Config
	t     Timing
	log   *slog.Logger
	inner conn.Bind // a *conn.StdNetBind but in tests
	epoch time.Time
	stats counters
	wake  chan struct{} // wakes the housekeeping goroutine; 1-buffered
	// releaseMsg is the datagram ReleaseBuffers sends the socket.
	releaseMsg []byte

	// index maps each address a peer proved its own (a pong came from it)
	// to that peer; replaced, never modified, so the receive path reads it
	// without a lock.
	index    atomic.Pointer[map[netip.AddrPort]*peer]
	prefixes atomic.Pointer[[]netip.Prefix] // local addresses, for "LAN"
	sess     atomic.Pointer[session]        // nil while closed
	bufs     sync.Pool                      // *[]byte for relayed packets
	hs       handshakeCopies

	mu sync.Mutex // guards the fields below; taken before any peer.mu
	// priv and pub are the node key pair; pub is the sender of our disco.
	priv, pub [32]byte
	peers     map[[32]byte]*peer
	pending   map[[12]byte]*pendingPing
	port      uint16 // bound port while open
	local     localState
}

// session is what lives from one Open to its Close.
type session struct {
	port    uint16        // the bound port
	queue   chan relayed  // relayed WireGuard packets for wireguard-go
	release chan struct{} // 1-buffered; ReleaseBuffers to the relayed ReceiveFunc
	closed  chan struct{} // closed by Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the housekeeping goroutine
}

type relayed struct {
	p   *peer
	buf *[]byte
}

// pendingPing is a ping waiting for its pong.
type pendingPing struct {
	key   [32]byte
	to    netip.AddrPort // the address pinged; zero if through a relay
	relay string         // the relay pinged through; "" if direct
	sent  int64
	reply chan<- PingAnswer // nil but for Ping
}

var _ conn.Bind = (*Bind)(nil)

// New returns a Bind over a new standard wireguard-go bind.
func New(cfg Config) (*Bind, error) {
	return newBind(cfg, conn.NewStdNetBind())
}

func newBind(cfg Config, inner conn.Bind) (*Bind, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RelayQueue == 0 {
		cfg.RelayQueue = DefaultRelayQueue
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Relays == nil {
		cfg.NoRelay = true
	}
	b := &Bind{
		cfg: cfg, t: cfg.Timing.withDefaults(), log: cfg.Log, inner: inner,
		epoch: time.Now(), wake: make(chan struct{}, 1),
		peers: map[[32]byte]*peer{}, pending: map[[12]byte]*pendingPing{},
	}
	b.releaseMsg = newReleaseMsg()
	b.local = newLocalState(cfg.STUNServers)
	b.bufs.New = func() any { s := make([]byte, 0, 2048); return &s }
	b.index.Store(&map[netip.AddrPort]*peer{})
	b.prefixes.Store(&[]netip.Prefix{})
	if err := b.SetPrivateKey(cfg.PrivateKey); err != nil {
		return nil, err
	}
	return b, nil
}

// now is the monotonic time in ns since the Bind was made.
func (b *Bind) now() int64 { return int64(time.Since(b.epoch)) }

func (b *Bind) timeAt(t int64) time.Time {
	if t == never {
		return time.Time{}
	}
	return b.epoch.Add(time.Duration(t))
}

// kick wakes the housekeeping goroutine now.
func (b *Bind) kick() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// SetPrivateKey sets the node's private key (at start and on rotation);
// disco keys are derived again for every peer.
func (b *Bind) SetPrivateKey(priv [32]byte) error {
	var pub [32]byte
	if priv != ([32]byte{}) {
		var err error
		if pub, err = publicKey(priv); err != nil {
			return fmt.Errorf("bind: private key: %w", err)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.priv, b.pub = priv, pub
	for _, p := range b.peers {
		p.mu.Lock()
		p.aead, _ = discoAEAD(priv, p.key)
		p.mu.Unlock()
	}
	return nil
}

// SetPeers replaces the peers with the netmap's: their candidates and home
// relays. Peers not in peers are forgotten (their disco is dropped from now
// on); an endpoint wireguard-go still holds for one is sent through relays
// only, so the agent sets the endpoint again when a peer comes back.
func (b *Bind) SetPeers(peers map[[32]byte]PeerInfo) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for key, info := range peers {
		p := b.peerLocked(key, now)
		p.mu.Lock()
		p.setInfoLocked(info, now)
		p.mu.Unlock()
	}
	for key, p := range b.peers {
		if _, ok := peers[key]; !ok {
			p.mu.Lock()
			p.known = false
			p.mu.Unlock()
			delete(b.peers, key)
		}
	}
	b.rebuildIndexLocked()
	b.kick()
}

// peerLocked returns the peer with key, adding an unknown one.
func (b *Bind) peerLocked(key [32]byte, now int64) *peer {
	if p := b.peers[key]; p != nil {
		return p
	}
	p := newPeer(b, key, now)
	p.aead, _ = discoAEAD(b.priv, key)
	b.peers[key] = p
	return p
}

func (b *Bind) peer(key [32]byte) *peer {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peers[key]
}

func (b *Bind) peerList() []*peer {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*peer, 0, len(b.peers))
	for _, p := range b.peers {
		out = append(out, p)
	}
	return out
}

func (b *Bind) rebuildIndex() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rebuildIndexLocked()
}

func (b *Bind) rebuildIndexLocked() {
	idx := map[netip.AddrPort]*peer{}
	for _, p := range b.peers {
		p.mu.Lock()
		for a, q := range p.paths {
			if p.known && q.lastPong != never {
				idx[a] = p
			}
		}
		p.mu.Unlock()
	}
	b.index.Store(&idx)
}

// Open opens the inner bind on port and starts the housekeeping goroutine.
// Besides the inner bind's ReceiveFuncs it returns one for packets that
// arrive through relays.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sess.Load() != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	fns, actual, err := b.inner.Open(port)
	if err != nil {
		return nil, 0, err
	}
	s := &session{
		port: actual, queue: make(chan relayed, b.cfg.RelayQueue),
		release: make(chan struct{}, 1), closed: make(chan struct{}),
	}
	out := make([]conn.ReceiveFunc, 0, len(fns)+1)
	for _, fn := range fns {
		out = append(out, b.receiveDirect(fn))
	}
	out = append(out, b.receiveRelayed(s))
	b.port = actual
	b.local.restart()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	b.sess.Store(s)
	s.wg.Go(func() { b.run(ctx) })
	return out, actual, nil
}

// Close closes the inner bind, ends the ReceiveFuncs with net.ErrClosed
// and stops the housekeeping goroutine. Peers and paths are kept for the
// next Open.
func (b *Bind) Close() error {
	b.mu.Lock()
	s := b.sess.Swap(nil)
	b.mu.Unlock()
	err := b.inner.Close()
	if s != nil {
		close(s.closed)
		s.cancel()
		s.wg.Wait()
	}
	return err
}

// SetMark sets the inner bind's fwmark.
func (b *Bind) SetMark(mark uint32) error { return b.inner.SetMark(mark) }

// BatchSize is the inner bind's.
func (b *Bind) BatchSize() int { return b.inner.BatchSize() }

// ParseEndpoint parses EndpointString(key), the peer's endpoint, or a
// plain ip:port.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if !strings.HasPrefix(s, endpointPrefix) {
		return b.inner.ParseEndpoint(s)
	}
	raw, err := hex.DecodeString(s[len(endpointPrefix):])
	if err != nil || len(raw) != 32 {
		return nil, fmt.Errorf("bind: endpoint %q: want %s and 64 hex digits of a public key", s, endpointPrefix)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peerLocked([32]byte(raw), b.now()), nil
}

// receiveDirect wraps one of the inner bind's ReceiveFuncs with the demux.
func (b *Bind) receiveDirect(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(bufs, sizes, eps)
		if n > 0 && b.demux(bufs[:n], sizes[:n], eps[:n]) {
			// ReleaseBuffers woke us and nothing else came: no packet
			// is in bufs and nobody writes them until we return.
			pages.Release(bufs)
		}
		return n, err
	}
}

// demux handles one batch from the socket in place: WireGuard packets
// stay (with the peer's endpoint if their source is a proven path), but
// for copies of a handshake message (handshakeCopies); the rest is
// handled and its size set to 0. The WireGuard path allocates
// nothing. It reports whether the batch was only ReleaseBuffers' wake-up
// (and other datagrams handled here).
func (b *Bind) demux(bufs [][]byte, sizes []int, eps []conn.Endpoint) (onlyWake bool) {
	idx := *b.index.Load()
	now := b.now()
	var pkts, bytes uint64
	wake := false
	for i, size := range sizes {
		if size == 0 {
			continue
		}
		pkt := bufs[i][:size]
		se, ok := eps[i].(*conn.StdNetEndpoint)
		if !ok {
			continue
		}
		switch classify(pkt) {
		case kindWireGuard:
			if pkt[0] != wgTransportType && b.hs.copied(pkt) {
				break
			}
			pkts++
			bytes += uint64(size)
			if p := idx[se.AddrPort]; p != nil {
				eps[i] = p
				p.lastRecv.Store(now)
				if pkt[0] == wgTransportType {
					p.dataIn.Add(1)
				}
			}
			continue
		case kindSTUN:
			b.handleSTUN(pkt, se.AddrPort)
		case kindDisco:
			b.handleDisco(pkt, se.AddrPort, se, "")
		default:
			if b.isReleaseCall(pkt, se.AddrPort) {
				wake = true
			} else {
				b.stats.garbage.Add(1)
			}
		}
		sizes[i] = 0
	}
	if pkts > 0 {
		b.stats.rxPackets[pathDirect].Add(pkts)
		b.stats.rxBytes[pathDirect].Add(bytes)
	}
	return wake && pkts == 0
}

// DeliverRelayed takes a packet that arrived through relay from the node
// with public key src (the relay client's OnPacket). Disco is handled at
// once; WireGuard is copied into a bounded queue read by the extra
// ReceiveFunc; anything else, copies of a handshake message and packets
// from keys not in the netmap are dropped.
func (b *Bind) DeliverRelayed(relay string, src [32]byte, pkt []byte) {
	switch classify(pkt) {
	case kindDisco:
		b.handleDisco(pkt, netip.AddrPort{}, nil, relay)
		return
	case kindWireGuard:
		if pkt[0] != wgTransportType && b.hs.copied(pkt) {
			return
		}
	default:
		b.stats.garbage.Add(1)
		return
	}
	s := b.sess.Load()
	p := b.peer(src)
	if s == nil || p == nil {
		b.stats.relayDrops.Add(1)
		return
	}
	now := b.now()
	p.lastRecv.Store(now)
	if pkt[0] == wgTransportType {
		p.dataIn.Add(1)
	}
	p.mu.Lock()
	p.relayIn, p.relayInAt = relay, now
	p.mu.Unlock()
	buf := b.bufs.Get().(*[]byte)
	*buf = append((*buf)[:0], pkt...)
	select {
	case s.queue <- relayed{p, buf}:
		b.stats.rxPackets[pathRelay].Add(1)
		b.stats.rxBytes[pathRelay].Add(uint64(len(pkt)))
	default:
		b.bufs.Put(buf)
		b.stats.relayDrops.Add(1)
	}
}

// receiveRelayed is the ReceiveFunc of relayed packets of session s.
func (b *Bind) receiveRelayed(s *session) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		var it relayed
		for it.buf == nil {
			select {
			case it = <-s.queue:
			case <-s.release:
				pages.Release(bufs)
			case <-s.closed:
				return 0, net.ErrClosed
			}
		}
		n := 0
		for {
			if len(*it.buf) <= len(bufs[n]) {
				sizes[n] = copy(bufs[n], *it.buf)
				eps[n] = it.p
				n++
			} else {
				b.stats.relayDrops.Add(1)
			}
			b.bufs.Put(it.buf)
			if n == len(bufs) {
				return n, nil
			}
			select {
			case it = <-s.queue:
				continue
			default:
			}
			return n, nil
		}
	}
}

var errNoPath = errors.New("bind: no path to peer (no direct address, no relay connected)")

// Send sends bufs to ep: a plain endpoint directly, a peer on its path.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	switch e := ep.(type) {
	case *peer:
		return b.sendPeer(bufs, e)
	case *conn.StdNetEndpoint:
		return b.sendDirect(bufs, e)
	}
	return conn.ErrWrongEndpointType
}

func (b *Bind) sendDirect(bufs [][]byte, ep *conn.StdNetEndpoint) error {
	var bytes uint64
	for _, buf := range bufs {
		bytes += uint64(len(buf))
	}
	b.stats.txPackets[pathDirect].Add(uint64(len(bufs)))
	b.stats.txBytes[pathDirect].Add(bytes)
	return b.inner.Send(bufs, ep)
}

func (b *Bind) sendPeer(bufs [][]byte, p *peer) error {
	now := b.now()
	if len(bufs) == 1 && b.holdHandshake(bufs[0], p, now) {
		return nil
	}
	p.lastSend.Store(now)
	r := p.route(now)
	if r.kick {
		b.kick()
	}
	relay := ""
	if r.relay {
		relay = b.pickRelay(r.lastIn, r.home)
	}
	if relay == "" && r.direct == nil {
		r.direct = r.fallback
	}
	var errDirect, errRelay error
	if r.direct != nil {
		errDirect = b.sendDirect(bufs, r.direct)
	}
	if relay != "" {
		errRelay = b.sendRelay(relay, p.key, bufs)
	}
	switch {
	case r.direct == nil && relay == "":
		return errNoPath
	case r.direct != nil && relay != "" && (errDirect == nil || errRelay == nil):
		return nil
	case errDirect != nil:
		return errDirect
	}
	return errRelay
}

func (b *Bind) sendRelay(relay string, key [32]byte, bufs [][]byte) error {
	var bytes, pkts uint64
	var err error
	for _, buf := range bufs {
		if err = b.cfg.Relays.Send(relay, key, buf); err != nil {
			break
		}
		pkts++
		bytes += uint64(len(buf))
	}
	b.stats.txPackets[pathRelay].Add(pkts)
	b.stats.txBytes[pathRelay].Add(bytes)
	return err
}

// pickRelay returns the relay to reach a peer through: the one it last
// sent through, its home relay, our home relay, the first connected; ""
// if none (or relays are off).
func (b *Bind) pickRelay(lastIn, home string) string {
	rs := b.cfg.Relays
	if rs == nil || b.cfg.NoRelay {
		return ""
	}
	for _, r := range [...]string{lastIn, home, rs.Home()} {
		if r != "" && rs.Connected(r) {
			return r
		}
	}
	return ""
}
