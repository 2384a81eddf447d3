package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// gossipKeyBytes is the size of a gossip key: AES-256.
const gossipKeyBytes = 32

// setting returns the value of setting key, "" if it is unset.
func setting(ctx context.Context, q conn, key string) (string, error) {
	var v string
	err := q.row(ctx, "SELECT value FROM settings WHERE key = ?", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read setting %s: %w", key, err)
	}
	return v, nil
}

// initPrefixes records the overlay prefixes of a new database, or checks
// p4 and p6 against those recorded; s.prefixes are the database's.
func (s *DB) initPrefixes(ctx context.Context, q conn, p4, p6 netip.Prefix) error {
	for i, p := range []netip.Prefix{p4, p6} {
		key := [2]string{"prefix4", "prefix6"}[i]
		stored, err := setting(ctx, q, key)
		if err != nil {
			return err
		}
		switch {
		case stored == "" && !p.IsValid():
			p = [2]netip.Prefix{DefaultPrefix4, DefaultPrefix6}[i]
			fallthrough
		case stored == "":
			if _, err := q.exec(ctx, "INSERT INTO settings(key, value) VALUES(?, ?)", key, p.String()); err != nil {
				return fmt.Errorf("store %s: %w", key, err)
			}
			s.prefixes[i] = p
		default:
			sp, err := netip.ParsePrefix(stored)
			if err != nil {
				return fmt.Errorf("stored %s %q: %w", key, stored, err)
			}
			if p.IsValid() && p != sp {
				return fmt.Errorf("overlay prefix %s differs from %s the database was created with; addresses cannot move", p, sp)
			}
			s.prefixes[i] = sp
		}
	}
	return nil
}

// Version returns the current state version.
func (s *DB) Version(ctx context.Context) (uint64, error) {
	return version(ctx, s.q())
}

func version(ctx context.Context, q conn) (uint64, error) {
	v, err := setting(ctx, q, "version")
	if err != nil || v == "" {
		return 0, err
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stored version %q: %w", v, err)
	}
	return n, nil
}

// newGossipKey returns a random gossip key in base64.
func newGossipKey() string {
	k := make([]byte, gossipKeyBytes)
	rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

// initGossipKey creates the first gossip key of a new database.
func (s *DB) initGossipKey(ctx context.Context, q conn) error {
	var n int
	if err := q.row(ctx, "SELECT count(*) FROM gossip_keys").Scan(&n); err != nil {
		return fmt.Errorf("read gossip keys: %w", err)
	}
	if n > 0 {
		return nil
	}
	_, err := q.exec(ctx, "INSERT INTO gossip_keys(key, created, is_primary) VALUES(?, ?, TRUE)", newGossipKey(), s.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("create gossip key: %w", err)
	}
	return nil
}

// gossipKeys returns the keyring, the primary key first, then the others
// newest first.
func gossipKeys(ctx context.Context, q conn) ([]string, error) {
	rows, err := q.query(ctx, "SELECT key FROM gossip_keys ORDER BY is_primary DESC, id DESC")
	if err != nil {
		return nil, fmt.Errorf("read gossip keys: %w", err)
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("read gossip keys: %w", err)
		}
		keys = append(keys, k)
	}
	return keys, rows.Err()
}

// RotateGossipKey makes a new primary gossip key and keeps the old ones
// for decryption until RetireGossipKeys.
func (s *DB) RotateGossipKey(ctx context.Context, actor string) (wire.GossipKeys, error) {
	_, err := s.tx(ctx, func(tx conn) error {
		now := s.now()
		if _, err := tx.exec(ctx, "UPDATE gossip_keys SET is_primary = FALSE"); err != nil {
			return fmt.Errorf("rotate gossip key: %w", err)
		}
		if _, err := tx.exec(ctx, "INSERT INTO gossip_keys(key, created, is_primary) VALUES(?, ?, TRUE)", newGossipKey(), now.UnixMilli()); err != nil {
			return fmt.Errorf("rotate gossip key: %w", err)
		}
		return audit(ctx, tx, now, actor, "gossip.rotate", "", "")
	})
	if err != nil {
		return wire.GossipKeys{}, err
	}
	return s.GossipKeyInfo(ctx)
}

// RetireGossipKeys removes every gossip key but the primary.
func (s *DB) RetireGossipKeys(ctx context.Context, actor string) (wire.GossipKeys, error) {
	_, err := s.tx(ctx, func(tx conn) error {
		if _, err := tx.exec(ctx, "DELETE FROM gossip_keys WHERE is_primary = FALSE"); err != nil {
			return fmt.Errorf("retire gossip keys: %w", err)
		}
		return audit(ctx, tx, s.now(), actor, "gossip.retire", "", "")
	})
	if err != nil {
		return wire.GossipKeys{}, err
	}
	return s.GossipKeyInfo(ctx)
}

// GossipKeyInfo describes the keyring.
func (s *DB) GossipKeyInfo(ctx context.Context) (wire.GossipKeys, error) {
	var info wire.GossipKeys
	var created int64
	err := s.q().row(ctx, "SELECT count(*), max(CASE WHEN is_primary = TRUE THEN created ELSE 0 END) FROM gossip_keys").Scan(&info.Count, &created)
	if err != nil {
		return info, fmt.Errorf("read gossip keys: %w", err)
	}
	info.PrimaryCreated = fromMillis(created).UTC().Truncate(time.Millisecond)
	return info, nil
}
