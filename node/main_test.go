package node

import (
	"bytes"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor bounds every wait for something asynchronous.
const waitFor = 10 * time.Second

// testLogger returns a logger whose output is shown only if the test fails.
func testLogger(t *testing.T, name string) *slog.Logger {
	t.Helper()
	b := &lockedBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of %s:\n%s", name, b.String())
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer // guarded by mu
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fakeEngine is an Engine that records what the agent asks of it.
type fakeEngine struct {
	changed chan struct{} // gets a token after every Apply and Close

	mu      sync.Mutex
	cfg     EngineConfig // guarded by mu; as given to the constructor
	made    bool         // guarded by mu; the constructor ran
	last    *wire.Netmap // guarded by mu; the last applied netmap
	applied int          // guarded by mu; Apply calls
	closed  bool         // guarded by mu; Close was called
}

func newFakeEngine() *fakeEngine { return &fakeEngine{changed: make(chan struct{}, 1)} }

// new is a Config.NewEngine that returns e.
func (e *fakeEngine) new(cfg EngineConfig) (Engine, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cfg, e.made = cfg, true
	return e, nil
}

func (e *fakeEngine) notify() {
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

func (e *fakeEngine) Apply(nm *wire.Netmap) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		panic("Apply after Close")
	}
	e.last, e.applied = nm, e.applied+1
	e.mu.Unlock()
	e.notify()
	return nil
}

func (e *fakeEngine) SetPrivateKey(k wgtypes.Key) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cfg.PrivateKey = k
	return nil
}

func (e *fakeEngine) Stats() (map[string]PeerStats, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]PeerStats{}
	if e.last != nil {
		for _, p := range e.last.Peers {
			out[p.PublicKey] = PeerStats{RxBytes: 1, TxBytes: 2}
		}
	}
	return out, nil
}

func (e *fakeEngine) Close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.notify()
	return nil
}

// peers returns the public keys of the last applied netmap's peers.
func (e *fakeEngine) peers() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var keys []string
	if e.last != nil {
		for _, p := range e.last.Peers {
			keys = append(keys, p.PublicKey)
		}
	}
	slices.Sort(keys)
	return keys
}

func (e *fakeEngine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// wait waits until cond holds for e.
func (e *fakeEngine) wait(t *testing.T, what string, cond func(*fakeEngine) bool) {
	t.Helper()
	timeout := time.After(waitFor)
	for !cond(e) {
		select {
		case <-e.changed:
		case <-timeout:
			t.Fatalf("engine: no %s within %s (peers now %v)", what, waitFor, e.peers())
		}
	}
}
