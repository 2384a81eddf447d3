package dns

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// Health is the state of a service instance's checks: wire.Health, whose
// zero is Passing, so an instance without checks is served, as in Consul.
type Health = wire.Health

// The health values, as wire names them.
const (
	Passing  = wire.Passing
	Warning  = wire.Warning
	Critical = wire.Critical
)

// NodeRecord is a node of the mesh as DNS sees it.
type NodeRecord struct {
	// Name is the node name, a DNS label; matched case-insensitively.
	Name string
	// Addrs are the node's overlay addresses. Its service instances are
	// reached at them too. Invalid addresses are ignored.
	Addrs []netip.Addr
	// Alive is the node's liveness (serf member status). Services on a
	// node that is not alive are never served; NODE.node names and PTR
	// still answer, since the addresses stay assigned.
	Alive bool
	// RTT is the estimated round-trip time from this agent to the node,
	// used for nearest-first ordering. Zero: unknown, sorted last.
	RTT time.Duration
}

// Instance is one instance of a service, running on a node.
type Instance struct {
	// Service is the service name, a DNS label; matched
	// case-insensitively.
	Service string
	// Node names the NodeRecord the instance runs on; the instance is
	// reached at that node's addresses.
	Node string
	// Port is the instance's port, given in SRV answers.
	Port uint16
	// Tags select instances in TAG.SVC.service and _SVC._TAG.service
	// names; matched case-insensitively.
	Tags []string
	// Health is the aggregate state of the instance's checks.
	Health Health
}

// VisibleFunc reports whether the node named node may be shown to the
// client at querier, the source address of the query (invalid when the
// transport gives none). The agent answers it from the same netmap the
// snapshot was built from; loopback queriers mean the agent's own node.
// It must be safe for concurrent use and must not block.
type VisibleFunc func(querier netip.Addr, node string) bool

// Snapshot is an immutable view of the catalog that a Server answers
// from, with lookup indexes. The agent builds a new one on every change
// and swaps it in with Server.SetSnapshot.
type Snapshot struct {
	visible  VisibleFunc
	nodes    map[string]*node      // by lower-case name
	byAddr   map[netip.Addr]*node  // overlay address to node
	services map[string][]instance // by lower-case service name
}

// node is an indexed NodeRecord.
type node struct {
	name   string // lower case
	v4, v6 []netip.Addr
	alive  bool
	rtt    time.Duration
}

// instance is an indexed Instance.
type instance struct {
	node   *node
	port   uint16
	tags   []string // lower case
	health Health
}

// NewSnapshot indexes nodes and instances. Visible decides what each
// querier may see; nil shows everything. Entries that cannot be served
// (a name that is not a DNS label, a duplicate node, an instance on an
// unknown node) are left out and reported in err; the returned snapshot
// is usable even when err is not nil.
func NewSnapshot(nodes []NodeRecord, instances []Instance, visible VisibleFunc) (*Snapshot, error) {
	s := &Snapshot{
		visible:  visible,
		nodes:    make(map[string]*node, len(nodes)),
		byAddr:   make(map[netip.Addr]*node, len(nodes)),
		services: make(map[string][]instance),
	}
	var errs []error
	for _, nr := range nodes {
		name := strings.ToLower(nr.Name)
		if !wire.IsLabel(name) {
			errs = append(errs, fmt.Errorf("node %q: name is not a DNS label", nr.Name))
			continue
		}
		if s.nodes[name] != nil {
			errs = append(errs, fmt.Errorf("node %q: duplicate name", nr.Name))
			continue
		}
		n := &node{name: name, alive: nr.Alive, rtt: nr.RTT}
		for _, a := range nr.Addrs {
			a = a.Unmap()
			switch {
			case a.Is4():
				n.v4 = append(n.v4, a)
			case a.Is6():
				n.v6 = append(n.v6, a.WithZone(""))
			default:
				continue
			}
			if _, dup := s.byAddr[a]; !dup {
				s.byAddr[a] = n
			}
		}
		s.nodes[name] = n
	}
	for _, in := range instances {
		svc := strings.ToLower(in.Service)
		n := s.nodes[strings.ToLower(in.Node)]
		switch {
		case !wire.IsLabel(svc):
			errs = append(errs, fmt.Errorf("service %q: name is not a DNS label", in.Service))
			continue
		case n == nil:
			errs = append(errs, fmt.Errorf("service %q: unknown node %q", in.Service, in.Node))
			continue
		}
		tags := make([]string, len(in.Tags))
		for i, t := range in.Tags {
			tags[i] = strings.ToLower(t)
		}
		s.services[svc] = append(s.services[svc], instance{node: n, port: in.Port, tags: tags, health: in.Health})
	}
	return s, errors.Join(errs...)
}

// canSee reports whether querier may see n.
func (s *Snapshot) canSee(querier netip.Addr, n *node) bool {
	return s.visible == nil || s.visible(querier, n.name)
}

// lookupNode returns the node named name (lower case) if querier may see it.
func (s *Snapshot) lookupNode(querier netip.Addr, name string) *node {
	n := s.nodes[name]
	if n == nil || !s.canSee(querier, n) {
		return nil
	}
	return n
}

// lookupAddr returns the node with overlay address a if querier may see it.
func (s *Snapshot) lookupAddr(querier netip.Addr, a netip.Addr) *node {
	n := s.byAddr[a]
	if n == nil || !s.canSee(querier, n) {
		return nil
	}
	return n
}

// healthy appends to dst the instances of service svc with tag (any tag
// when empty) that querier may see and that are on a live node with
// passing checks (Warning too unless onlyPassing). known reports whether
// querier may see any instance of svc with that tag, healthy or not: an
// unknown name is NXDOMAIN, a known one without healthy instances is an
// empty answer.
func (s *Snapshot) healthy(dst []instance, querier netip.Addr, svc, tag string, onlyPassing bool) (_ []instance, known bool) {
	for _, in := range s.services[svc] {
		if tag != "" && !slices.Contains(in.tags, tag) || !s.canSee(querier, in.node) {
			continue
		}
		known = true
		if !in.node.alive || in.health == Critical || onlyPassing && in.health == Warning {
			continue
		}
		dst = append(dst, in)
	}
	return dst, known
}
