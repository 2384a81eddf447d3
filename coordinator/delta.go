package coordinator

import (
	"bytes"
	"crypto/sha256"
	"maps"
	"slices"
	"sync"

	"github.com/wiremesh/wiremesh/acl"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
)

// A change that leaves the policy's view of every node as it was (a
// node's endpoints, the tags of its services, its expiry) costs what it
// touches: the coordinator reads only the changed nodes (store.StateSince),
// patches them into a copy of the snapshot without compiling the policy
// again, and only the streams of those nodes and of their peers do any
// work, sending the changed entries as a wire.NetmapDelta. Every other
// change (a join, a deletion, tags, a policy, a key, a relay, the
// keyring, the coordinators) builds the snapshot whole; a stream then
// works out its node's netmap before and after, and sends what differs
// as a delta (diffNetmap) when only entries, peers and rules do: a
// policy change that adds a port sends each agent its rules alone.

// snapshotDelta is what changed from one snapshot to the next.
type snapshotDelta struct {
	ids []int64 // the nodes whose entries changed, by id
}

// changeLogSize is how many snapshots the change log remembers: a stream
// further behind gets a whole netmap (or a diff of its own).
const changeLogSize = 64

// changeLog remembers what the recent snapshots changed, so that a stream
// that wakes up after several snapshots learns what all of them changed
// while holding on to no snapshot but its last and the newest.
type changeLog struct {
	mu      sync.Mutex
	entries [changeLogSize]logEntry // guarded by mu; a ring, by version
	n       int                     // guarded by mu; entries written
}

type logEntry struct {
	version uint64
	delta   *snapshotDelta // nil: built whole
}

// add records snapshot s, which publish is about to make current.
func (l *changeLog) add(s *snapshot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries[l.n%changeLogSize] = logEntry{s.version, s.delta}
	l.n++
}

// since returns the ids of the nodes whose entries the snapshots after
// version from, up to and including version to, changed; ok is false if
// one of them was built whole or the log no longer reaches back to from.
func (l *changeLog) since(from, to uint64) (ids []int64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	reached := false
	for k := 1; k <= min(l.n, changeLogSize); k++ {
		e := l.entries[(l.n-k)%changeLogSize]
		switch {
		case e.version > to:
			continue
		case e.version <= from:
			reached = e.version == from
		case e.delta == nil:
			return nil, false
		default:
			ids = append(ids, e.delta.ids...)
			continue
		}
		break
	}
	return ids, reached
}

// deltaSnapshot returns old with d applied, or nil when d changes more
// than node entries the policy does not look at: then the snapshot is
// built whole.
func (c *Coordinator) deltaSnapshot(old *snapshot, d store.Delta) *snapshot {
	if d.Policy.Version != old.policy.Version || !slices.Equal(d.GossipKeys, old.gossip.Keys) || !sameCoordinators(d.Coordinators, old.coordinators) {
		return nil
	}
	for _, id := range d.Removed {
		if old.has(id) {
			return nil
		}
	}
	for _, n := range d.Nodes {
		i, ok := old.byID[n.ID]
		if !ok || n.Relay != nil || n.PublicKey != old.node(i).PublicKey || !sameACLNode(aclNode(n), old.aclNodes[i]) {
			return nil // a join, a relay node, a new key, or what the policy sees
		}
	}
	s := &snapshot{
		version: d.Version, nodes: old.nodes, patch: maps.Clone(old.patch), aclNodes: old.aclNodes, byID: old.byID, byKey: old.byKey,
		policy: old.policy, gossip: old.gossip, compiled: old.compiled, changed: make(chan struct{}),
		nextExpiry: d.NextExpiry, relayNodes: old.relayNodes, coordinators: old.coordinators,
		delta: &snapshotDelta{}, nodesEpoch: old.nodesEpoch + 1,
	}
	if s.patch == nil {
		s.patch = map[int]wire.Node{}
	}
	parsed := old.compiled.Policy()
	for _, n := range d.Nodes {
		n.Services = providedServices(parsed, n)
		s.patch[old.byID[n.ID]] = n
		s.delta.ids = append(s.delta.ids, n.ID)
	}
	// Each delta copies the patch; past a bound, the nodes are copied
	// with it applied instead, so that a storm of changes costs each a
	// share of one copy of the nodes per maxPatch, not a copy each.
	if len(s.patch) > maxPatch {
		s.nodes = slices.Clone(old.nodes)
		for i, n := range s.patch {
			s.nodes[i] = n
		}
		s.patch = nil
	}
	return s
}

// maxPatch bounds the entries a snapshot patches its nodes with.
const maxPatch = 256

// sameACLNode reports whether the policy sees a and b alike.
func sameACLNode(a, b acl.Node) bool {
	return a.ID == b.ID && a.Name == b.Name && slices.Equal(a.Tags, b.Tags) && slices.Equal(a.Addrs, b.Addrs) && slices.Equal(a.Services, b.Services)
}

// sameCoordinators reports whether a and b list the same coordinators,
// described alike.
func sameCoordinators(a, b []store.Coordinator) bool {
	return slices.EqualFunc(a, b, func(x, y store.Coordinator) bool {
		return slices.Equal(x.URLs, y.URLs) && (x.Relay == nil) == (y.Relay == nil) && (x.Relay == nil || relayEqual(*x.Relay, *y.Relay))
	})
}

func relayEqual(a, b wire.Relay) bool {
	return a.Name == b.Name && a.URL == b.URL && a.Key == b.Key && slices.Equal(a.Pins, b.Pins) && slices.Equal(a.STUN, b.STUN)
}

// peerEntry is node j of s as node id's netmap lists it: with only the
// services id may reach.
func peerEntry(s *snapshot, id int64, j int) wire.Node {
	p := s.node(j)
	if len(p.Services) > 0 {
		p.Services = slices.DeleteFunc(slices.Clone(p.Services), func(sv wire.Service) bool {
			ok, _ := s.compiled.Allows(id, p.ID, serviceProto(sv.Proto), sv.Port)
			return !ok
		})
	}
	return p
}

// streamDelta is what the snapshots after from, up to the newest, to,
// change in node id's netmap: whole is set when one of them was built
// whole (or the change log no longer reaches back to from): then only the
// netmaps before and after say what changed. Otherwise nm is nil when
// nothing changed for id, or the delta to send.
func (c *Coordinator) streamDelta(from *snapshot, id int64) (to *snapshot, whole bool, nm *wire.NetmapDelta) {
	to = c.state.Load()
	ids, ok := c.changes.since(from.version, to.version)
	if !ok {
		return to, true, nil
	}
	if _, relay := to.relayNodes.byID[id]; relay {
		return to, false, nil // its netmap has the agents' keys, which deltas do not change
	}
	slices.Sort(ids)
	for _, x := range slices.Compact(ids) {
		switch j := to.byID[x]; {
		case x == id:
			if nm == nil {
				nm = &wire.NetmapDelta{}
			}
			self := to.node(j)
			nm.Self = &self
		case to.compiled.IsPeer(id, x):
			if nm == nil {
				nm = &wire.NetmapDelta{}
			}
			nm.Peers = append(nm.Peers, peerEntry(to, id, j))
		}
	}
	if nm != nil {
		nm.Version = to.version
	}
	return to, false, nm
}

// diffNetmap returns the delta that turns old into nm, nil when they
// differ in nothing but their versions (the netmap's, and the policy's
// when the node's rules are the same under both); ok is false when they
// differ in
// what a delta does not carry (the relay map, the keyring, the
// coordinators…): then nm goes whole.
func diffNetmap(old, nm *wire.Netmap) (d *wire.NetmapDelta, ok bool) {
	if old.Self.ID != nm.Self.ID || digestRest(old) != digestRest(nm) {
		return nil, false
	}
	d = &wire.NetmapDelta{Version: nm.Version}
	changed := false
	if !bytes.Equal(nodeBytes(&old.Self), nodeBytes(&nm.Self)) {
		self := nm.Self
		d.Self, changed = &self, true
	}
	if policyNews(old.PolicyVersion, nm.PolicyVersion, old.Rules, nm.Rules) {
		d.Policy, changed = &wire.NetmapPolicy{Version: nm.PolicyVersion, Rules: nm.Rules}, true
	}
	was := make(map[int64][]byte, len(old.Peers))
	for i := range old.Peers {
		was[old.Peers[i].ID] = nodeBytes(&old.Peers[i])
	}
	for i := range nm.Peers {
		p := &nm.Peers[i]
		b, ok := was[p.ID]
		if !ok || !bytes.Equal(b, nodeBytes(p)) {
			d.Peers, changed = append(d.Peers, *p), true
		}
		delete(was, p.ID)
	}
	for id := range was {
		d.Removed, changed = append(d.Removed, id), true
	}
	slices.Sort(d.Removed)
	if !changed {
		return nil, true
	}
	return d, true
}

// policyNews reports whether a node whose policy went from version was
// with rules old to version is with rules rules must be told: a new
// policy version that leaves its rules as they were is no news to it,
// unless it is the first policy, or none again.
func policyNews(was, is uint64, old, rules []wire.FilterRule) bool {
	return (was == 0) != (is == 0) || !bytes.Equal(rulesBytes(old), rulesBytes(rules))
}

// digestRest is the digest of nm without what a delta carries.
func digestRest(nm *wire.Netmap) [sha256.Size]byte {
	rest := *nm
	rest.Self, rest.Peers, rest.PolicyVersion, rest.Rules = wire.Node{}, nil, 0, nil
	return rest.Digest()
}

// nodeBytes is an encoding of n to compare it with another.
func nodeBytes(n *wire.Node) []byte { return wire.AppendNode(make([]byte, 0, 256), n) }

// rulesBytes is an encoding of rules to compare them with others.
func rulesBytes(rules []wire.FilterRule) []byte { return wire.AppendRules(make([]byte, 0, 256), rules) }

// sameNodes reports whether nodes are old's, entry for entry.
func sameNodes(old *snapshot, nodes []wire.Node) bool {
	if len(nodes) != len(old.nodes) {
		return false
	}
	for i := range nodes {
		o := old.node(i)
		if o.ID != nodes[i].ID || !bytes.Equal(nodeBytes(&o), nodeBytes(&nodes[i])) {
			return false
		}
	}
	return true
}

// policyDelta is diffNetmap for two snapshots whose nodes are the same
// (a policy change), worked out from the compiled policies without
// building either netmap: the node's rules if they changed, and the
// entries of the peers whose services it may reach changed; ok is false
// when more changed (the peers, the relay map, the keyring…), and then
// diffNetmap says what.
func policyDelta(prev, cur *snapshot, id int64) (d *wire.NetmapDelta, ok bool) {
	if prev.nodesEpoch != cur.nodesEpoch || !cur.compiled.SamePeers(prev.compiled, id) || !slices.Equal(prev.gossip.Keys, cur.gossip.Keys) ||
		!sameCoordinators(prev.coordinators, cur.coordinators) || !slices.EqualFunc(prev.relayNodes.relays, cur.relayNodes.relays, relayEqual) {
		return nil, false
	}
	if _, ok := cur.byID[id]; !ok {
		return nil, false // a relay node
	}
	d = &wire.NetmapDelta{Version: cur.version}
	rules := cur.compiled.Rules(id)
	if policyNews(prev.policy.Version, cur.policy.Version, prev.compiled.Rules(id), rules) {
		d.Policy = &wire.NetmapPolicy{Version: cur.policy.Version, Rules: rules}
	}
	cur.compiled.Peers(id, func(j int) {
		if len(cur.node(j).Services) == 0 {
			return // nothing of its entry depends on the policy
		}
		a, b := peerEntry(prev, id, j), peerEntry(cur, id, j)
		if !bytes.Equal(nodeBytes(&a), nodeBytes(&b)) {
			d.Peers = append(d.Peers, b)
		}
	})
	if d.Policy == nil && len(d.Peers) == 0 {
		return nil, true
	}
	return d, true
}
