package node

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wiremesh/wiremesh/node/bind"
	"github.com/wiremesh/wiremesh/wire"
)

// reportLog records the reports a connReporter sends, with their times.
type reportLog struct {
	mu    sync.Mutex
	state wire.ConnectivityReport // guarded by mu; what state returns
	ok    bool                    // guarded by mu
	fail  error                   // guarded by mu; what send returns
	sent  []wire.ConnectivityReport
	at    []time.Time
}

func (l *reportLog) set(nat string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state = wire.ConnectivityReport{Endpoints: []string{"192.0.2.1:51820"}, Connectivity: wire.Connectivity{NAT: nat}}
	l.ok = ok
}

func (l *reportLog) get() (wire.ConnectivityReport, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state, l.ok
}

func (l *reportLog) send(_ context.Context, r wire.ConnectivityReport) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return l.fail
	}
	l.sent, l.at = append(l.sent, r), append(l.at, time.Now())
	return nil
}

func (l *reportLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sent)
}

func (l *reportLog) times() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time{}, l.at...)
}

func (l *reportLog) nats() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.sent {
		out = append(out, r.NAT)
	}
	return strings.Join(out, " ")
}

// TestConnReporter: nothing goes out before the node knows a candidate;
// then the state goes out once, again only when it changes, at most every
// connMinInterval with the last state winning, again on a new stream, and
// a failed report is retried.
func TestConnReporter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newConnReporter(slog.New(slog.DiscardHandler))
		var l reportLog
		l.set("unknown", false)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.run(ctx, l.get, l.send) }()
		r.newStream()
		time.Sleep(5 * time.Second)
		if got := l.nats(); got != "" {
			t.Fatalf("reports without candidates: %q", got)
		}
		l.set("easy", true)
		time.Sleep(5 * time.Second)
		if got := l.nats(); got != "easy" {
			t.Fatalf("after candidates: %q, want one report", got)
		}
		// Two changes in quick succession: one report, of the last.
		l.set("hard", true)
		r.poke()
		synctest.Wait()
		l.set("none", true)
		r.poke()
		time.Sleep(5 * time.Second)
		if got := l.nats(); got != "easy hard none" && got != "easy none" {
			t.Fatalf("after two changes: %q", got)
		}
		at := l.times()
		for i := 1; i < len(at); i++ {
			if d := at[i].Sub(at[i-1]); d < connMinInterval {
				t.Errorf("reports %d and %d %v apart, want at least %v", i-1, i, d, connMinInterval)
			}
		}
		n := l.count()
		time.Sleep(10 * time.Second)
		if l.count() != n {
			t.Errorf("unchanged state reported again: %q", l.nats())
		}
		// A new stream: reported again, though unchanged; failures retried.
		l.mu.Lock()
		l.fail = errors.New("coordinator down")
		l.mu.Unlock()
		r.newStream()
		time.Sleep(3 * time.Second)
		l.mu.Lock()
		l.fail = nil
		l.mu.Unlock()
		time.Sleep(10 * time.Second)
		if l.count() != n+1 {
			t.Errorf("after a new stream and a failure: %q, want one more report", l.nats())
		}
		cancel()
		<-done
	})
}

// TestConnReporterNewCandidates: new candidates (a starting agent's
// reflexive address, found just after its first report) go out at once,
// not connMinInterval later: peers need them to punch holes. A path or
// NAT change right after still waits its turn.
func TestConnReporterNewCandidates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newConnReporter(slog.New(slog.DiscardHandler))
		var l reportLog
		l.set("unknown", true)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.run(ctx, l.get, l.send) }()
		r.poke()
		synctest.Wait()
		time.Sleep(200 * time.Millisecond)
		l.mu.Lock()
		l.state = wire.ConnectivityReport{Endpoints: []string{"203.0.113.7:51820", "192.0.2.1:51820"}, Connectivity: wire.Connectivity{NAT: "easy"}}
		l.mu.Unlock()
		r.poke()
		synctest.Wait()
		if got := l.nats(); got != "unknown easy" {
			t.Fatalf("after new candidates 0.2 s after the first report: %q, want them reported at once", got)
		}
		l.set("hard", true) // back to the first candidates, and a new NAT
		l.mu.Lock()
		l.state.Endpoints = []string{"203.0.113.7:51820", "192.0.2.1:51820"}
		l.mu.Unlock()
		r.poke()
		synctest.Wait()
		if got := l.nats(); got != "unknown easy" {
			t.Fatalf("a NAT change without new candidates went out at once: %q", got)
		}
		time.Sleep(3 * time.Second)
		if got := l.nats(); got != "unknown easy hard" {
			t.Fatalf("after connMinInterval: %q, want the NAT change reported", got)
		}
		cancel()
		<-done
	})
}

// TestSameConnectivity: RTTs and times do not count as changes; kinds,
// addresses, relays, NAT, home relay and candidates do.
func TestSameConnectivity(t *testing.T) {
	base := func() wire.ConnectivityReport {
		return wire.ConnectivityReport{Endpoints: []string{"192.0.2.1:1"}, Connectivity: wire.Connectivity{
			NAT: "easy", HomeRelay: "r1",
			Paths: []wire.PeerPath{{Peer: "b", Kind: "direct", Addr: "203.0.113.2:1", RTT: wire.Duration(time.Millisecond)}},
		}}
	}
	for _, tc := range []struct {
		name   string
		change func(*wire.ConnectivityReport)
		same   bool
	}{
		{"rtt", func(r *wire.ConnectivityReport) { r.Paths[0].RTT = 5 }, true},
		{"since", func(r *wire.ConnectivityReport) { r.Paths[0].Since = time.Now() }, true},
		{"kind", func(r *wire.ConnectivityReport) { r.Paths[0].Kind = "relay" }, false},
		{"addr", func(r *wire.ConnectivityReport) { r.Paths[0].Addr = "203.0.113.2:2" }, false},
		{"relay", func(r *wire.ConnectivityReport) { r.Paths[0].Relay = "r2" }, false},
		{"peer gone", func(r *wire.ConnectivityReport) { r.Paths = nil }, false},
		{"nat", func(r *wire.ConnectivityReport) { r.NAT = "hard" }, false},
		{"home", func(r *wire.ConnectivityReport) { r.HomeRelay = "" }, false},
		{"endpoints", func(r *wire.ConnectivityReport) { r.Endpoints = append(r.Endpoints, "192.0.2.1:2") }, false},
	} {
		b := base()
		tc.change(&b)
		if got := sameConnectivity(base(), b); got != tc.same {
			t.Errorf("%s: same = %v, want %v", tc.name, got, tc.same)
		}
	}
}

// TestDirectFailure: the reason names the candidates tried and this
// node's NAT.
func TestDirectFailure(t *testing.T) {
	for _, tc := range []struct {
		tried     int
		relayOnly bool
		nat       bind.NATType
		want      string
	}{
		{2, false, bind.NATHard, "direct: no answer from 2 candidates; this node is behind a hard NAT"},
		{1, false, bind.NATUDPBlocked, "direct: no answer from 1 candidate; UDP is blocked here"},
		{0, false, bind.NATEasy, "direct: the peer has no candidates"},
		{3, true, bind.NATEasy, "direct: not tried (--relay-only)"},
		{3, false, bind.NATUnknown, "direct: no answer from 3 candidates"},
	} {
		if got := directFailure(tc.tried, tc.relayOnly, tc.nat); !strings.HasPrefix(got, tc.want) {
			t.Errorf("directFailure(%d, %v, %s) = %q, want it to start with %q", tc.tried, tc.relayOnly, tc.nat, got, tc.want)
		}
	}
}
