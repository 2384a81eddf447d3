package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// ActivePolicy returns the newest policy; Version 0 means none is set.
func (s *DB) ActivePolicy(ctx context.Context) (wire.Policy, error) {
	return policy(ctx, s.q(), "ORDER BY version DESC LIMIT 1")
}

// PolicyVersion returns policy version v.
func (s *DB) PolicyVersion(ctx context.Context, v uint64) (wire.Policy, error) {
	p, err := policy(ctx, s.q(), "WHERE version = ?", v)
	if err == nil && p.Version == 0 {
		err = fmt.Errorf("%w: no policy version %d", ErrNotFound, v)
	}
	return p, err
}

// policy reads the one policy that where selects; Version 0: none.
func policy(ctx context.Context, q conn, where string, args ...any) (wire.Policy, error) {
	var p wire.Policy
	var created int64
	err := q.row(ctx, "SELECT version, text, author, created, comment FROM policies "+where, args...).
		Scan(&p.Version, &p.Text, &p.Author, &created, &p.Comment)
	if errors.Is(err, sql.ErrNoRows) {
		return wire.Policy{}, nil
	}
	if err != nil {
		return p, fmt.Errorf("read policy: %w", err)
	}
	p.Created = fromMillis(created)
	return p, nil
}

// SetPolicy stores text as the new active policy and returns its version.
// The caller has validated it.
func (s *DB) SetPolicy(ctx context.Context, actor, text, comment string) (wire.Policy, error) {
	now := s.now()
	var ver int64
	_, err := s.tx(ctx, func(tx conn) error {
		err := tx.row(ctx, "INSERT INTO policies(text, author, created, comment) VALUES(?, ?, ?, ?) RETURNING version", text, actor, now.UnixMilli(), comment).Scan(&ver)
		if err != nil {
			return fmt.Errorf("store policy: %w", err)
		}
		return audit(ctx, tx, now, actor, "policy.set", strconv.FormatInt(ver, 10), comment)
	})
	if err != nil {
		return wire.Policy{}, err
	}
	return wire.Policy{Version: uint64(ver), Text: text, Author: actor, Created: now.Truncate(time.Millisecond), Comment: comment}, nil
}

// PolicyHistory lists every policy version, newest first, without text.
func (s *DB) PolicyHistory(ctx context.Context) ([]wire.Policy, error) {
	rows, err := s.q().query(ctx, "SELECT version, author, created, comment FROM policies ORDER BY version DESC")
	if err != nil {
		return nil, fmt.Errorf("policy history: %w", err)
	}
	defer rows.Close()
	out := []wire.Policy{}
	for rows.Next() {
		var p wire.Policy
		var created int64
		if err := rows.Scan(&p.Version, &p.Author, &created, &p.Comment); err != nil {
			return nil, fmt.Errorf("policy history: %w", err)
		}
		p.Created = fromMillis(created)
		out = append(out, p)
	}
	return out, rows.Err()
}
