package relay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// frameType is a frame's first byte.
type frameType byte

// Frame types; the payload of each follows its name.
const (
	frameChallenge frameType = 0x01 // relay → node, first: relay proof public key (32) ‖ nonce (32)
	frameAuth      frameType = 0x02 // node → relay, the answer: node public key (32) ‖ MAC (32)
	frameOK        frameType = 0x03 // relay → node: attached; empty
	frameError     frameType = 0x04 // relay → node: why the relay closes the connection (text); it closes next
	frameSend      frameType = 0x05 // node → relay: destination node key (32) ‖ packet
	frameRecv      frameType = 0x06 // relay → node: source node key (32) ‖ packet
	framePing      frameType = 0x07 // either way: 8 bytes, echoed in a pong
	framePong      frameType = 0x08 // either way: the 8 bytes of the ping it answers
	frameKeepAlive frameType = 0x09 // relay → node: empty
	framePeerGone  frameType = 0x0a // relay → node: a destination key (32) that is not attached
)

// Sizes of the protocol.
const (
	// MaxPacketSize is the largest packet the relay forwards.
	MaxPacketSize = 64 << 10
	// headerLen is a frame's header: the type and the payload length,
	// 4 bytes big-endian.
	headerLen = 5
	keyLen    = 32
	// maxPayload is the longest payload: a key and a packet.
	maxPayload = keyLen + MaxPacketSize
	// maxReason bounds the text of an error frame.
	maxReason = 1024
	pingLen   = 8
)

// frameSpec is what a frame of one type may hold.
type frameSpec struct {
	name     string
	min, max int // payload length bounds
}

// specs holds every known type; the zero spec marks an unknown one.
var specs = [...]frameSpec{
	frameChallenge: {"challenge", 2 * keyLen, 2 * keyLen},
	frameAuth:      {"auth", 2 * keyLen, 2 * keyLen},
	frameOK:        {"ok", 0, 0},
	frameError:     {"error", 0, maxReason},
	frameSend:      {"send", keyLen, maxPayload},
	frameRecv:      {"recv", keyLen, maxPayload},
	framePing:      {"ping", pingLen, pingLen},
	framePong:      {"pong", pingLen, pingLen},
	frameKeepAlive: {"keep-alive", 0, 0},
	framePeerGone:  {"peer-gone", keyLen, keyLen},
}

func (t frameType) spec() (frameSpec, bool) {
	if int(t) >= len(specs) || specs[t].name == "" {
		return frameSpec{}, false
	}
	return specs[t], true
}

func (t frameType) String() string {
	if s, ok := t.spec(); ok {
		return s.name
	}
	return fmt.Sprintf("type 0x%02x", byte(t))
}

// errTooLong marks a frame refused for its length alone (a packet over
// MaxPacketSize, counted as a too_big drop when it is a send).
var errTooLong = errors.New("too long")

// A badFrame says what was wrong with a frame and where: its offset in
// the stream after the upgrade, and its number (from 1).
type badFrame struct {
	at  int64
	n   int
	typ frameType
	err error
}

func (e *badFrame) Error() string {
	if e.typ == 0 { // not even its type byte was read
		return fmt.Sprintf("frame %d at byte %d: %v", e.n, e.at, e.err)
	}
	return fmt.Sprintf("frame %d at byte %d (%s): %v", e.n, e.at, e.typ, e.err)
}

func (e *badFrame) Unwrap() error { return e.err }

// frameReader reads frames, checking each header against its type's
// spec before the payload is read. It does not allocate per frame.
type frameReader struct {
	r   *bufio.Reader
	off int64 // stream offset of the next header
	n   int   // frames read, the current one included
	cur frameType
	len int
	hdr [headerLen]byte
}

// header reads the next header. A stream that ends cleanly before it
// gives io.EOF, one that fails there (a closed or broken connection) its
// read error; anything else wrong is a *badFrame.
func (fr *frameReader) header() (frameType, int, error) {
	fr.n++
	fr.cur = 0
	if k, err := io.ReadFull(fr.r, fr.hdr[:]); err != nil {
		if k == 0 {
			return 0, 0, err
		}
		fr.cur = frameType(fr.hdr[0])
		return 0, 0, fr.fail(truncated("header", k, headerLen, err))
	}
	fr.cur = frameType(fr.hdr[0])
	fr.len = int(binary.BigEndian.Uint32(fr.hdr[1:]))
	s, ok := fr.cur.spec()
	switch {
	case !ok:
		return 0, 0, fr.fail(errors.New("unknown frame type"))
	case fr.len > s.max:
		return 0, 0, fr.fail(fmt.Errorf("%w: %d bytes, want %s", errTooLong, fr.len, s.want()))
	case fr.len < s.min:
		return 0, 0, fr.fail(fmt.Errorf("%d bytes, want %s", fr.len, s.want()))
	}
	return fr.cur, fr.len, nil
}

func (s frameSpec) want() string {
	if s.min == s.max {
		return fmt.Sprint(s.min)
	}
	return fmt.Sprintf("%d to %d", s.min, s.max)
}

// payload reads the payload of the frame whose header was just read into
// b, which must be as long as it.
func (fr *frameReader) payload(b []byte) error {
	if k, err := io.ReadFull(fr.r, b); err != nil {
		return fr.fail(truncated("payload", k, len(b), err))
	}
	fr.off += int64(headerLen + len(b))
	return nil
}

// truncated is the error of a header or payload whose reading stopped
// after k of n bytes with err; the end of the stream needs no more words.
func truncated(what string, k, n int, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("truncated %s (%d of %d bytes)", what, k, n)
	}
	return fmt.Errorf("truncated %s (%d of %d bytes): %w", what, k, n, err)
}

// unexpected is the error of a valid frame that its sender may not send
// (or not now).
func (fr *frameReader) unexpected() error {
	return fr.fail(errors.New("not expected from this side here"))
}

func (fr *frameReader) fail(err error) error {
	return &badFrame{at: fr.off, n: fr.n, typ: fr.cur, err: err}
}

// putHeader writes a header for a payload of n bytes into b.
func putHeader(b []byte, t frameType, n int) {
	b[0] = byte(t)
	binary.BigEndian.PutUint32(b[1:headerLen], uint32(n))
}

// A frameBuf holds one whole frame, header included, on its way to a
// connection's writer. Buffers come from two pools by size, so that
// typical packets (up to about 2 KiB) do not pin 64 KiB each.
type frameBuf struct {
	b []byte // the frame is b[:headerLen+n]
	n int    // payload length
}

const smallBuf = 2048

var (
	smallBufs = sync.Pool{New: func() any { return &frameBuf{b: make([]byte, smallBuf)} }}
	bigBufs   = sync.Pool{New: func() any { return &frameBuf{b: make([]byte, headerLen+maxPayload)} }}
)

// getBuf returns a buffer for a frame of type t with an n-byte payload,
// its header written.
func getBuf(t frameType, n int) *frameBuf {
	var fb *frameBuf
	if headerLen+n <= smallBuf {
		fb = smallBufs.Get().(*frameBuf)
	} else {
		fb = bigBufs.Get().(*frameBuf)
	}
	fb.n = n
	putHeader(fb.b, t, n)
	return fb
}

// frame returns the whole frame.
func (fb *frameBuf) frame() []byte { return fb.b[:headerLen+fb.n] }

// payload returns the payload.
func (fb *frameBuf) payload() []byte { return fb.b[headerLen : headerLen+fb.n] }

// free returns fb to its pool; it must not be used after.
func (fb *frameBuf) free() {
	if len(fb.b) == smallBuf {
		smallBufs.Put(fb)
	} else {
		bigBufs.Put(fb)
	}
}

// controlFrame returns a buffer holding a frame of type t with payload p.
func controlFrame(t frameType, p []byte) *frameBuf {
	fb := getBuf(t, len(p))
	copy(fb.payload(), p)
	return fb
}
