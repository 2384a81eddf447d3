package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/wiremesh/wiremesh/node"
	"github.com/wiremesh/wiremesh/test/lab"
)

// failoverRuns is how many SIGKILLs BenchmarkFailover times per mesh size.
const failoverRuns = 10

// BenchmarkFailover measures, at 3 and at 20 agents that all run the
// service "web": the time from SIGKILL of an agent to its removal from
// another agent's DNS answers for web.service.mesh.internal (10 runs,
// min/median/max; target median < 3 s), the time from its restart to its
// return, and the gossip traffic per agent while the mesh idles.
func BenchmarkFailover(b *testing.B) {
	lab.Require(b, "ip", "ping")
	bin := build(b, b.TempDir(), "wiremesh", "github.com/wiremesh/wiremesh/cmd/wiremesh")
	var rows [][]string
	for _, n := range []int{3, 20} {
		rows = append(rows, failoverAt(b, bin, n)...)
	}
	fmt.Println()
	fmt.Printf("Failover and gossip (%s, load %s)\n", time.Now().Format(time.DateOnly), loadAvg())
	figureTable(rows)
}

// failoverAt runs the measurements on a mesh of n agents.
func failoverAt(b *testing.B, bin string, n int) [][]string {
	l := lab.New(b)
	m := startMesh(b, bin, l.AddHost("coord"))
	m.setPolicy(`{"services": {"web": ["tag:web"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["svc:web"], "proto": "tcp"}]}`)
	svcFile := filepath.Join(b.TempDir(), "services.hujson")
	if err := os.WriteFile(svcFile, []byte(`{"services": [{"name": "web", "port": 8080}]}`), 0o600); err != nil {
		b.Fatal(err)
	}
	agentArgs := []string{"--config", svcFile, "--resolv-conf", "/dev/null", "--dns-max-answers", "-1"}
	agents := make([]*agent, n)
	for i := range agents {
		h := l.AddHost(fmt.Sprintf("a%d", i))
		agents[i] = m.addAgent(h, prefixName(b, l, h.Name), agentArgs...)
	}
	defer func() {
		for _, a := range agents {
			a.proc.Kill() // the next mesh size has the machine to itself
		}
	}()
	obs := agents[0]
	q := newQuerier(b, obs.host)
	want := make([]string, n)
	for i, a := range agents {
		want[i] = a.addr.String()
	}
	slices.Sort(want)
	start := time.Now()
	for !slices.Equal(q.web(), want) {
		if time.Since(start) > time.Minute {
			b.Fatalf("%d agents: the observer sees %v, want %v", n, q.web(), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	logf("%d agents: all %d instances in DNS %s after the last start", n, n, time.Since(start).Round(time.Millisecond))

	// Gossip cost while idle, from the agents' counters.
	const idle = 30 * time.Second
	time.Sleep(5 * time.Second) // let joins and push-pulls settle
	procs := make([]*lab.Proc, n)
	for i, a := range agents {
		procs[i] = a.proc
	}
	before, cpu0 := gossipBytes(b, agents), procsCPU(procs)
	time.Sleep(idle)
	after, cpu1 := gossipBytes(b, agents), procsCPU(procs)
	idleCPU := (cpu1 - cpu0) / float64(n) / idle.Seconds()
	var sent, recv []float64
	for i := range agents {
		sent = append(sent, float64(after[i][0]-before[i][0])/idle.Seconds())
		recv = append(recv, float64(after[i][1]-before[i][1])/idle.Seconds())
	}
	logf("%d agents idle: gossip sent %.0f B/s, received %.0f B/s per agent (median); CPU %.2f%% per agent", n, median(sent), median(recv), 100*idleCPU)

	var gone, back []float64
	for run := range failoverRuns {
		victim := agents[1+run%(n-1)]
		addr := victim.addr.String()
		victim.proc.Kill()
		killed := time.Now()
		for slices.Contains(q.web(), addr) {
			if time.Since(killed) > 30*time.Second {
				b.Fatalf("%d agents, run %d: %s still answered 30 s after SIGKILL", n, run+1, victim.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
		gone = append(gone, time.Since(killed).Seconds())
		victim.start(b, agentArgs...)
		restarted := time.Now()
		for !slices.Contains(q.web(), addr) {
			if time.Since(restarted) > 30*time.Second {
				b.Fatalf("%d agents, run %d: %s not back 30 s after its restart\n%s", n, run+1, victim.name, victim.proc.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
		back = append(back, time.Since(restarted).Seconds())
		logf("%d agents, run %d: %s gone after %.2f s, back %.2f s after its restart", n, run+1, victim.name, gone[run], back[run])
		time.Sleep(2 * time.Second) // let the pool settle before the next kill
	}
	b.ReportMetric(median(gone), fmt.Sprintf("s-failover-median-%d", n))
	spread := func(xs []float64) string {
		return fmt.Sprintf("min %.2f s, median %.2f s, max %.2f s", slices.Min(xs), median(xs), slices.Max(xs))
	}
	return [][]string{
		{fmt.Sprintf("SIGKILL → gone from DNS, %d agents", n), spread(gone), floats(gone, "%.2f"), "median < 3 s", passFail(median(gone) < 3)},
		{fmt.Sprintf("restart → back in DNS, %d agents", n), spread(back), floats(back, "%.2f"), "–", "–"},
		{fmt.Sprintf("gossip per agent, idle, %d agents", n), fmt.Sprintf("%.0f B/s sent, %.0f B/s received (median)", median(sent), median(recv)),
			fmt.Sprintf("sent min %.0f max %.0f", slices.Min(sent), slices.Max(sent)), "–", "–"},
		{fmt.Sprintf("agent CPU, idle, %d agents (%d peers each)", n, n-1), fmt.Sprintf("%.2f%% of a core per agent", 100*idleCPU),
			fmt.Sprintf("over %v, mean of %d", idle, n), "–", "–"},
	}
}

// gossipBytes returns each agent's gossip bytes sent and received.
func gossipBytes(b *testing.B, agents []*agent) [][2]uint64 {
	out := make([][2]uint64, len(agents))
	for i, a := range agents {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		raw, err := output(ctx, a.host, a.bin, "status", "--json", "--state-dir", a.stateDir)
		cancel()
		if err != nil {
			b.Fatalf("status on %s: %v", a.name, err)
		}
		var st node.Status
		if err := json.Unmarshal(raw, &st); err != nil || st.Gossip == nil {
			b.Fatalf("status on %s: no gossip counters (%v): %s", a.name, err, raw)
		}
		out[i] = [2]uint64{st.Gossip.BytesSent, st.Gossip.BytesReceived}
	}
	return out
}

// querier asks a host's agent for web.service.mesh.internal over a UDP
// socket made inside the host's namespace, cheaper than a dig per poll.
type querier struct {
	b  *testing.B
	pc net.PacketConn
	to net.Addr
}

func newQuerier(b *testing.B, h *lab.Host) *querier {
	pc, err := h.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pc.Close() })
	return &querier{b: b, pc: pc, to: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}}
}

// web returns the sorted addresses of the A answer ("" entries for a
// timeout or a failed exchange are left out).
func (q *querier) web() []string {
	req := new(miekg.Msg)
	req.SetQuestion("web.service.mesh.internal.", miekg.TypeA)
	req.SetEdns0(1232, false)
	wire, _ := req.Pack()
	if _, err := q.pc.WriteTo(wire, q.to); err != nil {
		q.b.Fatal(err)
	}
	buf := make([]byte, 1500)
	for {
		q.pc.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := q.pc.ReadFrom(buf)
		if err != nil {
			return nil
		}
		var resp miekg.Msg
		if resp.Unpack(buf[:n]) != nil || resp.Id != req.Id {
			continue // a late answer to an earlier query
		}
		var out []string
		for _, rr := range resp.Answer {
			if a, ok := rr.(*miekg.A); ok {
				out = append(out, a.A.String())
			}
		}
		slices.Sort(out)
		return out
	}
}

// figureTable prints rows of (figure, value, runs, target, result) aligned.
func figureTable(rows [][]string) {
	var sb strings.Builder
	sb.WriteString("| Figure | Value | Runs | Target | Result |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		sb.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	fmt.Print(sb.String())
}
