package filter

import (
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// ways is how many entries a bucket of the connection table holds.
const ways = 8

// Kinds of connection table entries.
const (
	kindOut  = 1 // this node opened the flow
	kindIn   = 2 // the peer opened it; the rules of generation gen let it in
	kindGone = 3 // the peer opened it; newer rules no longer let it in
	kindFrag = 4 // a fragmented datagram whose first fragment was let in
)

// meta is the state of an entry in one word, so that it can be renewed
// with a compare-and-swap: bits 0-39 expiry (milliseconds since the
// filter's epoch), 40-43 kind, 48-63 rules generation. Zero: free.
type meta uint64

const expMask = 1<<40 - 1

func mkMeta(exp int64, kind uint8, gen uint16) meta {
	return meta(uint64(exp)&expMask | uint64(kind)<<40 | uint64(gen)<<48)
}

func (m meta) exp() int64             { return int64(m & expMask) }
func (m meta) kind() uint8            { return uint8(m>>40) & 0x0f }
func (m meta) gen() uint16            { return uint16(m >> 48) }
func (m meta) live(now int64) bool    { return m != 0 && now < m.exp() }
func (m meta) withExp(exp int64) meta { return m&^expMask | meta(uint64(exp)&expMask) }

// flowKey names a flow from this node's side: local address (2 words),
// remote address (2 words), then local port<<48 | remote port<<32 |
// protocol<<8 | family (4 or 6, +0x80 for a fragmented datagram, whose
// "ports" are its identification). For ICMP echo the local port is the
// identifier and the remote port says who sends the requests.
type flowKey [5]uint64

// Remote-port values of ICMP echo flows.
const (
	echoOurs   = 0 // this node pings the peer
	echoTheirs = 1 // the peer pings this node
)

// set makes k name a flow. It stores word by word: a key built as a
// composite value is copied with wide loads that stall store forwarding.
func (k *flowKey) set(fam uint8, local, remote addr, lport, rport uint16, proto uint8) {
	k[0], k[1], k[2], k[3] = local.hi, local.lo, remote.hi, remote.lo
	k[4] = uint64(lport)<<48 | uint64(rport)<<32 | uint64(proto)<<8 | uint64(fam)
}

func (k *flowKey) fam() uint8    { return uint8(k[4]) & 0x7f }
func (k *flowKey) proto() uint8  { return uint8(k[4] >> 8) }
func (k *flowKey) lport() uint16 { return uint16(k[4] >> 48) }
func (k *flowKey) local() addr   { return addr{k[0], k[1]} }
func (k *flowKey) remote() addr  { return addr{k[2], k[3]} }

// table is the connection table: a fixed array of buckets of ways
// entries, allocated once, so that tracking never allocates and its size
// is bounded. Readers take no lock: a bucket's seq is odd while a writer
// changes its keys, and a reader that sees it change reads again under the
// bucket's lock. An entry's expiry is renewed lock-free by compare-and-swap
// of its meta; every change of kind or generation is made under the lock,
// after finding the entry by its key.
type table struct {
	seed    [4]uint64
	mask    uint64
	buckets []bucket
	evicted atomic.Uint64 // live entries pushed out to make room
}

type bucket struct {
	mu    sync.Mutex    // serializes writers
	seq   atomic.Uint32 // odd while a writer changes slot keys
	tags  atomic.Uint64 // byte i: tag of slot i's key; 0: never used
	slots [ways]slot
}

type slot struct {
	key  [5]atomic.Uint64
	meta atomic.Uint64
}

// newTable returns a table for at least n entries.
func newTable(n int) *table {
	nb := 1
	for nb*ways < n {
		nb *= 2
	}
	t := &table{mask: uint64(nb - 1), buckets: make([]bucket, nb)}
	for i := range t.seed {
		t.seed[i] = rand.Uint64() // unpredictable, against bucket flooding
	}
	return t
}

// hash mixes k with the table's seed (wyhash-style folded multiplies).
func (t *table) hash(k *flowKey) uint64 {
	h := mum(k[0]^t.seed[0], k[1]^t.seed[1])
	h = mum(h^k[2]^t.seed[2], k[3]^t.seed[3])
	return mum(h^k[4]^t.seed[1], t.seed[0]^0x9e3779b97f4a7c15)
}

func mum(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// tagOf is the byte of h kept in a bucket to skip most key compares.
func tagOf(h uint64) uint8 {
	if t := uint8(h >> 56); t != 0 {
		return t
	}
	return 1
}

// get returns k's slot and meta (live or not), or nil if k has no slot.
func (t *table) get(k *flowKey, h uint64) (*slot, meta) {
	b := &t.buckets[h&t.mask]
	tag := tagOf(h)
	if s1 := b.seq.Load(); s1&1 == 0 {
		s, m := b.find(k, tag)
		if b.seq.Load() == s1 {
			return s, m
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.find(k, tag)
}

// find looks k up in b. Without b.mu held, the caller checks b.seq.
func (b *bucket) find(k *flowKey, tag uint8) (*slot, meta) {
	tags := b.tags.Load()
	for i := 0; i < ways; i, tags = i+1, tags>>8 {
		if uint8(tags) != tag {
			continue
		}
		s := &b.slots[i]
		if s.key[0].Load() == k[0] && s.key[1].Load() == k[1] && s.key[2].Load() == k[2] &&
			s.key[3].Load() == k[3] && s.key[4].Load() == k[4] {
			return s, meta(s.meta.Load())
		}
	}
	return nil, 0
}

// renew pushes the expiry of the entry in s, last seen as m, out to exp.
// It is lock-free; losing a race only loses this renewal.
func renew(s *slot, m meta, exp int64) {
	if exp > m.exp() {
		s.meta.CompareAndSwap(uint64(m), uint64(m.withExp(exp)))
	}
}

// An op is a change to the entry of a key, made under its bucket's lock.
type op uint8

const (
	// opOut: an outbound packet that may open a flow. A live entry is
	// renewed as it is; else a kindOut entry is made, pushing out any
	// other if the bucket is full.
	opOut op = iota
	// opOutSYN: as opOut, for a TCP SYN: a kindGone entry becomes kindOut,
	// since the host opens a new connection on that address pair.
	opOutSYN
	// opIn: the rules of generation gen let in an inbound packet. The
	// entry becomes kindIn at gen (kindOut stays). A new entry only takes
	// a free, expired, kindIn or kindFrag slot.
	opIn
	// opGone: the rules of generation gen refuse a kindIn flow: unless the
	// entry is already at gen, it becomes kindGone.
	opGone
	// opFrag: a first fragment was let in; its later fragments may follow.
	// Makes room as opIn does.
	opFrag
)

// apply makes change o to k's entry. now is the current time, exp the
// expiry of a new or renewed entry.
func (t *table) apply(k *flowKey, h uint64, o op, now, exp int64, gen uint16) {
	b := &t.buckets[h&t.mask]
	tag := tagOf(h)
	b.mu.Lock()
	defer b.mu.Unlock()
	s, m := b.find(k, tag)
	if s != nil && m.live(now) {
		next := m.withExp(max(exp, m.exp()))
		switch o {
		case opOutSYN:
			if m.kind() == kindGone {
				next = mkMeta(exp, kindOut, 0)
			}
		case opIn:
			if m.kind() != kindOut {
				next = mkMeta(max(exp, m.exp()), kindIn, gen)
			}
		case opGone:
			if m.kind() != kindIn || m.gen() == gen {
				return
			}
			next = mkMeta(m.exp(), kindGone, 0)
		}
		s.meta.Store(uint64(next))
		return
	}
	var kind uint8
	switch o {
	case opOut, opOutSYN:
		kind = kindOut
	case opIn:
		kind = kindIn
	case opFrag:
		kind = kindFrag
	default:
		return
	}
	i := b.slotOfLocked(s, now, kind == kindOut)
	if i < 0 {
		return // no room for an accelerator entry: the rules still decide
	}
	ns := &b.slots[i]
	if meta(ns.meta.Load()).live(now) {
		t.evicted.Add(1)
	}
	b.seq.Add(1)
	for j := range ns.key {
		ns.key[j].Store(k[j])
	}
	ns.meta.Store(uint64(mkMeta(exp, kind, gen)))
	shift := 8 * uint(i)
	b.tags.Store(b.tags.Load()&^(0xff<<shift) | uint64(tag)<<shift)
	b.seq.Add(1)
}

// slotOfLocked picks the slot for a new entry: own (the key's expired
// slot, if any), else a free or expired slot, else the live entry that
// expires first among those that may be pushed out: kindIn and kindFrag
// entries (the rules can make them again), and, if anyLive, kindOut and
// kindGone after those. -1: none.
func (b *bucket) slotOfLocked(own *slot, now int64, anyLive bool) int {
	best, bestRank, bestExp := -1, 0, int64(0)
	for i := range b.slots {
		s := &b.slots[i]
		if s == own {
			return i
		}
		m := meta(s.meta.Load())
		if !m.live(now) {
			return i
		}
		rank := 1
		if k := m.kind(); k == kindOut || k == kindGone {
			if !anyLive {
				continue
			}
			rank = 2
		}
		if best < 0 || rank < bestRank || rank == bestRank && m.exp() < bestExp {
			best, bestRank, bestExp = i, rank, m.exp()
		}
	}
	return best
}

// recheck moves every live kindIn entry not at generation gen to gen if
// allowed says its flow is still let in, else to kindGone.
func (t *table) recheck(now int64, gen uint16, allowed func(*flowKey) bool) {
	for i := range t.buckets {
		b := &t.buckets[i]
		b.mu.Lock()
		for j := range b.slots {
			s := &b.slots[j]
			m := meta(s.meta.Load())
			if !m.live(now) || m.kind() != kindIn || m.gen() == gen {
				continue
			}
			var k flowKey
			for w := range k {
				k[w] = s.key[w].Load()
			}
			next := mkMeta(m.exp(), kindGone, 0)
			if allowed(&k) {
				next = mkMeta(m.exp(), kindIn, gen)
			}
			for !s.meta.CompareAndSwap(uint64(m), uint64(next)) {
				// A lock-free renewal won; keep its expiry.
				m = meta(s.meta.Load())
				next = next.withExp(m.exp())
			}
		}
		b.mu.Unlock()
	}
}

// count returns the number of live entries of kindOut and kindIn.
func (t *table) count(now int64) int {
	n := 0
	for i := range t.buckets {
		b := &t.buckets[i]
		for j := range b.slots {
			m := meta(b.slots[j].meta.Load())
			if m.live(now) && (m.kind() == kindOut || m.kind() == kindIn) {
				n++
			}
		}
	}
	return n
}
