package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// Nodes returns every node as admins see it (expired ones included,
// with the reported health), ordered by id, and the state version.
func (s *Store) Nodes(ctx context.Context) ([]wire.Node, uint64, error) {
	st, err := s.State(ctx)
	if err != nil {
		return nil, 0, err
	}
	nodes, err := s.AdminNodes(ctx)
	return slices.Clone(nodes), st.Version, err
}

// NodeByName returns the node called name, expired or not.
func (s *Store) NodeByName(ctx context.Context, name string) (wire.Node, error) {
	n, err := s.node(ctx, "name = ?", name)
	if errors.Is(err, ErrNotFound) {
		return n, fmt.Errorf("%w: no node named %q", ErrNotFound, name)
	}
	return n, err
}

// SetAgentVersion records the version an agent reported. It does not bump
// the state version: only admins see it.
func (s *Store) SetAgentVersion(ctx context.Context, id int64, version string) error {
	if len(version) > 64 {
		version = version[:64]
	}
	res, err := s.db.ExecContext(ctx, "UPDATE nodes SET version = ? WHERE id = ? AND version != ?", version, id, version)
	if err != nil {
		return fmt.Errorf("record agent version: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		s.patch(id, func(n *wire.Node) { n.Version = version })
	}
	return nil
}

// ExpireNode sets when the node called name expires: at at (zero or past:
// now) or, with never, not at all. An expired node is in no netmap and its
// credential is refused. Expiring an expired node changes nothing; never
// is refused for it (ErrConflict): it must enroll again.
func (s *Store) ExpireNode(ctx context.Context, actor, name string, at time.Time, never bool) (uint64, error) {
	now := s.now()
	return s.tx(ctx, func(tx *sql.Tx) error {
		var expires int64
		err := tx.QueryRowContext(ctx, "SELECT expires FROM nodes WHERE name = ?", name).Scan(&expires)
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
		if _, err := tx.ExecContext(ctx, "UPDATE nodes SET expires = ?, expired = ? WHERE name = ?", expires, expired, name); err != nil {
			return fmt.Errorf("expire node: %w", err)
		}
		return audit(ctx, tx, now, actor, "node.expire", name, detail)
	})
}

// AdminTokens lists the admin tokens, newest first.
func (s *Store) AdminTokens(ctx context.Context) ([]wire.AdminToken, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, comment, created, revoked FROM admin_tokens ORDER BY created DESC, id")
	if err != nil {
		return nil, fmt.Errorf("list admin tokens: %w", err)
	}
	defer rows.Close()
	out := []wire.AdminToken{}
	for rows.Next() {
		var t wire.AdminToken
		var c, r int64
		if err := rows.Scan(&t.ID, &t.Comment, &c, &r); err != nil {
			return nil, fmt.Errorf("list admin tokens: %w", err)
		}
		t.Created, t.Revoked = fromMillis(c), fromMillis(r)
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeAdminToken revokes the admin token id. The last valid token cannot
// be revoked: nobody could administer the mesh any more.
func (s *Store) RevokeAdminToken(ctx context.Context, actor, id string) error {
	_, err := s.tx(ctx, func(tx *sql.Tx) error {
		var revoked int64
		err := tx.QueryRowContext(ctx, "SELECT revoked FROM admin_tokens WHERE id = ?", id).Scan(&revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: no admin token %q", ErrNotFound, id)
		}
		if err != nil {
			return fmt.Errorf("read admin token: %w", err)
		}
		if revoked != 0 {
			return fmt.Errorf("%w: admin token %q is already revoked", ErrConflict, id)
		}
		var valid int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM admin_tokens WHERE revoked = 0").Scan(&valid); err != nil {
			return fmt.Errorf("count admin tokens: %w", err)
		}
		if valid <= 1 {
			return fmt.Errorf("%w: %q is the last valid admin token; create another first", ErrConflict, id)
		}
		now := s.now()
		if _, err := tx.ExecContext(ctx, "UPDATE admin_tokens SET revoked = ? WHERE id = ?", now.UnixMilli(), id); err != nil {
			return fmt.Errorf("revoke admin token: %w", err)
		}
		return audit(ctx, tx, now, actor, "admintoken.revoke", id, "")
	})
	return err
}

// Audit returns up to limit audit entries older than before (all when 0),
// newest first.
func (s *Store) Audit(ctx context.Context, before int64, limit int) ([]wire.AuditEntry, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := s.db.QueryContext(ctx, "SELECT id, time, actor, action, target, detail FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?", before, limit)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	out := []wire.AuditEntry{}
	for rows.Next() {
		var e wire.AuditEntry
		var ms int64
		if err := rows.Scan(&e.ID, &ms, &e.Actor, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		e.Time = time.UnixMilli(ms).UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}
