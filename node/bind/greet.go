package bind

import (
	"time"
)

// Two peers that learn of each other from one netmap both start a
// handshake at once: the greeter (the agent's engine picks it) greets, and
// the other side initiates as soon as it has a packet for the peer, which
// gossip sends at once. wireguard-go handles handshake messages on several
// workers, and two crossed initiations can end with a session that only
// works one way (see Watch), or none for 5 s. So the side that is greeted
// holds its own initiations for a while: when it answers the greeting, the
// held initiation is obsolete (wireguard-go replaced its index) and is
// dropped; if no greeting came by the deadline, it goes out then.

// AwaitGreeting makes the Bind hold handshake initiations to the peer with
// key for d, from now: the peer is about to greet this node (start a
// handshake with it). A peer not in the netmap is ignored.
func (b *Bind) AwaitGreeting(key [32]byte, d time.Duration) {
	p := b.peer(key)
	if p == nil {
		return
	}
	p.mu.Lock()
	p.awaitUntil = b.now() + int64(d)
	p.mu.Unlock()
}

// holdHandshake reports whether the single packet pkt, sent to p now, is
// held or dropped by the greeting rules: an initiation while p's greeting
// is awaited is held (replacing one held before), and a response drops the
// held initiation and ends the wait. Data packets cost one comparison.
func (b *Bind) holdHandshake(pkt []byte, p *peer, now int64) bool {
	initiation := len(pkt) == wgInitiationSize && pkt[0] == 1
	response := len(pkt) == wgResponseSize && pkt[0] == 2
	if !initiation && !response {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if now >= p.awaitUntil {
		return false
	}
	if response { // we answered the greeting
		p.awaitUntil, p.held = never, nil
		return false
	}
	p.held = append(p.held[:0], pkt...)
	if !p.holding {
		p.holding = true
		time.AfterFunc(time.Duration(p.awaitUntil-now), func() { b.releaseHeld(p) })
	}
	return true
}

// releaseHeld ends p's wait for a greeting, if it is over, and sends the
// initiation still held.
func (b *Bind) releaseHeld(p *peer) {
	p.mu.Lock()
	if left := p.awaitUntil - b.now(); left > 0 { // awaited again since
		time.AfterFunc(time.Duration(left), func() { b.releaseHeld(p) })
		p.mu.Unlock()
		return
	}
	pkt := p.held
	p.held, p.holding, p.awaitUntil = nil, false, never
	p.mu.Unlock()
	if pkt == nil || b.sess.Load() == nil {
		return
	}
	b.sendPeer([][]byte{pkt}, p)
}
