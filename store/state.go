package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// State reads the current State in one snapshot. The same read gives the
// admin listing, so that Cached refreshes its listing with it.
func (s *DB) State(ctx context.Context) (State, error) {
	var st State
	err := s.snapshot(ctx, func(tx conn) error {
		all, err := s.scanAdminNodes(ctx, tx)
		if err != nil {
			return err
		}
		st.admin = all
		now := s.now()
		for _, n := range all {
			if !n.Expires.IsZero() {
				if !n.Expires.After(now) {
					continue
				}
				if st.NextExpiry.IsZero() || n.Expires.Before(st.NextExpiry) {
					st.NextExpiry = n.Expires
				}
			}
			st.Nodes = append(st.Nodes, stateNode(n))
		}
		if st.Policy, err = policy(ctx, tx, "ORDER BY version DESC LIMIT 1"); err != nil {
			return err
		}
		if st.GossipKeys, err = gossipKeys(ctx, tx); err != nil {
			return err
		}
		if st.Coordinators, err = s.coordinators(ctx, tx); err != nil {
			return err
		}
		st.Version, err = version(ctx, tx)
		return err
	})
	return st, err
}

// StateSince reads, in one snapshot, what changed after version since:
// the nodes changed or added (as State has them), the nodes deleted or
// expired, and the rest of the state, which is small, whole.
func (s *DB) StateSince(ctx context.Context, since uint64) (Delta, error) {
	d := Delta{Since: since}
	err := s.snapshot(ctx, func(tx conn) error {
		rows, err := tx.query(ctx, "SELECT "+nodeColumns+", health FROM nodes WHERE changed > ? ORDER BY id", since)
		if err != nil {
			return fmt.Errorf("read changed nodes: %w", err)
		}
		defer rows.Close()
		now := s.now()
		for rows.Next() {
			var hj string
			n, err := s.scanNode(healthScanner{rows, []any{&hj}})
			if err != nil {
				return fmt.Errorf("read changed nodes: %w", err)
			}
			if !n.Expires.IsZero() && !n.Expires.After(now) {
				d.Removed = append(d.Removed, n.ID)
				continue
			}
			d.Nodes = append(d.Nodes, stateNode(n))
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read changed nodes: %w", err)
		}
		rows.Close()
		del, err := tx.query(ctx, "SELECT id FROM node_deletions WHERE version > ? ORDER BY id", since)
		if err != nil {
			return fmt.Errorf("read deleted nodes: %w", err)
		}
		defer del.Close()
		for del.Next() {
			var id int64
			if err := del.Scan(&id); err != nil {
				return fmt.Errorf("read deleted nodes: %w", err)
			}
			d.Removed = append(d.Removed, id)
		}
		if err := del.Err(); err != nil {
			return fmt.Errorf("read deleted nodes: %w", err)
		}
		var next int64
		if err := tx.row(ctx, "SELECT COALESCE(MIN(expires), 0) FROM nodes WHERE expires > ?", now.UnixMilli()).Scan(&next); err != nil {
			return fmt.Errorf("read next expiry: %w", err)
		}
		d.NextExpiry = fromMillis(next)
		if d.Policy, err = policy(ctx, tx, "ORDER BY version DESC LIMIT 1"); err != nil {
			return err
		}
		if d.GossipKeys, err = gossipKeys(ctx, tx); err != nil {
			return err
		}
		if d.Coordinators, err = s.coordinators(ctx, tx); err != nil {
			return err
		}
		d.Version, err = version(ctx, tx)
		return err
	})
	return d, err
}

// stateNode is n as State has it: without what only admins see.
func stateNode(n wire.Node) wire.Node {
	// For admins only; last seen also changes without a new version.
	n.Version, n.Expires, n.Ephemeral, n.LastSeen, n.OnlineUntil, n.Connectivity = "", time.Time{}, false, time.Time{}, time.Time{}, nil
	n.Services = definitions(n.Services) // health travels by gossip
	return n
}

// AdminNodes reads every node as admins see it, ordered by id.
func (s *DB) AdminNodes(ctx context.Context) ([]wire.Node, error) {
	nodes, _, err := s.Nodes(ctx)
	return nodes, err
}

// Nodes reads every node as admins see it (expired ones included, with
// the reported health), ordered by id, and the state version.
func (s *DB) Nodes(ctx context.Context) (nodes []wire.Node, ver uint64, err error) {
	err = s.snapshot(ctx, func(tx conn) error {
		if nodes, err = s.scanAdminNodes(ctx, tx); err != nil {
			return err
		}
		ver, err = version(ctx, tx)
		return err
	})
	return nodes, ver, err
}

// scanAdminNodes reads every node with its reported health and
// connectivity, with q.
func (s *DB) scanAdminNodes(ctx context.Context, q conn) ([]wire.Node, error) {
	rows, err := q.query(ctx, "SELECT "+nodeColumns+", health, connectivity FROM nodes ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	nodes := []wire.Node{}
	for rows.Next() {
		var hj, cj string
		n, err := s.scanNode(healthScanner{rows, []any{&hj, &cj}})
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		// Only admins see a node's connectivity; one that does not
		// decode (it cannot come from SetConnectivity) is no report,
		// rather than a listing, and a state, that fails.
		if cj != "" && json.Unmarshal([]byte(cj), &n.Connectivity) != nil {
			n.Connectivity = nil
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

// healthScanner scans a node row followed by its health column (and, in
// the admin listing, its connectivity).
type healthScanner struct {
	rows *sql.Rows
	more []any
}

func (h healthScanner) Scan(dest ...any) error { return h.rows.Scan(append(dest, h.more...)...) }

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
