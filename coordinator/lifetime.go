package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// DefaultEphemeralTimeout is how long an ephemeral node may be offline
// before the coordinator deletes it, unless Config.EphemeralTimeout says
// otherwise.
const DefaultEphemeralTimeout = 5 * time.Minute

// maintain does the coordinator's timed work until ctx is done: it
// publishes each node expiry when it falls due, so that peers drop the
// node at once, and deletes ephemeral nodes that have been offline for
// the ephemeral timeout, and applies endpoint changes held back by the
// endpoint gate when their interval ends.
func (c *Coordinator) maintain(ctx context.Context) {
	sweepEvery := min(max(c.cfg.EphemeralTimeout/4, 100*time.Millisecond), 30*time.Second)
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	due := time.NewTimer(0) // expiries that fell due while it was down
	defer due.Stop()
	held := time.NewTimer(0)
	defer held.Stop()
	retry := false
	for {
		s := c.state.Load()
		select {
		case <-ctx.Done():
			return
		case <-s.changed:
		case <-due.C:
			retry = !c.expireDue(ctx)
		case <-sweep.C:
			c.sweepEphemeral(ctx)
		case <-c.endpoints.wake:
		case <-held.C:
		}
		if next := c.applyHeldEndpoints(ctx); !next.IsZero() {
			held.Reset(time.Until(next))
		} else {
			held.Stop()
		}
		// Every wake-up re-arms the expiry timer from the newest snapshot.
		switch s = c.state.Load(); {
		case retry:
			due.Reset(time.Second)
		case !s.nextExpiry.IsZero():
			due.Reset(time.Until(s.nextExpiry))
		default:
			due.Stop()
		}
	}
}

// expireDue publishes the expiries that have fallen due, and reports
// whether that worked.
func (c *Coordinator) expireDue(ctx context.Context) bool {
	names, err := c.store.ExpireDue(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error("publish node expiries; retrying in 1 s", "err", err)
		}
		return false
	}
	if len(names) == 0 {
		return true
	}
	if err := c.publish(ctx); err != nil {
		c.log.Error("publish after node expiry; retrying in 1 s", "err", err)
		return false
	}
	for _, n := range names {
		c.log.Info("node expired", "node", n)
	}
	return true
}

// sweepEphemeral deletes the ephemeral nodes that have been offline for
// the ephemeral timeout. A node counts as offline from its last stream's
// end, one that never held a stream from its enrollment (so a node just
// enrolled is not swept before its first stream opens), and either at
// most from this coordinator's start: agents reconnect after a
// coordinator restart.
func (c *Coordinator) sweepEphemeral(ctx context.Context) {
	nodes, err := c.store.AdminNodes(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error("sweep ephemeral nodes", "err", err)
		}
		return
	}
	now := time.Now()
	deleted := 0
	for _, n := range nodes {
		if !n.Ephemeral || c.isOnline(n.ID) {
			continue
		}
		since := n.LastSeen
		if since.IsZero() {
			since = n.Created
		}
		if since.Before(c.started) {
			since = c.started
		}
		if now.Sub(since) < c.cfg.EphemeralTimeout {
			continue
		}
		ok, err := c.store.DeleteEphemeral(ctx, n.ID, n.LastSeen)
		if err != nil {
			c.log.Error("delete ephemeral node", "node", n.Name, "err", err)
			continue
		}
		if ok {
			deleted++
			c.log.Info("ephemeral node deleted", "node", n.Name, "offline_since", since.UTC().Format(time.RFC3339))
		}
	}
	if deleted > 0 {
		if err := c.publish(ctx); err != nil {
			c.log.Error("publish after deleting ephemeral nodes", "err", err)
		}
	}
}

// ExpireDue marks the nodes whose expiry has passed as expired, with an
// audit entry each, and returns their names. With any, the state version
// is bumped, so that a publish takes them out of every netmap.
func (s *Store) ExpireDue(ctx context.Context) ([]string, error) {
	now := s.now()
	names, err := dueExpiries(ctx, s.db, now)
	if err != nil || len(names) == 0 { // a plain read first: usually none
		return nil, err
	}
	_, err = s.tx(ctx, func(tx *sql.Tx) error {
		if names, err = dueExpiries(ctx, tx, now); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE nodes SET expired = 1 WHERE expired = 0 AND expires != 0 AND expires <= ?", now.UnixMilli()); err != nil {
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

// querier is the database or a transaction.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func dueExpiries(ctx context.Context, q querier, now time.Time) ([]string, error) {
	rows, err := q.QueryContext(ctx, "SELECT name FROM nodes WHERE expired = 0 AND expires != 0 AND expires <= ? ORDER BY id", now.UnixMilli())
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
func (s *Store) DeleteEphemeral(ctx context.Context, id int64, lastSeen time.Time) (bool, error) {
	deleted := false
	_, err := s.tx(ctx, func(tx *sql.Tx) error {
		var name string
		err := tx.QueryRowContext(ctx, "DELETE FROM nodes WHERE id = ? AND ephemeral = 1 AND last_seen = ? RETURNING name", id, millis(lastSeen)).Scan(&name)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("delete ephemeral node: %w", err)
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
