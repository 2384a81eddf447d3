package store

import (
	"context"
	"fmt"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// audit writes one audit entry with q, inside the change it records.
func audit(ctx context.Context, q conn, now time.Time, actor, action, target, detail string) error {
	_, err := q.exec(ctx, "INSERT INTO audit(time, actor, action, target, detail) VALUES(?, ?, ?, ?, ?)",
		now.UnixMilli(), actor, action, target, detail)
	if err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	return nil
}

// AddAudit writes one audit entry that goes with no change of the state.
func (s *DB) AddAudit(ctx context.Context, actor, action, target, detail string) error {
	return audit(ctx, s.q(), s.now(), actor, action, target, detail)
}

// Audit returns up to limit audit entries older than before (all when 0),
// newest first.
func (s *DB) Audit(ctx context.Context, before int64, limit int) ([]wire.AuditEntry, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := s.q().query(ctx, "SELECT id, time, actor, action, target, detail FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?", before, limit)
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
