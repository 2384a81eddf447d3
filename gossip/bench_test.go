package gossip

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// BenchmarkIdleGossip starts 20 members on loopback, lets them settle and
// measures the idle traffic of each from Stats: probes, acks and gossip,
// and the push/pull state syncs over TCP that each member starts every
// 30 s. Memberlist starts a member's first periodic sync 30 to 60 s after
// it started, so the benchmark waits 62 s, then measures over one whole
// 30-s sync period (every member syncs exactly once in it). It runs once,
// whatever b.N, and takes about 95 s.
func BenchmarkIdleGossip(b *testing.B) {
	const n = 20
	const window = 30 * time.Second
	started := time.Now()
	ms, _ := cluster(b, n)
	time.Sleep(time.Until(started.Add(62 * time.Second)))
	before := make([]Stats, n)
	for i, m := range ms {
		before[i] = m.Stats()
	}
	t0 := time.Now()
	time.Sleep(window)
	secs := time.Since(t0).Seconds()
	var sent, recv, pkts uint64
	for i, m := range ms {
		s := m.Stats()
		sent += s.BytesSent - before[i].BytesSent
		recv += s.BytesReceived - before[i].BytesReceived
		pkts += s.PacketsSent - before[i].PacketsSent
		if got := countStatus(m, Alive); got != n {
			b.Errorf("%s sees %d of %d members alive while idle", m.name, got, n)
		}
	}
	per := float64(n) * secs
	b.ReportMetric(float64(sent)/per, "sent-B/s/member")
	b.ReportMetric(float64(recv)/per, "recv-B/s/member")
	b.ReportMetric(float64(pkts)/per, "sent-pkts/s/member")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkFailover crashes a member of a 20-member mesh ten times, each
// time measuring how long until every other member marks it Failed, then
// restarts it on the same name and address and measures how long until
// every member sees it Alive again. It runs once, whatever b.N.
func BenchmarkFailover(b *testing.B) {
	const n, rounds = 20, 10
	ms, _ := cluster(b, n)
	var failed, first, rejoined []time.Duration
	for r := range rounds {
		v := 1 + r%(n-1)
		name, cfg := ms[v].name, testConfig(ms[v].name, ms[0].log)
		cfg.BindAddr = ms[v].addr().Addr()
		others := slices.Delete(slices.Clone(ms), v, v+1)

		t0 := time.Now()
		if err := ms[v].crash(); err != nil {
			b.Fatal(err)
		}
		seen := map[string]bool{}
		waitFor(b, 10*time.Second, fmt.Sprintf("round %d: all mark %s failed", r, name), func() bool {
			for _, m := range others {
				if !seen[m.name] && statusOfName(m, name) == Failed {
					seen[m.name] = true
					if len(seen) == 1 {
						first = append(first, time.Since(t0))
					}
				}
			}
			return len(seen) == len(others)
		})
		failed = append(failed, time.Since(t0))

		t0 = time.Now()
		ms[v] = start(b, cfg)
		if _, err := ms[v].Join([]netip.AddrPort{others[0].addr()}); err != nil {
			b.Fatal(err)
		}
		waitFor(b, 10*time.Second, fmt.Sprintf("round %d: all see %s alive", r, name), func() bool {
			for _, m := range others {
				if statusOfName(m, name) != Alive {
					return false
				}
			}
			return true
		})
		rejoined = append(rejoined, time.Since(t0))
	}
	ms2 := func(ds []time.Duration, q float64) float64 {
		s := slices.Clone(ds)
		slices.Sort(s)
		return float64(s[int(q*float64(len(s)-1))].Milliseconds())
	}
	b.Logf("time until all %d others mark a crashed member failed: %v", n-1, failed)
	b.Logf("time until the first does: %v", first)
	b.Logf("time until all see it alive after restart and Join: %v", rejoined)
	b.ReportMetric(ms2(failed, 0.5), "failed-all-p50-ms")
	b.ReportMetric(ms2(failed, 1), "failed-all-max-ms")
	b.ReportMetric(ms2(first, 0.5), "failed-first-p50-ms")
	b.ReportMetric(ms2(rejoined, 0.5), "rejoin-p50-ms")
	b.ReportMetric(ms2(rejoined, 1), "rejoin-max-ms")
	b.ReportMetric(0, "ns/op")
}
