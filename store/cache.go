package store

import (
	"context"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// Cached is a Store that keeps the admin listing (AdminNodes) in memory,
// so that a mesh that does not change is listed without reading the
// database, and a listing right after a change costs nothing more than
// the State read that publishes it.
//
// Its one rule: every write made through it, whether it succeeds or not,
// bumps its generation when it is done, and a listing read at an older
// generation is read again. The writes of one node's admin-only fields
// (Touch, SetAgentVersion, SetConnectivity, SetServices when only health
// changed) bump it too and patch a current listing with their change, so
// it stays current. AcceptProof, which writes nothing a listing shows,
// passes straight through. Reads go straight to the wrapped Store.
type Cached struct {
	Reader // the wrapped Store's

	s   Store
	gen atomic.Uint64 // bumped by every write, after it

	mu   sync.Mutex
	list *listing // guarded by mu; nil until the first listing
}

var _ Store = (*Cached)(nil)

// listing is every node as admins see it, read when the generation was
// gen.
type listing struct {
	gen   uint64
	nodes []wire.Node // by id; shared, read-only
}

// NewCached returns s with an admin listing cache.
func NewCached(s Store) *Cached { return &Cached{Reader: s, s: s} }

// wrote is the rule: every write method calls it once the write is done.
func (c *Cached) wrote() { c.gen.Add(1) }

// patch is wrote for a write of node id's admin-only fields: fn applies
// the change to the node in a current listing (copied, since readers share
// it) and reports whether it changed anything.
func (c *Cached) patch(id int64, fn func(*wire.Node) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gen := c.gen.Add(1)
	if c.list == nil || c.list.gen != gen-1 {
		return // stale already: the next listing reads the database
	}
	nodes := c.list.nodes
	if i := sort.Search(len(nodes), func(i int) bool { return nodes[i].ID >= id }); i < len(nodes) && nodes[i].ID == id {
		if n := nodes[i]; fn(&n) {
			nodes = slices.Clone(nodes)
			nodes[i] = n
		}
	}
	c.list = &listing{gen: gen, nodes: nodes}
}

// setListing caches nodes as the listing read when the generation was
// gen, unless a newer one is cached.
func (c *Cached) setListing(gen uint64, nodes []wire.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.list == nil || c.list.gen <= gen {
		c.list = &listing{gen: gen, nodes: nodes}
	}
}

// State reads the state and caches the admin listing read with it.
func (c *Cached) State(ctx context.Context) (State, error) {
	gen := c.gen.Load()
	st, err := c.s.State(ctx)
	if err == nil {
		c.setListing(gen, st.admin)
	}
	return st, err
}

// AdminNodes returns the cached listing if it is current, else reads and
// caches it. The slice and what it holds are shared.
func (c *Cached) AdminNodes(ctx context.Context) ([]wire.Node, error) {
	gen := c.gen.Load()
	c.mu.Lock()
	l := c.list
	c.mu.Unlock()
	if l != nil && l.gen == gen {
		return l.nodes, nil
	}
	nodes, err := c.s.AdminNodes(ctx)
	if err != nil {
		return nil, err
	}
	c.setListing(gen, nodes)
	return nodes, nil
}

// Touch records that node id was seen at t, and patches the listing.
func (c *Cached) Touch(ctx context.Context, id int64, t time.Time) error {
	if err := c.s.Touch(ctx, id, t); err != nil {
		c.wrote()
		return err
	}
	seen := fromMillis(t.UnixMilli())
	c.patch(id, func(n *wire.Node) bool { n.LastSeen = seen; return true })
	return nil
}

// SetConnectivity records a node's connectivity, and patches the listing.
func (c *Cached) SetConnectivity(ctx context.Context, id int64, conn wire.Connectivity) error {
	if err := c.s.SetConnectivity(ctx, id, conn); err != nil {
		c.wrote()
		return err
	}
	c.patch(id, func(n *wire.Node) bool { n.Connectivity = &conn; return true })
	return nil
}

// SetAgentVersion records an agent's version, and patches the listing.
func (c *Cached) SetAgentVersion(ctx context.Context, id int64, version string) error {
	if err := c.s.SetAgentVersion(ctx, id, version); err != nil {
		c.wrote()
		return err
	}
	v := agentVersion(version)
	c.patch(id, func(n *wire.Node) bool {
		changed := n.Version != v
		n.Version = v
		return changed
	})
	return nil
}

// SetServices records node n's services; a report that changes only
// their health patches the listing.
func (c *Cached) SetServices(ctx context.Context, n wire.Node, svcs []wire.Service, refused func(string) string) (uint64, error) {
	ver, err := c.s.SetServices(ctx, n, svcs, refused)
	if err != nil || ver != 0 {
		c.wrote()
		return ver, err
	}
	_, health, _ := validServices(svcs) // valid: SetServices took them
	c.patch(n.ID, func(n *wire.Node) bool { n.Services = withHealth(*n, health); return true })
	return 0, nil
}

// SetOnline records which nodes hold a stream. It touches many nodes
// at once: the listing is read again rather than patched node by node.
func (c *Cached) SetOnline(ctx context.Context, ids []int64, until time.Time) error {
	defer c.wrote()
	return c.s.SetOnline(ctx, ids, until)
}

// Listen passes the wrapped Store's announcements on, bumping the
// generation at each: another process may have written.
func (c *Cached) Listen(ctx context.Context, poll time.Duration, changed func(uint64)) error {
	return c.s.Listen(ctx, poll, func(v uint64) {
		c.wrote()
		changed(v)
	})
}

// Sync makes the newest version Committed; another process may have
// written, so it bumps the generation.
func (c *Cached) Sync(ctx context.Context) (uint64, error) {
	defer c.wrote()
	return c.s.Sync(ctx)
}

// StateSince reads what changed; it writes nothing and caches nothing.
func (c *Cached) StateSince(ctx context.Context, since uint64) (Delta, error) {
	return c.s.StateSince(ctx, since)
}

// The other writes pass through and bump the generation.

func (c *Cached) Enroll(ctx context.Context, key credential.Secret, p EnrollParams) (wire.Node, credential.Secret, uint64, error) {
	defer c.wrote()
	return c.s.Enroll(ctx, key, p)
}

func (c *Cached) SetEndpoints(ctx context.Context, id int64, eps []string) (uint64, error) {
	defer c.wrote()
	return c.s.SetEndpoints(ctx, id, eps)
}

func (c *Cached) SetRelay(ctx context.Context, id int64, r wire.Relay) (uint64, error) {
	defer c.wrote()
	return c.s.SetRelay(ctx, id, r)
}

func (c *Cached) SetTags(ctx context.Context, actor, name string, tags []string) (uint64, error) {
	defer c.wrote()
	return c.s.SetTags(ctx, actor, name, tags)
}

func (c *Cached) RotateNodeKey(ctx context.Context, id int64, old, new string) (uint64, error) {
	defer c.wrote()
	return c.s.RotateNodeKey(ctx, id, old, new)
}

func (c *Cached) ExpireNode(ctx context.Context, actor, name string, at time.Time, never bool) (uint64, error) {
	defer c.wrote()
	return c.s.ExpireNode(ctx, actor, name, at, never)
}

func (c *Cached) ExpireDue(ctx context.Context) ([]string, error) {
	defer c.wrote()
	return c.s.ExpireDue(ctx)
}

func (c *Cached) DeleteNode(ctx context.Context, actor, name string) (uint64, error) {
	defer c.wrote()
	return c.s.DeleteNode(ctx, actor, name)
}

func (c *Cached) DeleteEphemeral(ctx context.Context, id int64, lastSeen time.Time) (bool, error) {
	defer c.wrote()
	return c.s.DeleteEphemeral(ctx, id, lastSeen)
}

func (c *Cached) CreateJoinKey(ctx context.Context, actor string, req wire.CreateJoinKeyRequest) (wire.JoinKey, credential.Secret, error) {
	defer c.wrote()
	return c.s.CreateJoinKey(ctx, actor, req)
}

func (c *Cached) RevokeJoinKey(ctx context.Context, actor, id string) error {
	defer c.wrote()
	return c.s.RevokeJoinKey(ctx, actor, id)
}

func (c *Cached) CreateAdminToken(ctx context.Context, actor, comment string) (wire.AdminToken, credential.Secret, error) {
	defer c.wrote()
	return c.s.CreateAdminToken(ctx, actor, comment)
}

func (c *Cached) RevokeAdminToken(ctx context.Context, actor, id string) error {
	defer c.wrote()
	return c.s.RevokeAdminToken(ctx, actor, id)
}

func (c *Cached) SetPolicy(ctx context.Context, actor, text, comment string) (wire.Policy, error) {
	defer c.wrote()
	return c.s.SetPolicy(ctx, actor, text, comment)
}

func (c *Cached) RotateGossipKey(ctx context.Context, actor string) (wire.GossipKeys, error) {
	defer c.wrote()
	return c.s.RotateGossipKey(ctx, actor)
}

func (c *Cached) RetireGossipKeys(ctx context.Context, actor string) (wire.GossipKeys, error) {
	defer c.wrote()
	return c.s.RetireGossipKeys(ctx, actor)
}

func (c *Cached) AddAudit(ctx context.Context, actor, action, target, detail string) error {
	defer c.wrote()
	return c.s.AddAudit(ctx, actor, action, target, detail)
}

func (c *Cached) RegisterCoordinator(ctx context.Context, co Coordinator) (uint64, error) {
	defer c.wrote()
	return c.s.RegisterCoordinator(ctx, co)
}

func (c *Cached) Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	defer c.wrote()
	return c.s.Lease(ctx, name, holder, ttl)
}

func (c *Cached) SharedSecret(ctx context.Context, name, value string) (string, error) {
	defer c.wrote()
	return c.s.SharedSecret(ctx, name, value)
}

// AcceptProof changes nothing admins list.
func (c *Cached) AcceptProof(ctx context.Context, id int64, kind string, at time.Time) (bool, time.Time, error) {
	return c.s.AcceptProof(ctx, id, kind, at)
}

func (c *Cached) CreateSession(ctx context.Context, s Session, limit int) (string, error) {
	defer c.wrote()
	return c.s.CreateSession(ctx, s, limit)
}

func (c *Cached) SetSessionFlash(ctx context.Context, id, msg string) error {
	defer c.wrote()
	return c.s.SetSessionFlash(ctx, id, msg)
}

func (c *Cached) TakeSessionFlash(ctx context.Context, id, msg string) (bool, error) {
	defer c.wrote()
	return c.s.TakeSessionFlash(ctx, id, msg)
}

func (c *Cached) DeleteSession(ctx context.Context, id string) error {
	defer c.wrote()
	return c.s.DeleteSession(ctx, id)
}

// Close closes the wrapped Store.
func (c *Cached) Close() error { return c.s.Close() }
