package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// ValidName reports why name is not a valid node name (a DNS label), or nil.
func ValidName(name string) error {
	if err := wire.CheckNodeName(name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Enroll admits a node with a join key: it checks the key, picks a name and
// the next free address, stores the node and its credential and counts the
// key's use, all in one transaction; or, for a proven retry, gives the node
// an earlier attempt enrolled a new credential (EnrollParams.Proven).
func (s *DB) Enroll(ctx context.Context, key credential.Secret, p EnrollParams) (wire.Node, credential.Secret, uint64, error) {
	if p.Name != "" {
		if err := ValidName(p.Name); err != nil {
			return wire.Node{}, credential.Secret{}, 0, err
		}
	}
	now := s.now()
	// Refuse a bad key with a plain read first: the transaction below
	// takes the write lock (SQLite's, or the version row's), and a flood
	// of bad keys must neither hold it nor wait for it. The check inside
	// the transaction is the one that counts (a one-time key may be used
	// meanwhile). A proven retry may come with a key used up or expired
	// since.
	if g, err := checkJoinKey(ctx, s.q(), key, now); err != nil {
		if c, _ := Code(err); !p.Proven || (c != wire.CodeKeyUsed && c != wire.CodeExpired) {
			return wire.Node{}, credential.Secret{}, 0, err
		}
	} else if err := g.admits(p.Relay != nil); err != nil {
		return wire.Node{}, credential.Secret{}, 0, err
	}
	var relay sql.NullString
	if p.Relay != nil {
		j, _ := json.Marshal(p.Relay)
		relay = sql.NullString{String: string(j), Valid: true}
	}
	cred := credential.NewSecret("nd")
	var id int64
	ver, err := s.tx(ctx, func(tx conn) error {
		if p.Proven {
			var err error
			if id, err = reissue(ctx, tx, key, p.PublicKey, cred, now); id != 0 || err != nil {
				return err
			}
		}
		g, err := useJoinKey(ctx, tx, key, now)
		if err != nil {
			return err
		}
		if err := g.admits(p.Relay != nil); err != nil {
			return err
		}
		var other string
		err = tx.row(ctx, "SELECT name FROM nodes WHERE public_key = ?", p.PublicKey).Scan(&other)
		if err == nil {
			return withCode(wire.CodeAlreadyEnrolled, fmt.Errorf("%w: public key already enrolled as node %q", ErrConflict, other))
		} else if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("check key: %w", err)
		}
		name, err := pickName(ctx, tx, p)
		if err != nil {
			return err
		}
		idx, err := s.allocate(ctx, tx)
		if err != nil {
			return err
		}
		var expires int64
		if g.nodeExpiry > 0 {
			expires = now.UnixMilli() + g.nodeExpiry
		}
		err = tx.row(ctx, `INSERT INTO nodes(name, public_key, host_index, cred_id, cred_hash, tags, join_key_id, created, expires, ephemeral, relay, changed)
			VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, `+curVersion+`) RETURNING id`, name, p.PublicKey, idx, cred.ID, cred.Hash(), g.tags, key.ID, now.UnixMilli(), expires, g.ephemeral, relay).Scan(&id)
		if err != nil {
			return fmt.Errorf("insert node: %w", err)
		}
		return audit(ctx, tx, now, key.ID, "node.enroll", name, enrollDetail(p.PublicKey, g))
	})
	if err != nil {
		return wire.Node{}, credential.Secret{}, 0, err
	}
	n, err := s.node(ctx, "id = ?", id)
	return n, cred, ver, err
}

// reissue gives cred to the node of publicKey, and returns its id, if it
// is the work of an earlier attempt of a proven enrollment: a node that
// join key key enrolled, that has never opened a netmap stream (none has
// set its last_seen), while key is still known and not revoked. It returns
// 0 otherwise, for the enrollment to go on as a new one.
func reissue(ctx context.Context, tx conn, key credential.Secret, publicKey string, cred credential.Secret, now time.Time) (int64, error) {
	var hash string
	var revoked int64
	err := tx.row(ctx, "SELECT hash, revoked FROM join_keys WHERE id = ?", key.ID).Scan(&hash, &revoked)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (!key.Matches(hash) || revoked != 0)) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read join key: %w", err)
	}
	var id int64
	var name string
	err = tx.row(ctx, "SELECT id, name FROM nodes WHERE public_key = ? AND join_key_id = ? AND last_seen = 0", publicKey, key.ID).Scan(&id, &name)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("check key: %w", err)
	}
	if _, err := tx.exec(ctx, "UPDATE nodes SET cred_id = ?, cred_hash = ? WHERE id = ?", cred.ID, cred.Hash(), id); err != nil {
		return 0, fmt.Errorf("replace credential: %w", err)
	}
	return id, audit(ctx, tx, now, key.ID, "node.enroll.retry", name, "key "+publicKey)
}

// sanitizeName makes a node name from host name h.
func sanitizeName(h string) string {
	h, _, _ = strings.Cut(strings.ToLower(h), ".")
	b := []byte(h)
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			b[i] = '-'
		}
	}
	n := string(b)
	if len(n) > 50 {
		n = n[:50]
	}
	n = strings.Trim(n, "-")
	if n == "" {
		n = "node"
	}
	return n
}

// pickName returns the name a new node gets: the one asked for if free,
// else one made from its host name, with -2, -3, … until free.
func pickName(ctx context.Context, tx conn, p EnrollParams) (string, error) {
	taken := func(n string) (bool, error) {
		var one int
		err := tx.row(ctx, "SELECT 1 FROM nodes WHERE name = ?", n).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return err == nil, err
	}
	if p.Name != "" {
		t, err := taken(p.Name)
		if err != nil {
			return "", fmt.Errorf("check name: %w", err)
		}
		if t {
			return "", fmt.Errorf("%w: node name %q is taken", ErrConflict, p.Name)
		}
		return p.Name, nil
	}
	base := sanitizeName(p.Hostname)
	for i := 1; i < 10000; i++ {
		n := base
		if i > 1 {
			n = base + "-" + strconv.Itoa(i)
		}
		t, err := taken(n)
		if err != nil {
			return "", fmt.Errorf("check name: %w", err)
		}
		if !t {
			return n, nil
		}
	}
	return "", fmt.Errorf("%w: no free name for host %q", ErrConflict, p.Hostname)
}

// allocate returns the next free host index. Indexes are handed out in
// increasing order and wrap only when the prefix is exhausted, so a deleted
// node's address is not reused while peers may still remember it.
func (s *DB) allocate(ctx context.Context, tx conn) (int64, error) {
	// Both prefixes hold the address at the same index: the smaller bounds.
	size := min(hostCount(s.prefixes[0]), hostCount(s.prefixes[1]))
	next := int64(1)
	v, err := setting(ctx, tx, "ipam_next")
	if err != nil {
		return 0, fmt.Errorf("read ipam: %w", err)
	}
	if v != "" {
		next, _ = strconv.ParseInt(v, 10, 64)
	}
	var used int64
	if err := tx.row(ctx, "SELECT COUNT(*) FROM nodes").Scan(&used); err != nil {
		return 0, fmt.Errorf("count nodes: %w", err)
	}
	if used >= size-2 {
		return 0, fmt.Errorf("%w: overlay prefixes %s and %s are full", ErrConflict, s.prefixes[0], s.prefixes[1])
	}
	for {
		if next < 1 || next >= size-1 { // skip the network and broadcast addresses
			next = 1
		}
		var one int
		err := tx.row(ctx, "SELECT 1 FROM nodes WHERE host_index = ?", next).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("check address: %w", err)
		}
		next++
	}
	_, err = tx.exec(ctx, `INSERT INTO settings(key, value) VALUES('ipam_next', ?)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value`, strconv.FormatInt(next+1, 10))
	if err != nil {
		return 0, fmt.Errorf("write ipam: %w", err)
	}
	return next, nil
}

// hostCount is the number of addresses in p, capped to fit an int64.
func hostCount(p netip.Prefix) int64 {
	bits := p.Addr().BitLen() - p.Bits()
	if bits >= 62 {
		return 1 << 62
	}
	return 1 << bits
}

// hostAddr returns the address at index idx inside p.
func hostAddr(p netip.Prefix, idx int64) (netip.Addr, error) {
	if idx < 0 || idx >= hostCount(p) {
		return netip.Addr{}, fmt.Errorf("host index %d outside %s", idx, p)
	}
	base := new(big.Int).SetBytes(p.Masked().Addr().AsSlice())
	base.Add(base, big.NewInt(idx))
	b := base.FillBytes(make([]byte, p.Addr().BitLen()/8))
	a, _ := netip.AddrFromSlice(b)
	return a, nil
}
