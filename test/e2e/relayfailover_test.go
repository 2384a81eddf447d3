package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
)

// startRelays starts standalone relays named names, each on a public host
// of m's lab, enrolled with one-time relay keys.
func startRelays(t *testing.T, m *mesh, names ...string) map[string]*standaloneRelay {
	t.Helper()
	rs := map[string]*standaloneRelay{}
	for _, name := range names {
		r := &standaloneRelay{host: m.lab.AddPublicHost(name), stateDir: filepath.Join(t.TempDir(), "relay"), name: name}
		r.serve(t, "--join", strings.TrimSpace(m.cli("keys", "create", "--relay")))
		rs[name] = r
	}
	return rs
}

// relayMapOf waits until a's cached netmap names every relay of names.
func relayMapOf(t *testing.T, a *agent, names ...string) {
	t.Helper()
	waitFor(t, 15*time.Second, a.name+"'s relay map", func() bool {
		have := map[string]bool{}
		for _, r := range agentNetmap(t, a).Relays {
			have[r.Name] = true
		}
		for _, n := range names {
			if !have[n] {
				return false
			}
		}
		return true
	})
}

// pingRun pings dst from a n times at 10/s in the background; the
// returned function waits for the end and returns what the pings saw.
func pingRun(a *agent, dst string, n int) func(testing.TB) *lab.Pings {
	return a.host.PingInBackground(dst, n, 100*time.Millisecond)
}

// TestRelayFailover (issue 13, scenario 7): two standalone relays, a
// coordinator without one, two hosts behind hard NATs reaching each other
// through a relay. Killing the relay their traffic goes through moves it
// to the other within 5 s (at most 50 pings lost at 10/s), and the paths
// then name the other relay.
func TestRelayFailover(t *testing.T) {
	m := newInternetMesh(t, "--no-relay")
	rs := startRelays(t, m, "r-east", "r-west")
	a, b, _ := hardPair(t, m)
	relayMapOf(t, a, "r-east", "r-west")
	relayMapOf(t, b, "r-east", "r-west")
	firstPing(t, a, b, time.Now(), 15*time.Second, "the relay maps")
	waitFor(t, 5*time.Second, "both relayed", func() bool { return a.relayedTo(t, b.name) && b.relayedTo(t, a.name) })
	used := a.path(t, b.name).Relay
	other := "r-east"
	if used == other {
		other = "r-west"
	}
	waitFor(t, 10*time.Second, "both attached to "+other, func() bool {
		return a.relayConnected(t, other) && b.relayConnected(t, other)
	})

	wait := pingRun(a, b.addr(t, false).String(), 150)
	time.Sleep(3 * time.Second) // the ping's own schedule: kill 3 s into it
	if err := rs[used].proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out := wait(t)
	gap := longestGap(t, out)
	t.Logf("relay %s killed; longest run of lost pings: %d (%s)", used, gap, time.Duration(gap)*100*time.Millisecond)
	if gap > 50 {
		t.Errorf("%d pings in a row lost after relay %s died, want at most 5 s at 10/s:\n%s", gap, used, lastLines(out.Out, 5))
	}
	for _, x := range []*agent{a, b} {
		if p := x.path(t, map[*agent]string{a: b.name, b: a.name}[x]); p.Kind != wire.PathKindRelay || p.Relay != other {
			t.Errorf("%s's path after %s died: %+v, want relay %s", x.name, used, p, other)
		}
	}
}

// TestCoordinatorDownPaths (issue 13, scenario 8): with the coordinator
// killed, a direct path (public host ↔ hard NAT) and a relayed one (hard
// ↔ hard, through a standalone relay) keep carrying traffic; an agent of
// the relayed pair restarted meanwhile comes back from its cache and
// reaches its peer through the relay again.
func TestCoordinatorDownPaths(t *testing.T) {
	m := newInternetMesh(t, "--no-relay")
	startRelays(t, m, "r-only")
	a, b, _ := hardPair(t, m)
	p := m.onHost(m.lab.AddPublicHost("pub"))
	for _, x := range []*agent{a, b, p} {
		relayMapOf(t, x, "r-only")
	}
	firstPing(t, a, b, time.Now(), 15*time.Second, "the relay maps")
	peered(t, a, p)
	waitFor(t, 20*time.Second, a.name+" direct to "+p.name, func() bool {
		a.ping(t, p.addr(t, false), 2, 200*time.Millisecond)
		return a.path(t, p.name).Kind == wire.PathKindDirect
	})

	m.coord.Kill()
	relayed := pingRun(a, b.addr(t, false).String(), 50)
	direct := pingRun(a, p.addr(t, false).String(), 50)
	if p := relayed(t); p.Lost() > 0 {
		t.Errorf("the relayed path lost pings with the coordinator down: %s\n%s", p, lastLines(p.Out, 3))
	}
	if p := direct(t); p.Lost() > 0 {
		t.Errorf("the direct path lost pings with the coordinator down: %s\n%s", p, lastLines(p.Out, 3))
	}

	b.stop(t)
	b.start(t)
	restarted := time.Now()
	took := firstPing(t, a, b, restarted, 15*time.Second, b.name+"'s restart without a coordinator")
	t.Logf("%s restarted with the coordinator down; first ping through the relay after %s", b.name, took)
	if p := b.path(t, a.name); p.Kind != wire.PathKindRelay || p.Relay != "r-only" {
		t.Errorf("%s's path to %s after its restart: %+v, want relay r-only", b.name, a.name, p)
	}
}

// relayConnected reports whether a holds a connection to the relay name.
func (a *agent) relayConnected(t *testing.T, name string) bool {
	for _, r := range a.status(t).Relays {
		if r.Name == name {
			return r.Connected
		}
	}
	return false
}
