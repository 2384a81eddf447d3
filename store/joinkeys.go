package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// CreateJoinKey makes a join key; the returned secret is not stored.
func (s *DB) CreateJoinKey(ctx context.Context, actor string, req wire.CreateJoinKeyRequest) (wire.JoinKey, credential.Secret, error) {
	for _, t := range req.Tags {
		if err := wire.CheckTag(t); err != nil {
			return wire.JoinKey{}, credential.Secret{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	now := s.now()
	sec := credential.NewSecret("jk")
	if req.Expiry < 0 || req.NodeExpiry < 0 {
		return wire.JoinKey{}, credential.Secret{}, fmt.Errorf("%w: expiry and node_expiry must not be negative", ErrInvalid)
	}
	if req.Relay && (len(req.Tags) > 0 || req.NodeExpiry != 0 || req.Ephemeral) {
		return wire.JoinKey{}, credential.Secret{}, fmt.Errorf("%w: a relay key (relay) takes no tags, node_expiry or ephemeral: relays are in no policy and do not expire", ErrInvalid)
	}
	if req.NodeExpiry > 0 && time.Duration(req.NodeExpiry) < time.Millisecond {
		return wire.JoinKey{}, credential.Secret{}, fmt.Errorf("%w: node_expiry %s is shorter than a millisecond", ErrInvalid, time.Duration(req.NodeExpiry))
	}
	k := wire.JoinKey{ID: sec.ID, Reusable: req.Reusable, Tags: req.Tags, Created: now.Truncate(time.Millisecond),
		NodeExpiry: wire.Duration(time.Duration(req.NodeExpiry).Truncate(time.Millisecond)), Ephemeral: req.Ephemeral, Relay: req.Relay}
	if req.Expiry > 0 {
		k.Expires = now.Add(time.Duration(req.Expiry)).Truncate(time.Millisecond)
	}
	tags, _ := json.Marshal(req.Tags)
	if req.Tags == nil {
		tags = []byte("[]")
	}
	_, err := s.tx(ctx, func(tx conn) error {
		_, err := tx.exec(ctx, "INSERT INTO join_keys(id, hash, reusable, tags, created, expires, node_expiry, ephemeral, relay) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
			sec.ID, sec.Hash(), req.Reusable, string(tags), now.UnixMilli(), millis(k.Expires), time.Duration(k.NodeExpiry).Milliseconds(), k.Ephemeral, k.Relay)
		if err != nil {
			return fmt.Errorf("insert join key: %w", err)
		}
		return audit(ctx, tx, now, actor, "joinkey.create", sec.ID, joinKeyDetail(k))
	})
	return k, sec, err
}

// JoinKeys lists every join key, newest first.
func (s *DB) JoinKeys(ctx context.Context) ([]wire.JoinKey, error) {
	rows, err := s.q().query(ctx, "SELECT id, reusable, tags, created, expires, revoked, uses, node_expiry, ephemeral, relay FROM join_keys ORDER BY created DESC, id")
	if err != nil {
		return nil, fmt.Errorf("list join keys: %w", err)
	}
	defer rows.Close()
	keys := []wire.JoinKey{}
	for rows.Next() {
		var k wire.JoinKey
		var tags string
		var c, e, r, ne int64
		if err := rows.Scan(&k.ID, &k.Reusable, &tags, &c, &e, &r, &k.Uses, &ne, &k.Ephemeral, &k.Relay); err != nil {
			return nil, fmt.Errorf("list join keys: %w", err)
		}
		if err := json.Unmarshal([]byte(tags), &k.Tags); err != nil {
			return nil, fmt.Errorf("join key %s: bad stored tags: %w", k.ID, err)
		}
		k.Created, k.Expires, k.Revoked = fromMillis(c), fromMillis(e), fromMillis(r)
		k.NodeExpiry = wire.Duration(time.Duration(ne) * time.Millisecond)
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// RevokeJoinKey stops the join key id from admitting nodes.
func (s *DB) RevokeJoinKey(ctx context.Context, actor, id string) error {
	now := s.now()
	_, err := s.tx(ctx, func(tx conn) error {
		res, err := tx.exec(ctx, "UPDATE join_keys SET revoked = ? WHERE id = ? AND revoked = 0", now.UnixMilli(), id)
		if err != nil {
			return fmt.Errorf("revoke join key: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: no unrevoked join key %q", ErrNotFound, id)
		}
		return audit(ctx, tx, now, actor, "joinkey.revoke", id, "")
	})
	return err
}

// keyGrant is what a join key gives the nodes it admits.
type keyGrant struct {
	tags       string // JSON []string
	nodeExpiry int64  // ms after enrollment; 0: none
	ephemeral  bool
	relay      bool // a relay key: it enrolls relays only
}

// admits refuses a relay enrolling with an agent key and an agent with a
// relay key; the key's use is not counted.
func (g keyGrant) admits(relay bool) error {
	switch {
	case g.relay && !relay:
		return fmt.Errorf("%w: this join key enrolls relays only (made with keys create --relay); run wiremesh relay with it, or enroll the agent with a key made without --relay", ErrForbidden)
	case !g.relay && relay:
		return fmt.Errorf("%w: this join key enrolls agents only; enroll a relay with a key made with keys create --relay", ErrForbidden)
	}
	return nil
}

// checkJoinKey returns what join key key grants, or ErrDenied when it is
// unknown, wrong, revoked, expired or a used one-time key. It only reads.
func checkJoinKey(ctx context.Context, q conn, key credential.Secret, now time.Time) (g keyGrant, err error) {
	var hash string
	var reusable bool
	var expires, revoked int64
	var uses int
	err = q.row(ctx, "SELECT hash, reusable, tags, expires, revoked, uses, node_expiry, ephemeral, relay FROM join_keys WHERE id = ?", key.ID).
		Scan(&hash, &reusable, &g.tags, &expires, &revoked, &uses, &g.nodeExpiry, &g.ephemeral, &g.relay)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !key.Matches(hash)) {
		return keyGrant{}, fmt.Errorf("%w: unknown join key", ErrDenied)
	}
	if err != nil {
		return keyGrant{}, fmt.Errorf("read join key: %w", err)
	}
	switch {
	case revoked != 0:
		return keyGrant{}, withCode(wire.CodeRevoked, fmt.Errorf("%w: join key %s was revoked", ErrDenied, key.ID))
	case expires != 0 && now.UnixMilli() >= expires:
		return keyGrant{}, withCode(wire.CodeExpired, fmt.Errorf("%w: join key %s expired at %s", ErrDenied, key.ID, fromMillis(expires).UTC().Format(time.RFC3339)))
	case !reusable && uses > 0:
		return keyGrant{}, withCode(wire.CodeKeyUsed, fmt.Errorf("%w: join key %s is a one-time key and was already used", ErrDenied, key.ID))
	}
	return g, nil
}

// useJoinKey checks join key key inside tx and counts its use.
func useJoinKey(ctx context.Context, tx conn, key credential.Secret, now time.Time) (keyGrant, error) {
	g, err := checkJoinKey(ctx, tx, key, now)
	if err != nil {
		return keyGrant{}, err
	}
	if _, err := tx.exec(ctx, "UPDATE join_keys SET uses = uses + 1 WHERE id = ?", key.ID); err != nil {
		return keyGrant{}, fmt.Errorf("count join key use: %w", err)
	}
	return g, nil
}

// joinKeyDetail describes a new join key for the audit log: "reusable;
// tags tag:web; expires 2026-12-04T10:00:00Z; node expiry 720h0m0s;
// ephemeral".
func joinKeyDetail(k wire.JoinKey) string {
	parts := []string{"one-time"}
	if k.Reusable {
		parts[0] = "reusable"
	}
	if len(k.Tags) > 0 {
		parts = append(parts, "tags "+strings.Join(k.Tags, ","))
	}
	if !k.Expires.IsZero() {
		parts = append(parts, "expires "+k.Expires.UTC().Format(time.RFC3339))
	}
	if k.NodeExpiry > 0 {
		parts = append(parts, "node expiry "+time.Duration(k.NodeExpiry).String())
	}
	if k.Ephemeral {
		parts = append(parts, "ephemeral")
	}
	if k.Relay {
		parts = append(parts, "relay")
	}
	return strings.Join(parts, "; ")
}

// enrollDetail describes an enrollment for the audit log: the node's key
// and what its join key gave it.
func enrollDetail(pub string, g keyGrant) string {
	parts := []string{"key " + pub}
	var tags []string
	if json.Unmarshal([]byte(g.tags), &tags) == nil && len(tags) > 0 {
		parts = append(parts, "tags "+strings.Join(tags, ","))
	}
	if g.nodeExpiry > 0 {
		parts = append(parts, "expires in "+(time.Duration(g.nodeExpiry)*time.Millisecond).String())
	}
	if g.ephemeral {
		parts = append(parts, "ephemeral")
	}
	if g.relay {
		parts = append(parts, "relay")
	}
	return strings.Join(parts, "; ")
}
