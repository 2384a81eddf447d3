package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
)

const (
	// pathRuns is how many iperf3 runs each path of BenchmarkPaths gets.
	pathRuns = 8
	// pingCount is how many echo requests measure a path's latency.
	pingCount = 500

	targetCPURatio = 1.05 // wiremesh / wgbare CPU seconds per GB, at most
)

// BenchmarkPaths measures the connectivity data paths between a host
// behind an easy NAT (site s1) and a public host, in one lab and one run:
//
//   - wgbare: two bare wireguard-go devices through the NAT (the NATed one
//     keeps its mapping open with a keepalive), the baseline;
//   - direct: two wiremesh agents (h1 behind the NAT, h2 public) on their
//     direct path, with the underlay guard and the filter (1,000-rule
//     policy) on;
//   - noguard: the same agents with their underlay guard's nftables table
//     removed for the run, which prices the guard;
//   - relayed: two --relay-only agents (r1 behind the same NAT, r2 public)
//     through the coordinator's embedded relay.
//
// iperf3 runs interleaved in rounds whose order rotates. Per path it
// reports throughput and the CPU seconds (user+sys) the WireGuard
// processes of both ends used per GB delivered, whose spread is far
// smaller than the throughput's on a shared machine; for the relayed path
// also the relay's (the coordinator's) CPU per GB forwarded. Then it pings
// each path pingCount times, 10 ms apart, with no other traffic, for the
// relay's added latency (p50, p99). Run it with -benchtime 1x.
func BenchmarkPaths(b *testing.B) {
	lab.Require(b, "ip", "ping", "ss", "iperf3", "wg", "nft", "go")
	began := time.Now()
	dir := b.TempDir()
	wmBin := build(b, dir, "wiremesh", "github.com/wiremesh/wiremesh/cmd/wiremesh")
	bareBin := build(b, dir, "wgbare", "github.com/wiremesh/wiremesh/test/bench/wgbare")

	l := lab.New(b)
	m := startMesh(b, wmBin, l.AddPublicHost("coord"))
	site := l.AddSite("s1", lab.NATEasy)
	h1, r1 := site.AddHost("h1"), site.AddHost("r1")
	h2, r2 := l.AddPublicHost("h2"), l.AddPublicHost("r2")

	// wgbare: h1 behind the NAT knows h2's address; h2 learns h1's mapping
	// from h1's packets, as WireGuard roams.
	bareIP := func(n byte) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, n}) } // RFC 2544 benchmarking range
	priv1, pub1 := wgKey(b, dir, "bare1")
	priv2, pub2 := wgKey(b, dir, "bare2")
	bp1 := startBare(b, bareBin, h1, prefixName(b, l, "b1"), priv1, pub2, bareIP(1), bareIP(2),
		"endpoint", netip.AddrPortFrom(h2.Addr, barePort).String(), "persistent-keepalive", "1")
	bp2 := startBare(b, bareBin, h2, prefixName(b, l, "b2"), priv2, pub1, bareIP(2), bareIP(1))

	a1 := m.addAgent(h1, prefixName(b, l, "a1"))
	a2 := m.addAgent(h2, prefixName(b, l, "a2"))
	x1 := m.addAgent(r1, prefixName(b, l, "x1"), "--relay-only")
	x2 := m.addAgent(r2, prefixName(b, l, "x2"), "--relay-only")
	waitPing(b, h1, bareIP(2), 20*time.Second)
	waitPing(b, h2, bareIP(1), 20*time.Second)
	for _, p := range [][2]*agent{{a1, a2}, {a2, a1}, {x1, x2}, {x2, x1}} {
		waitPing(b, p[0].host, p[1].addr, 20*time.Second)
	}
	waitFor(b, 30*time.Second, "direct paths", func() bool {
		return pathKind(b, a1, a2.name) == wire.PathKindDirect && pathKind(b, a2, a1.name) == wire.PathKindDirect
	})
	if k := pathKind(b, x1, x2.name); k != wire.PathKindRelay {
		b.Fatalf("relay-only pair on path %q", k)
	}
	logf("lab %s up after %v; load average %s", l.Prefix(), time.Since(began).Round(time.Millisecond), loadAvg())

	// Idle CPU of the direct agents, which have three peers each.
	agents := []*lab.Proc{a1.proc, a2.proc}
	const idleFor = 10 * time.Second
	cpu0 := procsCPU(agents)
	time.Sleep(idleFor)
	idleCPU := (procsCPU(agents) - cpu0) / 2 / idleFor.Seconds()

	guard := []*agent{a1, a2}
	paths := []*dataPath{
		{name: "wgbare", dst: bareIP(2), procs: []*lab.Proc{bp1, bp2}},
		{name: "direct", dst: a2.addr, procs: agents},
		{name: "noguard", dst: a2.addr, procs: agents},
		{name: "relayed", dst: x2.addr, procs: []*lab.Proc{x1.proc, x2.proc}},
	}
	// One unrecorded run per path first: a process's first burst grows its
	// heap and pools (wireguard-go's 64 KiB buffers), which cost the
	// agents' first rounds 15-25% more CPU per GB than later ones.
	for _, p := range paths {
		src, srv := h1, h2
		if p.name == "relayed" {
			src, srv = r1, r2
		}
		if _, err := iperf(b, srv, src, p.dst, 2); err != nil {
			b.Fatalf("warm-up, %s: %v", p.name, err)
		}
	}
	var relayCPU []float64 // the coordinator's CPU seconds per relayed run
	for i := range pathRuns {
		order := slices.Clone(paths)
		for range i % len(paths) {
			order = append(order[1:], order[0])
		}
		for _, p := range order {
			src, srv := h1, h2
			if p.name == "relayed" {
				src, srv = r1, r2
			}
			if p.name == "noguard" {
				for _, a := range guard {
					a.dropGuard(b)
				}
			}
			cpu0, coord0 := procsCPU(p.procs), procsCPU([]*lab.Proc{m.coord})
			r, err := iperf(b, srv, src, p.dst, iperfSecs)
			if err != nil {
				b.Fatalf("run %d, %s: %v", i+1, p.name, err)
			}
			p.runs = append(p.runs, r)
			p.cpu = append(p.cpu, (procsCPU(p.procs)-cpu0)/gb(r))
			if p.name == "relayed" {
				relayCPU = append(relayCPU, (procsCPU([]*lab.Proc{m.coord})-coord0)/gb(r))
			}
			if p.name == "noguard" {
				for _, a := range guard {
					a.restoreGuard(b)
				}
			}
			logf("run %d %-8s %6.2f Gbit/s, %5d retransmits, WireGuard CPU %.2f s/GB", i+1, p.name, r.gbps, r.retransmits, p.cpu[len(p.cpu)-1])
		}
	}

	// Latency, one path at a time, nothing else running.
	lat := map[string][]float64{}
	for _, p := range []struct {
		name string
		from *lab.Host
		to   netip.Addr
	}{{"wgbare", h1, bareIP(2)}, {"direct", h1, a2.addr}, {"relayed", r1, x2.addr}} {
		lat[p.name] = pingRTTs(b, p.from, p.to)
	}
	pct := func(xs []float64, q float64) float64 {
		s := slices.Sorted(slices.Values(xs))
		return s[min(len(s)-1, int(q*float64(len(s))))]
	}

	bare, direct, noguard, relayed := paths[0], paths[1], paths[2], paths[3]
	tput := func(p *dataPath) float64 { return median(p.gbps()) }
	cpuGB := func(p *dataPath) float64 { return median(p.cpu) }
	// The machine's speed drifts from round to round by more than the
	// differences measured, so each ratio is the median of the rounds'
	// own ratios (both runs of a round are seconds apart); the ratio of
	// the medians is shown beside it.
	perRound := func(a, c []float64) []float64 {
		out := make([]float64, len(a))
		for i := range a {
			out[i] = a[i] / c[i]
		}
		return out
	}
	tputRounds, cpuRounds := perRound(direct.gbps(), bare.gbps()), perRound(direct.cpu, bare.cpu)
	guardRounds := perRound(direct.cpu, noguard.cpu)
	tputRatio, cpuRatio, guardRatio := median(tputRounds), median(cpuRounds), median(guardRounds)
	fmt.Println()
	fmt.Printf("Paths (%s, load %s; %d × %d s iperf3 runs per path, rotating order)\n", time.Now().Format(time.DateOnly), loadAvg(), pathRuns, iperfSecs)
	figureTable([][]string{
		{"wgbare through the easy NAT: throughput", gbit(tput(bare)), floats(bare.gbps(), "%.2f"), "–", "–"},
		{"wgbare: WireGuard CPU per GB (both ends)", fmt.Sprintf("%.2f s", cpuGB(bare)), floats(bare.cpu, "%.2f"), "–", "–"},
		{"direct (guard and filter on): throughput", gbit(tput(direct)), floats(direct.gbps(), "%.2f"), "–", "–"},
		{"direct: agents' CPU per GB (both ends)", fmt.Sprintf("%.2f s", cpuGB(direct)), floats(direct.cpu, "%.2f"), "–", "–"},
		{"direct / wgbare throughput (median of the rounds' ratios)", fmt.Sprintf("%.3f", tputRatio), floats(tputRounds, "%.3f") + fmt.Sprintf("; of the medians %.3f", tput(direct)/tput(bare)), "≥ 0.95", passFail(tputRatio >= targetRatio)},
		{"direct / wgbare CPU per GB (median of the rounds' ratios)", fmt.Sprintf("%.3f", cpuRatio), floats(cpuRounds, "%.3f") + fmt.Sprintf("; of the medians %.3f", cpuGB(direct)/cpuGB(bare)), "≤ 1.05", passFail(cpuRatio <= targetCPURatio)},
		{"direct without the guard: throughput", gbit(tput(noguard)), floats(noguard.gbps(), "%.2f"), "–", "–"},
		{"direct without the guard: CPU per GB", fmt.Sprintf("%.2f s", cpuGB(noguard)), floats(noguard.cpu, "%.2f"), "–", "–"},
		{"guard on / off CPU per GB (median of the rounds' ratios)", fmt.Sprintf("%.3f", guardRatio), floats(guardRounds, "%.3f"), "–", "–"},
		{"relayed: throughput", gbit(tput(relayed)), floats(relayed.gbps(), "%.2f"), "–", "–"},
		{"relayed / direct throughput", fmt.Sprintf("%.3f", tput(relayed)/tput(direct)), "", "–", "–"},
		{"relayed: agents' CPU per GB (both ends)", fmt.Sprintf("%.2f s", cpuGB(relayed)), floats(relayed.cpu, "%.2f"), "–", "–"},
		{"relay (coordinator) CPU per GB forwarded", fmt.Sprintf("%.2f s", median(relayCPU)), floats(relayCPU, "%.2f"), "–", "–"},
		{"ping RTT p50 / p99: wgbare", fmt.Sprintf("%.3f / %.3f ms", pct(lat["wgbare"], .5), pct(lat["wgbare"], .99)), fmt.Sprintf("%d pings", len(lat["wgbare"])), "–", "–"},
		{"ping RTT p50 / p99: direct", fmt.Sprintf("%.3f / %.3f ms", pct(lat["direct"], .5), pct(lat["direct"], .99)), fmt.Sprintf("%d pings", len(lat["direct"])), "–", "–"},
		{"ping RTT p50 / p99: relayed", fmt.Sprintf("%.3f / %.3f ms", pct(lat["relayed"], .5), pct(lat["relayed"], .99)), fmt.Sprintf("%d pings", len(lat["relayed"])), "–", "–"},
		{"relay's added latency p50 / p99 (relayed − direct)", fmt.Sprintf("%.3f / %.3f ms", pct(lat["relayed"], .5)-pct(lat["direct"], .5), pct(lat["relayed"], .99)-pct(lat["direct"], .99)), "", "–", "–"},
		{"idle agent CPU (3 peers, after setup)", fmt.Sprintf("%.2f%%", 100*idleCPU), fmt.Sprintf("over %v", idleFor), "–", "–"},
	})
	fmt.Printf("benchmark wall time %v\n", time.Since(began).Round(time.Second))
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(tputRatio, "direct/wgbare")
	b.ReportMetric(cpuRatio, "cpu-direct/wgbare")
	b.ReportMetric(tput(relayed)/tput(direct), "relayed/direct")
}

// gb is the gigabytes one iperf3 run delivered.
func gb(r iperfResult) float64 { return r.gbps * iperfSecs / 8 }

// dropGuard saves and removes the agent's underlay guard table.
func (a *agent) dropGuard(b *testing.B) {
	b.Helper()
	table := "wiremesh-" + a.iface
	saved := run(b, a.host, "nft", "list", "table", "inet", table)
	if err := os.WriteFile(a.guardFile(), []byte(saved), 0o600); err != nil {
		b.Fatal(err)
	}
	run(b, a.host, "nft", "delete", "table", "inet", table)
}

// restoreGuard puts back what dropGuard removed.
func (a *agent) restoreGuard(b *testing.B) {
	b.Helper()
	run(b, a.host, "nft", "-f", a.guardFile())
}

func (a *agent) guardFile() string { return filepath.Join(filepath.Dir(a.stateDir), "guard.nft") }

var rttRE = regexp.MustCompile(`time=([0-9.]+) ms`)

// pingRTTs pings dst from h pingCount times, 10 ms apart, and returns the
// round-trip times in ms.
func pingRTTs(b *testing.B, h *lab.Host, dst netip.Addr) []float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := output(ctx, h, "ping", "-n", "-c", strconv.Itoa(pingCount), "-i", "0.01", dst.String())
	if err != nil {
		b.Fatalf("ping %s: %v", dst, err)
	}
	var rtts []float64
	for _, m := range rttRE.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		rtts = append(rtts, v)
	}
	if len(rtts) < pingCount*9/10 {
		b.Fatalf("ping %s: %d of %d answered", dst, len(rtts), pingCount)
	}
	return rtts
}
