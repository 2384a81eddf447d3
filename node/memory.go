package node

import (
	"context"
	"errors"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/internal/pages"
	"golang.zx2c4.com/wireguard/tun"
)

// The agent's memory between bursts of traffic. wireguard-go gives every
// packet a 64 KiB buffer from unbounded pools, so a burst grows the heap by
// hundreds of MiB, and each of its reading goroutines (one per UDP socket,
// one for relayed packets, one for the TUN device) holds a batch of 128
// such buffers for good, whose pages a burst leaves resident. Its live
// heap so counts some 40 MiB of buffers, mostly never touched, and with
// Go's default GOGC of 100 the garbage of an idle agent (gossip, probes)
// would grow to as much again before a collection.
//
// So while the agent is quiet the collector runs at idleGCPercent, and
// once a busy spell has been followed by 15 s of quiet, the agent hands
// memory back: the reading goroutines drop the pages of their batches
// (package internal/pages), the pools are emptied by two collections and
// the free heap goes back to the OS. Busy is WireGuard traffic above
// calmRate or allocation above calmAllocs (a burst of DNS queries, say,
// which GOGC 10 would answer with a collection every few hundred queries);
// the first quarter second of it restores the GOGC the agent started with.
// An operator's GOGC in the environment is left alone.
const (
	memTick       = 250 * time.Millisecond
	calmRate      = 1500 << 10 // WireGuard bytes per tick, both ways (6 MiB/s)
	calmAllocs    = 512 << 10  // bytes allocated per tick (2 MiB/s; an idle agent: ~0.5)
	calmFor       = 60         // quiet ticks after a busy one before memory is handed back (15 s)
	idleGCPercent = 10
)

// startGCPercent is the GOGC the process started with. The collector's
// settings are the process's: an agent is alone in its process but in
// tests.
var startGCPercent = sync.OnceValue(func() int {
	p := debug.SetGCPercent(idleGCPercent)
	debug.SetGCPercent(p)
	return p
})

// trimMemory runs the above until ctx is done. Trimming after a single
// quiet interval of 10 s cost the first seconds of each iperf3 run 5-8%
// more CPU per GB (BenchmarkPaths): the heap grows again page by page;
// so pauses of a few seconds keep the buffers.
func (d *dataPath) trimMemory(ctx context.Context) {
	tune := os.Getenv("GOGC") == ""
	var busyGC int
	if tune {
		busyGC = startGCPercent()
		debug.SetGCPercent(idleGCPercent)
	}
	t := time.NewTicker(memTick)
	defer t.Stop()
	allocs := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	allocated := func() uint64 {
		metrics.Read(allocs)
		return allocs[0].Value.Uint64()
	}
	last, lastAlloc := d.wireGuardBytes(), allocated()
	var q quietness
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		total, alloc := d.wireGuardBytes(), allocated()
		switch q.tick(total-last, alloc-lastAlloc) {
		case becameBusy:
			if tune {
				debug.SetGCPercent(busyGC)
			}
		case calmedDown:
			d.releaseBuffers()
			// The pools let go of their buffers only after two
			// collections; FreeOSMemory is the second.
			runtime.GC()
			debug.FreeOSMemory()
			if tune {
				debug.SetGCPercent(idleGCPercent)
			}
		}
		last, lastAlloc = total, alloc
	}
}

// quietness follows the agent from busy to quiet, one tick at a time.
type quietness struct {
	busy  bool
	quiet int // quiet ticks in a row
}

type change int

const (
	unchanged  change = iota
	becameBusy        // the first busy tick after quiet ones
	calmedDown        // calmFor quiet ticks after a busy one
)

// tick takes the WireGuard bytes moved and the bytes allocated in a tick.
func (q *quietness) tick(moved, allocated uint64) change {
	if moved >= calmRate || allocated >= calmAllocs {
		was := q.busy
		q.busy, q.quiet = true, 0
		if !was {
			return becameBusy
		}
		return unchanged
	}
	if q.quiet++; q.busy && q.quiet >= calmFor {
		q.busy = false
		return calmedDown
	}
	return unchanged
}

// wireGuardBytes is what the bind carried so far, both ways, all paths.
func (d *dataPath) wireGuardBytes() uint64 {
	s := d.bind.Stats()
	return s.DirectTx.Bytes + s.DirectRx.Bytes + s.RelayTx.Bytes + s.RelayRx.Bytes
}

// releaseBuffers makes wireguard-go's reading goroutines drop the pages of
// the buffers they wait with.
func (d *dataPath) releaseBuffers() {
	d.bind.ReleaseBuffers()
	if d.tun != nil {
		if err := d.tun.ReleaseBuffers(); err != nil {
			d.log.Debug("release the TUN reader's buffers", "err", err)
		}
	}
}

// releasingTUN is the TUN device as wireguard-go sees it (outside the
// packet filter), in two ways kinder to the agent's memory:
//
//   - Its reader, wireguard-go's RoutineReadFromTUN, can be made to drop
//     the pages of the buffers it waits with: ReleaseBuffers sets a read
//     deadline in the past, which wakes the read, and Read releases the
//     buffers it was given and reads on.
//   - Write clears the caller's bufs when it is done. wireguard-go's
//     per-peer writer keeps its slice of the last batch's buffers after
//     it gave them back to the pool, so up to a batch of 64 KiB buffers
//     per peer, the pages of a burst's last batch, could never be
//     collected; it does not read the slice after Write.
type releasingTUN struct {
	tun.Device
	file *os.File
}

func newReleasingTUN(dev tun.Device) *releasingTUN {
	return &releasingTUN{Device: dev, file: dev.File()}
}

func (d *releasingTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		n, err := d.Device.Read(bufs, sizes, offset)
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			if err := d.file.SetReadDeadline(time.Time{}); err != nil {
				return 0, err
			}
			pages.Release(bufs)
			continue
		}
		return n, err
	}
}

func (d *releasingTUN) Write(bufs [][]byte, offset int) (int, error) {
	n, err := d.Device.Write(bufs, offset)
	clear(bufs)
	return n, err
}

// ReleaseBuffers makes the reader release its buffers as soon as it waits
// for packets (at once if it does).
func (d *releasingTUN) ReleaseBuffers() error {
	if d.file == nil {
		return errors.New("TUN device without a file")
	}
	return d.file.SetReadDeadline(time.Now())
}
