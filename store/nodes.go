package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

const nodeColumns = "id, name, public_key, host_index, tags, endpoints, created, last_seen, services, expires, version, ephemeral, relay, online_until"

// scanNode scans a row of nodeColumns.
func (s *DB) scanNode(sc interface{ Scan(...any) error }) (wire.Node, error) {
	var n wire.Node
	var idx int64
	var tags, eps, svcs string
	var created, seen, expires, onlineUntil int64
	var relay sql.NullString
	if err := sc.Scan(&n.ID, &n.Name, &n.PublicKey, &idx, &tags, &eps, &created, &seen, &svcs, &expires, &n.Version, &n.Ephemeral, &relay, &onlineUntil); err != nil {
		return n, err
	}
	if relay.Valid {
		if err := json.Unmarshal([]byte(relay.String), &n.Relay); err != nil {
			return n, fmt.Errorf("node %s: bad stored relay: %w", n.Name, err)
		}
	}
	n.Expires = fromMillis(expires)
	if err := json.Unmarshal([]byte(svcs), &n.Services); err != nil {
		return n, fmt.Errorf("node %s: bad stored services: %w", n.Name, err)
	}
	if err := json.Unmarshal([]byte(tags), &n.Tags); err != nil {
		return n, fmt.Errorf("node %s: bad stored tags: %w", n.Name, err)
	}
	if err := json.Unmarshal([]byte(eps), &n.Endpoints); err != nil {
		return n, fmt.Errorf("node %s: bad stored endpoints: %w", n.Name, err)
	}
	for _, p := range s.prefixes {
		a, err := hostAddr(p, idx)
		if err != nil {
			return n, fmt.Errorf("node %s: %w", n.Name, err)
		}
		n.Addresses = append(n.Addresses, netip.PrefixFrom(a, a.BitLen()))
	}
	n.Created = fromMillis(created)
	n.LastSeen = fromMillis(seen)
	n.OnlineUntil = fromMillis(onlineUntil)
	return n, nil
}

// node reads the node that where (with one ? for arg) selects.
func (s *DB) node(ctx context.Context, where string, arg any) (wire.Node, error) {
	row := s.q().row(ctx, "SELECT "+nodeColumns+" FROM nodes WHERE "+where, arg)
	n, err := s.scanNode(row)
	if errors.Is(err, sql.ErrNoRows) {
		return n, fmt.Errorf("%w: no such node", ErrNotFound)
	}
	if err != nil {
		return n, fmt.Errorf("read node: %w", err)
	}
	return n, nil
}

// NodeByName returns the node called name, expired or not.
func (s *DB) NodeByName(ctx context.Context, name string) (wire.Node, error) {
	n, err := s.node(ctx, "name = ?", name)
	if errors.Is(err, ErrNotFound) {
		return n, fmt.Errorf("%w: no node named %q", ErrNotFound, name)
	}
	return n, err
}

// NodeByCredential returns the node that cred authenticates.
func (s *DB) NodeByCredential(ctx context.Context, cred credential.Secret) (wire.Node, error) {
	var id int64
	var hash string
	var expires int64
	err := s.q().row(ctx, "SELECT id, cred_hash, expires FROM nodes WHERE cred_id = ?", cred.ID).Scan(&id, &hash, &expires)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !cred.Matches(hash)) {
		return wire.Node{}, fmt.Errorf("%w: unknown node credential (node deleted?)", ErrDenied)
	}
	if err != nil {
		return wire.Node{}, fmt.Errorf("read credential: %w", err)
	}
	if expires != 0 && expires <= s.now().UnixMilli() {
		return wire.Node{}, withCode(wire.CodeExpired, fmt.Errorf("%w: the node expired", ErrDenied))
	}
	return s.node(ctx, "id = ?", id)
}

// SetEndpoints records a node's endpoints. It returns version 0 when they
// did not change (and nothing was written).
func (s *DB) SetEndpoints(ctx context.Context, id int64, eps []string) (uint64, error) {
	j, _ := json.Marshal(eps)
	if eps == nil {
		j = []byte("[]")
	}
	var cur string
	if err := s.q().row(ctx, "SELECT endpoints FROM nodes WHERE id = ?", id).Scan(&cur); err != nil {
		return 0, fmt.Errorf("read endpoints: %w", err)
	}
	if cur == string(j) {
		return 0, nil
	}
	return s.tx(ctx, func(tx conn) error {
		_, err := tx.exec(ctx, "UPDATE nodes SET endpoints = ?, changed = "+curVersion+" WHERE id = ?", string(j), id)
		return err
	})
}

// Touch records that node id was seen at t. It does not bump the version.
func (s *DB) Touch(ctx context.Context, id int64, t time.Time) error {
	if _, err := s.q().exec(ctx, "UPDATE nodes SET last_seen = ? WHERE id = ?", t.UnixMilli(), id); err != nil {
		return fmt.Errorf("record last seen: %w", err)
	}
	return nil
}

// SetConnectivity records what node id reported about how it reaches the
// mesh. It does not bump the version: only admins see it.
func (s *DB) SetConnectivity(ctx context.Context, id int64, c wire.Connectivity) error {
	j, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("record connectivity: %w", err)
	}
	if _, err := s.q().exec(ctx, "UPDATE nodes SET connectivity = ? WHERE id = ?", string(j), id); err != nil {
		return fmt.Errorf("record connectivity: %w", err)
	}
	return nil
}

// agentVersion is the agent version v as stored: at most 64 bytes.
func agentVersion(v string) string {
	if len(v) > 64 {
		return v[:64]
	}
	return v
}

// SetAgentVersion records the version an agent reported. It does not bump
// the state version: only admins see it.
func (s *DB) SetAgentVersion(ctx context.Context, id int64, version string) error {
	version = agentVersion(version)
	if _, err := s.q().exec(ctx, "UPDATE nodes SET version = ? WHERE id = ? AND version != ?", version, id, version); err != nil {
		return fmt.Errorf("record agent version: %w", err)
	}
	return nil
}

// DeleteNode removes the node named name; its credential stops working.
func (s *DB) DeleteNode(ctx context.Context, actor, name string) (uint64, error) {
	return s.tx(ctx, func(tx conn) error {
		var id int64
		err := tx.row(ctx, "DELETE FROM nodes WHERE name = ? RETURNING id", name).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: no node named %q", ErrNotFound, name)
		}
		if err != nil {
			return fmt.Errorf("delete node: %w", err)
		}
		if err := recordDeletion(ctx, tx, id); err != nil {
			return err
		}
		return audit(ctx, tx, s.now(), actor, "node.delete", name, "")
	})
}

// SetTags replaces the tags of the node named name.
func (s *DB) SetTags(ctx context.Context, actor, name string, tags []string) (uint64, error) {
	for _, t := range tags {
		if err := wire.CheckTag(t); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	j, _ := json.Marshal(tags)
	if tags == nil {
		j = []byte("[]")
	}
	return s.tx(ctx, func(tx conn) error {
		res, err := tx.exec(ctx, "UPDATE nodes SET tags = ?, changed = "+curVersion+" WHERE name = ?", string(j), name)
		if err != nil {
			return fmt.Errorf("set tags: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: no node named %q", ErrNotFound, name)
		}
		return audit(ctx, tx, s.now(), actor, "node.tag", name, string(j))
	})
}

// RotateNodeKey replaces node id's public key old with new, if old is
// still its key and new is nobody's.
func (s *DB) RotateNodeKey(ctx context.Context, id int64, old, new string) (uint64, error) {
	return s.tx(ctx, func(tx conn) error {
		var name, cur string
		if err := tx.row(ctx, "SELECT name, public_key FROM nodes WHERE id = ?", id).Scan(&name, &cur); err != nil {
			return fmt.Errorf("read node: %w", err)
		}
		if cur != old {
			return fmt.Errorf("%w: the node's key is no longer %s", ErrConflict, old)
		}
		var other string
		err := tx.row(ctx, "SELECT name FROM nodes WHERE public_key = ?", new).Scan(&other)
		if err == nil {
			return fmt.Errorf("%w: key already used by node %q", ErrConflict, other)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("check key: %w", err)
		}
		if _, err := tx.exec(ctx, "UPDATE nodes SET public_key = ?, changed = "+curVersion+" WHERE id = ?", new, id); err != nil {
			return fmt.Errorf("rotate key: %w", err)
		}
		return audit(ctx, tx, s.now(), name, "node.rotate-key", name, new)
	})
}

// SetRelay replaces relay node id's description with r. It returns
// version 0 when it did not change, and ErrForbidden for an agent.
func (s *DB) SetRelay(ctx context.Context, id int64, r wire.Relay) (uint64, error) {
	j, _ := json.Marshal(r)
	var cur sql.NullString
	if err := s.q().row(ctx, "SELECT relay FROM nodes WHERE id = ?", id).Scan(&cur); err != nil {
		return 0, fmt.Errorf("read relay: %w", err)
	}
	switch {
	case !cur.Valid:
		return 0, fmt.Errorf("%w: only a relay node (enrolled with a relay join key) may describe a relay", ErrForbidden)
	case cur.String == string(j):
		return 0, nil
	}
	return s.tx(ctx, func(tx conn) error {
		_, err := tx.exec(ctx, "UPDATE nodes SET relay = ?, changed = "+curVersion+" WHERE id = ? AND relay IS NOT NULL", string(j), id)
		return err
	})
}

// ExpireNode sets when the node called name expires: at at (zero or past:
// now) or, with never, not at all. An expired node is in no netmap and its
// credential is refused. Expiring an expired node changes nothing; never
// is refused for it (ErrConflict): it must enroll again.
func (s *DB) ExpireNode(ctx context.Context, actor, name string, at time.Time, never bool) (uint64, error) {
	now := s.now()
	return s.tx(ctx, func(tx conn) error {
		var expires int64
		err := tx.row(ctx, "SELECT expires FROM nodes WHERE name = ?", name).Scan(&expires)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: no node named %q", ErrNotFound, name)
		}
		if err != nil {
			return fmt.Errorf("expire node: %w", err)
		}
		if expires != 0 && expires <= now.UnixMilli() {
			if never {
				return fmt.Errorf("%w: node %q expired at %s; it must enroll again", ErrConflict, name, fromMillis(expires).UTC().Format(time.RFC3339))
			}
			return nil
		}
		detail, expired := "", false
		switch {
		case never:
			if expires == 0 {
				return nil
			}
			expires, detail = 0, "never"
		case !at.After(now):
			expires, expired = now.UnixMilli(), true
		default:
			expires, detail = at.UnixMilli(), "at "+at.UTC().Format(time.RFC3339)
		}
		if _, err := tx.exec(ctx, "UPDATE nodes SET expires = ?, expired = ?, changed = "+curVersion+" WHERE name = ?", expires, expired, name); err != nil {
			return fmt.Errorf("expire node: %w", err)
		}
		return audit(ctx, tx, now, actor, "node.expire", name, detail)
	})
}

// ExpireDue marks the nodes whose expiry has passed as expired, with an
// audit entry each, and returns their names. With any, the state version
// is bumped, so that a publish takes them out of every netmap.
func (s *DB) ExpireDue(ctx context.Context) ([]string, error) {
	now := s.now()
	names, err := dueExpiries(ctx, s.q(), now)
	if err != nil || len(names) == 0 { // a plain read first: usually none
		return nil, err
	}
	_, err = s.tx(ctx, func(tx conn) error {
		if names, err = dueExpiries(ctx, tx, now); err != nil {
			return err
		}
		if _, err := tx.exec(ctx, "UPDATE nodes SET expired = TRUE, changed = "+curVersion+" WHERE expired = FALSE AND expires != 0 AND expires <= ?", now.UnixMilli()); err != nil {
			return fmt.Errorf("mark expired nodes: %w", err)
		}
		for _, n := range names {
			if err := audit(ctx, tx, now, "coordinator", "node.expired", n, ""); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return names, nil
}

func dueExpiries(ctx context.Context, q conn, now time.Time) ([]string, error) {
	rows, err := q.query(ctx, "SELECT name FROM nodes WHERE expired = FALSE AND expires != 0 AND expires <= ? ORDER BY id", now.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("read due expiries: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("read due expiries: %w", err)
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// DeleteEphemeral deletes ephemeral node id if it was last seen at
// lastSeen, and reports whether it did: a node that reconnected meanwhile
// has a newer last-seen time and stays.
func (s *DB) DeleteEphemeral(ctx context.Context, id int64, lastSeen time.Time) (bool, error) {
	deleted := false
	_, err := s.tx(ctx, func(tx conn) error {
		var name string
		err := tx.row(ctx, "DELETE FROM nodes WHERE id = ? AND ephemeral = TRUE AND last_seen = ? RETURNING name", id, millis(lastSeen)).Scan(&name)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("delete ephemeral node: %w", err)
		}
		if err := recordDeletion(ctx, tx, id); err != nil {
			return err
		}
		deleted = true
		detail := "ephemeral, offline since " + lastSeen.UTC().Format(time.RFC3339)
		if lastSeen.IsZero() {
			detail = "ephemeral, never connected"
		}
		return audit(ctx, tx, s.now(), "coordinator", "node.delete", name, detail)
	})
	return deleted, err
}

// curVersion is the state version in a statement of a transaction that
// bumped it (DB.tx): the version it commits.
const curVersion = "(SELECT CAST(value AS BIGINT) FROM settings WHERE key = 'version')"

// recordDeletion records, in a transaction that bumped the version, that
// node id is deleted at that version (StateSince).
func recordDeletion(ctx context.Context, tx conn, id int64) error {
	if _, err := tx.exec(ctx, "INSERT INTO node_deletions(id, version) VALUES(?, "+curVersion+")", id); err != nil {
		return fmt.Errorf("record deletion: %w", err)
	}
	if _, err := tx.exec(ctx, "DELETE FROM proof_times WHERE node_id = ?", id); err != nil {
		return fmt.Errorf("record deletion: %w", err)
	}
	return nil
}

// AcceptProof records at as node id's newest proof time of kind, unless
// one at at or later is recorded (one statement, so that two coordinators
// given the same report accept it once).
func (s *DB) AcceptProof(ctx context.Context, id int64, kind string, at time.Time) (bool, time.Time, error) {
	res, err := s.q().exec(ctx, `INSERT INTO proof_times(node_id, kind, at) VALUES(?, ?, ?)
		ON CONFLICT(node_id, kind) DO UPDATE SET at = excluded.at WHERE proof_times.at < excluded.at`, id, kind, at.UnixNano())
	if err != nil {
		return false, time.Time{}, fmt.Errorf("record the %s proof: %w", kind, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, time.Time{}, fmt.Errorf("record the %s proof: %w", kind, err)
	} else if n == 1 {
		return true, at, nil
	}
	var newest int64
	if err := s.q().row(ctx, "SELECT at FROM proof_times WHERE node_id = ? AND kind = ?", id, kind).Scan(&newest); err != nil {
		return false, time.Time{}, fmt.Errorf("read the %s proof: %w", kind, err)
	}
	return false, time.Unix(0, newest), nil
}
