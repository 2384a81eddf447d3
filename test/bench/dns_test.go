package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/wiremesh/wiremesh/test/lab"
)

const (
	// dnsRounds is how many dnsperf runs each server gets at full rate,
	// and again at half the agent's peak; the median counts at full rate.
	// Odd rounds run the baseline first, even rounds the agent.
	dnsRounds = 3
	// dnsSecs is the length of one dnsperf run.
	dnsSecs = 10
	// webPort is the port of the benchmark's "web" service, where a TCP
	// listener in each web host's namespace makes the agents' tcp checks
	// pass.
	webPort = 8080
	// webName is the name dnsperf asks for, A records of three instances.
	webName = "web.service.mesh.internal."
	// bareDNS is where dnsbare listens, on the agent's host beside the
	// agent's 127.0.0.1:53.
	bareDNS = "127.0.0.2:53"
	// agentDNS is the agent's loopback DNS address (its default).
	agentDNS = "127.0.0.1:53"

	// Targets.
	targetDNSRatio = 0.8 // agent / dnsbare queries per second at full rate, at least
	targetP99MS    = 1.0 // agent p99 latency at half its peak rate, below
)

// dnsperfArgs are the dnsperf options of every run besides server, port,
// data file, length and rate: one client socket and one thread pair
// (dnsperf's least CPU, which leaves the most to the server on 2 CPUs),
// 100 queries in flight (dnsperf's default: enough to keep the server
// busy without overflowing its socket buffer), and a 1 s timeout so a lost
// query does not hold a slot for the default 5 s.
var dnsperfArgs = []string{"-c", "1", "-T", "1", "-q", "100", "-t", "1"}

// dnsPolicy lets every node reach web over TCP; the agents' DNS answers
// list the instances the querier may reach.
const dnsPolicy = `{"services": {"web": ["tag:web"]}, "acls": [
  {"action": "accept", "src": ["*"], "dst": ["svc:web"], "proto": "tcp"},
  {"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "icmp"},
]}`

// webServices is the services file of every web agent: web on webPort
// with a tcp check.
var webServices = fmt.Sprintf(`{"services": [{"name": "web", "port": %d,
  "checks": [{"tcp": "127.0.0.1:%d", "interval": "1s"}]}]}`, webPort, webPort)

// dnsPath is one DNS server dnsperf drives over loopback.
type dnsPath struct {
	name string    // "dnsbare", "agent"
	addr string    // ADDR:PORT
	proc *lab.Proc // the server process, for CPU figures
	peak []perfRun // at full rate
	half []perfRun // at half the agent's peak
}

// perfRun is one dnsperf run and what the machine did meanwhile.
type perfRun struct {
	perf
	serverCPU float64 // CPUs the server process kept busy (0..2)
	clientCPU float64 // CPUs dnsperf kept busy
	busy      float64 // machine-wide CPU utilisation (0..1)
}

// perf is what dnsperf prints.
type perf struct {
	qps       float64   // "Queries per second"
	sent      int       // "Queries sent"
	lost      int       // "Queries lost"
	avgMS     float64   // "Average Latency (s)", in ms
	maxMS     float64   // its max, in ms
	respBytes int       // "Average packet size: ... response N"
	latencies []float64 // with -v: every answered query's latency in ms, unsorted
	timeouts  int       // with -v: queries reported as timed out ("T")
}

// BenchmarkDNS measures, in one lab and one run, the DNS server of a
// wiremesh agent against a bare miekg/dns server (test/bench/dnsbare) on
// the same namespace host, both driven over loopback by the same dnsperf
// with the same query: A records of web.service.mesh.internal, which has
// three healthy instances (the agent's own and those of two other agents,
// tcp checks against listeners the benchmark opens). dnsbare answers the
// same three records for every name, in the same number of bytes.
//
// It runs dnsperf at full rate, interleaved in rounds (dnsbare, agent),
// (agent, dnsbare), ..., and the median counts; then at half the agent's
// median peak rate (dnsperf -Q) with -v, whose per-query latencies give
// the percentiles (this dnsperf, 2.10, has no latency histogram). A query
// dnsperf gave up on counts as infinitely slow. dnsperf and the server
// share the machine's CPUs on both paths alike.
//
// The benchmark does all of this once whatever b.N is: run it with
// -benchtime 1x. It prints a markdown table of the figures, with targets,
// to stdout. A missed target is marked FAIL in the table but does not fail
// the benchmark.
func BenchmarkDNS(b *testing.B) {
	lab.Require(b, "ip", "dnsperf", "dig", "go")
	began := time.Now()
	dir := b.TempDir()
	wmBin := build(b, dir, "wiremesh", "github.com/wiremesh/wiremesh/cmd/wiremesh")
	bareBin := build(b, dir, "dnsbare", "github.com/wiremesh/wiremesh/test/bench/dnsbare")
	queries := filepath.Join(dir, "queries.txt")
	if err := os.WriteFile(queries, []byte(webName+" A\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	services := filepath.Join(dir, "services.hujson")
	if err := os.WriteFile(services, []byte(webServices), 0o600); err != nil {
		b.Fatal(err)
	}

	// The agent under test on h1, two more web instances on w2 and w3.
	l := lab.New(b)
	coordHost := l.AddHost("coord")
	m := startMesh(b, wmBin, coordHost)
	m.setPolicy(dnsPolicy)
	var webs []*agent
	for _, name := range []string{"h1", "w2", "w3"} {
		h := l.AddHost(name)
		listenTCP(b, h, webPort)
		webs = append(webs, m.addAgent(h, prefixName(b, l, name), "--config", services))
	}
	h1, a1 := webs[0].host, webs[0]
	var want []string
	for _, a := range webs {
		want = append(want, a.addr.String())
	}
	slices.Sort(want)
	agentAns := waitDig(b, h1, agentDNS, want, 30*time.Second)

	// The baseline, on the same host, with the agent's TTL and addresses.
	bare := h1.Start(b, "dnsbare", nil, append([]string{bareBin, bareDNS, strconv.Itoa(int(agentAns.ttl))}, want...)...)
	if err := bare.WaitLog("dnsbare up", 10*time.Second); err != nil {
		b.Fatalf("dnsbare: %v", err)
	}
	bareAns := waitDig(b, h1, bareDNS, want, 10*time.Second)
	if bareAns.size != agentAns.size {
		b.Fatalf("dnsbare answers %d bytes, the agent %d:\n%s\n%s", bareAns.size, agentAns.size, bareAns.raw, agentAns.raw)
	}
	startLoad := loadAvg()
	logf("lab %s up after %v: agent %s, web at %s; answers of %d bytes (flags: agent %q, dnsbare %q); load average %s",
		l.Prefix(), time.Since(began).Round(time.Millisecond), a1.iface, strings.Join(want, " "), agentAns.size,
		agentAns.flags, bareAns.flags, startLoad)
	otherBusy := idleBusy(3 * time.Second)

	paths := []*dnsPath{
		{name: "dnsbare", addr: bareDNS, proc: bare},
		{name: "agent", addr: agentDNS, proc: a1.proc},
	}
	// Full rate.
	var roundRatios []float64
	for i := range dnsRounds {
		for _, p := range roundOrder(paths, i) {
			r := measure(b, h1, p, queries, 0, false)
			p.peak = append(p.peak, r)
			logf("peak %d %-7s %8.0f q/s, mean %.3f ms (max %.1f), lost %d; CPUs: server %.2f, dnsperf %.2f, machine busy %.0f%%",
				i+1, p.name, r.qps, r.avgMS, r.maxMS, r.lost, r.serverCPU, r.clientCPU, 100*r.busy)
		}
		roundRatios = append(roundRatios, paths[1].peak[i].qps/paths[0].peak[i].qps)
	}
	bareQPS, agentQPS := median(each(paths[0].peak, runQPS)), median(each(paths[1].peak, runQPS))
	ratio := agentQPS / bareQPS

	// Half the agent's peak, for latency.
	rate := int(agentQPS / 2)
	for i := range dnsRounds {
		for _, p := range roundOrder(paths, i) {
			r := measure(b, h1, p, queries, rate, true)
			p.half = append(p.half, r)
			logf("at %d q/s %d %-7s %8.0f q/s, p50 %.3f ms, p99 %.3f ms, max %.1f ms, lost %d; CPUs: server %.2f, dnsperf %.2f, machine busy %.0f%%",
				rate, i+1, p.name, r.qps, quantile(sortedLatencies(r.perf), 0.5), quantile(sortedLatencies(r.perf), 0.99),
				r.maxMS, r.lost, r.serverCPU, r.clientCPU, 100*r.busy)
		}
	}
	bareLat, agentLat := pooled(paths[0].half), pooled(paths[1].half)
	bareP99, agentP99 := quantile(bareLat, 0.99), quantile(agentLat, 0.99)

	// A quarter of the peak: where the tail stands with more CPU to spare.
	quarter := rate / 2
	var quarterRuns [2][]perfRun
	for i := range dnsRounds {
		for _, p := range roundOrder(paths, i) {
			r := measure(b, h1, p, queries, quarter, true)
			k := slices.Index(paths, p)
			quarterRuns[k] = append(quarterRuns[k], r)
			logf("at %d q/s %d %-7s p99 %.3f ms", quarter, i+1, p.name, quantile(sortedLatencies(r.perf), 0.99))
		}
	}
	bareQ99, agentQ99 := quantile(pooled(quarterRuns[0]), 0.99), quantile(pooled(quarterRuns[1]), 0.99)

	rows := [][]string{
		{"DNS queries/s, dnsbare (baseline), full rate", perSec(bareQPS), floats(each(paths[0].peak, runQPS), "%.0f"), "–", "–"},
		{"DNS queries/s, wiremesh agent, full rate", perSec(agentQPS), floats(each(paths[1].peak, runQPS), "%.0f"), "–", "–"},
		{"agent / baseline queries/s", fmt.Sprintf("%.3f", ratio), "per round: " + floats(roundRatios, "%.2f"), "≥ 0.8", passFail(ratio >= targetDNSRatio)},
		{"mean latency at full rate (dnsperf), dnsbare / agent", ms(median(each(paths[0].peak, avgMS))) + " / " + ms(median(each(paths[1].peak, avgMS))), "", "–", "–"},
		{fmt.Sprintf("p99 latency at %d q/s (half the agent's peak), agent", rate), ms(agentP99), "per run: " + p99s(paths[1].half), "< 1 ms", passFail(agentP99 < targetP99MS)},
		{fmt.Sprintf("p99 latency at %d q/s, dnsbare", rate), ms(bareP99), "per run: " + p99s(paths[0].half), "–", "–"},
		{fmt.Sprintf("p99 latency at %d q/s (a quarter of the peak), agent / dnsbare", quarter), ms(agentQ99) + " / " + ms(bareQ99), "agent per run: " + p99s(quarterRuns[1]), "–", "–"},
		{fmt.Sprintf("p50 / p99.9 / max at %d q/s, agent", rate), ms(quantile(agentLat, 0.5)) + " / " + ms(quantile(agentLat, 0.999)) + " / " + ms(quantile(agentLat, 1)), "", "–", "–"},
		{fmt.Sprintf("p50 / p99.9 / max at %d q/s, dnsbare", rate), ms(quantile(bareLat, 0.5)) + " / " + ms(quantile(bareLat, 0.999)) + " / " + ms(quantile(bareLat, 1)), "", "–", "–"},
	}
	var sb strings.Builder
	sb.WriteString("\n| Figure | Value | Runs | Target | Result |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		sb.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	fmt.Fprintf(&sb, "\n%d × %d s dnsperf runs per server at full rate and %d × %d s at %d q/s, interleaved; dnsperf %s, query %q A, answers of %d bytes (3 A records);\n",
		dnsRounds, dnsSecs, dnsRounds, dnsSecs, rate, strings.Join(dnsperfArgs, " "), webName, agentAns.size)
	fmt.Fprintf(&sb, "CPUs kept busy at full rate (median): dnsbare %.2f, agent %.2f, dnsperf %.2f / %.2f (with dnsbare / agent); machine busy %s / %s;\n",
		median(each(paths[0].peak, serverCPU)), median(each(paths[1].peak, serverCPU)), median(each(paths[0].peak, clientCPU)), median(each(paths[1].peak, clientCPU)),
		pct(median(each(paths[0].peak, machineCPU))), pct(median(each(paths[1].peak, machineCPU))))
	fmt.Fprintf(&sb, "mean response size (dnsperf): dnsbare %d B, agent %d B; queries lost: full rate %d / %d, at %d q/s %d / %d (dnsbare / agent; a lost query counts as infinitely slow); benchmark wall time %v.\n",
		paths[0].peak[0].respBytes, paths[1].peak[0].respBytes, lost(paths[0].peak), lost(paths[1].peak), rate, lost(paths[0].half), lost(paths[1].half), time.Since(began).Round(time.Second))
	if otherBusy > maxOtherBusy {
		fmt.Fprintf(&sb, "WARNING: other work kept the machine %.0f%% busy while the lab was idle (load average %s at the start): absolute figures are low and noisy; rerun on a quiet machine before writing them down.\n",
			100*otherBusy, startLoad)
	}
	fmt.Print(sb.String())

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(bareQPS, "dnsbare-q/s")
	b.ReportMetric(agentQPS, "agent-q/s")
	b.ReportMetric(ratio, "agent/baseline")
	b.ReportMetric(agentP99, "agent-p99-ms")
	b.ReportMetric(bareP99, "dnsbare-p99-ms")
}

// roundOrder returns the two paths in the order of round i: the baseline
// first in odd rounds (i even), the agent first in even ones.
func roundOrder(paths []*dnsPath, i int) []*dnsPath {
	if i%2 == 0 {
		return []*dnsPath{paths[0], paths[1]}
	}
	return []*dnsPath{paths[1], paths[0]}
}

// idleBusy returns how busy other work keeps the machine over d, while the
// lab idles.
func idleBusy(d time.Duration) float64 {
	busy0, total0 := machineBusy()
	time.Sleep(d)
	busy1, total1 := machineBusy()
	if total1 <= total0 {
		return 0
	}
	return (busy1 - busy0) / (total1 - total0)
}

// measure runs dnsperf for dnsSecs on h against p at rate queries per
// second (0: as fast as it goes), with -v when verbose, and records the
// CPU the server, dnsperf and the machine used meanwhile.
func measure(b *testing.B, h *lab.Host, p *dnsPath, queries string, rate int, verbose bool) perfRun {
	b.Helper()
	host, port, err := net.SplitHostPort(p.addr)
	if err != nil {
		b.Fatal(err)
	}
	args := append([]string{"-s", host, "-p", port, "-d", queries, "-l", strconv.Itoa(dnsSecs)}, dnsperfArgs...)
	if rate > 0 {
		args = append(args, "-Q", strconv.Itoa(rate))
	}
	if verbose {
		args = append(args, "-v")
	}
	cpu0, err := cpuSeconds(p.proc.PID())
	if err != nil {
		b.Fatal(err)
	}
	busy0, total0 := machineBusy()
	t0 := time.Now()
	out, clientCPU, err := runDNSPerf(h, args, time.Duration(dnsSecs+30)*time.Second)
	wall := time.Since(t0).Seconds()
	busy1, total1 := machineBusy()
	cpu1, cerr := cpuSeconds(p.proc.PID())
	if err != nil || cerr != nil {
		b.Fatalf("%s: %v", p.name, errors.Join(err, cerr))
	}
	r, err := parseDNSPerf(out)
	if err != nil {
		b.Fatalf("%s: %v\n%s", p.name, err, tailLines(out, 30))
	}
	run := perfRun{perf: r, serverCPU: (cpu1 - cpu0) / wall, clientCPU: clientCPU / wall}
	if total1 > total0 {
		run.busy = (busy1 - busy0) / (total1 - total0)
	}
	return run
}

// runDNSPerf runs dnsperf with args in h's namespace, as Host.Run does, and
// returns its stdout and the CPU seconds it used (ip(8) execs dnsperf, so
// the child's rusage is dnsperf's).
func runDNSPerf(h *lab.Host, args []string, timeout time.Duration) (string, float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS, "dnsperf"}, args...)...)
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), 0, fmt.Errorf("%s: dnsperf %s: %w: %s", h.Name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	st := cmd.ProcessState
	return stdout.String(), (st.UserTime() + st.SystemTime()).Seconds(), nil
}

// parseDNSPerf reads dnsperf's statistics and, when it ran with -v, its
// per-query lines ("> NOERROR NAME TYPE 0.000123", "> T NAME TYPE").
func parseDNSPerf(out string) (perf, error) {
	var r perf
	var seen int
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "> "); ok {
			f := strings.Fields(rest)
			switch {
			case len(f) >= 1 && f[0] == "T":
				r.timeouts++
			case len(f) == 4:
				s, err := strconv.ParseFloat(f[3], 64)
				if err != nil {
					return r, fmt.Errorf("dnsperf: bad latency in %q", line)
				}
				r.latencies = append(r.latencies, s*1e3)
			}
			continue
		}
		key, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			continue
		}
		var err error
		switch key {
		case "Queries sent":
			r.sent, err = strconv.Atoi(f[0])
		case "Queries lost":
			r.lost, err = strconv.Atoi(f[0])
		case "Queries per second":
			r.qps, err = strconv.ParseFloat(f[0], 64)
			seen++
		case "Average Latency (s)": // "0.000190 (min 0.000009, max 0.005501)"
			r.avgMS, err = seconds(f[0])
			if len(f) == 5 {
				r.maxMS, err = seconds(strings.TrimSuffix(f[4], ")"))
			}
			seen++
		case "Average packet size": // "request 43, response 91"
			if len(f) == 4 {
				r.respBytes, err = strconv.Atoi(f[3])
			}
		}
		if err != nil {
			return r, fmt.Errorf("dnsperf: bad line %q: %w", line, err)
		}
	}
	if seen != 2 || r.qps <= 0 {
		return r, errors.New("dnsperf: no statistics in its output")
	}
	return r, nil
}

// seconds parses s seconds and returns milliseconds.
func seconds(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	return v * 1e3, err
}

// sortedLatencies returns r's latencies in ms, sorted, with one +Inf for
// every query dnsperf sent and got no answer to in time.
func sortedLatencies(r perf) []float64 {
	xs := slices.Clone(r.latencies)
	for range max(r.lost, r.timeouts) {
		xs = append(xs, math.Inf(1))
	}
	slices.Sort(xs)
	return xs
}

// pooled returns the latencies of all runs together, sorted.
func pooled(runs []perfRun) []float64 {
	var xs []float64
	for _, r := range runs {
		xs = append(xs, sortedLatencies(r.perf)...)
	}
	slices.Sort(xs)
	return xs
}

// quantile returns the q-quantile (0..1) of sorted xs by the nearest-rank
// method: the smallest x with at least q of the values at or below it.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func p99s(runs []perfRun) string {
	var xs []float64
	for _, r := range runs {
		xs = append(xs, quantile(sortedLatencies(r.perf), 0.99))
	}
	return floats(xs, "%.3f") + " ms"
}

// each returns fig of every run.
func each(runs []perfRun, fig func(perfRun) float64) []float64 {
	var xs []float64
	for _, r := range runs {
		xs = append(xs, fig(r))
	}
	return xs
}

func avgMS(r perfRun) float64      { return r.avgMS }
func serverCPU(r perfRun) float64  { return r.serverCPU }
func clientCPU(r perfRun) float64  { return r.clientCPU }
func machineCPU(r perfRun) float64 { return r.busy }
func runQPS(r perfRun) float64     { return r.qps }

func lost(runs []perfRun) int {
	var n int
	for _, r := range runs {
		n += r.lost
	}
	return n
}

func perSec(v float64) string { return fmt.Sprintf("%.0f q/s", v) }

func ms(v float64) string { return fmt.Sprintf("%.3f ms", v) }

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// digAnswer is dig's answer to webName A, parsed.
type digAnswer struct {
	addrs []string // A records, sorted
	ttl   uint32   // of the first A record
	size  int      // "MSG SIZE rcvd"
	flags string   // the header flags, e.g. "qr aa rd"
	raw   string
}

// waitDig asks server (ADDR:PORT) for webName A with dig from h, without
// EDNS as dnsperf does, until the answer holds exactly the addresses want,
// and fails the benchmark after timeout.
func waitDig(b *testing.B, h *lab.Host, server string, want []string, timeout time.Duration) digAnswer {
	b.Helper()
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := output(ctx, h, "dig", "@"+host, "-p", port, "+tries=1", "+time=2", "+nocookie", "+noedns", webName, "A")
		cancel()
		var a digAnswer
		if err == nil {
			a, err = parseDigA(string(out))
		}
		if err == nil && slices.Equal(a.addrs, want) {
			return a
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: no answer with %v from %s after %v: %v\n%s", h.Name, want, server, timeout, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// parseDigA reads the A records, flags and size of dig's default output.
func parseDigA(out string) (digAnswer, error) {
	a := digAnswer{raw: out}
	inAnswer := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, ";; flags:"):
			f, _, _ := strings.Cut(strings.TrimPrefix(line, ";; flags:"), ";")
			a.flags = strings.TrimSpace(f)
		case strings.HasPrefix(line, ";; MSG SIZE"):
			_, n, _ := strings.Cut(line, "rcvd:")
			a.size, _ = strconv.Atoi(strings.TrimSpace(n))
		case line == ";; ANSWER SECTION:":
			inAnswer = true
		case line == "" || strings.HasPrefix(line, ";"):
			inAnswer = false
		case inAnswer:
			rr, err := miekg.NewRR(line)
			if err != nil {
				return a, fmt.Errorf("dig output line %q: %w", line, err)
			}
			if rec, ok := rr.(*miekg.A); ok {
				if a.addrs == nil {
					a.ttl = rec.Hdr.Ttl
				}
				a.addrs = append(a.addrs, rec.A.String())
			}
		}
	}
	if a.size == 0 {
		return a, errors.New("dig: no MSG SIZE in its output")
	}
	slices.Sort(a.addrs)
	return a, nil
}

// listenTCP opens a TCP listener on 127.0.0.1:port in h's namespace that
// accepts and closes every connection, for an agent's tcp check, until the
// benchmark's cleanup.
func listenTCP(b *testing.B, h *lab.Host, port int) {
	b.Helper()
	ln, err := h.Listen("tcp", netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port)).String())
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	b.Cleanup(func() { ln.Close(); wg.Wait() })
}

// TestParseDNSPerf reads a dnsperf 2.10 output with -v.
func TestParseDNSPerf(t *testing.T) {
	out := `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.2 -p 53 -d q.txt -l 2 -Q 1000 -v
> NOERROR web.service.mesh.internal A 0.000231
> T web.service.mesh.internal A
> NOERROR web.service.mesh.internal A 0.000088
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         3
  Queries completed:    2 (66.67%)
  Queries lost:         1 (33.33%)

  Response codes:       NOERROR 2 (100.00%)
  Average packet size:  request 43, response 91
  Run time (s):         2.000203
  Queries per second:   999.898510

  Average Latency (s):  0.000321 (min 0.000017, max 0.013075)
  Latency StdDev (s):   0.001371
`
	r, err := parseDNSPerf(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.sent != 3 || r.lost != 1 || r.qps != 999.898510 || r.respBytes != 91 || r.timeouts != 1 ||
		math.Abs(r.avgMS-0.321) > 1e-9 || math.Abs(r.maxMS-13.075) > 1e-9 || len(r.latencies) != 2 {
		t.Errorf("parsed %+v", r)
	}
	lat := sortedLatencies(r)
	if len(lat) != 3 || !math.IsInf(lat[2], 1) || quantile(lat, 0.5) != 0.231 || quantile(lat, 0.34) != 0.231 || quantile(lat, 0.33) != 0.088 {
		t.Errorf("latencies %v", lat)
	}
	if _, err := parseDNSPerf("Statistics:\n"); err == nil {
		t.Error("no error for output without statistics")
	}
}
