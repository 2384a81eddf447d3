package coordinator

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/wiremesh/wiremesh/wire"
)

// listing is every node as admins see it, expired ones included, with the
// reported health merged into its services: what node and service
// listings are cut from. It is valid while the store's write counter
// stays at gen, so a mesh that does not change is listed without reading
// the database.
type listing struct {
	gen   uint64
	nodes []wire.Node // by id; shared, read-only
}

// wrote marks the cached listing stale; every write to the store that
// patch does not cover calls it.
func (s *Store) wrote() { s.writes.Add(1) }

// patch applies fn to node id in the cached listing, after the database
// has the change: writes that touch one node (last seen, health, agent
// version) keep the listing instead of reloading 10,000 rows. The listing
// is copied, since readers share it.
func (s *Store) patch(id int64, fn func(*wire.Node)) {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	if s.list == nil {
		return
	}
	nodes := s.list.nodes
	i := sort.Search(len(nodes), func(i int) bool { return nodes[i].ID >= id })
	if i == len(nodes) || nodes[i].ID != id {
		return
	}
	nodes = slices.Clone(nodes)
	fn(&nodes[i])
	s.list = &listing{gen: s.list.gen, nodes: nodes}
}

// AdminNodes returns every node, ordered by id, with its reported health.
// The slice and what it holds are shared: copy before changing anything.
func (s *Store) AdminNodes(ctx context.Context) ([]wire.Node, error) {
	s.listMu.Lock()
	l := s.list
	s.listMu.Unlock()
	if l != nil && l.gen == s.writes.Load() {
		return l.nodes, nil
	}
	if _, err := s.State(ctx); err != nil { // it refreshes the listing
		return nil, err
	}
	s.listMu.Lock()
	defer s.listMu.Unlock()
	return s.list.nodes, nil
}

// setListing caches nodes as the listing read when the write counter was
// at gen, unless a newer one is cached.
func (s *Store) setListing(gen uint64, nodes []wire.Node) {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	if s.list == nil || s.list.gen <= gen {
		s.list = &listing{gen: gen, nodes: nodes}
	}
}

// scanAdminNodes reads every node with its reported health, within tx.
func (s *Store) scanAdminNodes(ctx context.Context, tx *sql.Tx) ([]wire.Node, error) {
	rows, err := tx.QueryContext(ctx, "SELECT "+nodeColumns+", health FROM nodes ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	nodes := []wire.Node{}
	for rows.Next() {
		var hj string
		n, err := s.scanNode(healthScanner{rows, &hj})
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		if hj != "{}" {
			var h map[string]reportedHealth
			if err := json.Unmarshal([]byte(hj), &h); err != nil {
				return nil, fmt.Errorf("node %s: bad stored health: %w", n.Name, err)
			}
			n.Services = withHealth(n, h)
		}
		nodes = append(nodes, n)
	}
	return nodes, rows.Err()
}

// definitions returns svcs without their reported health and checks.
func definitions(svcs []wire.Service) []wire.Service {
	if !slices.ContainsFunc(svcs, func(sv wire.Service) bool { return sv.Health != "" || sv.Checks != nil }) {
		return svcs
	}
	out := slices.Clone(svcs)
	for i := range out {
		out[i].Health, out[i].Checks = "", nil
	}
	return out
}

// healthScanner scans a node row followed by its health column.
type healthScanner struct {
	rows   *sql.Rows
	health *string
}

func (h healthScanner) Scan(dest ...any) error { return h.rows.Scan(append(dest, h.health)...) }

// pageOf returns up to limit nodes with ids greater than after.
func pageOf(nodes []wire.Node, after int64, limit int) []wire.Node {
	i := sort.Search(len(nodes), func(i int) bool { return nodes[i].ID > after })
	return nodes[i:min(len(nodes), i+limit)]
}
