package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"net/netip"
	"time"
)

// Digest returns a SHA-256 of everything in nm but its Version: two
// netmaps with the same digest are the same netmap for an agent. Every
// field goes in, in a fixed order, lengths before contents, so that two
// netmaps share a digest only if they are the same (the coordinator's
// TestNetmapDigestEveryField fails on a field left out). A coordinator
// keeps a stream's last netmap as its digest (32 bytes, where the netmap
// would hold its peers), and an agent that reconnects names the netmap it
// holds by it (MapRequest.HaveDigest). Computing it costs a fraction of
// encoding the netmap (the coordinator's BenchmarkNetmapCompare).
func (nm *Netmap) Digest() [sha256.Size]byte {
	d := digester{h: sha256.New(), buf: make([]byte, 0, 2*digestFlush)}
	d.uint(nm.PolicyVersion)
	d.int(int64(nm.KeepAliveInterval))
	d.prefixes(nm.Prefixes)
	d.bool(nm.Gossip != nil)
	if g := nm.Gossip; g != nil {
		d.int(int64(g.Port))
		d.strings(g.Keys)
	}
	d.strings(nm.CoordinatorPins)
	d.strings(nm.CoordinatorURLs)
	d.uint(uint64(len(nm.Relays)))
	for i := range nm.Relays {
		d.relay(&nm.Relays[i])
	}
	d.strings(nm.RelayClients)
	d.rules(nm.Rules)
	d.node(&nm.Self)
	d.uint(uint64(len(nm.Peers)))
	for i := range nm.Peers {
		d.node(&nm.Peers[i])
	}
	d.flush()
	var sum [sha256.Size]byte
	d.h.Sum(sum[:0])
	return sum
}

// AppendNode appends an encoding of n to b, the one Digest hashes, to
// compare n with another node.
func AppendNode(b []byte, n *Node) []byte {
	d := digester{buf: b}
	d.node(n)
	return d.buf
}

// AppendRules appends an encoding of rules to b, the one Digest hashes,
// to compare them with others.
func AppendRules(b []byte, rules []FilterRule) []byte {
	d := digester{buf: b}
	d.rules(rules)
	return d.buf
}

// digestFlush is how many bytes a digester gathers before hashing them.
// A digester without a hash gathers them all: an encoding of what it was
// fed, to compare (AppendNode, AppendRules).
const digestFlush = 4096

// digester feeds values to a hash, gathering small writes in buf.
type digester struct {
	h   hash.Hash
	buf []byte
}

func (d *digester) flush() {
	d.h.Write(d.buf)
	d.buf = d.buf[:0]
}

func (d *digester) wrote() {
	if d.h != nil && len(d.buf) >= digestFlush {
		d.flush()
	}
}

func (d *digester) uint(v uint64) {
	d.buf = binary.AppendUvarint(d.buf, v)
	d.wrote()
}

func (d *digester) int(v int64) {
	d.buf = binary.AppendVarint(d.buf, v)
	d.wrote()
}

func (d *digester) bool(v bool) {
	if v {
		d.uint(1)
	} else {
		d.uint(0)
	}
}

func (d *digester) string(s string) {
	d.buf = binary.AppendUvarint(d.buf, uint64(len(s)))
	d.buf = append(d.buf, s...)
	d.wrote()
}

func (d *digester) bytes(b []byte) {
	d.buf = binary.AppendUvarint(d.buf, uint64(len(b)))
	d.buf = append(d.buf, b...)
	d.wrote()
}

func (d *digester) strings(ss []string) {
	d.uint(uint64(len(ss)))
	for _, s := range ss {
		d.string(s)
	}
}

// time writes the instant, as time.Time.Equal compares it.
func (d *digester) time(t time.Time) {
	d.int(t.Unix())
	d.uint(uint64(t.Nanosecond()))
}

func (d *digester) prefixes(ps []netip.Prefix) {
	d.uint(uint64(len(ps)))
	for _, p := range ps {
		a := p.Addr()
		b := a.As16()
		d.uint(uint64(a.BitLen()))
		d.buf = append(d.buf, b[:]...)
		d.string(a.Zone())
		d.int(int64(p.Bits()))
	}
}

func (d *digester) rules(rules []FilterRule) {
	d.uint(uint64(len(rules)))
	for _, r := range rules {
		d.prefixes(r.Srcs)
		d.uint(uint64(len(r.SrcPeers)))
		for _, id := range r.SrcPeers {
			d.int(id)
		}
		d.bytes(r.Protos)
		d.uint(uint64(len(r.Ports)))
		for _, p := range r.Ports {
			d.uint(uint64(p.First))
			d.uint(uint64(p.Last))
		}
	}
}

func (d *digester) node(n *Node) {
	d.int(n.ID)
	d.string(n.Name)
	d.string(n.PublicKey)
	d.prefixes(n.Addresses)
	d.strings(n.Endpoints)
	d.strings(n.Tags)
	d.bool(n.Online)
	d.time(n.OnlineUntil)
	d.time(n.Created)
	d.time(n.LastSeen)
	d.uint(uint64(len(n.Services)))
	for _, sv := range n.Services {
		d.string(sv.Name)
		d.uint(uint64(sv.Port))
		d.string(sv.Proto)
		d.strings(sv.Tags)
		d.string(sv.Health)
		d.uint(uint64(len(sv.Checks)))
		for _, c := range sv.Checks {
			d.string(c.ID)
			d.string(c.Status)
			d.string(c.Output)
		}
		d.string(sv.Refused)
	}
	d.string(n.Version)
	d.time(n.Expires)
	d.bool(n.Ephemeral)
	d.bool(n.Connectivity != nil)
	if c := n.Connectivity; c != nil {
		d.string(c.NAT)
		d.string(c.HomeRelay)
		d.uint(uint64(len(c.Paths)))
		for _, p := range c.Paths {
			d.string(p.Peer)
			d.string(p.Kind)
			d.string(p.Addr)
			d.string(p.Relay)
			d.int(int64(p.RTT))
			d.time(p.Since)
			d.string(p.Why)
		}
		d.time(c.Reported)
	}
	d.bool(n.Relay != nil)
	if n.Relay != nil {
		d.relay(n.Relay)
	}
}

func (d *digester) relay(r *Relay) {
	d.string(r.Name)
	d.string(r.URL)
	d.strings(r.Pins)
	d.string(r.Key)
	d.strings(r.STUN)
}
