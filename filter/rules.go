package filter

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/wiremesh/wiremesh/wire"
)

// Rules is an immutable matcher compiled from a node's inbound rules and
// its local prefixes: the destinations it accepts packets for. It is
// default deny: what no rule accepts, it refuses. The zero Rules and a nil
// *Rules accept nothing and hold no local address.
//
// The local prefixes are a short list (the node's own overlay addresses,
// later the subnets it routes), scanned per packet.
//
// Per address family, the source prefixes of all rules are cut into
// disjoint address intervals; each interval names the innermost prefix
// that covers it, each prefix its enclosing one and a policy: the
// protocols that prefix may use without ports, and merged, sorted port
// ranges for TCP, UDP and SCTP. A lookup is a binary search over the
// intervals, then a walk up the (short) chain of enclosing prefixes, each
// asking its policy. Rules that share a source merge into one policy, and
// equal policies are stored once, so 10,000 rules from distinct /32s cost
// 10,000 prefixes and a handful of policies.
type Rules struct {
	v4       table4
	v6       table6
	nodes    []node
	policies []policy
	local4   []span4 // local IPv4 prefixes
	local6   []span  // local IPv6 prefixes

	policy uint64            // CompilePolicy's version; 0: Compile
	src    []wire.FilterRule // CompilePolicy's rules, for Match; nil: Compile
}

// node is one distinct source prefix.
type node struct {
	parent int32 // innermost prefix enclosing this one; -1: none
	policy int32 // index into Rules.policies
}

// table4 maps IPv4 addresses to the innermost prefix node covering them.
type table4 struct {
	starts []uint32 // sorted interval starts; starts[0] == 0
	inner  []int32  // per interval: innermost node; -1: no prefix
}

// table6 is table4 for IPv6.
type table6 struct {
	starts []addr
	inner  []int32
}

// policy is what one source prefix may send.
type policy struct {
	bare  [4]uint64           // bitmap of protocols accepted without looking at ports
	ports [3][]wire.PortRange // TCP, UDP, SCTP: sorted, disjoint, not adjacent
}

// portIndex is the index into policy.ports of a protocol with ports.
func portIndex(proto uint8) int {
	switch proto {
	case protoTCP:
		return 0
	case protoUDP:
		return 1
	case protoSCTP:
		return 2
	}
	return -1
}

// defaultProtos are the protocols of a rule with no Protos.
var defaultProtos = []uint8{protoTCP, protoUDP, protoICMP, protoICMPv6}

// span is the first and last address of an IPv6 prefix.
type span struct{ lo, hi addr }

// span4 is an IPv4 prefix: its first address and its size less one.
type span4 struct{ lo, n uint32 }

// Compile builds the matcher for rules on a node whose own addresses are
// in local. A packet is accepted when its destination is in a local
// prefix and some rule has a source prefix that contains its source
// address, lists its protocol (no Protos: TCP, UDP, ICMP and ICMPv6) and,
// for TCP, UDP and SCTP, has a port range that contains its destination
// port. Invalid prefixes and ranges with First > Last match nothing.
func Compile(local []netip.Prefix, rules []wire.FilterRule) *Rules {
	type acc struct {
		bare  [4]uint64
		ports [3][]wire.PortRange
	}
	byPrefix := make(map[netip.Prefix]*acc)
	for _, r := range rules {
		protos := r.Protos
		if len(protos) == 0 {
			protos = defaultProtos
		}
		for _, src := range r.Srcs {
			if !src.IsValid() {
				continue
			}
			src = src.Masked()
			a := byPrefix[src]
			if a == nil {
				a = new(acc)
				byPrefix[src] = a
			}
			for _, proto := range protos {
				if i := portIndex(proto); i >= 0 {
					a.ports[i] = append(a.ports[i], r.Ports...)
				} else {
					a.bare[proto>>6] |= 1 << (proto & 63)
				}
			}
		}
	}

	r := new(Rules)
	for _, pfx := range local {
		if !pfx.IsValid() {
			continue
		}
		lo, hi := prefixBounds(pfx.Masked())
		if pfx.Addr().Is4() {
			r.local4 = append(r.local4, span4{uint32(lo.lo), uint32(hi.lo - lo.lo)})
		} else {
			r.local6 = append(r.local6, span{lo, hi})
		}
	}
	policyIndex := make(map[string]int32)
	var p4, p6 []prefixNode
	for pfx, a := range byPrefix {
		pol := policy{bare: a.bare}
		for i := range a.ports {
			pol.ports[i] = mergeRanges(a.ports[i])
		}
		if pol.empty() {
			continue
		}
		key := pol.key()
		pi, ok := policyIndex[key]
		if !ok {
			pi = int32(len(r.policies))
			policyIndex[key] = pi
			r.policies = append(r.policies, pol)
		}
		lo, hi := prefixBounds(pfx)
		pn := prefixNode{lo: lo, hi: hi, bits: pfx.Bits(), policy: pi}
		if pfx.Addr().Is4() {
			p4 = append(p4, pn)
		} else {
			p6 = append(p6, pn)
		}
	}
	starts4, inner4 := r.addNodes(p4, addr{lo: 1<<32 - 1})
	r.v4.starts = make([]uint32, len(starts4))
	for i, s := range starts4 {
		r.v4.starts[i] = uint32(s.lo)
	}
	r.v4.inner = inner4
	r.v6.starts, r.v6.inner = r.addNodes(p6, addr{^uint64(0), ^uint64(0)})
	return r
}

// local reports whether dst is in one of the local prefixes: whether the
// node accepts packets addressed to it at all. r is not nil.
func (r *Rules) local(v6 bool, dst addr) bool {
	if !v6 {
		for _, s := range r.local4 {
			if uint32(dst.lo)-s.lo <= s.n {
				return true
			}
		}
		return false
	}
	for _, s := range r.local6 {
		if !dst.less(s.lo) && !s.hi.less(dst) {
			return true
		}
	}
	return false
}

// Allows reports whether the rules accept a packet from src with protocol
// proto to destination port port (ignored for protocols without ports),
// whatever its destination (the filter checks that against the local
// prefixes first).
func (r *Rules) Allows(src netip.Addr, proto uint8, port uint16) bool {
	if !src.IsValid() || src.Zone() != "" {
		return false
	}
	a, v6 := addrOf(src)
	return r.allows(v6, a, proto, port)
}

// allows is Allows on a parsed address.
func (r *Rules) allows(v6 bool, src addr, proto uint8, port uint16) bool {
	if r == nil {
		return false
	}
	var n int32
	if v6 {
		n = r.v6.lookup(src)
	} else {
		n = r.v4.lookup(uint32(src.lo))
	}
	for n >= 0 {
		nd := &r.nodes[n]
		if r.policies[nd.policy].allows(proto, port) {
			return true
		}
		n = nd.parent
	}
	return false
}

// lookup returns the innermost prefix node containing a, or -1.
func (t *table4) lookup(a uint32) int32 {
	s := t.starts
	if len(s) == 0 {
		return -1
	}
	base, n := 0, len(s)
	for n > 1 {
		half := n / 2
		if s[base+half] <= a {
			base += half
		}
		n -= half
	}
	return t.inner[base]
}

// lookup returns the innermost prefix node containing a, or -1.
func (t *table6) lookup(a addr) int32 {
	s := t.starts
	if len(s) == 0 {
		return -1
	}
	base, n := 0, len(s)
	for n > 1 {
		half := n / 2
		if !a.less(s[base+half]) {
			base += half
		}
		n -= half
	}
	return t.inner[base]
}

// allows reports whether p accepts proto to port.
func (p *policy) allows(proto uint8, port uint16) bool {
	i := portIndex(proto)
	if i < 0 {
		return p.bare[proto>>6]&(1<<(proto&63)) != 0
	}
	rs := p.ports[i]
	if len(rs) <= 8 {
		for _, r := range rs {
			if port <= r.Last {
				return port >= r.First
			}
		}
		return false
	}
	// The last range with First <= port decides.
	j, _ := slices.BinarySearchFunc(rs, port, func(r wire.PortRange, port uint16) int {
		return cmp.Compare(r.First, port)
	})
	if j < len(rs) && rs[j].First == port {
		return true
	}
	return j > 0 && port <= rs[j-1].Last
}

// empty reports whether p accepts nothing.
func (p *policy) empty() bool {
	return p.bare == [4]uint64{} && len(p.ports[0])+len(p.ports[1])+len(p.ports[2]) == 0
}

// key is a string that equal policies share.
func (p *policy) key() string {
	b := make([]byte, 0, 64)
	for _, w := range p.bare {
		b = binary.BigEndian.AppendUint64(b, w)
	}
	for _, rs := range p.ports {
		b = binary.BigEndian.AppendUint32(b, uint32(len(rs)))
		for _, r := range rs {
			b = binary.BigEndian.AppendUint16(b, r.First)
			b = binary.BigEndian.AppendUint16(b, r.Last)
		}
	}
	return string(b)
}

// mergeRanges sorts rs and merges overlapping and adjacent ranges; empty
// ranges (First > Last) are dropped.
func mergeRanges(rs []wire.PortRange) []wire.PortRange {
	var out []wire.PortRange
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b wire.PortRange) int { return cmp.Compare(a.First, b.First) })
	for _, r := range sorted {
		if r.First > r.Last {
			continue
		}
		if n := len(out); n > 0 && int(r.First) <= int(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

// prefixNode is a source prefix while the intervals are built.
type prefixNode struct {
	lo, hi addr // first and last address
	bits   int
	policy int32
}

// prefixBounds returns the first and last address of p (masked).
func prefixBounds(p netip.Prefix) (lo, hi addr) {
	lo, v6 := addrOf(p.Addr())
	width := 32
	if v6 {
		width = 128
	}
	host := width - p.Bits() // bits set in hi and clear in lo
	hi = lo
	switch {
	case host >= 64:
		hi.lo = ^uint64(0)
		hi.hi |= 1<<(host-64) - 1
	case host > 0:
		hi.lo |= 1<<host - 1
	}
	if !v6 {
		hi.hi, hi.lo = 0, hi.lo&(1<<32-1)
	}
	return lo, hi
}

// addNodes appends ps to r.nodes, linking each to its enclosing prefix,
// and returns the disjoint intervals they cut the address space into
// (whose last address is top): interval i starts at starts[i] and its
// innermost prefix is inner[i] (-1: none).
func (r *Rules) addNodes(ps []prefixNode, top addr) (starts []addr, inner []int32) {
	// Prefixes are nested or disjoint; in this order an enclosing prefix
	// comes before the ones it contains.
	slices.SortFunc(ps, func(a, b prefixNode) int {
		if c := a.lo.compare(b.lo); c != 0 {
			return c
		}
		return cmp.Compare(a.bits, b.bits)
	})
	emit := func(start addr, n int32) {
		k := len(starts)
		if k > 0 && starts[k-1] == start {
			inner[k-1] = n
			if k > 1 && inner[k-2] == n {
				starts, inner = starts[:k-1], inner[:k-1]
			}
			return
		}
		if k > 0 && inner[k-1] == n {
			return
		}
		starts, inner = append(starts, start), append(inner, n)
	}
	emit(addr{}, -1)
	var stack []int32 // open prefixes, outermost first
	top32 := func() int32 {
		if len(stack) == 0 {
			return -1
		}
		return stack[len(stack)-1]
	}
	base := int32(len(r.nodes))
	closeTop := func() {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if end := ps[n-base].hi; end != top {
			emit(end.next(), top32())
		}
	}
	for i, p := range ps {
		for len(stack) > 0 && ps[top32()-base].hi.less(p.lo) {
			closeTop()
		}
		r.nodes = append(r.nodes, node{parent: top32(), policy: p.policy})
		n := base + int32(i)
		emit(p.lo, n)
		stack = append(stack, n)
	}
	for len(stack) > 0 {
		closeTop()
	}
	return starts, inner
}

// less reports whether a < b.
func (a addr) less(b addr) bool {
	return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo
}

// compare returns -1, 0 or +1 as a is less, equal or greater than b.
func (a addr) compare(b addr) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

// next returns a+1 (wrapping).
func (a addr) next() addr {
	a.lo++
	if a.lo == 0 {
		a.hi++
	}
	return a
}
