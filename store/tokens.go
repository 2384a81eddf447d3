package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// CreateAdminToken makes an admin token; the returned secret is not stored.
func (s *DB) CreateAdminToken(ctx context.Context, actor, comment string) (wire.AdminToken, credential.Secret, error) {
	if len(comment) > 200 {
		return wire.AdminToken{}, credential.Secret{}, fmt.Errorf("%w: comment longer than 200 bytes", ErrInvalid)
	}
	now := s.now()
	sec := credential.NewSecret("ad")
	_, err := s.tx(ctx, func(tx conn) error {
		_, err := tx.exec(ctx, "INSERT INTO admin_tokens(id, hash, created, comment) VALUES(?, ?, ?, ?)", sec.ID, sec.Hash(), now.UnixMilli(), comment)
		if err != nil {
			return fmt.Errorf("insert admin token: %w", err)
		}
		return audit(ctx, tx, now, actor, "admintoken.create", sec.ID, comment)
	})
	if err != nil {
		return wire.AdminToken{}, credential.Secret{}, err
	}
	return wire.AdminToken{ID: sec.ID, Comment: comment, Created: now.UTC().Truncate(time.Millisecond)}, sec, nil
}

// CheckAdminToken returns nil when sec is a valid, unrevoked admin token.
func (s *DB) CheckAdminToken(ctx context.Context, sec credential.Secret) error {
	var hash string
	var revoked int64
	err := s.q().row(ctx, "SELECT hash, revoked FROM admin_tokens WHERE id = ?", sec.ID).Scan(&hash, &revoked)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (!sec.Matches(hash) || revoked != 0)) {
		return fmt.Errorf("%w: invalid or revoked admin token", ErrDenied)
	}
	if err != nil {
		return fmt.Errorf("read admin token: %w", err)
	}
	return nil
}

// AdminTokens lists the admin tokens, newest first.
func (s *DB) AdminTokens(ctx context.Context) ([]wire.AdminToken, error) {
	rows, err := s.q().query(ctx, "SELECT id, comment, created, revoked FROM admin_tokens ORDER BY created DESC, id")
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

// RevokeAdminToken revokes the admin token id and ends the web UI
// sessions opened with it. The last valid token cannot be revoked: nobody
// could administer the mesh any more.
func (s *DB) RevokeAdminToken(ctx context.Context, actor, id string) error {
	_, err := s.tx(ctx, func(tx conn) error {
		var revoked int64
		err := tx.row(ctx, "SELECT revoked FROM admin_tokens WHERE id = ?", id).Scan(&revoked)
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
		if err := tx.row(ctx, "SELECT count(*) FROM admin_tokens WHERE revoked = 0").Scan(&valid); err != nil {
			return fmt.Errorf("count admin tokens: %w", err)
		}
		if valid <= 1 {
			return fmt.Errorf("%w: %q is the last valid admin token; create another first", ErrConflict, id)
		}
		now := s.now()
		if _, err := tx.exec(ctx, "UPDATE admin_tokens SET revoked = ? WHERE id = ?", now.UnixMilli(), id); err != nil {
			return fmt.Errorf("revoke admin token: %w", err)
		}
		if _, err := tx.exec(ctx, "DELETE FROM ui_sessions WHERE token_id = ?", id); err != nil {
			return fmt.Errorf("end the token's web UI sessions: %w", err)
		}
		return audit(ctx, tx, now, actor, "admintoken.revoke", id, "")
	})
	return err
}
