package bind

import (
	"sync"

	"github.com/wiremesh/wiremesh/relay/stun"
)

// packetKind is what a datagram on the shared socket is.
type packetKind uint8

const (
	kindGarbage packetKind = iota
	kindWireGuard
	kindSTUN
	kindDisco
)

// WireGuard message types and their sizes (the protocol's, as in
// wireguard-go's device/noise-protocol.go).
const (
	wgInitiationSize  = 148
	wgResponseSize    = 92
	wgCookieReplySize = 64
	wgMinTransport    = 32
	wgTransportType   = 4 // a data packet's type byte
)

// classify tells WireGuard, STUN and disco apart by their headers: a
// WireGuard message starts with its type 1..4 and three zero bytes and has
// the type's size (at least 32 for data); STUN has its top two bits zero and
// the magic cookie at bytes 4..8; disco starts with discoMagic. Anything
// else is garbage. It reads at most the first 8 bytes and never allocates.
func classify(p []byte) packetKind {
	if len(p) >= 4 && p[1] == 0 && p[2] == 0 && p[3] == 0 {
		ok := false
		switch p[0] {
		case 1:
			ok = len(p) == wgInitiationSize
		case 2:
			ok = len(p) == wgResponseSize
		case 3:
			ok = len(p) == wgCookieReplySize
		case wgTransportType:
			ok = len(p) >= wgMinTransport
		}
		if ok {
			return kindWireGuard
		}
	}
	if len(p) >= discoMinLen && string(p[:len(discoMagic)]) == discoMagic {
		return kindDisco
	}
	if stun.Is(p) {
		return kindSTUN
	}
	return kindGarbage
}

// handshakeCopies remembers the last handshake messages received, so that
// only the first copy of one reaches wireguard-go. While the relay also
// carries a peer's traffic (the upgrade's overlap, a silent direct path)
// every message comes twice, and of two copies of a handshake response
// wireguard-go's handshake workers can each take one: the session is then
// derived twice, and the second derivation deletes the session the peer
// may still be sending with and restarts the nonces the peer has seen.
// Each handshake message WireGuard sends is new (a fresh ephemeral key or
// nonce), so a message seen before is only ever a copy.
//
// A message is known by the 16 bytes 32 before its end: an initiation's
// or a response's mac1 (a MAC over everything before it), a cookie
// reply's sealed cookie (under a random nonce).
type handshakeCopies struct {
	mu   sync.Mutex
	seen map[[16]byte]struct{} // the keys in ring
	ring [256][16]byte
	next int
}

// copied reports whether pkt, a WireGuard handshake message, was received
// before (among the last 256), and remembers it.
func (h *handshakeCopies) copied(pkt []byte) bool {
	k := [16]byte(pkt[len(pkt)-32:])
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.seen[k]; ok {
		return true
	}
	if h.seen == nil {
		h.seen = make(map[[16]byte]struct{}, len(h.ring))
	} else if len(h.seen) == len(h.ring) {
		delete(h.seen, h.ring[h.next])
	}
	h.seen[k] = struct{}{}
	h.ring[h.next] = k
	h.next = (h.next + 1) % len(h.ring)
	return false
}
