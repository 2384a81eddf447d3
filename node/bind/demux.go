package bind

import (
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

// isHandshake reports whether p is a WireGuard handshake message: an
// initiation, a response or a cookie reply.
func isHandshake(p []byte) bool {
	switch len(p) {
	case wgInitiationSize:
		return p[0] == 1
	case wgResponseSize:
		return p[0] == 2
	case wgCookieReplySize:
		return p[0] == 3
	}
	return false
}
