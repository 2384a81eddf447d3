package acl

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"net/netip"
	"slices"
	"strings"

	"github.com/wiremesh/wiremesh/wire"
)

// Node is what the policy knows of a node: its identity, addresses and the
// services it runs.
type Node struct {
	ID       int64
	Name     string
	Tags     []string
	Addrs    []netip.Prefix // single-host prefixes
	Services []NodeService  // nil: none; a name may repeat with other ports or protocols
}

// NodeService is a service a node runs, as the policy sees it.
type NodeService struct {
	Name  string // DNS label, lowercase
	Port  uint16
	Proto uint8 // wire.ProtoTCP or wire.ProtoUDP
}

// Compiled is a policy evaluated against an inventory of nodes: for every
// node, its inbound filter rules and its peers. It is immutable.
//
// Nodes whose membership in every rule's sources and destinations is the
// same (and, for a svc:NAME destination without ports, whose ports for
// NAME are) share one class, and the rules and peers are computed once per
// class: in a mesh of thousands of nodes with a handful of tags, that is a
// handful of computations.
type Compiled struct {
	policy   *Policy
	reported []Node        // as given to Compile
	nodes    []Node        // reported, with only the services the policy lets each provide
	index    map[int64]int // node id → index in nodes
	rules    []crule
	classOf  []int32 // node index → class
	classes  []class
}

// crule is a rule resolved against the inventory.
type crule struct {
	src         bitset         // nodes matched by the sources
	srcPrefixes []netip.Prefix // source prefixes for the packet filter that are no node's: "*", hosts, CIDRs
	srcIDs      []int64        // source nodes for the packet filter, by id, sorted: those srcPrefixes do not cover
	dsts        []cdest
	protos      []uint8
	pos         Pos
	num         int // 1-based rule number
}

// cdest is a destination resolved against the inventory: its nodes and
// the ports open on them, the same on every node or, for a svc:NAME
// destination without ports, each node's own (svc set, ports nil).
type cdest struct {
	nodes bitset
	ports []wire.PortRange
	svc   *svcPorts
}

// portsOf returns the ports d opens on node i, one of d.nodes.
func (d *cdest) portsOf(i int) []wire.PortRange {
	if d.svc == nil {
		return d.ports
	}
	return d.svc.lists[d.svc.listOf[i]]
}

// svcPorts is where a service listens: the nodes that run it and, for
// each, the ports of its instances there. Each distinct list of ports is
// kept once, under a number, which classify uses to tell apart nodes that
// run the service on other ports.
type svcPorts struct {
	nodes  bitset
	lists  [][]wire.PortRange // distinct, each sorted and merged
	listOf map[int]int32      // node index → its ports, an index into lists
}

// class is a set of nodes with the same memberships.
type class struct {
	filter []wire.FilterRule
	peers  bitset // nodes it may exchange traffic with (may include members of the class itself)
	in     []int  // rules in which the class is a destination
}

// Compile evaluates p against nodes. A nil policy compiles to "deny
// everything": no rules, no peers. Services a node reports but p does not
// let it provide (see Policy.Refused) count for nothing: no svc: selector
// matches them, as a source or a destination, nor do the tests see them.
func Compile(p *Policy, reported []Node) *Compiled {
	nodes := owned(p, reported)
	c := &Compiled{policy: p, reported: reported, nodes: nodes, index: make(map[int64]int, len(nodes)), classOf: make([]int32, len(nodes))}
	for i, n := range nodes {
		c.index[n.ID] = i
	}
	if p == nil {
		c.classes = []class{{peers: newBitset(len(nodes))}}
		return c
	}
	r := newResolver(p, nodes)
	for i, rule := range p.ACLs {
		cr := crule{src: newBitset(len(nodes)), protos: rule.Protos, pos: rule.Pos, num: i + 1}
		for _, s := range rule.Src {
			cr.src.or(r.match(s))
		}
		if len(rule.Src) == 1 {
			cr.srcPrefixes = r.sourcePrefixes(rule.Src[0]) // shared, not copied
		} else {
			for _, s := range rule.Src {
				cr.srcPrefixes = append(cr.srcPrefixes, r.sourcePrefixes(s)...)
			}
			cr.srcPrefixes = dedupPrefixes(cr.srcPrefixes)
		}
		cr.srcIDs = r.sourceIDs(rule.Src, cr.srcPrefixes)
		for _, d := range rule.Dst {
			cr.dsts = append(cr.dsts, r.dest(d))
		}
		c.rules = append(c.rules, cr)
	}
	c.classify()
	return c
}

// classify groups nodes by their memberships and computes each class. The
// signature of a node is a bit per rule source and destination and, for
// each svc destination without ports that it is in, the number of its
// port list there: nodes that run a service on other ports get other
// filter rules.
func (c *Compiled) classify() {
	seed := maphash.MakeSeed()
	type sigKey struct {
		h   uint64
		sig string
	}
	byKey := map[sigKey]int32{}
	sig := make([]byte, 0, 64)
	var lists []byte
	for i := range c.nodes {
		sig, lists = sig[:0], lists[:0]
		var bitsBuf uint64
		nbits := 0
		push := func(b bool) {
			if b {
				bitsBuf |= 1 << nbits
			}
			nbits++
			if nbits == 64 {
				sig = binary.LittleEndian.AppendUint64(sig, bitsBuf)
				bitsBuf, nbits = 0, 0
			}
		}
		for _, r := range c.rules {
			push(r.src.has(i))
			for _, d := range r.dsts {
				in := d.nodes.has(i)
				push(in)
				if in && d.svc != nil {
					lists = binary.LittleEndian.AppendUint32(lists, uint32(d.svc.listOf[i]))
				}
			}
		}
		sig = binary.LittleEndian.AppendUint64(sig, bitsBuf)
		sig = append(sig, lists...) // the bits say how many there are
		k := sigKey{maphash.Bytes(seed, sig), string(sig)}
		cl, ok := byKey[k]
		if !ok {
			cl = int32(len(c.classes))
			byKey[k] = cl
			c.classes = append(c.classes, c.buildClass(i))
		}
		c.classOf[i] = cl
	}
	if len(c.classes) == 0 {
		c.classes = []class{{peers: newBitset(0)}}
	}
}

// buildClass computes the rules and peers of node i's class.
func (c *Compiled) buildClass(i int) class {
	cl := class{peers: newBitset(len(c.nodes))}
	for ri, r := range c.rules {
		var ports []wire.PortRange
		isDst := false
		for _, d := range r.dsts {
			if d.nodes.has(i) {
				isDst = true
				ports = append(ports, d.portsOf(i)...)
			}
			if r.src.has(i) {
				cl.peers.or(d.nodes)
			}
		}
		if isDst {
			cl.peers.or(r.src)
			cl.in = append(cl.in, ri)
			if len(r.srcPrefixes) > 0 || len(r.srcIDs) > 0 {
				cl.filter = append(cl.filter, wire.FilterRule{Srcs: r.srcPrefixes, SrcPeers: r.srcIDs, Protos: r.protos, Ports: normalizePorts(ports)})
			}
		}
	}
	return cl
}

// Policy returns the policy compiled, or nil.
func (c *Compiled) Policy() *Policy { return c.policy }

// Rules returns the inbound filter rules of node id. They name source
// nodes by id (wire.FilterRule.SrcPeers), each one of the node's Peers or
// the node itself. The slices are shared: do not modify them.
func (c *Compiled) Rules(id int64) []wire.FilterRule {
	i, ok := c.index[id]
	if !ok {
		return nil
	}
	return c.classes[c.classOf[i]].filter
}

// Peers calls fn with the index (into the nodes given to Compile) of every
// node that node id may exchange traffic with, in either direction, except
// itself.
func (c *Compiled) Peers(id int64, fn func(i int)) {
	i, ok := c.index[id]
	if !ok {
		return
	}
	c.classes[c.classOf[i]].peers.each(func(j int) {
		if j != i {
			fn(j)
		}
	})
}

// SamePeers reports whether node id has the same peers under c and o,
// two compilations over the same nodes in the same order (as Compile was
// given them); false if id is not in both or the nodes differ in number.
func (c *Compiled) SamePeers(o *Compiled, id int64) bool {
	i, ok1 := c.index[id]
	j, ok2 := o.index[id]
	if !ok1 || !ok2 || i != j || len(c.nodes) != len(o.nodes) {
		return false
	}
	a, b := c.classes[c.classOf[i]].peers, o.classes[o.classOf[i]].peers
	if len(a) != len(b) {
		return false
	}
	for w := range a {
		x, y := a[w], b[w]
		if w == i/64 { // a node is not its own peer, whatever its class says
			x, y = x&^(1<<(i%64)), y&^(1<<(i%64))
		}
		if x != y {
			return false
		}
	}
	return true
}

// IsPeer reports whether nodes a and b may exchange traffic, in either
// direction: whether each is among the other's Peers.
func (c *Compiled) IsPeer(a, b int64) bool {
	i, ok1 := c.index[a]
	j, ok2 := c.index[b]
	return ok1 && ok2 && i != j && c.classes[c.classOf[i]].peers.has(j)
}

// Allows reports whether node src may open a flow to node dst with proto
// on port (ignored for protocols without ports), and the rule that allows
// it (1-based; 0 when denied).
func (c *Compiled) Allows(src, dst int64, proto uint8, port uint16) (bool, int) {
	si, ok1 := c.index[src]
	di, ok2 := c.index[dst]
	if !ok1 || !ok2 {
		return false, 0
	}
	for _, ri := range c.classes[c.classOf[di]].in {
		r := &c.rules[ri]
		if !r.src.has(si) || !protoMatch(r.protos, proto) {
			continue
		}
		if !hasPorts(proto) {
			return true, r.num
		}
		for _, d := range r.dsts {
			if d.nodes.has(di) && portIn(d.portsOf(di), port) {
				return true, r.num
			}
		}
	}
	return false, 0
}

func protoMatch(protos []uint8, p uint8) bool {
	if protos == nil {
		return p == wire.ProtoTCP || p == wire.ProtoUDP || p == wire.ProtoICMP || p == wire.ProtoICMPv6
	}
	return slices.Contains(protos, p)
}

// hasPorts reports whether proto has ports: TCP, UDP, SCTP.
func hasPorts(proto uint8) bool {
	return proto == wire.ProtoTCP || proto == wire.ProtoUDP || proto == 132
}

func portIn(ps []wire.PortRange, p uint16) bool {
	for _, r := range ps {
		if r.First <= p && p <= r.Last {
			return true
		}
	}
	return false
}

// normalizePorts sorts and merges ranges.
func normalizePorts(ps []wire.PortRange) []wire.PortRange {
	if len(ps) <= 1 {
		return ps
	}
	out := slices.Clone(ps)
	slices.SortFunc(out, func(a, b wire.PortRange) int { return int(a.First) - int(b.First) })
	n := 0
	for _, r := range out[1:] {
		last := &out[n]
		if uint32(r.First) <= uint32(last.Last)+1 {
			last.Last = max(last.Last, r.Last)
			continue
		}
		n++
		out[n] = r
	}
	return out[:n+1]
}

func dedupPrefixes(ps []netip.Prefix) []netip.Prefix {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(ps)
}

// resolver turns selectors into node sets and prefixes.
type resolver struct {
	p        *Policy
	nodes    []Node
	byName   map[string]int
	byTag    map[string][]int
	bySvc    map[string][]int          // service name (no "svc:") → the nodes that run it, each once, in order
	groups   map[string]bitset         // resolved groups, memoised
	prefixOf map[string][]netip.Prefix // sorted, deduplicated source prefixes by selector, memoised
	svcPorts map[string]*svcPorts      // by "svc:NAME", memoised
}

func newResolver(p *Policy, nodes []Node) *resolver {
	r := &resolver{p: p, nodes: nodes, byName: map[string]int{}, byTag: map[string][]int{}, bySvc: map[string][]int{},
		groups: map[string]bitset{}, prefixOf: map[string][]netip.Prefix{}, svcPorts: map[string]*svcPorts{}}
	for i, n := range nodes {
		r.byName[n.Name] = i
		for _, t := range n.Tags {
			r.byTag[t] = append(r.byTag[t], i)
		}
		for _, s := range n.Services {
			if on := r.bySvc[s.Name]; len(on) == 0 || on[len(on)-1] != i {
				r.bySvc[s.Name] = append(on, i)
			}
		}
	}
	return r
}

// dest resolves d.
func (r *resolver) dest(d Dest) cdest {
	if d.OwnPorts() {
		sp := r.servicePorts(d.Sel.Name)
		return cdest{nodes: sp.nodes, svc: sp}
	}
	return cdest{nodes: r.match(d.Sel), ports: d.Ports}
}

// servicePorts returns where the service of sel ("svc:NAME") listens,
// computed once per service. The result is shared.
func (r *resolver) servicePorts(sel string) *svcPorts {
	if sp, ok := r.svcPorts[sel]; ok {
		return sp
	}
	name := strings.TrimPrefix(sel, "svc:")
	on := r.bySvc[name]
	sp := &svcPorts{nodes: newBitset(len(r.nodes)), listOf: make(map[int]int32, len(on))}
	index := map[string]int32{} // port list, encoded → index in lists
	var key []byte
	for _, i := range on {
		var ports []wire.PortRange
		for _, s := range r.nodes[i].Services {
			if s.Name == name {
				ports = append(ports, wire.PortRange{First: s.Port, Last: s.Port})
			}
		}
		ports = normalizePorts(ports)
		key = key[:0]
		for _, p := range ports {
			key = binary.LittleEndian.AppendUint16(key, p.First)
			key = binary.LittleEndian.AppendUint16(key, p.Last)
		}
		li, ok := index[string(key)]
		if !ok {
			li = int32(len(sp.lists))
			index[string(key)] = li
			sp.lists = append(sp.lists, ports)
		}
		sp.nodes.set(i)
		sp.listOf[i] = li
	}
	r.svcPorts[sel] = sp
	return sp
}

// match returns the nodes s matches.
func (r *resolver) match(s Selector) bitset {
	b := newBitset(len(r.nodes))
	switch s.Kind {
	case SelAny:
		b.fill(len(r.nodes))
	case SelNode:
		if i, ok := r.byName[s.Name]; ok {
			b.set(i)
		}
	case SelTag:
		for _, i := range r.byTag[s.Name] {
			b.set(i)
		}
	case SelSvc:
		for _, i := range r.bySvc[strings.TrimPrefix(s.Name, "svc:")] {
			b.set(i)
		}
	case SelGroup:
		if g, ok := r.groups[s.Name]; ok {
			return g
		}
		r.groups[s.Name] = b // a cycle (rejected by Parse) would end here
		for _, m := range r.p.Groups[s.Name] {
			b.or(r.match(m))
		}
	case SelHost, SelCIDR:
		for i, n := range r.nodes {
			for _, a := range n.Addrs {
				if s.Prefix.Contains(a.Addr()) {
					b.set(i)
					break
				}
			}
		}
	}
	return b
}

// sourcePrefixes returns prefixes(s), sorted and deduplicated, computed
// once per selector. The result is shared.
func (r *resolver) sourcePrefixes(s Selector) []netip.Prefix {
	k := s.String()
	if ps, ok := r.prefixOf[k]; ok {
		return ps
	}
	ps := dedupPrefixes(r.prefixes(s))
	r.prefixOf[k] = ps
	return ps
}

var anyPrefixes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// prefixes returns the source prefixes s stands for that are no node's:
// "*", hosts and CIDRs, also inside groups.
func (r *resolver) prefixes(s Selector) []netip.Prefix {
	switch s.Kind {
	case SelAny:
		return slices.Clone(anyPrefixes)
	case SelHost, SelCIDR:
		return []netip.Prefix{s.Prefix}
	case SelGroup:
		var out []netip.Prefix
		for _, m := range r.p.Groups[s.Name] {
			out = append(out, r.prefixes(m)...)
		}
		return out
	}
	return nil
}

// sourceNodes adds to b the nodes that srcs name as nodes (not by
// address): by name, tag, service, also inside groups.
func (r *resolver) sourceNodes(srcs []Selector, b bitset) {
	for _, s := range srcs {
		switch s.Kind {
		case SelAny, SelHost, SelCIDR:
		case SelGroup:
			r.sourceNodes(r.p.Groups[s.Name], b)
		default:
			b.or(r.match(s))
		}
	}
}

// sourceIDs returns the ids, sorted, of the nodes srcs name as nodes whose
// addresses covered does not already hold: a packet filter lets in their
// addresses besides covered. A rule's ids are computed once and shared by
// every class it applies to; on the wire they take a few bytes each where
// the node's addresses took some 50.
func (r *resolver) sourceIDs(srcs []Selector, covered []netip.Prefix) []int64 {
	b := newBitset(len(r.nodes))
	r.sourceNodes(srcs, b)
	var ids []int64
	b.each(func(i int) {
		if len(covered) > 0 && allCovered(r.nodes[i].Addrs, covered) {
			return
		}
		ids = append(ids, r.nodes[i].ID)
	})
	slices.Sort(ids)
	return ids
}

// allCovered reports whether every address of addrs lies in one of ps.
func allCovered(addrs, ps []netip.Prefix) bool {
	for _, a := range addrs {
		if !slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(a.Addr()) }) {
			return false
		}
	}
	return true
}

// bitset is a set of node indexes.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) set(i int)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i int) bool { return b[i/64]&(1<<(i%64)) != 0 }

func (b bitset) or(o bitset) {
	for i := range b {
		b[i] |= o[i]
	}
}

func (b bitset) fill(n int) {
	for i := 0; i < n; i++ {
		b.set(i)
	}
}

func (b bitset) each(fn func(int)) {
	for w, word := range b {
		for word != 0 {
			t := bits.TrailingZeros64(word)
			fn(w*64 + t)
			word &= word - 1
		}
	}
}
