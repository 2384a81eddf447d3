package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/node"
	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
)

// connectRuns is how many fresh pairs BenchmarkConnect times per scenario.
const connectRuns = 10

// BenchmarkConnect measures, over connectRuns fresh pairs of agents on NAT
// sites of the lab (the coordinator and its relay on the lab's internet):
// behind two hard NATs, the time from both agents being up to the first
// ping answered (through the relay; target 2 s); behind two easy NATs, the
// time from the first ping sent to both agents' paths being direct
// (target 5 s). Min, median and max.
func BenchmarkConnect(b *testing.B) {
	lab.Require(b, "ip", "ping", "nft")
	bin := build(b, b.TempDir(), "wiremesh", "github.com/wiremesh/wiremesh/cmd/wiremesh")
	l := lab.New(b)
	m := startMesh(b, bin, l.AddPublicHost("coord"))
	m.setPolicy(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "icmp"}]}`)
	h1, h2 := l.AddSite("h1", lab.NATHard), l.AddSite("h2", lab.NATHard)
	e1, e2 := l.AddSite("e1", lab.NATEasy), l.AddSite("e2", lab.NATEasy)

	var relayed, direct []float64
	for run := range connectRuns {
		a := m.addAgent(h1.AddHost(fmt.Sprintf("ha%d", run)), prefixName(b, l, fmt.Sprintf("ha%d", run)))
		c := m.addAgent(h2.AddHost(fmt.Sprintf("hb%d", run)), prefixName(b, l, fmt.Sprintf("hb%d", run)))
		up := slices.MaxFunc([]time.Time{logTime(a.proc, "agent up"), logTime(c.proc, "agent up")}, time.Time.Compare)
		waitPing(b, a.host, c.addr, 30*time.Second)
		relayed = append(relayed, time.Since(up).Seconds())

		x := m.addAgent(e1.AddHost(fmt.Sprintf("ea%d", run)), prefixName(b, l, fmt.Sprintf("ea%d", run)))
		y := m.addAgent(e2.AddHost(fmt.Sprintf("eb%d", run)), prefixName(b, l, fmt.Sprintf("eb%d", run)))
		// The peers first learn each other's candidates (the coordinator
		// passes them on), then the clock starts with the first packet.
		waitFor(b, 30*time.Second, "candidates", func() bool { return knows(b, x, y.name) && knows(b, y, x.name) })
		first := time.Now()
		ctx, cancel := context.WithCancel(context.Background())
		go x.host.Run(ctx, "ping", "-n", "-i", "0.2", "-W", "1", y.addr.String())
		waitFor(b, 30*time.Second, "direct paths", func() bool {
			return pathKind(b, x, y.name) == wire.PathKindDirect && pathKind(b, y, x.name) == wire.PathKindDirect
		})
		direct = append(direct, time.Since(first).Seconds())
		cancel()
		logf("run %d: first relayed ping %.2f s after both agents up; direct %.2f s after the first packet", run+1, relayed[run], direct[run])
		// The next pair starts as the first did: the nodes are gone and
		// the NATs hold no mapping of theirs (a stale one to the same
		// public address and port would make the next easy pair's NAT
		// pick another port: hard, for that flow).
		for _, g := range []*agent{a, c, x, y} {
			g.proc.Kill()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, err := output(ctx, m.host, bin, "nodes", "delete", g.name, "--token-file", m.tokenFile); err != nil {
				b.Fatalf("delete node %s: %v", g.name, err)
			}
			cancel()
		}
		for _, s := range []*lab.Site{h1, h2, e1, e2} {
			if err := s.Rebind(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(median(relayed), "s-relay-first-ping-median")
	b.ReportMetric(median(direct), "s-easy-direct-median")
	spread := func(xs []float64) string {
		return fmt.Sprintf("min %.2f s, median %.2f s, max %.2f s", slices.Min(xs), median(xs), slices.Max(xs))
	}
	fmt.Println()
	fmt.Printf("Connect (%s, load %s)\n", time.Now().Format(time.DateOnly), loadAvg())
	figureTable([][]string{
		{"hard ↔ hard: both agents up → first ping answered (relay)", spread(relayed), floats(relayed, "%.2f"), "< 2 s", passFail(slices.Max(relayed) < 2)},
		{"easy ↔ easy: first packet → both paths direct", spread(direct), floats(direct, "%.2f"), "< 5 s", passFail(slices.Max(direct) < 5)},
	})
}

// status returns a's `wiremesh status --json`.
func (a *agent) status(b *testing.B) node.Status {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := output(ctx, a.host, a.bin, "status", "--json", "--state-dir", a.stateDir)
	if err != nil {
		b.Fatalf("status of %s: %v", a.name, err)
	}
	var st node.Status
	if err := json.Unmarshal(out, &st); err != nil {
		b.Fatalf("status of %s: %v", a.name, err)
	}
	return st
}

// knows reports whether a has a candidate for its peer named peer.
func knows(b *testing.B, a *agent, peer string) bool {
	for _, p := range a.status(b).Peers {
		if p.Name == peer && len(p.Candidates) > 0 {
			return true
		}
	}
	return false
}

// pathKind is the kind of a's path to its peer named peer.
func pathKind(b *testing.B, a *agent, peer string) string {
	for _, p := range a.status(b).Peers {
		if p.Name == peer {
			return p.Path.Kind
		}
	}
	return ""
}

// waitFor polls cond every 20 ms until it holds, failing after d.
func waitFor(b *testing.B, d time.Duration, what string, cond func() bool) {
	b.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("timed out after %s waiting for %s", d, what)
		}
	}
}
