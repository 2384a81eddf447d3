package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/wiremesh/wiremesh/test/lab"
)

// burstServices is the services file of every agent of a health burst: one
// service whose ttl check the test passes and fails.
const burstServices = `{"services": [{"name": "burst", "port": 9000, "checks": [{"id": "burst-ttl", "ttl": "10m"}]}]}`

// burstPolicy lets every node reach every other and the nodes named
// provide the burst service (the policy's services owners).
func burstPolicy(names ...string) string {
	owners := make([]string, len(names))
	for i, n := range names {
		owners[i] = fmt.Sprintf("%q", "node:"+n)
	}
	return `{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}], "services": {"burst": [` + strings.Join(owners, ", ") + `]}}`
}

// TestHealthBurst: when six of seven agents change the health of their
// service at once, every agent's DNS shows all six changes within 2 s,
// without packet loss and (within 5 s) with 10% of the packets every host
// receives dropped at random. The agents run the default 30 s push/pull,
// so an update that gossip loses fails the test instead of being healed.
func TestHealthBurst(t *testing.T) {
	lab.Require(t, "nft")
	m := newBareMesh(t)
	m.setPolicy(burstPolicy("b1", "b2", "b3", "b4", "b5", "b6", "b7"))
	f := servicesFile(t, burstServices)
	var all []*agent
	for i := range 7 {
		all = append(all, m.addAgent(fmt.Sprintf("b%d", i+1), "--config", f))
	}
	changers := all[:6]
	var want []string
	for _, a := range changers {
		want = append(want, a.addr(t, false).String())
	}
	want = sorted(want...)
	waitFor(t, 30*time.Second, "every agent with all seven gossip members", func() bool {
		for _, a := range all {
			if st := a.status(t); st.Gossip == nil || st.Gossip.Members != len(all) {
				return false
			}
		}
		return true
	})

	for _, c := range []struct {
		loss  int // percent of received packets dropped on every host
		bound time.Duration
	}{{0, 2 * time.Second}, {10, 5 * time.Second}} {
		if c.loss > 0 {
			for _, h := range append([]*lab.Host{m.coordHost}, hostsOf(all)...) {
				dropAtRandom(t, h, c.loss)
			}
		}
		for run := range 2 {
			for _, pass := range []bool{true, false} {
				exp := want
				if !pass {
					exp = nil
				}
				took := healthBurst(t, changers, all, pass, exp, c.bound+10*time.Second)
				if c.loss > 0 {
					t.Logf("%s", droppedOn(t, all[0].host))
				}
				t.Logf("loss %d%%, burst %d, pass=%v: every agent saw it after %s", c.loss, run+1, pass, took.Round(time.Millisecond))
				if took > c.bound {
					t.Errorf("loss %d%%: a burst of %d health changes took %s to reach every agent, want at most %s",
						c.loss, len(changers), took.Round(time.Millisecond), c.bound)
				}
			}
		}
	}
}

// healthBurst passes (or fails) the burst-ttl check on every changer at
// once and returns how long it took until every agent's DNS answered
// burst.service with exactly want; it fails the test after timeout.
func healthBurst(t *testing.T, changers, all []*agent, pass bool, want []string, timeout time.Duration) time.Duration {
	t.Helper()
	verb := "fail"
	if pass {
		verb = "pass"
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(changers))
	for _, a := range changers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if out, err := a.host.Run(ctx, bin, "checks", verb, "burst-ttl", "--state-dir", a.stateDir); err != nil {
				errs <- fmt.Errorf("checks %s on %s: %w\n%s", verb, a.name, err, out)
			}
		})
	}
	seen := make([]time.Duration, len(all))
	for i, a := range all {
		wg.Go(func() {
			for time.Since(start) < timeout {
				if got, err := a.serviceAddrs("burst.service.mesh.internal."); err == nil && slices.Equal(got, want) {
					seen[i] = time.Since(start)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var last time.Duration
	for i, d := range seen {
		if d == 0 {
			got, err := all[i].serviceAddrs("burst.service.mesh.internal.")
			for _, a := range all {
				st := a.status(t)
				t.Logf("%s: filter %+v, gossip %+v", a.name, st.Filter, st.Gossip)
			}
			t.Fatalf("%s: burst.service still %v (%v) after %s, want %v\n%s", all[i].name, got, err, timeout, want, all[i].proc.Log())
		}
		last = max(last, d)
	}
	return last
}

// serviceAddrs asks a's DNS server (over UDP from inside its host) for the
// A records of name and returns the addresses, sorted.
func (a *agent) serviceAddrs(name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn, err := a.host.DialContext(ctx, "udp", "127.0.0.1:53")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	c := &miekg.Conn{Conn: conn}
	c.SetDeadline(time.Now().Add(time.Second))
	q := new(miekg.Msg)
	q.SetQuestion(name, miekg.TypeA)
	if err := c.WriteMsg(q); err != nil {
		return nil, err
	}
	r, err := c.ReadMsg()
	if err != nil {
		return nil, err
	}
	if r.Rcode != miekg.RcodeSuccess {
		return nil, fmt.Errorf("%s: %s", name, miekg.RcodeToString[r.Rcode])
	}
	return addrs(r.Answer), nil
}

func hostsOf(agents []*agent) []*lab.Host {
	out := make([]*lab.Host, len(agents))
	for i, a := range agents {
		out[i] = a.host
	}
	return out
}

// dropAtRandom drops percent of the packets h receives on eth0, at random
// (nftables numgen), until the test ends (the namespace goes with the lab).
func dropAtRandom(t *testing.T, h *lab.Host, percent int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rules := fmt.Sprintf(`table inet wmloss {
  chain in {
    type filter hook input priority -300; policy accept;
    iifname "eth0" numgen random mod 100 < %d counter drop
  }
}
`, percent)
	if out, err := h.Run(ctx, "sh", "-c", "printf '%s' \"$0\" | nft -f -", rules); err != nil {
		t.Fatalf("loss on %s: %v\n%s", h.Name, err, out)
	}
}

// droppedOn returns the drop rule of dropAtRandom on h with its counter.
func droppedOn(t *testing.T, h *lab.Host) string {
	t.Helper()
	out, err := h.Run(context.Background(), "nft", "list", "chain", "inet", "wmloss", "in")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "numgen") {
			return h.Name + ": " + strings.TrimSpace(l)
		}
	}
	return h.Name + ": no drop rule"
}
