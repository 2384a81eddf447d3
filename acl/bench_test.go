package acl

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// benchMesh is a realistic mesh: nodes with one to three of 50 tags, and a
// policy of mostly tag-to-tag rules with port lists, some from groups of
// tags, some from nodes and CIDRs, and a few "*" ICMP rules.
type benchMesh struct {
	nodes []Node
	text  string
}

const benchTags = 50

func newBenchMesh(nnodes, nrules int, seed uint64) benchMesh {
	r := rand.New(rand.NewPCG(seed, 42))
	m := benchMesh{}
	for i := range nnodes {
		var tags []string
		for range 1 + r.IntN(3) {
			t := fmt.Sprintf("tag:t%02d", r.IntN(benchTags))
			if !strings.Contains(strings.Join(tags, ","), t) {
				tags = append(tags, t)
			}
		}
		m.nodes = append(m.nodes, testNode(i+1, fmt.Sprintf("n-%05d", i+1), tags...))
	}
	tag := func() string { return fmt.Sprintf("tag:t%02d", r.IntN(benchTags)) }
	ports := func() string {
		lists := []string{"443", "80,443", "22", "5432", "8080-8090", "443,8443,9000-9100", "53", "6379", "*", "3000-3999,4443"}
		return lists[r.IntN(len(lists))]
	}
	var b strings.Builder
	b.WriteString("{\n  \"groups\": {\n")
	for g := range 10 {
		fmt.Fprintf(&b, "    \"group:g%d\": [%q, %q, %q, %q, %q],\n", g, tag(), tag(), tag(), tag(), tag())
	}
	b.WriteString("    \"group:all-g\": [\"group:g0\", \"group:g1\", \"group:g2\"],\n  },\n  \"acls\": [\n")
	for i := range nrules {
		var src []string
		proto := ""
		dst := []string{tag() + ":" + ports()}
		switch k := r.IntN(100); {
		case i%250 == 0: // a few "*" icmp rules
			src, dst, proto = []string{"*"}, []string{tag() + ":*"}, `, "proto": "icmp"`
		case k < 70:
			src = []string{tag()}
			if r.IntN(3) == 0 {
				src = append(src, tag())
			}
			if r.IntN(4) == 0 {
				dst = append(dst, tag()+":"+ports())
			}
		case k < 80:
			src = []string{fmt.Sprintf("group:g%d", r.IntN(10))}
		case k < 82:
			src = []string{"group:all-g"}
		case k < 90:
			for range 1 + r.IntN(3) {
				src = append(src, fmt.Sprintf("node:n-%05d", 1+r.IntN(nnodes)))
			}
		case k < 98:
			src = []string{fmt.Sprintf("100.64.%d.0/24", r.IntN(nnodes/256+1))}
		default:
			src, dst = []string{tag()}, []string{fmt.Sprintf("group:g%d:%s", r.IntN(10), ports())}
		}
		if proto == "" && r.IntN(4) == 0 {
			proto = `, "proto": "tcp"`
		}
		fmt.Fprintf(&b, "    {\"action\": \"accept\", \"src\": [%s], \"dst\": [%s]%s},\n", quoteAll(src), quoteAll(dst), proto)
	}
	b.WriteString("  ],\n}\n")
	m.text = b.String()
	return m
}

// netmaps produces every node's rules and peer list, as the coordinator
// does for a netmap, and returns the number of rules and peers.
func netmaps(c *Compiled, nodes []Node, peers []int) (nrules, npeers int) {
	for _, n := range nodes {
		nrules += len(c.Rules(n.ID))
		peers = peers[:0]
		c.Peers(n.ID, func(i int) { peers = append(peers, i) })
		npeers += len(peers)
	}
	return nrules, npeers
}

func BenchmarkCompile(b *testing.B) {
	for _, size := range []struct{ nodes, rules int }{{1000, 1000}, {10000, 1000}} {
		b.Run(fmt.Sprintf("nodes=%d,rules=%d", size.nodes, size.rules), func(b *testing.B) {
			m := newBenchMesh(size.nodes, size.rules, 1)
			p, err := Parse("bench.hujson", []byte(m.text))
			if err != nil {
				b.Fatal(err)
			}
			retained := retainedBytes(func() any { return Compile(p, m.nodes) })
			peers := make([]int, 0, size.nodes)
			var total, netmapTime time.Duration
			var c *Compiled
			nrules, npeers := 0, 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				c = Compile(p, m.nodes)
				b.StopTimer() // ns/op and B/op: Compile alone
				t := time.Now()
				nrules, npeers = netmaps(c, m.nodes, peers)
				netmapTime += time.Since(t)
				total += time.Since(start)
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "total-ms/op")
			b.ReportMetric(float64(netmapTime.Milliseconds())/float64(b.N), "netmaps-ms/op")
			b.ReportMetric(float64(len(c.classes)), "classes")
			b.ReportMetric(float64(nrules)/float64(size.nodes), "rules/node")
			b.ReportMetric(float64(npeers)/float64(size.nodes), "peers/node")
			b.ReportMetric(float64(retained)/(1<<20), "retained-MB")
		})
	}
}

// retainedBytes returns the heap that the value made by fn keeps alive.
func retainedBytes(fn func() any) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v := fn()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(v)
	if after.HeapAlloc < before.HeapAlloc {
		return 0
	}
	return after.HeapAlloc - before.HeapAlloc
}

func BenchmarkParse(b *testing.B) {
	m := newBenchMesh(10000, 1000, 1)
	b.SetBytes(int64(len(m.text)))
	b.ReportAllocs()
	for range b.N {
		if _, err := Parse("bench.hujson", []byte(m.text)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDiff compares two policies over 1,000 nodes that differ in a
// few rules, as "acl check" does before a change is applied.
func BenchmarkDiff(b *testing.B) {
	m := newBenchMesh(1000, 1000, 1)
	old, err := Parse("old.hujson", []byte(m.text))
	if err != nil {
		b.Fatal(err)
	}
	// Change every 100th rule: the text of another mesh of the same shape.
	other := newBenchMesh(1000, 1000, 2)
	oldLines, otherLines := strings.Split(m.text, "\n"), strings.Split(other.text, "\n")
	for i := range oldLines {
		if strings.Contains(oldLines[i], `"action"`) && i%100 == 0 && strings.Contains(otherLines[i], `"action"`) {
			oldLines[i] = otherLines[i]
		}
	}
	new, err := Parse("new.hujson", []byte(strings.Join(oldLines, "\n")))
	if err != nil {
		b.Fatal(err)
	}
	co, cn := Compile(old, m.nodes), Compile(new, m.nodes)
	var changes []Change
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		changes = Diff(co, cn)
	}
	b.ReportMetric(float64(len(changes)), "changes")
}

// BenchmarkCompileServices is the worst case of svc: destinations without
// ports: every node runs "web" on a port of its own (as with dynamic
// ports), so every node is a class of its own, and most rules name it.
func BenchmarkCompileServices(b *testing.B) {
	const nnodes = 10000
	m := newBenchMesh(nnodes, 1000, 1)
	for i := range m.nodes {
		m.nodes[i].Services = []NodeService{
			{Name: "web", Port: uint16(20000 + i), Proto: 6},
			{Name: fmt.Sprintf("s%02d", i%benchTags), Port: 443, Proto: 6},
		}
		// Tagged like their services, so the policy (without "services")
		// lets them provide them.
		m.nodes[i].Tags = append(slices.Clone(m.nodes[i].Tags), "tag:web", fmt.Sprintf("tag:s%02d", i%benchTags))
	}
	text := strings.Replace(m.text, "  ],\n}\n", `    {"action": "accept", "src": ["*"], "dst": ["svc:web"], "proto": "tcp"},
    {"action": "accept", "src": ["svc:web"], "dst": ["svc:web", "svc:s01:8443"]},
    {"action": "accept", "src": ["tag:t01", "svc:s02"], "dst": ["svc:s03", "svc:s04"], "proto": "tcp"},
  ],
}
`, 1)
	p, err := Parse("bench.hujson", []byte(text))
	if err != nil {
		b.Fatal(err)
	}
	var c *Compiled
	b.ReportAllocs()
	for range b.N {
		c = Compile(p, m.nodes)
	}
	b.ReportMetric(float64(len(c.classes)), "classes")
}
