package relay

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime/debug"
	"testing"

	"github.com/wiremesh/wiremesh/credential"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func frameBytes(t frameType, payload []byte) []byte {
	b := make([]byte, headerLen+len(payload))
	putHeader(b, t, len(payload))
	copy(b[headerLen:], payload)
	return b
}

func failOnPanic(t *testing.T, what string) {
	if r := recover(); r != nil {
		t.Fatalf("%s panicked: %v\n%s", what, r, debug.Stack())
	}
}

// FuzzFrame: the frame reader never panics on any stream; each frame it
// accepts has a known type and a length within that type's bounds, and
// the frames it accepts re-encode to the bytes it consumed.
func FuzzFrame(f *testing.F) {
	f.Add(frameBytes(frameSend, make([]byte, 40)))
	f.Add(append(frameBytes(framePing, []byte("12345678")), frameBytes(frameKeepAlive, nil)...))
	f.Add(frameBytes(frameError, []byte("why")))
	f.Add([]byte{byte(frameSend), 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x7f, 0, 0, 0, 0})
	f.Add([]byte{byte(frameSend), 0, 0})
	f.Add(frameBytes(frameRecv, make([]byte, 31)))
	f.Fuzz(func(t *testing.T, in []byte) {
		defer failOnPanic(t, "reading frames")
		fr := frameReader{r: bufio.NewReader(bytes.NewReader(in))}
		buf := make([]byte, maxPayload)
		var again []byte
		for {
			typ, n, err := fr.header()
			if err == nil {
				err = fr.payload(buf[:n])
			}
			if errors.Is(err, io.EOF) {
				break
			}
			var bad *badFrame
			if err != nil {
				if !errors.As(err, &bad) {
					t.Fatalf("error %v is not a *badFrame", err)
				}
				if bad.at != int64(len(again)) {
					t.Fatalf("error at byte %d, but %d bytes were read before", bad.at, len(again))
				}
				break
			}
			s, ok := typ.spec()
			if !ok || n < s.min || n > s.max {
				t.Fatalf("accepted %s of %d bytes", typ, n)
			}
			again = append(again, frameBytes(typ, buf[:n])...)
			if fr.off != int64(len(again)) {
				t.Fatalf("offset %d after %d bytes of frames", fr.off, len(again))
			}
		}
		if !bytes.HasPrefix(in, again) {
			t.Fatalf("frames re-encode to %x, not a prefix of the input %x", again, in)
		}
	})
}

// FuzzAuth: the relay accepts an answer to its challenge only if it is
// the one right answer of an allowed node; no other bytes attach, and
// none panic.
func FuzzAuth(f *testing.F) {
	key, err := credential.NewProofKey()
	if err != nil {
		f.Fatal(err)
	}
	allowed, stranger := newKey(f), newKey(f)
	nodes := &nodeSet{}
	nodes.add(allowed.PublicKey())
	s, err := NewServer(ServerConfig{Key: key, Allowed: nodes.allowed})
	if err != nil {
		f.Fatal(err)
	}
	nonce := bytes.Repeat([]byte{0x5a}, credential.RelayNonceLen)
	answer := func(k wgtypes.Key, claimed wgtypes.Key) []byte {
		mac, err := credential.RelayProof(k, key.PublicKey(), nonce)
		if err != nil {
			f.Fatal(err)
		}
		pub := claimed.PublicKey()
		return frameBytes(frameAuth, append(pub[:], mac...))
	}
	right := answer(allowed, allowed)
	f.Add(right)
	f.Add(answer(stranger, stranger))
	f.Add(answer(stranger, allowed))
	f.Add(frameBytes(frameAuth, make([]byte, 64)))
	f.Add(right[:40])
	f.Add(frameBytes(frameSend, right[headerLen:]))
	f.Fuzz(func(t *testing.T, in []byte) {
		defer failOnPanic(t, "checking an answer")
		fr := frameReader{r: bufio.NewReader(bytes.NewReader(in))}
		k, reason, err := s.readAnswer(&fr, nonce)
		if err == nil && (!bytes.HasPrefix(in, right) || k != allowed.PublicKey()) {
			t.Fatalf("answer %x attached as %x", in, k[:4])
		}
		if err != nil && reason == "" {
			t.Fatalf("refusal %v without a reason label", err)
		}
	})
}
