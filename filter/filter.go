// Package filter is the agent's stateful inbound packet filter: it decides
// on every decrypted packet before it reaches the host, by the node's
// compiled rules and by connection tracking, so that replies to the node's
// own connections come back while everything no rule accepts is dropped.
//
// The rules are an immutable matcher (Compile) published with an atomic
// pointer; the connection table lives apart, survives new rules and is
// re-checked against them. Nothing on the packet path allocates, and the
// filter reads headers only, so Wrap keeps wireguard-go's batched I/O and
// its GSO/GRO offloads.
//
// Decisions, in the order they are made for an inbound packet:
//
//   - A packet that does not parse (bad version or lengths, truncated
//     headers, an IPv6 extension header chain longer than 8 or with a
//     routing header still to be followed) is DropMalformed.
//   - A packet whose destination is not in the rules' local prefixes (the
//     node's own overlay addresses) is DropNotOwnAddr, whatever else it
//     is: a peer that routes other addresses into its tunnel reaches
//     neither the node's other addresses nor, on a host that forwards,
//     the hosts and containers behind it. No tracked flow, fragment or
//     AlwaysAllow port makes an exception.
//   - Fragments: a first fragment must carry the whole header chain and
//     transport header (else DropFragment) and is then judged like any
//     packet; once one is let in, the later fragments of its datagram
//     (same addresses, protocol and identification, within 30 s) are let
//     in too. Any other later fragment, and one that overlaps the
//     transport header, is DropFragment.
//   - A packet of a tracked flow is let in: a reply to a flow this node
//     opened, or a later packet of a flow the rules let in (if the rules
//     changed since, it is judged again).
//   - An ICMP error (destination unreachable, time exceeded, parameter
//     problem, packet too big) is let in when the packet it quotes was
//     sent by this node on a tracked flow and the error comes from the
//     address that flow talks to: no other peer can end or disturb it.
//   - Otherwise the rules and Config.AlwaysAllow decide; a TCP, UDP or SCTP
//     flow or ICMP echo they let in is tracked. TCP flags play no part:
//     the rules accept or refuse a port whatever the flags.
//
// Outbound packets open tracked flows: UDP and SCTP packets, TCP SYNs
// (without ACK) and ICMP echo requests; other outbound packets only renew
// a flow already tracked. That is what makes revocation stick: when new
// rules refuse a flow a peer opened, its entry is kept as refused, and
// the host's own replies on it do not reopen it.
//
// The table has a fixed size (Config.MaxConns). When a bucket is full a
// new flow pushes out an entry: the one to expire first, preferring flows
// peers opened (the rules can admit them again); a flow a peer opens never
// pushes out one this node opened. Packets are never dropped for lack of
// room; Stats counts the evictions.
//
// Dropped packets are logged ("packet denied") and, with Config.Flows,
// recorded as Flow values, after a rate limiter; with Config.NewFlows so
// are the inbound flows the filter starts tracking. A record is a copy of
// header fields sent without blocking: the receiver formats it.
package filter

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Verdict is the filter's decision on a packet: Accept, or why it is
// dropped.
type Verdict uint8

// Verdicts.
const (
	Accept         Verdict = iota // let in
	DropNoRule                    // no rule accepts it and no tracked flow covers it
	DropMalformed                 // not a well-formed IPv4 or IPv6 packet
	DropFragment                  // a fragment that cannot be judged (see the package doc)
	DropNotOwnAddr                // addressed to none of the node's own addresses (Rules' local prefixes)
	// NumVerdicts is one past the last verdict: the drop verdicts run
	// from DropNoRule to NumVerdicts-1.
	NumVerdicts
)

// String returns the verdict as logged in the "why" field.
func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case DropNoRule:
		return "no rule"
	case DropMalformed:
		return "malformed"
	case DropFragment:
		return "fragment"
	case DropNotOwnAddr:
		return "not own address"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// ProtoPort is an IP protocol with a port: TCP, UDP or SCTP.
type ProtoPort struct {
	Proto uint8
	Port  uint16
}

// fragTimeout is how long the later fragments of a datagram may follow
// its first (as Linux's ipfrag_time).
const fragTimeout = 30 * time.Second

// tick is how often the filter reads its clock: expiry is this coarse.
const tick = time.Second

// Config configures a Filter. DefaultConfig has every default.
type Config struct {
	// MaxConns bounds the connection table; it is allocated at New, about
	// 50 bytes an entry. Zero: 65536.
	MaxConns int
	// TCPTimeout is how long an idle TCP or SCTP flow stays tracked. Zero:
	// one hour.
	TCPTimeout time.Duration
	// UDPTimeout is how long an idle UDP flow stays tracked. Zero: 3 minutes.
	UDPTimeout time.Duration
	// ICMPTimeout is how long an idle ICMP echo flow stays tracked. Zero:
	// 30 seconds.
	ICMPTimeout time.Duration
	// AlwaysAllow lists TCP, UDP or SCTP ports that every source may reach
	// on the node's own addresses, whatever the rules: mesh-internal
	// traffic such as serf gossip. Nil:
	// none (DefaultConfig has TCP and UDP 7946, serf's port).
	AlwaysAllow []ProtoPort
	// NameOf names the node an overlay address belongs to, for the log.
	// Nil: no names are logged.
	NameOf func(netip.Addr) string
	// Logger receives the "packet denied" lines, at most a few a second.
	// Nil: slog.Default().
	Logger *slog.Logger
	// Flows receives a Flow record of each dropped packet the log's rate
	// limiter lets through (whatever the log level), and with NewFlows of
	// new inbound flows. Sends never block: a record that finds the
	// channel full is lost and counted (Stats.FlowsLost). The filter never
	// closes it. Nil: no records.
	Flows chan<- Flow
	// NewFlows also sends a record to Flows of every inbound flow the
	// rules (or AlwaysAllow) let in and the filter starts tracking, at
	// most about 1000 a second. False: only drops are recorded.
	NewFlows bool
	// Clock returns the time; the filter reads it once a second, not per
	// packet. Nil: time.Now.
	Clock func() time.Time
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{
		MaxConns:    65536,
		TCPTimeout:  time.Hour,
		UDPTimeout:  3 * time.Minute,
		ICMPTimeout: 30 * time.Second,
		AlwaysAllow: []ProtoPort{{Proto: protoTCP, Port: 7946}, {Proto: protoUDP, Port: 7946}},
	}
}

// Validate checks c and fills in the defaults of zero fields (AlwaysAllow
// excepted: nil means none).
func (c *Config) Validate() error {
	d := DefaultConfig()
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.MaxConns < 0 || c.MaxConns > 1<<24 {
		return fmt.Errorf("bad max conns %d: want 1..%d", c.MaxConns, 1<<24)
	}
	for _, to := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{{"tcp", &c.TCPTimeout, d.TCPTimeout}, {"udp", &c.UDPTimeout, d.UDPTimeout}, {"icmp", &c.ICMPTimeout, d.ICMPTimeout}} {
		if *to.v == 0 {
			*to.v = to.def
		}
		if *to.v < time.Millisecond || *to.v > 100*24*time.Hour {
			return fmt.Errorf("bad %s timeout %v: want 1ms..100 days", to.name, *to.v)
		}
	}
	for _, pp := range c.AlwaysAllow {
		if !hasPorts(pp.Proto) {
			return fmt.Errorf("bad always-allowed port %d/%d: protocol has no ports", pp.Port, pp.Proto)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return nil
}

// Filter is a node's inbound packet filter. Its methods are safe for
// concurrent use: Inbound runs on wireguard-go's per-peer goroutines,
// Outbound on its TUN reader.
type Filter struct {
	cfg    Config
	log    *slog.Logger
	rules  atomic.Pointer[ruleset]
	conns  *table
	always []ProtoPort
	epoch  time.Time
	now    atomic.Int64 // milliseconds since epoch, read every tick
	tcpTO  int64        // timeouts in milliseconds
	udpTO  int64
	icmpTO int64
	limit  limiter // "packet denied" lines and drop records
	count  counters

	newLimit  limiter // new-flow records
	flowsLost atomic.Uint64
	drops     sourceDrops

	setMu sync.Mutex // serializes SetRules
	gen   uint16     // guarded by setMu; generation of the published rules

	stop      chan struct{} // closed by Close
	done      chan struct{} // closed when the clock goroutine ends
	closeOnce sync.Once
}

// ruleset is published rules with their generation.
type ruleset struct {
	rules *Rules
	gen   uint16
}

// New returns a filter with no rules and no local addresses: it lets in
// nothing until SetRules. It starts a goroutine that reads the clock;
// Close stops it.
func New(cfg Config) (*Filter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("filter config: %w", err)
	}
	f := &Filter{
		cfg:    cfg,
		log:    cfg.Logger,
		conns:  newTable(cfg.MaxConns),
		always: append([]ProtoPort(nil), cfg.AlwaysAllow...),
		epoch:  cfg.Clock(),
		tcpTO:  cfg.TCPTimeout.Milliseconds(),
		udpTO:  cfg.UDPTimeout.Milliseconds(),
		icmpTO: cfg.ICMPTimeout.Milliseconds(),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	f.rules.Store(&ruleset{rules: Compile(nil, nil)})
	go f.runClock()
	return f, nil
}

// Close stops the filter's goroutine and waits for it. The filter keeps
// deciding (with a clock that no longer moves).
func (f *Filter) Close() {
	f.closeOnce.Do(func() { close(f.stop) })
	<-f.done
}

func (f *Filter) runClock() {
	defer close(f.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			f.readClock()
		}
	}
}

// readClock samples the clock into f.now.
func (f *Filter) readClock() {
	f.now.Store(f.cfg.Clock().Sub(f.epoch).Milliseconds())
}

// SetRules publishes r (nil: no rules and no local addresses) for the
// packets that follow, then re-checks every tracked flow a peer opened
// against it: flows r no longer lets in are ended. Flows this node opened
// stay (but a reply to an address r does not hold local is dropped).
func (f *Filter) SetRules(r *Rules) {
	if r == nil {
		r = Compile(nil, nil)
	}
	f.setMu.Lock()
	defer f.setMu.Unlock()
	f.gen++
	rs := &ruleset{rules: r, gen: f.gen}
	f.rules.Store(rs)
	f.conns.recheck(f.now.Load(), rs.gen, func(k *flowKey) bool {
		v6 := k.fam() == 6
		return r.local(v6, k.local()) && f.allowed(rs, v6, k.remote(), k.proto(), k.lport())
	})
}

// Inbound decides on a decrypted packet about to be written towards the
// host. A packet it accepts may open or renew a tracked flow.
func (f *Filter) Inbound(pkt []byte) Verdict {
	v := f.inbound(pkt, f.now.Load(), f.rules.Load())
	f.count.add(shardOf(pkt), int(v), 1)
	return v
}

// Outbound records a packet read from the host, on its way to a peer, so
// that the replies it calls for are let in. Outbound packets are not
// filtered.
func (f *Filter) Outbound(pkt []byte) {
	f.outbound(pkt, f.now.Load())
}

// inbound is Inbound without the counters.
func (f *Filter) inbound(b []byte, now int64, rs *ruleset) Verdict {
	var p packet
	v := parse(b, &p)
	if v == Accept && !rs.rules.local(p.fam == 6, p.dst) {
		v = DropNotOwnAddr
	}
	if v == Accept {
		v = f.decide(b, &p, now, rs)
	}
	if v == Accept {
		if p.frag == fragFirst {
			var k flowKey
			k.setFrag(&p)
			f.conns.apply(&k, f.conns.hash(&k), opFrag, now, now+fragTimeout.Milliseconds(), 0)
		}
		return v
	}
	f.drops.add(&p)
	f.denied(b, &p, v, now, rs)
	return v
}

// maxDropSources bounds the table of drops by source. Sources are the
// peers' overlay addresses (WireGuard lets no other inner source through),
// so the bound is only reached by a mesh of that many peers; the rest are
// counted as from an unknown source.
const maxDropSources = 4096

// sourceKey is a source address with its family.
type sourceKey struct {
	a   addr
	fam uint8
}

// sourceDrops counts dropped inbound packets by source address. It sits
// on the drop path only; a lookup of a known source allocates nothing.
type sourceDrops struct {
	mu sync.Mutex
	n  map[sourceKey]uint64 // guarded by mu
}

func (d *sourceDrops) add(p *packet) {
	k := sourceKey{p.src, p.fam}
	d.mu.Lock()
	if _, ok := d.n[k]; ok || len(d.n) < maxDropSources {
		if d.n == nil {
			d.n = make(map[sourceKey]uint64)
		}
		d.n[k]++
	} else {
		d.n[sourceKey{}]++
	}
	d.mu.Unlock()
}

// snapshot returns the counts by source; the zero Addr counts packets
// without a readable source and those past maxDropSources.
func (d *sourceDrops) snapshot() map[netip.Addr]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[netip.Addr]uint64, len(d.n))
	for k, n := range d.n {
		var a netip.Addr
		if k.fam != 0 {
			a = k.a.netip(k.fam == 6)
		}
		out[a] += n
	}
	return out
}

// setFrag makes k name the datagram p is a fragment of.
func (k *flowKey) setFrag(p *packet) {
	k.set(p.fam|0x80, p.dst, p.src, uint16(p.fragID>>16), uint16(p.fragID), p.fragProto)
}

// decide judges a parsed inbound packet.
func (f *Filter) decide(b []byte, p *packet, now int64, rs *ruleset) Verdict {
	if p.frag == fragLater {
		var k flowKey
		k.setFrag(p)
		if _, m := f.conns.get(&k, f.conns.hash(&k)); m.live(now) && m.kind() == kindFrag {
			return Accept
		}
		return DropFragment
	}
	var (
		k      flowKey
		lookup bool // k may have an entry
		track  bool // if the rules let the packet in, k gets an entry
	)
	switch {
	case hasPorts(p.proto):
		k.set(p.fam, p.dst, p.src, p.dport, p.sport, p.proto)
		lookup, track = true, true
	case isICMP(p.proto):
		switch icmpEcho(p.proto, p.icmpType) {
		case 1:
			k.set(p.fam, p.dst, p.src, p.sport, echoTheirs, p.proto)
			lookup, track = true, true
		case -1:
			k.set(p.fam, p.dst, p.src, p.sport, echoOurs, p.proto)
			lookup = true
		default:
			if icmpError(p.proto, p.icmpType) && f.related(b, p, now, rs) {
				return Accept
			}
		}
	}
	var h uint64
	stale := false // k has a kindIn entry of older rules
	if lookup {
		h = f.conns.hash(&k)
		if s, m := f.conns.get(&k, h); m.live(now) {
			switch m.kind() {
			case kindOut:
				renew(s, m, now+f.timeout(p.proto))
				return Accept
			case kindIn:
				if m.gen() == rs.gen {
					renew(s, m, now+f.timeout(p.proto))
					return Accept
				}
				stale = true
			}
		}
	}
	if !f.allowed(rs, p.fam == 6, p.src, p.proto, p.dport) {
		if stale {
			f.conns.apply(&k, h, opGone, now, 0, rs.gen)
		}
		return DropNoRule
	}
	if track {
		f.conns.apply(&k, h, opIn, now, now+f.timeout(p.proto), rs.gen)
		f.newFlow(b, p, now, rs)
	}
	return Accept
}

// related reports whether the ICMP error p quotes a packet this node sent
// on a tracked flow, and comes from the address that flow talks to.
func (f *Filter) related(b []byte, p *packet, now int64, rs *ruleset) bool {
	var q packet
	if parseInner(b[p.l4+8:p.end], &q) != Accept || q.frag == fragLater || q.fam != p.fam || q.src != p.dst || q.dst != p.src {
		return false
	}
	var k flowKey
	switch {
	case hasPorts(q.proto):
		k.set(q.fam, q.src, q.dst, q.sport, q.dport, q.proto)
	case isICMP(q.proto) && icmpEcho(q.proto, q.icmpType) == 1:
		k.set(q.fam, q.src, q.dst, q.sport, echoOurs, q.proto)
	case isICMP(q.proto) && icmpEcho(q.proto, q.icmpType) == -1:
		k.set(q.fam, q.src, q.dst, q.sport, echoTheirs, q.proto)
	default:
		return false
	}
	_, m := f.conns.get(&k, f.conns.hash(&k))
	return m.live(now) && (m.kind() == kindOut || m.kind() == kindIn && m.gen() == rs.gen)
}

// allowed reports whether rs or AlwaysAllow let in proto to port from src.
func (f *Filter) allowed(rs *ruleset, v6 bool, src addr, proto uint8, port uint16) bool {
	if hasPorts(proto) {
		for _, pp := range f.always {
			if pp.Proto == proto && pp.Port == port {
				return true
			}
		}
	}
	return rs.rules.allows(v6, src, proto, port)
}

// timeout is how long an idle flow of proto stays tracked, in milliseconds.
func (f *Filter) timeout(proto uint8) int64 {
	switch proto {
	case protoTCP, protoSCTP:
		return f.tcpTO
	case protoUDP:
		return f.udpTO
	}
	return f.icmpTO
}

// outbound is Outbound at time now.
func (f *Filter) outbound(b []byte, now int64) {
	var p packet
	if parse(b, &p) != Accept || p.frag == fragLater {
		return
	}
	var k flowKey
	o, open := opOut, true // open: the packet may open a flow
	switch {
	case p.proto == protoTCP:
		k.set(p.fam, p.src, p.dst, p.sport, p.dport, p.proto)
		if p.flags&(tcpSYN|tcpACK) == tcpSYN {
			o = opOutSYN
		} else {
			open = false
		}
	case hasPorts(p.proto):
		k.set(p.fam, p.src, p.dst, p.sport, p.dport, p.proto)
	case isICMP(p.proto) && icmpEcho(p.proto, p.icmpType) == 1:
		k.set(p.fam, p.src, p.dst, p.sport, echoOurs, p.proto)
	case isICMP(p.proto) && icmpEcho(p.proto, p.icmpType) == -1:
		k.set(p.fam, p.src, p.dst, p.sport, echoTheirs, p.proto)
		open = false
	default:
		return
	}
	exp := now + f.timeout(p.proto)
	h := f.conns.hash(&k)
	if s, m := f.conns.get(&k, h); m.live(now) && !(o == opOutSYN && m.kind() == kindGone) {
		renew(s, m, exp)
		return
	}
	if open {
		f.conns.apply(&k, h, o, now, exp, 0)
	}
}

// Stats are a filter's counters since New.
type Stats struct {
	Accepted uint64             // inbound packets let in
	Dropped  map[Verdict]uint64 // inbound packets dropped, by reason; absent: none
	Conns    int                // tracked flows (opened by either side) now live
	Evicted  uint64             // live entries pushed out of a full table bucket
	// Suppressed counts "packet denied" lines (and drop records) the
	// rate limiter refused; NewFlowsSuppressed new-flow records it
	// refused.
	Suppressed, NewFlowsSuppressed uint64
	// FlowsLost counts flow records that found Config.Flows full.
	FlowsLost uint64
	// DroppedFrom counts the dropped inbound packets by source address;
	// the zero Addr counts those whose source could not be read.
	DroppedFrom map[netip.Addr]uint64
}

// Stats returns the filter's counters. It walks the connection table.
func (f *Filter) Stats() Stats {
	s := Stats{
		Accepted: f.count.sum(int(Accept)),
		Dropped:  make(map[Verdict]uint64),
		Conns:    f.conns.count(f.now.Load()),
		Evicted:  f.conns.evicted.Load(),

		Suppressed:         f.count.sum(suppressedSlot),
		NewFlowsSuppressed: f.count.sum(newSuppressedSlot),
		FlowsLost:          f.flowsLost.Load(),
		DroppedFrom:        f.drops.snapshot(),
	}
	for v := DropNoRule; v < NumVerdicts; v++ {
		if n := f.count.sum(int(v)); n > 0 {
			s.Dropped[v] = n
		}
	}
	return s
}

// counterShards is how many copies of the counters there are: packets
// add to the copy of their source address, so that wireguard-go's
// per-peer goroutines do not fight over one cache line.
const counterShards = 16

// Counter slots after the verdicts': log lines (and drop records) and
// new-flow records the limiters refused.
const (
	suppressedSlot    = int(NumVerdicts)
	newSuppressedSlot = suppressedSlot + 1
	numSlots          = newSuppressedSlot + 1
)

// counters count inbound verdicts (and refused log lines) in shards.
type counters struct {
	shards [counterShards]counterShard
}

type counterShard struct {
	n [numSlots]atomic.Uint64
	_ [128 - 8*numSlots]byte // a cache line pair of its own
}

// shardOf picks the counter shard of packet b by its source address.
func shardOf(b []byte) int {
	if len(b) < 16 {
		return 0
	}
	x := binary.LittleEndian.Uint32(b[12:16]) // IPv4 source, or part of IPv6's
	return int(x * 0x9e3779b1 >> 28)
}

func (c *counters) add(shard, slot int, n uint64) { c.shards[shard].n[slot].Add(n) }

// sum returns the total of slot over the shards.
func (c *counters) sum(slot int) uint64 {
	var n uint64
	for i := range c.shards {
		n += c.shards[i].n[slot].Load()
	}
	return n
}

// tally counts verdicts of a batch locally, to add them to the shared
// counters once.
type tally [NumVerdicts]uint64

func (c *counters) addTally(shard int, t *tally) {
	for v, n := range t {
		if n > 0 {
			c.add(shard, v, n)
		}
	}
}
