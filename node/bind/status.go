package bind

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"
)

// PathKind is how a peer is reached.
type PathKind string

// The path kinds.
const (
	PathDirect PathKind = "direct" // a trusted direct UDP address
	PathRelay  PathKind = "relay"  // through a relay
	PathNone   PathKind = "none"   // neither works (yet)
)

// Why a peer is not reached directly (PathStatus.WhyNotDirect).
const (
	WhyRelayOnly    = "relay-only"    // Config.RelayOnly
	WhyUDPBlocked   = "udp blocked"   // no STUN server answered us
	WhyNoCandidates = "no candidates" // the peer has no direct address
	WhyNoPong       = "no pong"       // its addresses did not answer lately
)

// PathStatus is one peer's path, for status, metrics and the UI.
type PathStatus struct {
	Peer [32]byte
	Kind PathKind
	// Addr is the direct path in use; while not direct, the direct address
	// still tried (one that worked before), if any.
	Addr netip.AddrPort
	// Relay is the relay that would carry traffic now ("" if none).
	Relay string
	// RTT is the direct path's smoothed RTT, or the relay's last one.
	RTT time.Duration
	// Since is when Kind or Addr last changed.
	Since time.Time
	// LastPong is when the peer last answered a ping, on any path; zero
	// if never.
	LastPong time.Time
	// WhyNotDirect is "" when Kind is direct, else a Why constant.
	WhyNotDirect string
	// Candidates are the peer's direct addresses known here.
	Candidates []netip.AddrPort
}

// Paths returns every netmap peer's path, in key order.
func (b *Bind) Paths() []PathStatus {
	now := b.now()
	b.mu.Lock()
	nat := b.local.nat
	b.mu.Unlock()
	var out []PathStatus
	for _, p := range b.peerList() {
		r := p.route(now)
		relay := b.pickRelay(r.lastIn, r.home)
		p.mu.Lock()
		if p.known {
			p.observeLocked(now, relay != "") // the path now, not at the last tick
			out = append(out, b.statusLocked(p, now, relay, nat))
		}
		p.mu.Unlock()
	}
	slices.SortFunc(out, func(a, c PathStatus) int { return slices.Compare(a.Peer[:], c.Peer[:]) })
	return out
}

func (b *Bind) statusLocked(p *peer, now int64, relay string, nat NATType) PathStatus {
	s := PathStatus{Peer: p.key, Kind: p.kind, Since: b.timeAt(p.since)}
	if p.best != nil {
		s.Addr, s.RTT = p.best.addr, p.best.rtt
	}
	if s.Kind == PathRelay {
		s.Relay = relay
		if p.best == nil {
			s.RTT = p.relayRTT
		}
	}
	last := p.relayPong
	for _, q := range p.sortedPathsLocked() {
		s.Candidates = append(s.Candidates, q.addr)
		last = max(last, q.lastPong)
	}
	s.LastPong = b.timeAt(last)
	switch {
	case s.Kind == PathDirect:
	case b.cfg.RelayOnly:
		s.WhyNotDirect = WhyRelayOnly
	case nat == NATUDPBlocked:
		s.WhyNotDirect = WhyUDPBlocked
	case len(p.paths) == 0:
		s.WhyNotDirect = WhyNoCandidates
	default:
		s.WhyNotDirect = WhyNoPong
	}
	return s
}

// PingAnswer is one path that answered a Ping.
type PingAnswer struct {
	Kind  PathKind       // direct or relay
	Addr  netip.AddrPort // the direct address that answered
	Relay string         // the relay that answered through
	RTT   time.Duration
	Seen  netip.AddrPort // the address the peer saw our ping come from (direct)
}

// PingResult is what Ping found.
type PingResult struct {
	Tried   int          // pings sent: one per direct address, one through a relay
	Answers []PingAnswer // in order of arrival
}

// Ping pings the peer with key on all its direct addresses and through
// its relay at once, and waits for every answer until ctx is done or
// PongTimeout passed. It fails if nothing answered.
func (b *Bind) Ping(ctx context.Context, key [32]byte) (PingResult, error) {
	var res PingResult
	p := b.peer(key)
	if p == nil {
		return res, fmt.Errorf("bind: ping %s: not a peer", shortKey(key))
	}
	now := b.now()
	r := p.route(now)
	relay := b.pickRelay(r.lastIn, r.home)
	p.mu.Lock()
	var addrs []netip.AddrPort
	for _, q := range p.sortedPathsLocked() {
		addrs = append(addrs, q.addr)
		q.lastPing = now
	}
	noKey := p.aead == nil
	p.mu.Unlock()
	if noKey {
		return res, fmt.Errorf("bind: ping %s: no disco key (no private key set)", shortKey(key))
	}
	res.Tried = len(addrs)
	if relay != "" {
		res.Tried++
	}
	if res.Tried == 0 {
		return res, fmt.Errorf("bind: ping %s: no candidates and no relay connected", shortKey(key))
	}
	reply := make(chan PingAnswer, res.Tried)
	for _, a := range addrs {
		b.sendPing(p, a, "", reply)
	}
	if relay != "" {
		b.sendPing(p, netip.AddrPort{}, relay, reply)
	}
	timeout := time.NewTimer(b.t.PongTimeout)
	defer timeout.Stop()
	for len(res.Answers) < res.Tried {
		select {
		case a := <-reply:
			res.Answers = append(res.Answers, a)
		case <-ctx.Done():
			return res, b.pingErr(res, key, ctx.Err())
		case <-timeout.C:
			return res, b.pingErr(res, key, nil)
		}
	}
	return res, nil
}

func (b *Bind) pingErr(res PingResult, key [32]byte, err error) error {
	if len(res.Answers) > 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bind: ping %s: no answer from %d paths: %w", shortKey(key), res.Tried, err)
	}
	return fmt.Errorf("bind: ping %s: no answer from %d paths within %v", shortKey(key), res.Tried, b.t.PongTimeout)
}

// DropReason says why a disco message was dropped.
type DropReason int

// The drop reasons.
const (
	DropUnknownKey     DropReason = iota // sender not in the netmap (or no key pair)
	DropBadSeal                          // failed to authenticate
	DropMalformed                        // too short, unknown type, bad length
	DropPongUnexpected                   // no outstanding ping with its txid: forged, replayed or answered
	DropPongWrongKey                     // txid of a ping to another peer
	DropPongWrongAddr                    // from another address than pinged
	DropPongLate                         // after PongTimeout
	numDropReasons
)

var dropNames = [numDropReasons]string{"unknown_key", "bad_seal", "malformed", "pong_unexpected", "pong_wrong_key", "pong_wrong_addr", "pong_late"}

// String returns the reason's metric label.
func (r DropReason) String() string {
	if r < 0 || r >= numDropReasons {
		return fmt.Sprintf("DropReason(%d)", int(r))
	}
	return dropNames[r]
}

const (
	pathDirect = 0
	pathRelay  = 1
)

// counters are the Bind's live counters.
type counters struct {
	txPackets, txBytes, rxPackets, rxBytes [2]atomic.Uint64 // by pathDirect, pathRelay
	pathChanges                            atomic.Uint64
	relayDrops                             atomic.Uint64
	sessionRepairs                         atomic.Uint64
	garbage                                atomic.Uint64
	disco                                  [numDropReasons]atomic.Uint64
}

func (c *counters) drop(r DropReason) { c.disco[r].Add(1) }

// Traffic is a packet and byte count.
type Traffic struct{ Packets, Bytes uint64 }

// Stats is a snapshot of the Bind's counters (all since New).
type Stats struct {
	DirectTx, DirectRx, RelayTx, RelayRx Traffic
	// PathChanges counts changes of any peer's path kind or direct address.
	PathChanges uint64
	// RelayDrops counts relayed WireGuard packets dropped: queue full,
	// sender not a peer, the Bind closed, or larger than wireguard-go's
	// buffers.
	RelayDrops uint64
	// Garbage counts datagrams that were neither WireGuard, STUN answers
	// nor disco.
	Garbage uint64
	// DiscoDropped counts dropped disco messages by reason.
	DiscoDropped [numDropReasons]uint64
	// SessionRepairs counts the handshakes a Watch started for sessions
	// that carried traffic one way only.
	SessionRepairs uint64
}

// Stats returns the counters now.
func (b *Bind) Stats() Stats {
	c := &b.stats
	t := func(p, by *atomic.Uint64) Traffic { return Traffic{p.Load(), by.Load()} }
	s := Stats{
		DirectTx:    t(&c.txPackets[pathDirect], &c.txBytes[pathDirect]),
		DirectRx:    t(&c.rxPackets[pathDirect], &c.rxBytes[pathDirect]),
		RelayTx:     t(&c.txPackets[pathRelay], &c.txBytes[pathRelay]),
		RelayRx:     t(&c.rxPackets[pathRelay], &c.rxBytes[pathRelay]),
		PathChanges: c.pathChanges.Load(),
		RelayDrops:  c.relayDrops.Load(),
		Garbage:     c.garbage.Load(),

		SessionRepairs: c.sessionRepairs.Load(),
	}
	for i := range s.DiscoDropped {
		s.DiscoDropped[i] = c.disco[i].Load()
	}
	return s
}
