package gossip

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
)

// Gossip is encrypted by this package's transport, not by memberlist:
// memberlist runs without a keyring, so serf, which finds the keyring
// through memberlist's configuration, has none to change. Serf answers
// the install-key, use-key and remove-key queries of any member holding
// the key by changing that keyring; with none, it refuses them all
// ("encryption not enabled") and the keyring stays exactly what SetKeys
// made it, that is what the node's netmap names.
//
// The format is memberlist's own (encryption version 1: AES-GCM, no
// padding), so members of either kind understand each other:
//
//   - a packet is [1][12-byte nonce][ciphertext and tag], with no
//     additional data;
//   - a stream carries frames [10][uint32 length][1][nonce][ciphertext and
//     tag], the first 5 bytes being the additional data, one frame per
//     message memberlist writes.

const (
	cryptVersion  = 1  // memberlist's encryption version without padding
	cryptFrame    = 10 // memberlist's encryptMsg message type
	nonceLen      = 12
	cryptOverhead = 1 + nonceLen + 16 // version, nonce, GCM tag
	// maxFrame bounds a stream frame, as memberlist bounds a push/pull.
	maxFrame = 20 << 20
)

// errNoKey is returned for a packet or frame that no key of the ring opens.
var errNoKey = errors.New("no gossip key opens the message")

// keyring is an immutable set of gossip keys: the first seals, every key
// opens. SetKeys swaps a new one in.
type keyring struct {
	keys  [][]byte // copies of the keys, in order
	aeads []cipher.AEAD
}

// newKeyring returns the keyring of keys, which validateKeys accepted.
func newKeyring(keys [][]byte) (*keyring, error) {
	r := &keyring{}
	for i, k := range keys {
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
		r.keys = append(r.keys, bytes.Clone(k))
		r.aeads = append(r.aeads, aead)
	}
	return r, nil
}

// seal appends the sealed form of plain to dst.
func (r *keyring) seal(dst, plain, ad []byte) []byte {
	var nonce [nonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	dst = append(dst, cryptVersion)
	dst = append(dst, nonce[:]...)
	return r.aeads[0].Seal(dst, nonce[:], plain, ad)
}

// open returns the plaintext of msg, sealed by seal with any key of the
// ring.
func (r *keyring) open(msg, ad []byte) ([]byte, error) {
	if len(msg) < cryptOverhead || msg[0] != cryptVersion {
		return nil, errNoKey
	}
	nonce, ct := msg[1:1+nonceLen], msg[1+nonceLen:]
	for _, aead := range r.aeads {
		if plain, err := aead.Open(nil, nonce, ct, ad); err == nil {
			return plain, nil
		}
	}
	return nil, errNoKey
}

// cryptConn encrypts a stream connection: each Write is sealed into one
// frame, and Read returns the plaintext of the frames it reads, refusing
// anything that is not a frame a key of the ring opens.
type cryptConn struct {
	net.Conn
	ring  *atomic.Pointer[keyring]
	plain []byte // opened but not yet read
}

// Write implements net.Conn.
func (c *cryptConn) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if len(b)+cryptOverhead > maxFrame {
		return 0, fmt.Errorf("gossip stream message of %d bytes is too large", len(b))
	}
	frame := make([]byte, 5, 5+cryptOverhead+len(b))
	frame[0] = cryptFrame
	binary.BigEndian.PutUint32(frame[1:], uint32(cryptOverhead+len(b)))
	frame = c.ring.Load().seal(frame, b, frame[:5])
	if _, err := c.Conn.Write(frame); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Read implements net.Conn.
func (c *cryptConn) Read(b []byte) (int, error) {
	for len(c.plain) == 0 {
		if err := c.readFrame(); err != nil {
			return 0, err
		}
	}
	n := copy(b, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

// readFrame reads and opens the next frame into c.plain.
func (c *cryptConn) readFrame() error {
	var hdr [5]byte
	if _, err := io.ReadFull(c.Conn, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != cryptFrame {
		return fmt.Errorf("gossip stream from %s is not encrypted", c.RemoteAddr())
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n < cryptOverhead || n > maxFrame {
		return fmt.Errorf("gossip stream from %s: frame of %d bytes", c.RemoteAddr(), n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(c.Conn, msg); err != nil {
		return err
	}
	plain, err := c.ring.Load().open(msg, hdr[:])
	if err != nil {
		return fmt.Errorf("gossip stream from %s: %w", c.RemoteAddr(), err)
	}
	c.plain = plain
	return nil
}
