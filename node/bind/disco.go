package bind

import (
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/crypto/chacha20poly1305"
)

// The disco wire format. A message is
//
//	magic "wmdisc" (6) | sender public key (32) | nonce (24) | sealed body
//
// and the body, sealed with XChaCha20-Poly1305 under
// HKDF-SHA256(X25519(sender private, receiver public), info discoInfo)
// with the first 38 bytes (magic and sender key) as additional data, is
//
//	ping:          0x01 | txid (12)
//	pong:          0x02 | txid (12) | address the ping came from (18)
//	call-me-maybe: 0x03 | up to 8 addresses of the sender (18 each)
//
// An address is 16 bytes of IPv6 (IPv4-mapped for IPv4) and a big-endian
// port. The magic's first byte 'w' (0x77) has a top bit pair of 01, so a
// disco message is neither a WireGuard message (first byte 1..4) nor STUN
// (top bits 00).
const (
	discoMagic     = "wmdisc"
	discoInfo      = "wiremesh disco v1"
	discoHeaderLen = len(discoMagic) + 32 + chacha20poly1305.NonceSizeX
	discoMinLen    = discoHeaderLen + 1 + chacha20poly1305.Overhead
	addrLen        = 18

	msgPing        = 0x01
	msgPong        = 0x02
	msgCallMeMaybe = 0x03
)

// discoMsg is a parsed disco body.
type discoMsg struct {
	typ   byte
	txid  [12]byte
	addrs []netip.AddrPort // pong: one (the pinger as seen); call-me-maybe: the candidates
}

var errNoKey = errors.New("no disco key")

// discoAEAD derives the key shared by priv and the peer public key pub.
// A zero or low-order key fails (X25519's result would be all zeros).
func discoAEAD(priv, pub [32]byte) (cipher.AEAD, error) {
	if priv == ([32]byte{}) {
		return nil, errNoKey
	}
	sk, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	pk, err := ecdh.X25519().NewPublicKey(pub[:])
	if err != nil {
		return nil, fmt.Errorf("peer key: %w", err)
	}
	shared, err := sk.ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("peer key: %w", err)
	}
	key, err := hkdf.Key(sha256.New, shared, nil, discoInfo, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	return chacha20poly1305.NewX(key)
}

// publicKey returns the X25519 public key of priv.
func publicKey(priv [32]byte) (pub [32]byte, err error) {
	sk, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return pub, err
	}
	copy(pub[:], sk.PublicKey().Bytes())
	return pub, nil
}

// seal frames body as a disco message from the key from.
func seal(aead cipher.AEAD, from [32]byte, body []byte) []byte {
	out := make([]byte, discoHeaderLen, discoHeaderLen+len(body)+aead.Overhead())
	copy(out, discoMagic)
	copy(out[len(discoMagic):], from[:])
	nonce := out[len(discoMagic)+32 : discoHeaderLen]
	_, _ = rand.Read(nonce)
	return aead.Seal(out, nonce, body, out[:len(discoMagic)+32])
}

// discoSender returns the sender key of the disco message pkt (whose magic
// the caller checked).
func discoSender(pkt []byte) (k [32]byte, ok bool) {
	if len(pkt) < discoMinLen {
		return k, false
	}
	copy(k[:], pkt[len(discoMagic):])
	return k, true
}

// open authenticates and decrypts the disco message pkt.
func open(aead cipher.AEAD, pkt []byte) ([]byte, error) {
	nonce := pkt[len(discoMagic)+32 : discoHeaderLen]
	return aead.Open(nil, nonce, pkt[discoHeaderLen:], pkt[:len(discoMagic)+32])
}

func pingBody(txid [12]byte) []byte {
	return append([]byte{msgPing}, txid[:]...)
}

func pongBody(txid [12]byte, seen netip.AddrPort) []byte {
	b := append([]byte{msgPong}, txid[:]...)
	return appendAddr(b, seen)
}

func callMeMaybeBody(addrs []netip.AddrPort) []byte {
	b := []byte{msgCallMeMaybe}
	for i, a := range addrs {
		if i == MaxCandidates {
			break
		}
		b = appendAddr(b, a)
	}
	return b
}

func appendAddr(b []byte, a netip.AddrPort) []byte {
	ip := a.Addr().As16()
	b = append(b, ip[:]...)
	return binary.BigEndian.AppendUint16(b, a.Port())
}

func readAddr(b []byte) netip.AddrPort {
	ip := netip.AddrFrom16([16]byte(b[:16])).Unmap()
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(b[16:]))
}

// parseBody parses a decrypted disco body.
func parseBody(b []byte) (discoMsg, error) {
	var m discoMsg
	if len(b) == 0 {
		return m, errors.New("empty body")
	}
	m.typ = b[0]
	b = b[1:]
	switch m.typ {
	case msgPing, msgPong:
		want := 12
		if m.typ == msgPong {
			want += addrLen
		}
		if len(b) != want {
			return m, fmt.Errorf("type %d: body of %d bytes, want %d", m.typ, len(b), want)
		}
		copy(m.txid[:], b)
		if m.typ == msgPong {
			m.addrs = []netip.AddrPort{readAddr(b[12:])}
		}
	case msgCallMeMaybe:
		if len(b)%addrLen != 0 || len(b)/addrLen > MaxCandidates {
			return m, fmt.Errorf("call-me-maybe: body of %d bytes is not up to %d addresses", len(b), MaxCandidates)
		}
		for ; len(b) > 0; b = b[addrLen:] {
			m.addrs = append(m.addrs, readAddr(b))
		}
	default:
		return m, fmt.Errorf("unknown type %d", m.typ)
	}
	return m, nil
}
