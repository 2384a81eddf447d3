package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// What several coordinators on one database share through it: who they
// are (Coordinator), the timed work only one of them does (Lease), the
// secrets they must agree on (SharedSecret) and which nodes hold a stream on
// any of them (SetOnline).

// Coordinator is one coordinator that serves the mesh, as netmaps and
// join keys name it.
type Coordinator struct {
	// URLs are the https URLs it is reached at, its own first: the
	// first is its key.
	URLs []string `json:"urls"`
	// Relay is its embedded relay; nil: none.
	Relay *wire.Relay `json:"relay,omitempty"`
	// Seen is when it last said it was up. Not part of what Register
	// compares.
	Seen time.Time `json:"-"`
}

// CoordinatorAge is how long a coordinator that stopped saying it is up
// stays in the list netmaps and join keys carry: long enough for one that
// is down for maintenance, or failed over from, to be found again when it
// is back; a retired one drops out by itself.
const CoordinatorAge = 7 * 24 * time.Hour

// RegisterCoordinator records c as serving the mesh now. A coordinator
// that is new, or describes itself otherwise than recorded, is a change of
// state (its version returned); one that only says it is still up is not
// (0).
func (s *DB) RegisterCoordinator(ctx context.Context, c Coordinator) (uint64, error) {
	if len(c.URLs) == 0 {
		return 0, fmt.Errorf("%w: a coordinator needs a URL", ErrInvalid)
	}
	info, err := json.Marshal(c)
	if err != nil {
		return 0, err
	}
	now := s.now().UnixMilli()
	res, err := s.q().exec(ctx, "UPDATE coordinators SET seen = ? WHERE url = ? AND info = ?", now, c.URLs[0], string(info))
	if err != nil {
		return 0, fmt.Errorf("register coordinator: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return 0, nil
	}
	return s.tx(ctx, func(tx conn) error {
		_, err := tx.exec(ctx, `INSERT INTO coordinators(url, info, seen) VALUES(?, ?, ?)
			ON CONFLICT(url) DO UPDATE SET info = excluded.info, seen = excluded.seen`, c.URLs[0], string(info), now)
		if err != nil {
			return fmt.Errorf("register coordinator: %w", err)
		}
		return nil
	})
}

// coordinators reads the coordinators seen within CoordinatorAge, by URL.
func (s *DB) coordinators(ctx context.Context, q conn) ([]Coordinator, error) {
	rows, err := q.query(ctx, "SELECT info, seen FROM coordinators WHERE seen > ? ORDER BY url", s.now().Add(-CoordinatorAge).UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("list coordinators: %w", err)
	}
	defer rows.Close()
	var out []Coordinator
	for rows.Next() {
		var info string
		var seen int64
		if err := rows.Scan(&info, &seen); err != nil {
			return nil, fmt.Errorf("list coordinators: %w", err)
		}
		var c Coordinator
		if err := json.Unmarshal([]byte(info), &c); err != nil || len(c.URLs) == 0 {
			return nil, fmt.Errorf("bad stored coordinator %.100q", info)
		}
		c.Seen = fromMillis(seen)
		out = append(out, c)
	}
	return out, rows.Err()
}

// Lease takes lease name for holder, or renews it, until ttl from now,
// unless another holder has it and it has not run out; it reports whether
// holder has it now. The holders' clocks must agree to well within ttl.
// On SQLite, which one process owns (a coordinator locks its data dir),
// the lease is always the caller's: a coordinator restarted after a crash
// does not wait for its former self's lease to run out.
func (s *DB) Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	now := s.now()
	q := `INSERT INTO leases(name, holder, until) VALUES(?, ?, ?)
		ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, until = excluded.until`
	args := []any{name, holder, now.Add(ttl).UnixMilli()}
	if s.d.notify != "" {
		q += " WHERE leases.holder = excluded.holder OR leases.until < ?"
		args = append(args, now.UnixMilli())
	}
	res, err := s.q().exec(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", name, err)
	}
	return n == 1, nil
}

// SharedSecret returns the secret stored under name, storing value there first
// if there is none: the first coordinator's value is every coordinator's.
func (s *DB) SharedSecret(ctx context.Context, name, value string) (string, error) {
	key := "shared." + name
	if _, err := s.q().exec(ctx, "INSERT INTO settings(key, value) VALUES(?, ?) ON CONFLICT(key) DO NOTHING", key, value); err != nil {
		return "", fmt.Errorf("store %s: %w", name, err)
	}
	v, err := setting(ctx, s.q(), key)
	if err == nil && v == "" {
		err = fmt.Errorf("read %s: empty", name)
	}
	return v, err
}

// onlineBatch bounds the ids of one SetOnline statement.
const onlineBatch = 500

// SetOnline records that nodes ids hold a stream until until, and so were
// seen now, or (zero until) that they hold none, without a new version:
// only admins and the ephemeral sweep look at it.
func (s *DB) SetOnline(ctx context.Context, ids []int64, until time.Time) error {
	set, args := "online_until = ?", []any{millis(until)}
	if !until.IsZero() {
		set, args = set+", last_seen = ?", append(args, s.now().UnixMilli())
	}
	for chunk := range slices.Chunk(ids, onlineBatch) {
		args := slices.Clone(args)
		for _, id := range chunk {
			args = append(args, id)
		}
		q := "UPDATE nodes SET " + set + " WHERE id IN (?" + strings.Repeat(", ?", len(chunk)-1) + ")"
		if _, err := s.q().exec(ctx, q, args...); err != nil {
			return fmt.Errorf("record online nodes: %w", err)
		}
	}
	return nil
}
