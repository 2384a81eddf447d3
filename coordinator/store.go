package coordinator

import (
	"context"
	"database/sql"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Errors a caller of the store branches on. They are wrapped with detail.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrDenied   = errors.New("denied")
	ErrInvalid  = errors.New("invalid")
	// ErrForbidden: the caller is known but may not do this (403), such
	// as a relay join key enrolling an agent.
	ErrForbidden = errors.New("forbidden")
)

//go:embed schema.sql
var schemaV1 string

//go:embed schema2.sql
var schemaV2 string

//go:embed schema3.sql
var schemaV3 string

//go:embed schema4.sql
var schemaV4 string

//go:embed schema5.sql
var schemaV5 string

//go:embed schema6.sql
var schemaV6 string

// migrations are applied in order; PRAGMA user_version counts those done.
var migrations = []string{schemaV1, schemaV2, schemaV3, schemaV4, schemaV5, schemaV6}

// Store keeps the coordinator's state in a SQLite database. Every change is
// one transaction; a crash leaves either all of it or none.
type Store struct {
	db       *sql.DB
	prefixes [2]netip.Prefix // IPv4 and IPv6 overlay prefixes, fixed at creation
	now      func() time.Time
	writes   atomic.Uint64 // counts writes, so listings know when to reload
	// committed is the newest state version a transaction of this Store
	// committed: a snapshot at least as new needs no reload.
	committed atomic.Uint64

	listMu sync.Mutex
	list   *listing // guarded by listMu; nil until the first listing
}

// OpenStore opens (creating if needed) the database at path. prefix4 and
// prefix6 are the overlay prefixes; they are recorded on creation and a
// database created with other prefixes is refused. A zero prefix means
// "whatever the database has, or the default".
func OpenStore(path string, prefix4, prefix6 netip.Prefix) (*Store, error) {
	// The database holds the gossip keyring: it and SQLite's -wal and -shm
	// files (made with the database's mode) are 0600 whatever the umask.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	f.Close()
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// One connection: SQLite serialises writers anyway, and this keeps
	// every transaction's view simple.
	db.SetMaxOpenConns(1)
	s := &Store{db: db, now: time.Now}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	if err := s.initPrefixes(prefix4, prefix6); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	if err := s.initGossipKey(); err != nil {
		db.Close()
		return nil, fmt.Errorf("database %s: %w", path, err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			db.Close()
			return nil, fmt.Errorf("database: %w", err)
		}
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) migrate() error {
	var v int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this binary knows (%d)", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		tx, err := s.db.Begin()
		if err != nil {
			return err
		}
		if _, err := tx.Exec(migrations[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
		if _, err := tx.Exec("PRAGMA user_version = " + strconv.Itoa(v+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %d: %w", v+1, err)
		}
	}
	return nil
}

func (s *Store) initPrefixes(p4, p6 netip.Prefix) error {
	for i, p := range []netip.Prefix{p4, p6} {
		key := [2]string{"prefix4", "prefix6"}[i]
		stored, err := s.setting(key)
		if err != nil {
			return err
		}
		switch {
		case stored == "" && !p.IsValid():
			p = [2]netip.Prefix{DefaultPrefix4, DefaultPrefix6}[i]
			fallthrough
		case stored == "":
			if _, err := s.db.Exec("INSERT INTO settings(key, value) VALUES(?, ?)", key, p.String()); err != nil {
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

func (s *Store) setting(key string) (string, error) {
	var v string
	err := s.db.QueryRow("SELECT value FROM settings WHERE key = ?", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read setting %s: %w", key, err)
	}
	return v, nil
}

// Prefixes returns the IPv4 and IPv6 overlay prefixes.
func (s *Store) Prefixes() []netip.Prefix { return s.prefixes[:] }

// CheckIntegrity runs SQLite's integrity check.
func (s *Store) CheckIntegrity(ctx context.Context) error {
	var res string
	if err := s.db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&res); err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	if res != "ok" {
		return fmt.Errorf("integrity check: %s", res)
	}
	return nil
}

// tx runs fn in one immediate transaction that also bumps the state
// version; it returns the new version.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) (uint64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return 0, err
	}
	var v uint64
	err = tx.QueryRowContext(ctx, `INSERT INTO settings(key, value) VALUES('version', '1')
		ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING CAST(value AS INTEGER)`).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("bump version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	s.wrote()
	for c := s.committed.Load(); c < v && !s.committed.CompareAndSwap(c, v); c = s.committed.Load() {
	}
	return v, nil
}

func audit(ctx context.Context, tx *sql.Tx, now time.Time, actor, action, target, detail string) error {
	_, err := tx.ExecContext(ctx, "INSERT INTO audit(time, actor, action, target, detail) VALUES(?, ?, ?, ?, ?)",
		now.UnixMilli(), actor, action, target, detail)
	if err != nil {
		return fmt.Errorf("write audit log: %w", err)
	}
	return nil
}

// Version returns the current state version.
func (s *Store) Version(ctx context.Context) (uint64, error) {
	v, err := s.setting("version")
	if err != nil || v == "" {
		return 0, err
	}
	return strconv.ParseUint(v, 10, 64)
}

const nodeColumns = "id, name, public_key, host_index, tags, endpoints, created, last_seen, services, expires, version, ephemeral, relay"

func (s *Store) scanNode(sc interface{ Scan(...any) error }) (wire.Node, error) {
	var n wire.Node
	var idx int64
	var tags, eps, svcs string
	var created, seen, expires int64
	var relay sql.NullString
	if err := sc.Scan(&n.ID, &n.Name, &n.PublicKey, &idx, &tags, &eps, &created, &seen, &svcs, &expires, &n.Version, &n.Ephemeral, &relay); err != nil {
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
	return n, nil
}

// State is everything netmaps are built from, at one state version.
type State struct {
	Nodes      []wire.Node // ordered by id
	Policy     wire.Policy // the active policy; Version 0: none
	GossipKeys []string    // base64; the primary first
	Version    uint64
	// NextExpiry is the soonest expiry still to come. Zero: none.
	NextExpiry time.Time
}

// State reads the current State in one transaction. The same read
// refreshes the admin listing, so a listing right after a change (which
// publishes a new state) costs nothing more.
func (s *Store) State(ctx context.Context) (State, error) {
	var st State
	gen := s.writes.Load()
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return st, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	all, err := s.scanAdminNodes(ctx, tx)
	if err != nil {
		return st, err
	}
	now := s.now()
	for _, n := range all {
		if !n.Expires.IsZero() {
			if !n.Expires.After(now) {
				continue
			}
			if st.NextExpiry.IsZero() || n.Expires.Before(st.NextExpiry) {
				st.NextExpiry = n.Expires
			}
		}
		// For admins only; last seen also changes without a new version.
		n.Version, n.Expires, n.Ephemeral, n.LastSeen = "", time.Time{}, false, time.Time{}
		n.Services = definitions(n.Services) // health travels by gossip
		st.Nodes = append(st.Nodes, n)
	}
	var created int64
	pol := &st.Policy
	err = tx.QueryRowContext(ctx, "SELECT version, text, author, created, comment FROM policies ORDER BY version DESC LIMIT 1").
		Scan(&pol.Version, &pol.Text, &pol.Author, &created, &pol.Comment)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("read policy: %w", err)
	}
	pol.Created = fromMillis(created)
	if st.GossipKeys, err = gossipKeysTx(ctx, tx); err != nil {
		return st, err
	}
	var v string
	err = tx.QueryRowContext(ctx, "SELECT value FROM settings WHERE key = 'version'").Scan(&v)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("read version: %w", err)
	}
	st.Version, _ = strconv.ParseUint(v, 10, 64)
	s.setListing(gen, all)
	return st, nil
}

// EnrollParams are what an enrolling agent asks for.
type EnrollParams struct {
	PublicKey string // WireGuard public key, base64; required
	Name      string // requested name; taken names are refused
	Hostname  string // used for a name when Name is empty; made unique
	// Relay enrolls a relay so described (checked by the caller); only a
	// relay join key admits one, and it admits nothing else. Nil: an agent.
	Relay *wire.Relay
}

// ValidName reports why name is not a valid node name (a DNS label), or nil.
func ValidName(name string) error {
	if err := wire.CheckNodeName(name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

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

// Enroll admits a node with a join key: it checks the key, picks a name and
// the next free address, stores the node and its credential and counts the
// key's use, all in one transaction.
func (s *Store) Enroll(ctx context.Context, key credential.Secret, p EnrollParams) (wire.Node, credential.Secret, uint64, error) {
	if p.Name != "" {
		if err := ValidName(p.Name); err != nil {
			return wire.Node{}, credential.Secret{}, 0, err
		}
	}
	now := s.now()
	// Refuse a bad key with a plain read first: the transaction below is
	// BEGIN IMMEDIATE, which takes SQLite's write lock, and a flood of bad
	// keys must neither hold it nor wait for it. The check inside the
	// transaction is the one that counts (a one-time key may be used
	// meanwhile).
	if g, err := checkJoinKey(ctx, s.db, key, now); err != nil {
		return wire.Node{}, credential.Secret{}, 0, err
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
	ver, err := s.tx(ctx, func(tx *sql.Tx) error {
		g, err := useJoinKeyTx(ctx, tx, key, now)
		if err != nil {
			return err
		}
		if err := g.admits(p.Relay != nil); err != nil {
			return err
		}
		var other string
		err = tx.QueryRowContext(ctx, "SELECT name FROM nodes WHERE public_key = ?", p.PublicKey).Scan(&other)
		if err == nil {
			return fmt.Errorf("%w: public key already enrolled as node %q", ErrConflict, other)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("check key: %w", err)
		}
		name, err := pickNameTx(ctx, tx, p)
		if err != nil {
			return err
		}
		idx, err := s.allocateTx(ctx, tx)
		if err != nil {
			return err
		}
		var expires int64
		if g.nodeExpiry > 0 {
			expires = now.UnixMilli() + g.nodeExpiry
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO nodes(name, public_key, host_index, cred_id, cred_hash, tags, join_key_id, created, expires, ephemeral, relay)
			VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, name, p.PublicKey, idx, cred.ID, cred.Hash(), g.tags, key.ID, now.UnixMilli(), expires, g.ephemeral, relay)
		if err != nil {
			return fmt.Errorf("insert node: %w", err)
		}
		if id, err = res.LastInsertId(); err != nil {
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

// rowQuerier is what checkJoinKey reads with: the database or a transaction.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
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
func checkJoinKey(ctx context.Context, q rowQuerier, key credential.Secret, now time.Time) (g keyGrant, err error) {
	var hash string
	var reusable bool
	var expires, revoked int64
	var uses int
	err = q.QueryRowContext(ctx, "SELECT hash, reusable, tags, expires, revoked, uses, node_expiry, ephemeral, relay FROM join_keys WHERE id = ?", key.ID).
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

// useJoinKeyTx checks join key key inside tx and counts its use.
func useJoinKeyTx(ctx context.Context, tx *sql.Tx, key credential.Secret, now time.Time) (keyGrant, error) {
	g, err := checkJoinKey(ctx, tx, key, now)
	if err != nil {
		return keyGrant{}, err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE join_keys SET uses = uses + 1 WHERE id = ?", key.ID); err != nil {
		return keyGrant{}, fmt.Errorf("count join key use: %w", err)
	}
	return g, nil
}

func pickNameTx(ctx context.Context, tx *sql.Tx, p EnrollParams) (string, error) {
	taken := func(n string) (bool, error) {
		var one int
		err := tx.QueryRowContext(ctx, "SELECT 1 FROM nodes WHERE name = ?", n).Scan(&one)
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

// allocateTx returns the next free host index. Indexes are handed out in
// increasing order and wrap only when the prefix is exhausted, so a deleted
// node's address is not reused while peers may still remember it.
func (s *Store) allocateTx(ctx context.Context, tx *sql.Tx) (int64, error) {
	// Both prefixes hold the address at the same index: the smaller bounds.
	size := min(hostCount(s.prefixes[0]), hostCount(s.prefixes[1]))
	next := int64(1)
	var v string
	err := tx.QueryRowContext(ctx, "SELECT value FROM settings WHERE key = 'ipam_next'").Scan(&v)
	if err == nil {
		next, _ = strconv.ParseInt(v, 10, 64)
	} else if !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("read ipam: %w", err)
	}
	var used int64
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM nodes").Scan(&used); err != nil {
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
		err := tx.QueryRowContext(ctx, "SELECT 1 FROM nodes WHERE host_index = ?", next).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("check address: %w", err)
		}
		next++
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO settings(key, value) VALUES('ipam_next', ?)
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

func (s *Store) node(ctx context.Context, where string, arg any) (wire.Node, error) {
	row := s.db.QueryRowContext(ctx, "SELECT "+nodeColumns+" FROM nodes WHERE "+where, arg)
	n, err := s.scanNode(row)
	if errors.Is(err, sql.ErrNoRows) {
		return n, fmt.Errorf("%w: no such node", ErrNotFound)
	}
	if err != nil {
		return n, fmt.Errorf("read node: %w", err)
	}
	return n, nil
}

// NodeByCredential returns the node that cred authenticates.
func (s *Store) NodeByCredential(ctx context.Context, cred credential.Secret) (wire.Node, error) {
	var id int64
	var hash string
	var expires int64
	err := s.db.QueryRowContext(ctx, "SELECT id, cred_hash, expires FROM nodes WHERE cred_id = ?", cred.ID).Scan(&id, &hash, &expires)
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
func (s *Store) SetEndpoints(ctx context.Context, id int64, eps []string) (uint64, error) {
	j, _ := json.Marshal(eps)
	if eps == nil {
		j = []byte("[]")
	}
	var cur string
	if err := s.db.QueryRowContext(ctx, "SELECT endpoints FROM nodes WHERE id = ?", id).Scan(&cur); err != nil {
		return 0, fmt.Errorf("read endpoints: %w", err)
	}
	if cur == string(j) {
		return 0, nil
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "UPDATE nodes SET endpoints = ? WHERE id = ?", string(j), id)
		return err
	})
}

// Touch records that node id was seen at t. It does not bump the version.
func (s *Store) Touch(ctx context.Context, id int64, t time.Time) error {
	_, err := s.db.ExecContext(ctx, "UPDATE nodes SET last_seen = ? WHERE id = ?", t.UnixMilli(), id)
	if err != nil {
		s.wrote()
		return fmt.Errorf("record last seen: %w", err)
	}
	s.patch(id, func(n *wire.Node) { n.LastSeen = fromMillis(t.UnixMilli()) })
	return nil
}

// DeleteNode removes the node named name; its credential stops working.
func (s *Store) DeleteNode(ctx context.Context, actor, name string) (uint64, error) {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM nodes WHERE name = ?", name)
		if err != nil {
			return fmt.Errorf("delete node: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: no node named %q", ErrNotFound, name)
		}
		return audit(ctx, tx, s.now(), actor, "node.delete", name, "")
	})
}

// CreateJoinKey makes a join key; the returned secret is not stored.
func (s *Store) CreateJoinKey(ctx context.Context, actor string, req wire.CreateJoinKeyRequest) (wire.JoinKey, credential.Secret, error) {
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
	_, err := s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO join_keys(id, hash, reusable, tags, created, expires, node_expiry, ephemeral, relay) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?)",
			sec.ID, sec.Hash(), req.Reusable, string(tags), now.UnixMilli(), millis(k.Expires), time.Duration(k.NodeExpiry).Milliseconds(), k.Ephemeral, k.Relay)
		if err != nil {
			return fmt.Errorf("insert join key: %w", err)
		}
		return audit(ctx, tx, now, actor, "joinkey.create", sec.ID, joinKeyDetail(k))
	})
	return k, sec, err
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

// JoinKeys lists every join key, newest first.
func (s *Store) JoinKeys(ctx context.Context) ([]wire.JoinKey, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, reusable, tags, created, expires, revoked, uses, node_expiry, ephemeral, relay FROM join_keys ORDER BY created DESC, id")
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
func (s *Store) RevokeJoinKey(ctx context.Context, actor, id string) error {
	now := s.now()
	_, err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE join_keys SET revoked = ? WHERE id = ? AND revoked = 0", now.UnixMilli(), id)
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

// CreateAdminToken makes an admin token; the returned secret is not stored.
func (s *Store) CreateAdminToken(ctx context.Context, actor, comment string) (credential.Secret, error) {
	if len(comment) > 200 {
		return credential.Secret{}, fmt.Errorf("%w: comment longer than 200 bytes", ErrInvalid)
	}
	now := s.now()
	sec := credential.NewSecret("ad")
	_, err := s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO admin_tokens(id, hash, created, comment) VALUES(?, ?, ?, ?)", sec.ID, sec.Hash(), now.UnixMilli(), comment)
		if err != nil {
			return fmt.Errorf("insert admin token: %w", err)
		}
		return audit(ctx, tx, now, actor, "admintoken.create", sec.ID, comment)
	})
	return sec, err
}

// CheckAdminToken returns nil when sec is a valid, unrevoked admin token.
func (s *Store) CheckAdminToken(ctx context.Context, sec credential.Secret) error {
	var hash string
	var revoked int64
	err := s.db.QueryRowContext(ctx, "SELECT hash, revoked FROM admin_tokens WHERE id = ?", sec.ID).Scan(&hash, &revoked)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && (!sec.Matches(hash) || revoked != 0)) {
		return fmt.Errorf("%w: invalid or revoked admin token", ErrDenied)
	}
	if err != nil {
		return fmt.Errorf("read admin token: %w", err)
	}
	return nil
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// SetTags replaces the tags of the node named name.
func (s *Store) SetTags(ctx context.Context, actor, name string, tags []string) (uint64, error) {
	for _, t := range tags {
		if err := wire.CheckTag(t); err != nil {
			return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	j, _ := json.Marshal(tags)
	if tags == nil {
		j = []byte("[]")
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE nodes SET tags = ? WHERE name = ?", string(j), name)
		if err != nil {
			return fmt.Errorf("set tags: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: no node named %q", ErrNotFound, name)
		}
		return audit(ctx, tx, s.now(), actor, "node.tag", name, string(j))
	})
}

// ActivePolicy returns the newest policy; Version 0 means none is set.
func (s *Store) ActivePolicy(ctx context.Context) (wire.Policy, error) {
	return s.policy(ctx, "ORDER BY version DESC LIMIT 1")
}

// PolicyVersion returns policy version v.
func (s *Store) PolicyVersion(ctx context.Context, v uint64) (wire.Policy, error) {
	p, err := s.policy(ctx, "WHERE version = ?", v)
	if err == nil && p.Version == 0 {
		err = fmt.Errorf("%w: no policy version %d", ErrNotFound, v)
	}
	return p, err
}

func (s *Store) policy(ctx context.Context, where string, args ...any) (wire.Policy, error) {
	var p wire.Policy
	var created int64
	err := s.db.QueryRowContext(ctx, "SELECT version, text, author, created, comment FROM policies "+where, args...).
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
func (s *Store) SetPolicy(ctx context.Context, actor, text, comment string) (wire.Policy, error) {
	now := s.now()
	var ver int64
	_, err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "INSERT INTO policies(text, author, created, comment) VALUES(?, ?, ?, ?)", text, actor, now.UnixMilli(), comment)
		if err != nil {
			return fmt.Errorf("store policy: %w", err)
		}
		if ver, err = res.LastInsertId(); err != nil {
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
func (s *Store) PolicyHistory(ctx context.Context) ([]wire.Policy, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT version, author, created, comment FROM policies ORDER BY version DESC")
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
