package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// nodeSet is the embedder's set of enrolled node keys.
type nodeSet struct {
	mu   sync.Mutex
	keys map[[32]byte]bool
}

func (n *nodeSet) add(k [32]byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.keys == nil {
		n.keys = make(map[[32]byte]bool)
	}
	n.keys[k] = true
}

func (n *nodeSet) remove(k [32]byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.keys, k)
}

func (n *nodeSet) allowed(k [32]byte) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.keys[k]
}

// testRelay is a relay Server behind a loopback TLS server.
type testRelay struct {
	srv   *Server
	ts    *httptest.Server
	key   *credential.ProofKey
	nodes *nodeSet
	logs  *logBuffer
	pins  credential.Pins
}

func newTestRelay(t testing.TB, mod func(*ServerConfig)) *testRelay {
	t.Helper()
	key, err := credential.NewProofKey()
	if err != nil {
		t.Fatal(err)
	}
	r := &testRelay{key: key, nodes: &nodeSet{}, logs: &logBuffer{}}
	r.start(t, mod, nil)
	return r
}

// start serves a new Server with r's key and nodes on a loopback TLS
// server, on ts's listener if given.
func (r *testRelay) start(t testing.TB, mod func(*ServerConfig), ts *httptest.Server) {
	t.Helper()
	cfg := ServerConfig{Key: r.key, Allowed: r.nodes.allowed, Logger: r.logs.logger()}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ts == nil {
		ts = httptest.NewUnstartedServer(nil)
	}
	ts.Config.Handler = srv
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	ts.StartTLS()
	r.srv, r.ts = srv, ts
	r.pins = credential.Pins{credential.KeyPin(ts.Certificate())}
	t.Cleanup(r.stop)
}

// stop closes the relay and its TLS server; it may be called twice.
func (r *testRelay) stop() {
	r.srv.Close()
	r.ts.Close()
}

// node makes a node key and enrolls it.
func (r *testRelay) node(t testing.TB) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	r.nodes.add(k.PublicKey())
	return k
}

func newKey(t testing.TB) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type packet struct {
	src  [32]byte
	data []byte
}

// testClient is a Client run by the test, with what it got on channels.
type testClient struct {
	*Client
	got    chan packet
	states chan bool
	gone   chan [32]byte
	logs   *logBuffer
}

// client starts a client of r for node key k; mod may change its
// config. It stops at the end of the test.
func (r *testRelay) client(t testing.TB, k wgtypes.Key, mod func(*ClientConfig)) *testClient {
	t.Helper()
	tc := &testClient{got: make(chan packet, 1024), states: make(chan bool, 64), gone: make(chan [32]byte, 1024), logs: &logBuffer{}}
	cfg := ClientConfig{
		URL:      r.ts.URL,
		Pins:     r.pins,
		RelayKey: r.key.PublicKey(),
		NodeKey:  k,
		Logger:   tc.logs.logger(),
		OnPacket: func(src [32]byte, pkt []byte) {
			tc.got <- packet{src, bytes.Clone(pkt)}
		},
		OnState:    func(up bool) { tc.states <- up },
		OnPeerGone: func(dst [32]byte) { tc.gone <- dst },
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc.Client = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return tc
}

// attached starts a client of r for a new enrolled node and waits until
// it is attached.
func (r *testRelay) attached(t testing.TB) (*testClient, wgtypes.Key) {
	t.Helper()
	k := r.node(t)
	c := r.client(t, k, nil)
	c.waitState(t, true)
	return c, k
}

// waitState waits for the client's next state change to be up.
func (c *testClient) waitState(t testing.TB, up bool) {
	t.Helper()
	select {
	case got := <-c.states:
		if got != up {
			t.Fatalf("state changed to connected=%v, want %v (last error: %v)", got, up, c.Err())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("state did not change to connected=%v in 10 s (last error: %v)", up, c.Err())
	}
}

// waitFor polls cond until it holds, for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// transfer sends pkts from one client to the node key to, keeping at
// most window in flight, and checks that the receiver got them in order
// and intact from the sender's key.
func transfer(from *testClient, fromKey wgtypes.Key, to *testClient, toKey wgtypes.Key, pkts [][]byte) error {
	const window = 16
	tokens := make(chan struct{}, window)
	sendErr := make(chan error, 1)
	go func() {
		for _, p := range pkts {
			tokens <- struct{}{}
			if err := from.Send(toKey.PublicKey(), p); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	src := [32]byte(fromKey.PublicKey())
	sent := sendErr // nil once the sender is done
	for i := 0; i < len(pkts); {
		select {
		case p := <-to.got:
			want := pkts[i]
			if p.src != src {
				return fmt.Errorf("packet %d came from %x, want %x", i, p.src[:4], src[:4])
			}
			if !bytes.Equal(p.data, want) {
				return fmt.Errorf("packet %d: %d bytes %x…, want %d bytes %x…", i, len(p.data), p.data[:min(8, len(p.data))], len(want), want[:min(8, len(want))])
			}
			<-tokens
			i++
		case err := <-sent:
			if err != nil {
				return fmt.Errorf("send packet: %w", err)
			}
			sent = nil
		case <-time.After(10 * time.Second):
			return fmt.Errorf("packet %d of %d did not arrive in 10 s", i, len(pkts))
		}
	}
	if sent == nil {
		return nil
	}
	return <-sent
}

// numbered returns n packets of size bytes, each starting with its
// number (when it fits).
func numbered(n, size int, seed byte) [][]byte {
	pkts := make([][]byte, n)
	for i := range pkts {
		p := bytes.Repeat([]byte{seed + byte(i)}, size)
		copy(p, fmt.Sprintf("%08d", i))
		pkts[i] = p
	}
	return pkts
}

// rawConn speaks the relay protocol by hand, for tests of what a
// client other than ours may send.
type rawConn struct {
	t    testing.TB
	conn *tls.Conn
	fr   frameReader
	buf  []byte
}

// dialRaw connects and upgrades, and reads the challenge.
func (r *testRelay) dialRaw(t testing.TB) (rc *rawConn, relayPub, nonce []byte) {
	t.Helper()
	cfg := credential.ClientTLS(r.pins)
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", r.ts.Listener.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	rc = &rawConn{t: t, conn: conn, fr: frameReader{r: bufio.NewReader(conn)}, buf: make([]byte, maxPayload)}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: relay\r\nConnection: upgrade\r\nUpgrade: %s\r\n\r\n", wire.PathRelay, upgradeToken)
	resp, err := http.ReadResponse(rc.fr.r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v, %v", resp, err)
	}
	typ, p := rc.read()
	if typ != frameChallenge {
		t.Fatalf("first frame %s, want challenge", typ)
	}
	return rc, bytes.Clone(p[:keyLen]), bytes.Clone(p[keyLen:])
}

// attachRaw connects as node k (enrolled or not) with a valid proof and
// reads the verdict.
func (r *testRelay) attachRaw(t testing.TB, k wgtypes.Key) *rawConn {
	t.Helper()
	rc, _, nonce := r.dialRaw(t)
	mac, err := credential.RelayProof(k, r.key.PublicKey(), nonce)
	if err != nil {
		t.Fatal(err)
	}
	pub := k.PublicKey()
	rc.write(frameAuth, append(pub[:], mac...))
	if typ, p := rc.read(); typ != frameOK {
		t.Fatalf("verdict %s %q, want ok", typ, p)
	}
	return rc
}

func (rc *rawConn) write(t frameType, payload []byte) {
	rc.t.Helper()
	b := make([]byte, headerLen+len(payload))
	putHeader(b, t, len(payload))
	copy(b[headerLen:], payload)
	rc.writeBytes(b)
}

func (rc *rawConn) writeBytes(b []byte) {
	rc.t.Helper()
	if _, err := rc.conn.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// read reads one frame; the payload is valid until the next read.
func (rc *rawConn) read() (frameType, []byte) {
	rc.t.Helper()
	typ, p, err := rc.next()
	if err != nil {
		rc.t.Fatalf("read: %v", err)
	}
	return typ, p
}

func (rc *rawConn) next() (frameType, []byte, error) {
	typ, n, err := rc.fr.header()
	if err != nil {
		return 0, nil, err
	}
	p := rc.buf[:n]
	return typ, p, rc.fr.payload(p)
}

// untilClosed reads every frame until the relay closes the connection,
// and returns them; it fails the test if the relay does not close it.
func (rc *rawConn) untilClosed() []string {
	rc.t.Helper()
	var frames []string
	for {
		typ, p, err := rc.next()
		if errors.Is(err, io.EOF) || isClosed(err) {
			return frames
		}
		if err != nil {
			rc.t.Fatalf("after %q: %v", frames, err)
		}
		frames = append(frames, fmt.Sprintf("%s %s", typ, p))
	}
}

// isClosed reports an error of a connection the relay reset (it closes
// with unread data in its receive buffer).
func isClosed(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// testClientOf returns a client that is never run, for tests of its
// parts; onPacket nil discards packets.
func testClientOf(t testing.TB, onPacket func([32]byte, []byte), mod func(*ClientConfig)) *Client {
	t.Helper()
	key, err := credential.NewProofKey()
	if err != nil {
		t.Fatal(err)
	}
	if onPacket == nil {
		onPacket = func([32]byte, []byte) {}
	}
	cfg := ClientConfig{
		URL: "https://relay.example", Pins: credential.Pins{{Kind: credential.PinKey}},
		RelayKey: key.PublicKey(), NodeKey: newKey(t), OnPacket: onPacket,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
