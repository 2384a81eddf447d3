package filter

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
)

// ruleCounts are the rule-set sizes benchmarked: a small policy, and the
// rules of one node in a large mesh.
var ruleCounts = []int{10, 1000, 10000}

// benchSetup returns a filter with n mesh rules and 256 inbound TCP/UDP
// packets that the rules accept, from distinct sources.
func benchSetup(b *testing.B, n int) (*Filter, [][]byte) {
	b.Helper()
	rules := meshRules(rand.New(rand.NewPCG(7, 8)), n)
	f, err := New(Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(f.Close)
	f.SetRules(Compile(local, rules))
	var pkts [][]byte
	for i := 0; len(pkts) < 256; i++ {
		r := rules[2+i%(len(rules)-2)]
		src := r.Srcs[0].Addr().String()
		if i%4 == 3 {
			src = r.Srcs[1].Addr().String() // v6
		}
		dst := me
		if r.Srcs[0].Addr().Is6() || i%4 == 3 {
			dst = me6
		}
		dport, sport := r.Ports[0].First, uint16(40000+i) // distinct flows
		var p []byte
		if slices.Contains(r.Protos, protoUDP) {
			p = udp(src, dst, sport, dport)
		} else {
			p = tcp(src, dst, sport, dport, tcpACK)
		}
		if f.Inbound(p) != Accept {
			b.Fatalf("setup: packet %d not accepted", i)
		}
		pkts = append(pkts, p)
	}
	return f, pkts
}

// l4 returns the offset of p's transport header (no extension headers).
func l4(p []byte) int {
	if p[0]>>4 == 4 {
		return 20
	}
	return 40
}

func BenchmarkInboundEstablished(b *testing.B) {
	for _, n := range ruleCounts {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			f, pkts := benchSetup(b, n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if f.Inbound(pkts[i&255]) != Accept {
					b.Fatal("dropped")
				}
				i++
			}
		})
	}
}

// BenchmarkInboundEstablishedParallel runs goroutines that each carry
// their own peers' packets, as wireguard-go's per-peer goroutines do.
func BenchmarkInboundEstablishedParallel(b *testing.B) {
	f, pkts := benchSetup(b, 1000)
	byShard := make([][][]byte, counterShards)
	for _, p := range pkts {
		byShard[shardOf(p)] = append(byShard[shardOf(p)], p)
	}
	var next atomic.Int32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		// Goroutine g takes the peers of shards g, g+P, g+2P...
		g, procs := int(next.Add(1)-1), runtime.GOMAXPROCS(0)
		var mine [][]byte
		for s := g % procs; s < counterShards; s += procs {
			mine = append(mine, byShard[s]...)
		}
		i := 0
		for pb.Next() {
			f.Inbound(mine[i%len(mine)])
			i++
		}
	})
}

func BenchmarkInboundNewFlow(b *testing.B) {
	for _, n := range ruleCounts {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			f, pkts := benchSetup(b, n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p := pkts[i&255]
				binary.BigEndian.PutUint16(p[l4(p):], uint16(i)) // a flow not seen lately
				if f.Inbound(p) != Accept {
					b.Fatal("dropped")
				}
				i++
			}
		})
	}
}

func BenchmarkInboundDenied(b *testing.B) {
	f, _ := benchSetup(b, 1000)
	p := tcp("100.127.255.254", me, 40000, 9, tcpSYN)
	b.ReportAllocs()
	for b.Loop() {
		if f.Inbound(p) != DropNoRule {
			b.Fatal("accepted")
		}
	}
}

// BenchmarkInboundNotOwnAddr: a packet the rules would accept, for an
// address that is not the node's.
func BenchmarkInboundNotOwnAddr(b *testing.B) {
	f, pkts := benchSetup(b, 1000)
	p := slices.Clone(pkts[0])
	copy(p[16:20], []byte{172, 31, 0, 2})
	b.ReportAllocs()
	for b.Loop() {
		if f.Inbound(p) != DropNotOwnAddr {
			b.Fatal("not dropped as not own address")
		}
	}
}

func BenchmarkOutbound(b *testing.B) {
	f, _ := benchSetup(b, 1000)
	b.Run("established", func(b *testing.B) {
		p := udp(me, alice, 5353, 53)
		f.Outbound(p)
		b.ReportAllocs()
		for b.Loop() {
			f.Outbound(p)
		}
	})
	b.Run("new", func(b *testing.B) {
		p := tcp(me, alice, 0, 443, tcpSYN)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			binary.BigEndian.PutUint16(p[20:], uint16(i))
			binary.BigEndian.PutUint16(p[22:], uint16(i>>16))
			f.Outbound(p)
			i++
		}
	})
}

// BenchmarkWrapWrite writes batches of 64 established packets; ns/op is
// per batch.
func BenchmarkWrapWrite(b *testing.B) {
	f, pkts := benchSetup(b, 1000)
	dev := Wrap(&fakeTUN{}, f)
	batch := make([][]byte, 64)
	for i := range batch {
		batch[i] = withOffset(pkts[i], 16)
	}
	bufs := make([][]byte, len(batch))
	b.ReportAllocs()
	for b.Loop() {
		copy(bufs, batch)
		dev.Write(bufs, 16)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/packet")
}

func BenchmarkCompile(b *testing.B) {
	for _, n := range ruleCounts {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			rules := meshRules(rand.New(rand.NewPCG(7, 8)), n)
			b.ReportAllocs()
			for b.Loop() {
				Compile(local, rules)
			}
		})
	}
}
