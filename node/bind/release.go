package bind

import (
	"crypto/rand"
	"crypto/subtle"
	"net/netip"
)

// releaseMagic starts the datagram with which ReleaseBuffers wakes the
// direct ReceiveFuncs; a random tag follows. Its first byte makes it
// neither WireGuard, STUN nor disco (see classify).
const releaseMagic = "wmrelease"

func newReleaseMsg() []byte {
	m := make([]byte, len(releaseMagic)+16)
	copy(m, releaseMagic)
	rand.Read(m[len(releaseMagic):])
	return m
}

// ReleaseBuffers makes every ReceiveFunc drop the pages of the packet
// buffers wireguard-go lent it (see package internal/pages) as soon as it
// is waiting for packets: the relayed one at once, the direct ones when
// the datagram that the socket sends itself over loopback wakes them. A
// ReceiveFunc that has packets to return keeps its buffers, so a call
// while traffic flows costs nothing but that datagram. The data path
// calls it once traffic has been quiet for a while after a burst.
func (b *Bind) ReleaseBuffers() {
	s := b.sess.Load()
	if s == nil {
		return
	}
	select {
	case s.release <- struct{}{}:
	default:
	}
	for _, a := range []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()} {
		ep, err := b.inner.ParseEndpoint(netip.AddrPortFrom(a, s.port).String())
		if err != nil {
			continue
		}
		// This fails where a family is off; its socket is not open then.
		if err := b.inner.Send([][]byte{b.releaseMsg}, ep); err != nil {
			b.log.Debug("bind: wake the socket to release buffers", "to", a, "err", err)
		}
	}
}

// isReleaseCall says whether pkt from src is ReleaseBuffers' datagram:
// from the socket itself over loopback, with this Bind's random tag.
func (b *Bind) isReleaseCall(pkt []byte, src netip.AddrPort) bool {
	s := b.sess.Load()
	return s != nil && src.Port() == s.port && src.Addr().Unmap().IsLoopback() &&
		subtle.ConstantTimeCompare(pkt, b.releaseMsg) == 1
}
