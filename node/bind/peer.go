package bind

import (
	"crypto/cipher"
	"encoding/hex"
	"math"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// never is the time of something that has not happened: far enough in the
// past that now-never overflows nothing and exceeds every timing.
const never = math.MinInt64 / 4

// path is one direct address of a peer.
type path struct {
	addr    netip.AddrPort
	ep      *conn.StdNetEndpoint // handed to the inner bind; never modified
	lan     bool                 // in one of this node's local subnets
	netmap  bool                 // listed in the netmap (else learned)
	created int64
	// lastPing and lastPong are monotonic times (Bind.now); never if none.
	lastPing, lastPong int64
	rtt                time.Duration // smoothed; 0 before the first pong
	// recent are the last rttWindow RTTs, for better: a scheduling delay
	// only adds to a sample, so their minimum is what the path can do.
	recent  [rttWindow]time.Duration
	samples int
}

// rttWindow is how many recent RTTs better compares by their minimum.
const rttWindow = 4

// addRTT takes a pong's round trip.
func (q *path) addRTT(rtt time.Duration) {
	if q.rtt == 0 {
		q.rtt = rtt
	} else {
		q.rtt = (3*q.rtt + rtt) / 4
	}
	q.recent[q.samples%rttWindow] = rtt
	q.samples++
}

// minRTT is the least of the recent RTTs; 0 before the first pong.
func (q *path) minRTT() time.Duration {
	m := time.Duration(0)
	for i := range min(q.samples, rttWindow) {
		if i == 0 || q.recent[i] < m {
			m = q.recent[i]
		}
	}
	return m
}

// peer is one WireGuard peer, by public key. It is also the conn.Endpoint
// that wireguard-go holds for the peer (set with the endpoint string
// EndpointString(key)); Send chooses the path.
type peer struct {
	b   *Bind
	key [32]byte

	// lastSend and lastRecv are the monotonic times of the last WireGuard
	// packet to and from the peer (disco does not count): activity.
	lastSend, lastRecv atomic.Int64
	// dataIn counts the WireGuard data packets from the peer (for Watch).
	dataIn atomic.Uint64

	mu sync.Mutex // guards the fields below; taken after Bind.mu, never before
	// known: the peer is in the netmap (SetPeers). Disco from unknown
	// keys is dropped.
	known bool
	aead  cipher.AEAD // nil without a key pair
	home  string      // the peer's home relay
	paths map[netip.AddrPort]*path
	order []netip.AddrPort // netmap candidates in netmap order
	// best is the current direct path, nil if none: trusted while its last
	// pong is within Timing.Trust, retried (with the relay) until Dead.
	best         *path
	overlapUntil int64 // until then, the relay also carries traffic
	lastProbe    int64 // last round pinging all candidates
	fastRounds   int   // probe rounds since the last pong
	idle         bool  // not active at the last tick
	relayIn      string
	relayInAt    int64 // last WireGuard packet through relayIn
	relayPong    int64
	relayRTT     time.Duration
	// The path as last observed, for Paths and the change counter.
	kind  PathKind
	at    netip.AddrPort
	since int64
	// Until awaitUntil, handshake initiations to the peer are held: the
	// peer greets us (AwaitGreeting). held is the last one, sent at
	// awaitUntil unless a response of ours answered a greeting first.
	awaitUntil int64
	held       []byte
	holding    bool // a release is scheduled
}

func newPeer(b *Bind, key [32]byte, now int64) *peer {
	p := &peer{b: b, key: key, paths: map[netip.AddrPort]*path{},
		lastProbe: never, relayInAt: never, relayPong: never, since: now, kind: PathNone, idle: true,
		awaitUntil: never}
	p.lastSend.Store(never)
	p.lastRecv.Store(never)
	return p
}

// silentGrace is how much longer than a heartbeat interval the current
// path may go without a pong, while pinged, before a path that answered
// since replaces it (see silentLocked): well above a pong's delay on a
// loaded host.
const silentGrace = 250 * time.Millisecond

// silentLocked reports whether the current path q is pinged but has not
// answered for a heartbeat interval and silentGrace (or three RTTs): a
// path that stopped answering (the peer roamed, its NAT moved the
// mapping) gives way to another that answered since, without waiting for
// its trust to end.
func (p *peer) silentLocked(q *path, now int64) bool {
	return q.lastPing > q.lastPong && now-q.lastPong > int64(p.b.t.Heartbeat+max(silentGrace, 3*q.rtt))
}

// activeAt reports whether WireGuard traffic flowed within the window.
func (p *peer) activeAt(now int64, window time.Duration) bool {
	return now-max(p.lastSend.Load(), p.lastRecv.Load()) < int64(window)
}

func (p *peer) trustedLocked(now int64) bool {
	return p.best != nil && now-p.best.lastPong < int64(p.b.t.Trust)
}

// addPathLocked returns the path for addr, adding it (if there is room).
func (p *peer) addPathLocked(addr netip.AddrPort, now int64) *path {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if q := p.paths[addr]; q != nil {
		return q
	}
	if !addr.IsValid() || addr.Port() == 0 || addr.Addr().IsUnspecified() || addr.Addr().IsMulticast() || len(p.paths) >= maxPaths {
		return nil
	}
	q := &path{addr: addr, ep: &conn.StdNetEndpoint{AddrPort: addr}, created: now,
		lastPing: never, lastPong: never, lan: p.b.isLocal(addr.Addr())}
	p.paths[addr] = q
	return q
}

// setInfoLocked applies the netmap's view of the peer. A candidate not
// known before makes the next probe round due at once.
func (p *peer) setInfoLocked(info PeerInfo, now int64) {
	p.known = true
	p.home = info.HomeRelay
	p.order = p.order[:0]
	for _, q := range p.paths {
		q.netmap = false
	}
	for _, a := range info.Candidates {
		if len(p.order) == MaxCandidates {
			break
		}
		n := len(p.paths)
		q := p.addPathLocked(a, now)
		if len(p.paths) > n {
			p.lastProbe = never // a new candidate: probe at the next tick, if active
		}
		if q != nil && !q.netmap {
			q.netmap = true
			p.order = append(p.order, q.addr)
		}
	}
}

// better reports whether c should replace the current path cur, both
// trusted: a better class at once, else a clearly lower RTT (hysteresis).
func better(c, cur *path) bool {
	if c.lan != cur.lan {
		return c.lan
	}
	cr, curr := c.minRTT(), cur.minRTT()
	return float64(cr) < BetterRTTRatio*float64(curr) && curr-cr >= BetterRTTMin
}

// considerLocked makes c, which just answered a ping, the current path if
// there is none, if the current one lost its trust or if c is better.
func (p *peer) considerLocked(c *path, now int64) {
	cur := p.best
	switch {
	case cur == c:
		return
	case cur == nil:
		p.overlapUntil = now + int64(p.b.t.Overlap)
	case p.trustedLocked(now) && !better(c, cur):
		return
	}
	p.best = c
}

// route is where one Send to the peer goes.
type route struct {
	direct   *conn.StdNetEndpoint // nil: not direct
	relay    bool                 // also (or only) through a relay
	fallback *conn.StdNetEndpoint // direct if no relay is connected
	lastIn   string               // relay the peer last sent through
	home     string               // the peer's home relay
	kick     bool                 // a probe round is due: wake the housekeeper
}

// route decides where a packet sent now goes.
func (p *peer) route(now int64) route {
	p.mu.Lock()
	defer p.mu.Unlock()
	cfg := &p.b.cfg
	r := route{home: p.home}
	if now-p.relayInAt < int64(p.b.t.RelayReply) {
		r.lastIn = p.relayIn
	}
	switch {
	case cfg.RelayOnly:
		r.relay = true
		return r
	case p.trustedLocked(now):
		// While the path is silent, the relay carries a copy too: a path
		// that died costs at most a heartbeat interval and silentGrace
		// of traffic, not its whole trust.
		r.direct = p.best.ep
		r.relay = (now < p.overlapUntil || p.silentLocked(p.best, now)) && !cfg.NoRelay
		return r
	case p.best != nil:
		r.direct = p.best.ep // was working: keep sending there too
	case len(p.order) > 0:
		r.fallback = p.paths[p.order[0]].ep
	}
	r.relay = !cfg.NoRelay
	if cfg.NoRelay && r.direct == nil {
		r.direct, r.fallback = r.fallback, nil
	}
	r.kick = now-p.lastProbe >= int64(p.b.t.ProbeRetry) && p.idle
	return r
}

// actions is what a housekeeping tick decided for one peer.
type actions struct {
	ping        []netip.AddrPort
	callMeMaybe bool
	pruned      bool
}

// maintainLocked runs the per-peer timers: drops a dead current path,
// heartbeats it, probes the candidates when due, forgets stale learned
// addresses and records path changes. relayUp says whether a relay is
// connected for the peer.
func (p *peer) maintainLocked(now int64, relayUp bool) actions {
	t := &p.b.t
	var a actions
	defer p.observeLocked(now, relayUp)
	if p.best != nil && now-p.best.lastPong > int64(t.Dead) {
		p.best = nil
	}
	if p.best != nil && (!p.trustedLocked(now) || p.silentLocked(p.best, now)) {
		for _, q := range p.paths { // another address answered since: take it
			if now-q.lastPong < int64(t.Trust) && (q.lastPong > p.best.lastPong) {
				p.best = q
			}
		}
	}
	a.pruned = p.pruneLocked(now)
	if !p.known || p.b.cfg.RelayOnly || p.aead == nil {
		return a
	}
	if !p.activeAt(now, t.Active) {
		p.idle = true
		return a
	}
	if p.idle { // traffic again after a pause: discover quickly
		p.idle = false
		p.fastRounds = 0
		p.lastProbe = never
	}
	trusted := p.trustedLocked(now) && !p.silentLocked(p.best, now) // a silent path is probed like a lost one
	if p.best != nil && now-p.best.lastPing >= int64(t.Heartbeat) {
		a.ping = append(a.ping, p.best.addr)
		p.best.lastPing = now
	}
	interval := t.Reprobe
	if !trusted && (p.best != nil || p.fastRounds < t.FastProbeRounds) {
		interval = t.ProbeRetry
	}
	if now-p.lastProbe < int64(interval) {
		return a
	}
	p.lastProbe = now
	if !trusted {
		p.fastRounds++
		a.callMeMaybe = !p.b.cfg.NoRelay
	}
	for _, q := range p.paths {
		if now-q.lastPing >= int64(t.MinPing) {
			a.ping = append(a.ping, q.addr)
			q.lastPing = now
		}
	}
	return a
}

// pruneLocked forgets learned addresses that never answered lately and
// reports whether it forgot one that answered once (it is in the index).
func (p *peer) pruneLocked(now int64) bool {
	verified := false
	for a, q := range p.paths {
		if q.netmap || q == p.best || now-max(q.created, q.lastPong) < int64(forgetAfter) {
			continue
		}
		verified = verified || q.lastPong != never
		delete(p.paths, a)
	}
	return verified
}

// observeLocked records the path in use now and counts a change.
func (p *peer) observeLocked(now int64, relayUp bool) {
	kind, at := PathNone, netip.AddrPort{}
	switch {
	case !p.b.cfg.RelayOnly && p.trustedLocked(now):
		kind, at = PathDirect, p.best.addr
	case relayUp && !p.b.cfg.NoRelay:
		kind = PathRelay
	}
	if kind == p.kind && at == p.at {
		return
	}
	p.b.stats.pathChanges.Add(1)
	p.b.log.Info("peer path changed", "peer", shortKey(p.key), "path", string(kind), "addr", at, "was", string(p.kind))
	p.kind, p.at, p.since = kind, at, now
}

// displayLocked is the address shown as the peer's endpoint: the direct
// path when trusted, else the relay's (addr, if the caller found one), else
// a direct address being tried, else 0.0.0.0:0.
func (p *peer) displayLocked(now int64, relay netip.AddrPort) netip.AddrPort {
	switch {
	case p.trustedLocked(now) && !p.b.cfg.RelayOnly:
		return p.best.addr
	case relay.IsValid():
		return relay
	case p.best != nil:
		return p.best.addr
	case len(p.order) > 0:
		return p.order[0]
	}
	return netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
}

func (p *peer) display() netip.AddrPort {
	var relay netip.AddrPort
	if rs := p.b.cfg.Relays; rs != nil && !p.b.cfg.NoRelay {
		r := p.route(p.b.now())
		if name := p.b.pickRelay(r.lastIn, r.home); name != "" {
			relay = rs.Addr(name)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.displayLocked(p.b.now(), relay)
}

// conn.Endpoint, for wireguard-go.

// ClearSrc does nothing: a peer has no sticky source address.
func (p *peer) ClearSrc() {}

// SrcToString returns "": a peer has no sticky source address.
func (p *peer) SrcToString() string { return "" }

// DstToString returns the current address as ip:port (wgctrl parses it).
func (p *peer) DstToString() string { return p.display().String() }

// DstToBytes returns the current address, for WireGuard's cookie MACs.
func (p *peer) DstToBytes() []byte {
	b, _ := p.display().MarshalBinary()
	return b
}

// DstIP returns the current address's IP.
func (p *peer) DstIP() netip.Addr { return p.display().Addr() }

// SrcIP returns the zero Addr: a peer has no sticky source address.
func (p *peer) SrcIP() netip.Addr { return netip.Addr{} }

func shortKey(k [32]byte) string { return hex.EncodeToString(k[:4]) }

// sortedPaths returns the peer's paths, netmap ones first in netmap order.
func (p *peer) sortedPathsLocked() []*path {
	out := make([]*path, 0, len(p.paths))
	for _, a := range p.order {
		out = append(out, p.paths[a])
	}
	for _, q := range p.paths {
		if !q.netmap {
			out = append(out, q)
		}
	}
	slices.SortStableFunc(out[len(p.order):], func(a, b *path) int { return a.addr.Compare(b.addr) })
	return out
}
