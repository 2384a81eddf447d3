package bind

import (
	"context"
	"crypto/rand"
	"net/netip"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// run is the housekeeping goroutine of one session: every Timing.Tick, and
// when kicked, it runs the local and per-peer timers.
func (b *Bind) run(ctx context.Context) {
	tick := time.NewTicker(b.t.Tick)
	defer tick.Stop()
	for {
		b.housekeep()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-b.wake:
		}
	}
}

func (b *Bind) housekeep() {
	now := b.now()
	moved := b.refreshLocal(now)
	b.expirePending(now)
	for _, p := range b.peerList() {
		if moved {
			// Peers without a direct path learn our new candidates at
			// once, through the relay (call-me-maybe), and ping them: the
			// coordinator passes them on later. A starting agent learns
			// its reflexive address after its first probes went out.
			p.mu.Lock()
			if !p.trustedLocked(now) {
				p.lastProbe = never
			}
			p.mu.Unlock()
		}
		b.maintain(p, now)
	}
}

func (b *Bind) maintain(p *peer, now int64) {
	r := p.route(now)
	relay := b.pickRelay(r.lastIn, r.home)
	p.mu.Lock()
	a := p.maintainLocked(now, relay != "")
	p.mu.Unlock()
	for _, addr := range a.ping {
		b.sendPing(p, addr, "", nil)
	}
	if a.callMeMaybe && relay != "" {
		b.sendDisco(p, netip.AddrPort{}, nil, relay, callMeMaybeBody(b.LocalCandidates()))
	}
	if a.pruned {
		b.rebuildIndex()
	}
}

func (b *Bind) expirePending(now int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, pp := range b.pending {
		if now-pp.sent > int64(b.t.PongTimeout) {
			delete(b.pending, id)
		}
	}
}

// sendPing pings the peer at to, or through relay if relay is not "".
// The caller updates the path's lastPing.
func (b *Bind) sendPing(p *peer, to netip.AddrPort, relay string, reply chan<- PingAnswer) {
	var txid [12]byte
	_, _ = rand.Read(txid[:])
	b.mu.Lock()
	if len(b.pending) >= maxPending {
		b.mu.Unlock()
		return
	}
	b.pending[txid] = &pendingPing{key: p.key, to: to, relay: relay, sent: b.now(), reply: reply}
	b.mu.Unlock()
	b.sendDisco(p, to, nil, relay, pingBody(txid))
}

// sendDisco seals body for the peer and sends it to to, or through relay.
// via, if not nil, is the inner endpoint a packet from to arrived with:
// its sticky source makes the answer leave from the address the question
// came to.
func (b *Bind) sendDisco(p *peer, to netip.AddrPort, via *conn.StdNetEndpoint, relay string, body []byte) {
	p.mu.Lock()
	aead := p.aead
	p.mu.Unlock()
	b.mu.Lock()
	from := b.pub
	b.mu.Unlock()
	if aead == nil {
		return
	}
	msg := seal(aead, from, body)
	var err error
	if relay != "" {
		err = b.cfg.Relays.Send(relay, p.key, msg)
	} else {
		if via == nil {
			via = &conn.StdNetEndpoint{AddrPort: to}
		}
		err = b.inner.Send([][]byte{msg}, via)
	}
	if err != nil {
		b.log.Debug("disco not sent", "peer", shortKey(p.key), "addr", to, "relay", relay, "err", err)
	}
}

// handleDisco handles a disco message from src (arrived with the inner
// endpoint via), or through relay if relay is not "".
func (b *Bind) handleDisco(pkt []byte, src netip.AddrPort, via *conn.StdNetEndpoint, relay string) {
	key, ok := discoSender(pkt)
	if !ok {
		b.stats.drop(DropMalformed)
		return
	}
	p := b.peer(key)
	if p == nil {
		b.stats.drop(DropUnknownKey)
		return
	}
	p.mu.Lock()
	aead, known := p.aead, p.known
	p.mu.Unlock()
	if !known || aead == nil {
		b.stats.drop(DropUnknownKey)
		return
	}
	body, err := open(aead, pkt)
	if err != nil {
		b.stats.drop(DropBadSeal)
		return
	}
	m, err := parseBody(body)
	if err != nil {
		b.stats.drop(DropMalformed)
		return
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	now := b.now()
	switch m.typ {
	case msgPing:
		b.onPing(p, m.txid, src, via, relay, now)
	case msgPong:
		b.onPong(p, m, src, relay, now)
	case msgCallMeMaybe:
		b.onCallMeMaybe(p, m.addrs, now)
	}
}

// onPing answers a ping the way it came. A direct ping's source becomes a
// candidate of the peer, pinged back unless trusted already: that is how
// a peer's new address (roaming, NAT rebinding) is found. A relay-only
// node answers pings through relays only.
func (b *Bind) onPing(p *peer, txid [12]byte, src netip.AddrPort, via *conn.StdNetEndpoint, relay string, now int64) {
	if relay != "" {
		b.sendDisco(p, netip.AddrPort{}, nil, relay, pongBody(txid, netip.AddrPort{}))
		return
	}
	if b.cfg.RelayOnly {
		return
	}
	b.sendDisco(p, src, via, "", pongBody(txid, src))
	p.mu.Lock()
	q := p.addPathLocked(src, now)
	// The peer's ping proves it knows us now and that its side lets our
	// packets in: a ping of ours to that address that went unanswered (it
	// learned of us after we of it, or its NAT had no mapping for us yet:
	// hole punching) is sent again at once; otherwise the ping back is
	// held to a tenth of MinPing. Each ping back answers one ping, so
	// nothing multiplies.
	unanswered := q != nil && q.lastPing != never && q.lastPong < q.lastPing
	back := q != nil && now-q.lastPong >= int64(b.t.Trust) && (unanswered || now-q.lastPing >= int64(b.t.MinPing/10))
	if back {
		q.lastPing = now
	}
	// A ping from another address than the current path's may mean the
	// peer moved: check the current path now, so that, if it is dead, the
	// new address (pinged back above) takes over within silentGrace.
	var check netip.AddrPort
	if cur := p.best; back && cur != nil && cur != q && now-cur.lastPing >= int64(b.t.MinPing) {
		cur.lastPing, check = now, cur.addr
	}
	p.mu.Unlock()
	if back {
		b.sendPing(p, src, "", nil)
	}
	if check.IsValid() {
		b.sendPing(p, check, "", nil)
	}
}

// onPong accepts a pong only for an outstanding ping to this peer, from
// the address (or through a relay, as) pinged, within PongTimeout. An
// accepted pong makes its path trusted and may make it the current one.
func (b *Bind) onPong(p *peer, m discoMsg, src netip.AddrPort, relay string, now int64) {
	b.mu.Lock()
	pp := b.pending[m.txid]
	why := DropReason(-1)
	switch {
	case pp == nil:
		why = DropPongUnexpected // never sent, answered already or expired
	case pp.key != p.key:
		why = DropPongWrongKey
	case (pp.relay == "") != (relay == "") || (relay == "" && pp.to != src):
		why = DropPongWrongAddr
	case now-pp.sent > int64(b.t.PongTimeout):
		why = DropPongLate
		delete(b.pending, m.txid)
	default:
		delete(b.pending, m.txid)
	}
	b.mu.Unlock()
	if why >= 0 {
		b.stats.drop(why)
		return
	}
	rtt := time.Duration(now - pp.sent)
	if pp.reply != nil {
		ans := PingAnswer{Kind: PathDirect, Addr: src, Relay: relay, RTT: rtt, Seen: m.addrs[0]}
		if relay != "" {
			ans.Kind, ans.Seen = PathRelay, netip.AddrPort{}
		}
		select {
		case pp.reply <- ans:
		default:
		}
	}
	p.mu.Lock()
	verified := false
	if relay != "" {
		p.relayPong, p.relayRTT = now, rtt
	} else if q := p.addPathLocked(src, now); q != nil {
		verified = q.lastPong == never
		q.lastPong = now
		q.addRTT(rtt)
		p.fastRounds = 0
		p.considerLocked(q, now)
		if p.best == q {
			p.observeLocked(now, false)
		}
	}
	p.mu.Unlock()
	if verified {
		b.rebuildIndex()
	}
}

// onCallMeMaybe pings every candidate the peer sent at once (those not
// pinged within MinPing), to open both NATs at the same time.
func (b *Bind) onCallMeMaybe(p *peer, addrs []netip.AddrPort, now int64) {
	if b.cfg.RelayOnly {
		return
	}
	var ping []netip.AddrPort
	p.mu.Lock()
	for _, a := range addrs {
		if q := p.addPathLocked(a, now); q != nil && now-q.lastPing >= int64(b.t.MinPing) {
			q.lastPing = now
			ping = append(ping, q.addr)
		}
	}
	p.mu.Unlock()
	for _, a := range ping {
		b.sendPing(p, a, "", nil)
	}
}
