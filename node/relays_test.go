package node

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// fakeRelayConn is a relayConn whose state the test sets.
type fakeRelayConn struct {
	cfg       wire.Relay
	running   atomic.Bool
	connected atomic.Bool
	rtt       atomic.Int64
	mu        sync.Mutex
	key       [32]byte   // guarded by mu
	sent      [][32]byte // guarded by mu
}

func (f *fakeRelayConn) Run(ctx context.Context) error {
	f.running.Store(true)
	<-ctx.Done()
	f.running.Store(false)
	return ctx.Err()
}

func (f *fakeRelayConn) Send(dst [32]byte, _ []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, dst)
	return nil
}

func (f *fakeRelayConn) Connected() bool    { return f.connected.Load() }
func (f *fakeRelayConn) RTT() time.Duration { return time.Duration(f.rtt.Load()) }
func (f *fakeRelayConn) SetNodeKey(k [32]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.key = k
}

// fakeDialer makes fakeRelayConns and remembers every one it made.
type fakeDialer struct {
	mu    sync.Mutex
	conns []*fakeRelayConn // guarded by mu
}

func (d *fakeDialer) dial(w wire.Relay, key [32]byte, _ func([32]byte, []byte), _ *slog.Logger) (relayConn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &fakeRelayConn{cfg: w, key: key}
	d.conns = append(d.conns, c)
	return c, nil
}

func (d *fakeDialer) made() []*fakeRelayConn {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*fakeRelayConn{}, d.conns...)
}

func relayEntry(name, url string) wire.Relay {
	return wire.Relay{Name: name, URL: url, Pins: []string{"sha256:00"}, Key: "k"}
}

// TestRelaysFollowMap: one client per relay, kept while its entry is the
// same, replaced when its URL, pins or key change, stopped when it leaves
// the map; a new node key reaches every client; close stops them all.
func TestRelaysFollowMap(t *testing.T) {
	var d fakeDialer
	r := newRelays([32]byte{1}, d.dial, slog.New(slog.DiscardHandler))
	r.deliver = func(string, [32]byte, []byte) {}
	a, b := relayEntry("a", "https://203.0.113.1:443"), relayEntry("b", "https://203.0.113.2")
	r.set([]wire.Relay{a, b})
	r.set([]wire.Relay{a, b})
	if n := len(d.made()); n != 2 {
		t.Fatalf("%d clients made for 2 relays set twice, want 2", n)
	}
	if got, want := r.Addr("b"), netip.MustParseAddrPort("203.0.113.2:443"); got != want {
		t.Errorf("Addr(b) = %v, want %v", got, want)
	}
	b2 := b
	b2.Pins = []string{"sha256:01"}
	r.set([]wire.Relay{a, b2})
	made := d.made()
	if len(made) != 3 || made[2].cfg.Name != "b" {
		t.Fatalf("new pins for b: clients %d, want a third, for b", len(made))
	}
	r.set([]wire.Relay{b2})
	waitUntil(t, "a's and the first b's clients stopped", func() bool {
		return !made[0].running.Load() && !made[1].running.Load() && made[2].running.Load()
	})
	r.setKey([32]byte{2})
	made[2].mu.Lock()
	key := made[2].key
	made[2].mu.Unlock()
	if key != [32]byte{2} {
		t.Errorf("client key not updated: %x", key[:1])
	}
	if r.Send("a", [32]byte{9}, nil) == nil {
		t.Error("send through a relay no longer in the map succeeded")
	}
	r.close()
	if made[2].running.Load() {
		t.Error("client still running after close")
	}
}

// TestRelaysHome: the home relay is the connected one with the lowest
// RTT; a slightly faster one does not take over, a clearly faster one
// does, and a disconnected home is replaced at once.
func TestRelaysHome(t *testing.T) {
	var d fakeDialer
	r := newRelays([32]byte{1}, d.dial, slog.New(slog.DiscardHandler))
	r.deliver = func(string, [32]byte, []byte) {}
	defer r.close()
	r.set([]wire.Relay{relayEntry("a", "https://203.0.113.1"), relayEntry("b", "https://203.0.113.2")})
	ca, cb := d.made()[0], d.made()[1]
	if h := r.Home(); h != "" {
		t.Fatalf("home %q with nothing connected", h)
	}
	ca.connected.Store(true)
	ca.rtt.Store(int64(10 * time.Millisecond))
	if h := r.Home(); h != "a" {
		t.Fatalf("home %q, want a (the only connected)", h)
	}
	cb.connected.Store(true)
	cb.rtt.Store(int64(8 * time.Millisecond))
	if h := r.Home(); h != "a" {
		t.Errorf("home %q, want a kept (b is only a little faster)", h)
	}
	cb.rtt.Store(int64(5 * time.Millisecond))
	if h := r.Home(); h != "b" {
		t.Errorf("home %q, want b (clearly faster)", h)
	}
	cb.connected.Store(false)
	if h := r.Home(); h != "a" {
		t.Errorf("home %q, want a after b disconnected", h)
	}
	if !r.Connected("a") || r.Connected("b") || r.Connected("c") {
		t.Error("Connected does not follow the clients")
	}
}

// waitUntil polls cond until it holds or waitFor passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
