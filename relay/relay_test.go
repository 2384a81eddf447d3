package relay

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/wiremesh/wiremesh/credential"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Two clients exchange packets of every size from 1 byte to 64 KiB, both
// ways at once, in order and intact; neither logs its private key.
func TestExchange(t *testing.T) {
	r := newTestRelay(t, nil)
	a, ka := r.attached(t)
	b, kb := r.attached(t)
	var pkts [][]byte
	for i, size := range []int{1, 2, 8, 31, 32, 33, 100, 1280, 1500, 2011, 2012, 2043, 2044, 4096, 16 << 10, 65535, MaxPacketSize} {
		pkts = append(pkts, numbered(3, size, byte(i))...)
	}
	pkts = append(pkts, numbered(200, 1400, 7)...)
	errs := make(chan error, 2)
	go func() { errs <- transfer(a, ka, b, kb, pkts) }()
	go func() { errs <- transfer(b, kb, a, ka, pkts) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	waitFor(t, "an RTT", func() bool { return a.RTT() > 0 })
	if rtt := a.RTT(); rtt > 10*time.Second {
		t.Errorf("RTT %v, want a small positive time", rtt)
	}
	if err := a.Send(kb.PublicKey(), make([]byte, MaxPacketSize+1)); !errors.Is(err, ErrTooBig) {
		t.Errorf("Send of 64 KiB + 1: %v, want ErrTooBig", err)
	}
	for _, k := range []wgtypes.Key{ka, kb} {
		for _, logs := range []string{a.logs.String(), b.logs.String(), r.logs.String()} {
			if strings.Contains(logs, k.String()) || strings.Contains(logs, base64.RawStdEncoding.EncodeToString(k[:])) {
				t.Errorf("a private key is in the logs:\n%s", logs)
			}
		}
	}
}

// A node receives only the packets addressed to its own key, whoever
// else is attached.
func TestOnlyOwnPackets(t *testing.T) {
	r := newTestRelay(t, nil)
	a, _ := r.attached(t)
	b, kb := r.attached(t)
	c, kc := r.attached(t)
	d := r.attachRaw(t, r.node(t))
	for i := range 20 {
		if err := a.Send(kb.PublicKey(), []byte{'b', byte(i)}); err != nil {
			t.Fatal(err)
		}
		if err := a.Send(kc.PublicKey(), []byte{'c', byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, rcv := range []struct {
		c    *testClient
		mark byte
	}{{b, 'b'}, {c, 'c'}} {
		for i := range 20 {
			select {
			case p := <-rcv.c.got:
				if want := []byte{rcv.mark, byte(i)}; !bytes.Equal(p.data, want) {
					t.Fatalf("client %c got %q as packet %d, want %q", rcv.mark, p.data, i, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("client %c: packet %d did not arrive", rcv.mark, i)
			}
		}
	}
	// Everything the relay wrote to d before its pong: none of it.
	d.write(framePing, []byte("12345678"))
	for {
		typ, p := d.read()
		if typ == framePong {
			break
		}
		t.Errorf("a bystander got %s %q", typ, p)
	}
	if len(b.got) != 0 || len(c.got) != 0 {
		t.Errorf("%d and %d extra packets", len(b.got), len(c.got))
	}
}

// A node that answers the challenge with a MAC made with another private
// key than the one of the public key it claims is refused, and gets none
// of the packets sent to that key.
func TestForgedProofRefused(t *testing.T) {
	r := newTestRelay(t, nil)
	sender, _ := r.attached(t)
	victim := r.node(t)
	attacker := r.node(t) // enrolled: it holds a key of its own, not the victim's
	rc, _, nonce := r.dialRaw(t)
	mac, err := credential.RelayProof(attacker, r.key.PublicKey(), nonce)
	if err != nil {
		t.Fatal(err)
	}
	vpub := victim.PublicKey()
	rc.write(frameAuth, append(vpub[:], mac...))
	// Packets for the victim key now: the relay has no client for it.
	for range 3 {
		if err := sender.Send(vpub, []byte("for the victim only")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case k := <-sender.gone:
		if k != vpub {
			t.Errorf("peer-gone for %x, want the victim's key", k[:4])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no peer-gone for the victim's key")
	}
	frames := rc.untilClosed()
	if len(frames) != 1 || !strings.HasPrefix(frames[0], "error proof of the node's private key missing or wrong") {
		t.Errorf("the forger got %q, want one error frame about the proof", frames)
	}
	if got := r.srv.stats.authFailures(authProof); got != 1 {
		t.Errorf("%d proof failures counted, want 1", got)
	}
	if !strings.Contains(r.logs.String(), "node refused") {
		t.Errorf("no refusal logged:\n%s", r.logs)
	}
	// The victim itself attaches and gets its packets.
	v := r.client(t, victim, nil)
	v.waitState(t, true)
	if err := sender.Send(vpub, []byte("now")); err != nil {
		t.Fatal(err)
	}
	if p := <-v.got; string(p.data) != "now" {
		t.Errorf("victim got %q, want %q", p.data, "now")
	}
}

// A node with a valid proof of a key the embedder does not allow is
// refused; the client says why.
func TestNotAllowedRefused(t *testing.T) {
	r := newTestRelay(t, nil)
	stranger := newKey(t) // never enrolled
	c := r.client(t, stranger, nil)
	waitFor(t, "the client to be refused", func() bool { return errors.Is(c.Err(), ErrRefused) })
	if err := c.Err(); !strings.Contains(err.Error(), "not allowed") {
		t.Errorf("error %q, want it to say the key is not allowed", err)
	}
	if c.Connected() {
		t.Error("a refused client says it is connected")
	}
	if got := r.srv.stats.authFailures(authNotAllowed); got == 0 {
		t.Error("no not_allowed failure counted")
	}
}

// A client refuses a relay whose certificate matches none of its pins,
// or whose proof key is not the one it was given.
func TestClientRefusesWrongRelay(t *testing.T) {
	r := newTestRelay(t, nil)
	k := r.node(t)
	other, err := credential.NewProofKey()
	if err != nil {
		t.Fatal(err)
	}
	wrongPin := credential.Pin{Kind: credential.PinKey, Sum: [32]byte{1, 2, 3}}
	for _, tc := range []struct {
		name string
		mod  func(*ClientConfig)
		want func(error) bool
	}{
		{"wrong pin", func(c *ClientConfig) { c.Pins = credential.Pins{wrongPin} },
			func(err error) bool { return errors.Is(err, credential.ErrPinMismatch) }},
		{"another relay's proof key", func(c *ClientConfig) { c.RelayKey = other.PublicKey() },
			func(err error) bool { return err != nil && strings.Contains(err.Error(), "relay has proof key") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := r.client(t, k, tc.mod)
			waitFor(t, "the client to fail", func() bool { return c.Err() != nil })
			if err := c.Err(); !tc.want(err) {
				t.Errorf("error %v", err)
			}
			if c.Connected() || len(c.states) > 0 {
				t.Error("the client attached")
			}
		})
	}
	r.srv.mu.RLock()
	defer r.srv.mu.RUnlock()
	if len(r.srv.clients) != 0 {
		t.Errorf("%d clients attached, want none", len(r.srv.clients))
	}
}

// A second connection with the same key replaces the first, which is
// told why and closed; packets go to the newer one.
func TestReplacingConnection(t *testing.T) {
	r := newTestRelay(t, nil)
	sender, ks := r.attached(t)
	k := r.node(t)
	first := r.attachRaw(t, k)
	second := r.attachRaw(t, k)
	if frames := first.untilClosed(); len(frames) != 1 || !strings.Contains(frames[0], "replaced by a newer connection") {
		t.Errorf("the replaced connection got %q, want one error frame saying it was replaced", frames)
	}
	if err := sender.Send(k.PublicKey(), []byte("hello")); err != nil {
		t.Fatal(err)
	}
	typ, p := second.read()
	if typ != frameRecv || [32]byte(p[:32]) != ks.PublicKey() || string(p[32:]) != "hello" {
		t.Errorf("the newer connection got %s %q, want the packet", typ, p)
	}
}

// Recheck closes the clients whose node the embedder removed, and they
// are refused when they come back; Revoke closes one at once.
func TestRevoke(t *testing.T) {
	r := newTestRelay(t, nil)
	a, ka := r.attached(t)
	b, kb := r.attached(t)
	r.nodes.remove(ka.PublicKey())
	r.srv.Recheck()
	a.waitState(t, false)
	waitFor(t, "the removed node to be refused", func() bool { return errors.Is(a.Err(), ErrRefused) })
	if b.Connected() != true || len(b.states) != 0 {
		t.Error("Recheck closed an allowed client")
	}
	r.srv.Revoke([32]byte(kb.PublicKey()))
	b.waitState(t, false)
	if err := b.Err(); err == nil || !strings.Contains(err.Error(), "node key revoked") {
		t.Errorf("revoked client's error: %v, want the reason", err)
	}
}

// A client that does not read does not hold up the relay: packets to it
// are dropped and counted while another pair's traffic flows.
func TestSlowReader(t *testing.T) {
	r := newTestRelay(t, func(c *ServerConfig) { c.WriteTimeout = time.Minute })
	a, _ := r.attached(t)
	b, kb := r.attached(t)
	c, kc := r.attached(t)
	slowKey := r.node(t)
	r.attachRaw(t, slowKey) // never reads
	big := make([]byte, MaxPacketSize)
	waitFor(t, "packets to the slow reader to be dropped", func() bool {
		for range 16 {
			a.Send(slowKey.PublicKey(), big) // ErrQueueFull is fine
		}
		return r.srv.stats.drops[dropQueueFull].Load() > 0
	})
	if err := transfer(b, kb, c, kc, numbered(300, 1400, 1)); err != nil {
		t.Errorf("traffic between two other clients: %v", err)
	}
	r.srv.mu.RLock()
	stillThere := r.srv.clients[slowKey.PublicKey()] != nil
	r.srv.mu.RUnlock()
	if !stillThere {
		t.Error("the slow reader was closed: the test shows nothing")
	}
}

// A client that reads nothing for WriteTimeout is closed.
func TestWriteTimeoutCloses(t *testing.T) {
	r := newTestRelay(t, func(c *ServerConfig) { c.WriteTimeout = 200 * time.Millisecond })
	a, _ := r.attached(t)
	slowKey := r.node(t)
	r.attachRaw(t, slowKey) // never reads
	big := make([]byte, MaxPacketSize)
	waitFor(t, "the slow reader to be closed", func() bool {
		for range 16 {
			a.Send(slowKey.PublicKey(), big)
		}
		r.srv.mu.RLock()
		defer r.srv.mu.RUnlock()
		return r.srv.clients[slowKey.PublicKey()] == nil
	})
	if logs := r.logs.String(); !strings.Contains(logs, "write failed") || !strings.Contains(logs, slowKey.PublicKey().String()) {
		t.Errorf("no write failure logged for the slow reader:\n%s", logs)
	}
}

// Malformed frames close the connection; the relay says why and where,
// to the client and in its log.
func TestMalformedFrames(t *testing.T) {
	hdr := func(typ frameType, n int) []byte {
		b := make([]byte, headerLen)
		putHeader(b, typ, n)
		return b
	}
	for _, tc := range []struct {
		name      string
		send      []byte
		closeSide bool // close our writing side after sending
		want      string
	}{
		{"too long", append(hdr(frameSend, maxPayload+1), make([]byte, 64)...), false,
			"frame 2 at byte 69 (send): too long: 65569 bytes, want 32 to 65568"},
		{"unknown type", hdr(0x7f, 0), false, "frame 2 at byte 69 (type 0x7f): unknown frame type"},
		{"truncated payload", append(hdr(frameSend, 100), make([]byte, 40)...), true,
			"frame 2 at byte 69 (send): truncated payload (40 of 100 bytes)"},
		{"truncated header", []byte{byte(frameSend), 0}, true, "frame 2 at byte 69 (send): truncated header (2 of 5 bytes)"},
		{"short ping", append(hdr(framePing, 3), 1, 2, 3), false, "frame 2 at byte 69 (ping): 3 bytes, want 8"},
		{"short send", append(hdr(frameSend, 31), make([]byte, 31)...), false, "frame 2 at byte 69 (send): 31 bytes, want 32 to 65568"},
		{"a relay's frame", append(hdr(frameRecv, 33), make([]byte, 33)...), false,
			"frame 2 at byte 69 (recv): not expected from this side here"},
		{"a second answer", append(hdr(frameAuth, 64), make([]byte, 64)...), false,
			"frame 2 at byte 69 (auth): not expected from this side here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRelay(t, nil)
			rc := r.attachRaw(t, r.node(t))
			rc.writeBytes(tc.send)
			if tc.closeSide {
				rc.conn.CloseWrite()
			}
			frames := rc.untilClosed()
			if len(frames) == 0 || frames[len(frames)-1] != "error "+tc.want {
				t.Errorf("got frames %q, want the last to be error %q", frames, tc.want)
			}
			waitFor(t, "the log line", func() bool { return strings.Contains(r.logs.String(), tc.want) })
			if logs := r.logs.String(); !strings.Contains(logs, "malformed frame") || !strings.Contains(logs, "addr=127.0.0.1:") {
				t.Errorf("log does not say what and where:\n%s", logs)
			}
		})
	}
	r := newTestRelay(t, nil)
	rc, _, _ := r.dialRaw(t)
	rc.write(frameSend, make([]byte, 40))
	frames := rc.untilClosed()
	if want := "error read answer: frame 1 at byte 0 (send): not expected from this side here"; len(frames) != 1 || frames[0] != want {
		t.Errorf("a send instead of the answer: got %q, want %q", frames, want)
	}
	if got := r.srv.stats.authFailures(authProtocol); got != 1 {
		t.Errorf("%d protocol failures counted, want 1", got)
	}
	if got := r.srv.stats.drops[dropTooBig].Load(); got != 0 {
		t.Errorf("%d too_big drops before any send", got)
	}
}

// An over-long send is counted as a too_big drop.
func TestTooBigCounted(t *testing.T) {
	r := newTestRelay(t, nil)
	rc := r.attachRaw(t, r.node(t))
	b := make([]byte, headerLen)
	putHeader(b, frameSend, maxPayload+1)
	rc.writeBytes(b)
	rc.untilClosed()
	waitFor(t, "a too_big drop", func() bool { return r.srv.stats.drops[dropTooBig].Load() == 1 })
}

// A node that never answers the challenge is closed after AuthTimeout.
func TestAuthTimeout(t *testing.T) {
	r := newTestRelay(t, func(c *ServerConfig) { c.AuthTimeout = 100 * time.Millisecond })
	rc, _, _ := r.dialRaw(t)
	frames := rc.untilClosed()
	if len(frames) != 1 || !strings.Contains(frames[0], "timeout") {
		t.Errorf("got %q, want an error frame about the timeout", frames)
	}
}

// Sends to a key that is not attached are dropped and counted, and
// answered with peer-gone at most once a second per destination.
func TestPeerGoneRateLimited(t *testing.T) {
	r := newTestRelay(t, nil)
	rc := r.attachRaw(t, r.node(t))
	nobody := newKey(t).PublicKey()
	start := time.Now()
	const n = 100
	for range n {
		rc.write(frameSend, append(nobody[:], 1, 2, 3))
	}
	rc.write(framePing, []byte("12345678"))
	gone := 0
	for {
		typ, p := rc.read()
		if typ == framePong {
			if string(p) != "12345678" {
				t.Errorf("pong %q, want the ping's bytes", p)
			}
			break
		}
		if typ != framePeerGone || [32]byte(p) != nobody {
			t.Fatalf("got %s %x, want peer-gone for the key", typ, p)
		}
		gone++
	}
	if limit := 1 + int(time.Since(start)/peerGoneEvery); gone < 1 || gone > limit {
		t.Errorf("%d peer-gone frames for %d sends, want 1 to %d", gone, n, limit)
	}
	if got := r.srv.stats.drops[dropNoSuchPeer].Load(); got != n {
		t.Errorf("%d no_such_peer drops, want %d", got, n)
	}
}

// The client reconnects when the relay comes back after a restart.
func TestClientReconnects(t *testing.T) {
	r := newTestRelay(t, nil)
	a, ka := r.attached(t)
	b, kb := r.attached(t)
	addr := r.ts.Listener.Addr().String()
	r.stop()
	a.waitState(t, false)
	b.waitState(t, false)
	if err := a.Send(kb.PublicKey(), []byte("x")); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Send while down: %v, want ErrNotConnected", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(nil)
	ts.Listener.Close()
	ts.Listener = ln
	r.start(t, nil, ts)
	a.waitState(t, true)
	b.waitState(t, true)
	if err := transfer(a, ka, b, kb, numbered(10, 100, 0)); err != nil {
		t.Error(err)
	}
}

// After SetNodeKey the client attaches with the new key: packets to it
// arrive, the old key is gone.
func TestSetNodeKey(t *testing.T) {
	r := newTestRelay(t, nil)
	a, ka := r.attached(t)
	b, kb := r.attached(t)
	next := r.node(t)
	a.SetNodeKey(next)
	a.waitState(t, false)
	a.waitState(t, true)
	if err := transfer(b, kb, a, next, numbered(5, 100, 0)); err != nil {
		t.Error(err)
	}
	if err := b.Send(ka.PublicKey(), []byte("old")); err != nil {
		t.Fatal(err)
	}
	if k := <-b.gone; k != ka.PublicKey() {
		t.Errorf("peer-gone for %x, want the old key", k[:4])
	}
}

// Requests that are not an upgrade to the relay protocol get an HTTP
// error, and the connection stays an HTTP one.
func TestServeHTTPRefusesOtherRequests(t *testing.T) {
	r := newTestRelay(t, nil)
	hc := r.ts.Client()
	defer hc.CloseIdleConnections()
	for _, tc := range []struct {
		method string
		header map[string]string
		want   int
	}{
		{"GET", nil, http.StatusUpgradeRequired},
		{"GET", map[string]string{"Connection": "Upgrade", "Upgrade": "websocket"}, http.StatusUpgradeRequired},
		{"POST", map[string]string{"Connection": "Upgrade", "Upgrade": upgradeToken}, http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequest(tc.method, r.ts.URL+"/v1/relay", nil)
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s with %v: %s, want %d", tc.method, tc.header, resp.Status, tc.want)
		}
	}
}

// The metrics count forwarded packets and bytes, drops and refusals.
func TestMetrics(t *testing.T) {
	r := newTestRelay(t, nil)
	a, ka := r.attached(t)
	b, kb := r.attached(t)
	if err := transfer(a, ka, b, kb, [][]byte{make([]byte, 100)}); err != nil {
		t.Fatal(err)
	}
	nobody := newKey(t).PublicKey()
	a.Send(nobody, []byte{1})
	<-a.gone
	r.client(t, newKey(t), nil)
	waitFor(t, "a refusal", func() bool { return r.srv.stats.authFailures(authNotAllowed) > 0 })
	want := `
# HELP wiremesh_relay_clients Nodes attached to the relay (connections past the proof of their key).
# TYPE wiremesh_relay_clients gauge
wiremesh_relay_clients 2
# HELP wiremesh_relay_forwarded_bytes_total Bytes of the packets the relay wrote to their destination's connection (packets only, no framing).
# TYPE wiremesh_relay_forwarded_bytes_total counter
wiremesh_relay_forwarded_bytes_total 100
# HELP wiremesh_relay_forwarded_packets_total Packets the relay wrote to their destination's connection.
# TYPE wiremesh_relay_forwarded_packets_total counter
wiremesh_relay_forwarded_packets_total 1
# HELP wiremesh_relay_dropped_packets_total Packets the relay dropped, by reason: no_such_peer (destination not attached), queue_full (destination reads too slowly), too_big (over 64 KiB; the sender is disconnected).
# TYPE wiremesh_relay_dropped_packets_total counter
wiremesh_relay_dropped_packets_total{reason="no_such_peer"} 1
wiremesh_relay_dropped_packets_total{reason="queue_full"} 0
wiremesh_relay_dropped_packets_total{reason="too_big"} 0
`
	if err := testutil.CollectAndCompare(r.srv.Collector(), strings.NewReader(want),
		"wiremesh_relay_clients", "wiremesh_relay_forwarded_bytes_total", "wiremesh_relay_forwarded_packets_total", "wiremesh_relay_dropped_packets_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(r.srv.Collector(), "wiremesh_relay_auth_failures_total"); n != 3 {
		t.Errorf("%d auth failure series, want 3", n)
	}
}

// The relay sends keep-alives, and closes a client it heard nothing from
// for two of them.
func TestIdleClientClosed(t *testing.T) {
	r := newTestRelay(t, func(c *ServerConfig) { c.KeepAlive = 50 * time.Millisecond })
	rc := r.attachRaw(t, r.node(t))
	frames := rc.untilClosed()
	if len(frames) < 2 || frames[0] != "keep-alive " || frames[len(frames)-1] != "error idle" {
		t.Errorf("a silent client got %q, want keep-alives then error idle", frames)
	}
}

// A client takes a relay that stops answering for dead, and says so.
func TestClientDetectsSilentRelay(t *testing.T) {
	r := newTestRelay(t, nil)
	silent := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		sess := newSession(r.srv, conn, brw.Reader, req.RemoteAddr)
		if _, _, err := r.srv.authenticate(sess); err != nil {
			t.Error(err)
			return
		}
		conn.Write(frameBytes(frameOK, nil))
		io.Copy(io.Discard, conn) // reads pings, answers nothing
	})
	r.ts.Config.Handler = silent
	c := r.client(t, r.node(t), func(c *ClientConfig) { c.PingInterval = 50 * time.Millisecond })
	c.waitState(t, true)
	c.waitState(t, false)
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), "nothing from the relay for 100ms") {
		t.Errorf("error %v, want it to say the relay went silent", err)
	}
}

// Closing the relay ends its clients' connections between frames: that
// is not a malformed frame, and the log does not say so.
func TestCloseIsNotMalformed(t *testing.T) {
	r := newTestRelay(t, nil)
	for range 3 {
		r.attached(t)
	}
	waitFor(t, "three clients attached", func() bool { return strings.Count(r.logs.String(), "relay client attached") == 3 })
	r.stop()
	if logs := r.logs.String(); strings.Contains(logs, "malformed") || strings.Contains(logs, "refused") {
		t.Errorf("closing the relay logged a refusal:\n%s", logs)
	}
}
