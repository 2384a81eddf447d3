package gossip

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the run if any goroutine outlives the tests: every
// serf, memberlist and transport goroutine stops after Shutdown, so none
// is ignored.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testKey returns a 32-byte key filled with b.
func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

// addrs hands out loopback addresses 127.X.Y.n, with X.Y from the process
// id, so that concurrent test runs on one machine do not collide on port
// 7946.
var addrs struct {
	sync.Mutex
	next int
}

func nextAddr() netip.Addr {
	addrs.Lock()
	defer addrs.Unlock()
	addrs.next++
	pid := os.Getpid()
	return netip.AddrFrom4([4]byte{127, byte(100 + pid%100), byte(pid / 100 % 250), byte(addrs.next)})
}

// logBuf collects the logs of a test's members, to dump if it fails.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// newLogs returns a logger into a buffer that is dumped if t fails.
func newLogs(t testing.TB) (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("member logs:\n%s", lb.String())
		}
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// testConfig is a member configuration on a fresh loopback address.
func testConfig(name string, log *slog.Logger, keys ...[]byte) Config {
	if len(keys) == 0 {
		keys = [][]byte{testKey(1)}
	}
	cfg := DefaultConfig()
	cfg.Name = name
	cfg.BindAddr = nextAddr()
	cfg.Keys = keys
	cfg.Logger = log.With("node", name)
	return cfg
}

// start starts a member; cleanup crashes it (fast) unless the test
// closed it.
func start(t testing.TB, cfg Config) *Member {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	t.Cleanup(func() { _ = m.crash() })
	return m
}

// cluster starts n members named m0.. and joins each to m0.
func cluster(t testing.TB, n int) ([]*Member, *logBuf) {
	t.Helper()
	log, lb := newLogs(t)
	ms := make([]*Member, n)
	for i := range ms {
		ms[i] = start(t, testConfig(fmt.Sprintf("m%d", i), log))
		if i == 0 {
			continue
		}
		if got, err := ms[i].Join([]netip.AddrPort{ms[0].addr()}); err != nil || got != 1 {
			t.Fatalf("m%d Join = %d, %v; want 1, nil", i, got, err)
		}
	}
	waitFor(t, 5*time.Second, "all members alive everywhere", func() bool {
		for _, m := range ms {
			if countStatus(m, Alive) != n {
				return false
			}
		}
		return true
	})
	return ms, lb
}

// addr is the address m gossips on.
func (m *Member) addr() netip.AddrPort {
	for _, mi := range m.Members() {
		if mi.Name == m.name {
			return mi.Addr
		}
	}
	panic("member not in its own snapshot")
}

// waitFor polls cond every 10 ms until it holds and returns how long that
// took; it fails t after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// countStatus counts the members m sees with status st.
func countStatus(m *Member, st Status) int {
	n := 0
	for _, mi := range m.Members() {
		if mi.Status == st {
			n++
		}
	}
	return n
}

// statusOfName is the status m sees of the member called name; 0 if none.
func statusOfName(m *Member, name string) Status {
	for _, mi := range m.Members() {
		if mi.Name == name {
			return mi.Status
		}
	}
	return 0
}

// info is what m sees of the member called name.
func info(m *Member, name string) (MemberInfo, bool) {
	for _, mi := range m.Members() {
		if mi.Name == name {
			return mi, true
		}
	}
	return MemberInfo{}, false
}
