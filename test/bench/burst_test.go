package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/wiremesh/wiremesh/test/lab"
)

// burstRuns is how many health bursts BenchmarkHealthBurst times per loss
// rate (each run is two bursts: six checks pass, then six fail).
const burstRuns = 10

// BenchmarkHealthBurst measures, on 7 agents that all run the service
// "burst" with a ttl check: six agents pass (then fail) their check at
// once; the time until every agent's DNS answers burst.service with the
// six instances (then none). Without loss and with 10% of the packets each
// host receives dropped at random (nftables numgen). Targets: every burst
// within 2 s without loss, within 5 s with 10% loss.
func BenchmarkHealthBurst(b *testing.B) {
	lab.Require(b, "ip", "nft")
	bin := build(b, b.TempDir(), "wiremesh", "github.com/wiremesh/wiremesh/cmd/wiremesh")
	l := lab.New(b)
	coord := l.AddHost("coord")
	m := startMesh(b, bin, coord)
	// Untagged nodes provide nothing without a services section.
	m.setPolicy(`{"services": {"burst": ["node:a0", "node:a1", "node:a2", "node:a3", "node:a4", "node:a5", "node:a6"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["svc:burst"], "proto": "tcp"}]}`)
	svcFile := filepath.Join(b.TempDir(), "services.hujson")
	if err := os.WriteFile(svcFile, []byte(`{"services": [{"name": "burst", "port": 9000, "checks": [{"id": "burst-ttl", "ttl": "10m"}]}]}`), 0o600); err != nil {
		b.Fatal(err)
	}
	agents := make([]*agent, 7)
	for i := range agents {
		h := l.AddHost(fmt.Sprintf("a%d", i))
		agents[i] = m.addAgent(h, prefixName(b, l, h.Name), "--config", svcFile, "--resolv-conf", "/dev/null")
	}
	changers := agents[:6]
	var want []string
	for _, a := range changers {
		want = append(want, a.addr.String())
	}
	slices.Sort(want)
	waitAll(b, agents, nil, time.Minute) // every agent up, nothing passing yet
	time.Sleep(3 * time.Second)          // let joins settle

	var rows [][]string
	for _, loss := range []int{0, 10} {
		if loss > 0 {
			for _, h := range append([]*lab.Host{coord}, hostsOf(agents)...) {
				dropOn(b, h, loss)
			}
		}
		var took []float64
		for run := range burstRuns {
			for _, pass := range []bool{true, false} {
				exp := want
				if !pass {
					exp = nil
				}
				start := time.Now()
				setChecks(b, changers, pass)
				d := waitAll(b, agents, exp, time.Minute).Sub(start).Seconds()
				took = append(took, d)
				logf("loss %d%%, run %d, pass=%v: %.2f s", loss, run+1, pass, d)
			}
		}
		bound := 2.0
		if loss > 0 {
			bound = 5
		}
		rows = append(rows, []string{fmt.Sprintf("burst of 6 health changes → every agent of 7, %d%% loss", loss),
			fmt.Sprintf("min %.2f s, median %.2f s, max %.2f s", slices.Min(took), median(took), slices.Max(took)),
			floats(took, "%.2f"), fmt.Sprintf("every one ≤ %.0f s", bound), passFail(slices.Max(took) <= bound)})
		b.ReportMetric(slices.Max(took), fmt.Sprintf("s-burst-max-%dpct", loss))
	}
	fmt.Println()
	fmt.Printf("Health bursts (%s, load %s)\n", time.Now().Format(time.DateOnly), loadAvg())
	figureTable(rows)
}

// setChecks passes or fails burst-ttl on every agent of as at once.
func setChecks(b *testing.B, as []*agent, pass bool) {
	verb := "fail"
	if pass {
		verb = "pass"
	}
	var wg sync.WaitGroup
	for _, a := range as {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if out, err := output(ctx, a.host, a.bin, "checks", verb, "burst-ttl", "--state-dir", a.stateDir); err != nil {
				b.Errorf("checks %s on %s: %v\n%s", verb, a.name, err, out)
			}
		})
	}
	wg.Wait()
}

// waitAll polls every agent's DNS until each answers burst.service with
// want, and returns when the last one did.
func waitAll(b *testing.B, as []*agent, want []string, timeout time.Duration) time.Time {
	var wg sync.WaitGroup
	seen := make([]time.Time, len(as))
	start := time.Now()
	for i, a := range as {
		wg.Go(func() {
			for time.Since(start) < timeout {
				if got, err := burstAddrs(a); err == nil && slices.Equal(got, want) {
					seen[i] = time.Now()
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	var last time.Time
	for i, t := range seen {
		if t.IsZero() {
			got, err := burstAddrs(as[i])
			b.Fatalf("%s: burst.service is %v (%v) after %s, want %v", as[i].name, got, err, timeout, want)
		}
		if t.After(last) {
			last = t
		}
	}
	return last
}

// burstAddrs asks a's DNS for burst.service's A records.
func burstAddrs(a *agent) ([]string, error) {
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
	q.SetQuestion("burst.service.mesh.internal.", miekg.TypeA)
	if err := c.WriteMsg(q); err != nil {
		return nil, err
	}
	r, err := c.ReadMsg()
	if err != nil {
		return nil, err
	}
	if r.Rcode != miekg.RcodeSuccess {
		return nil, fmt.Errorf("rcode %s", miekg.RcodeToString[r.Rcode])
	}
	var out []string
	for _, rr := range r.Answer {
		if x, ok := rr.(*miekg.A); ok {
			out = append(out, x.A.String())
		}
	}
	slices.Sort(out)
	return out, nil
}

func hostsOf(as []*agent) []*lab.Host {
	out := make([]*lab.Host, len(as))
	for i, a := range as {
		out[i] = a.host
	}
	return out
}

// dropOn drops percent of the packets h receives on eth0, at random.
func dropOn(b *testing.B, h *lab.Host, percent int) {
	rules := fmt.Sprintf("table inet wmloss { chain in { type filter hook input priority -300; policy accept; iifname \"eth0\" numgen random mod 100 < %d counter drop; }; }\n", percent)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := output(ctx, h, "sh", "-c", "printf '%s' \"$0\" | nft -f -", rules); err != nil {
		b.Fatalf("loss on %s: %v\n%s", h.Name, err, out)
	}
}
