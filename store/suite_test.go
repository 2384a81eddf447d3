package store

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/pgtest"
	"github.com/wiremesh/wiremesh/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// suite is the store's test suite: TestStore runs every case on SQLite
// and on PostgreSQL. only names the one engine a case is for, if any.
var suite = []struct {
	name string
	fn   func(*testing.T, *engine)
	only string
}{
	{"EnrollAddresses", testEnrollAddresses, ""},
	{"EnrollNames", testEnrollNames, ""},
	{"EnrollNameFromHostnameIsValid", testEnrollNameFromHostnameIsValid, ""},
	{"EnrollFailureIsAtomic", testEnrollFailureIsAtomic, ""},
	{"EnrollPrefixFull", testEnrollPrefixFull, ""},
	{"EnrollRetry", testEnrollRetry, ""},
	{"ConcurrentEnroll", testConcurrentEnroll, ""},
	{"OneTimeKeyTwoStores", testOneTimeKeyTwoStores, ""},
	{"JoinKeyRules", testJoinKeyRules, ""},
	{"BadJoinKeyTakesNoWriteLock", testBadJoinKeyTakesNoWriteLock, ""},
	{"CreateJoinKeyRefusesBadNodeExpiry", testCreateJoinKeyRefusesBadNodeExpiry, ""},
	{"DeleteNode", testDeleteNode, ""},
	{"NodeByCredentialWrongSecret", testNodeByCredentialWrongSecret, ""},
	{"SetEndpoints", testSetEndpoints, ""},
	{"TouchKeepsVersion", testTouchKeepsVersion, ""},
	{"SetConnectivity", testSetConnectivity, ""},
	{"NodeExpiryFromJoinKey", testNodeExpiryFromJoinKey, ""},
	{"ExpireNodeAtAndNever", testExpireNodeAtAndNever, ""},
	{"DeleteEphemeral", testDeleteEphemeral, ""},
	{"RotateNodeKey", testRotateNodeKey, ""},
	{"Services", testServices, ""},
	{"Relay", testRelay, ""},
	{"CheckAdminToken", testCheckAdminToken, ""},
	{"RevokeAdminToken", testRevokeAdminToken, ""},
	{"Policies", testPolicies, ""},
	{"GossipKeys", testGossipKeys, ""},
	{"AuditDetails", testAuditDetails, ""},
	{"VersionIncreases", testVersionIncreases, ""},
	{"StateIsOneSnapshot", testStateIsOneSnapshot, ""},
	{"SurvivesReopen", testSurvivesReopen, ""},
	{"OpenPrefixes", testOpenPrefixes, ""},
	{"Migration6", testMigration6, ""},
	{"ConcurrentOpen", testConcurrentOpen, postgresName},
	{"CachedSeesEveryWrite", testCachedSeesEveryWrite, ""},
	{"CachedListingReads", testCachedListingReads, ""},
	{"RegisterCoordinator", testRegisterCoordinator, ""},
	{"Lease", testLease, postgresName},
	{"LeaseSQLite", testLeaseSQLite, sqliteName},
	{"SharedSecret", testSharedSecret, ""},
	{"SetOnline", testSetOnline, ""},
	{"AcceptProof", testAcceptProof, ""},
	{"Sessions", testSessions, ""},
	{"SessionLimit", testSessionLimit, ""},
	{"SessionsAtRest", testSessionsAtRest, ""},
	{"SessionsShared", testSessionsShared, ""},
	{"Listen", testListen, postgresName},
	{"ListenSQLite", testListenSQLite, sqliteName},
	{"StateSince", testStateSince, ""},
}

// TestStore runs the suite on SQLite and on a private PostgreSQL server.
func TestStore(t *testing.T) {
	for _, name := range []string{sqliteName, postgresName} {
		t.Run(name, func(t *testing.T) {
			e := sqliteEngine()
			if name == postgresName {
				e = postgresEngine(pgtest.Start(t))
			}
			for _, tc := range suite {
				if tc.only == "" || tc.only == name {
					t.Run(tc.name, func(t *testing.T) { tc.fn(t, e) })
				}
			}
		})
	}
}

// engine makes the databases of one engine for the suite.
type engine struct {
	name string
	d    *dialect
	// fresh returns the location of a new, empty database for t.
	fresh func(t *testing.T) string
	// config returns the Config that opens the database at loc.
	config func(loc string) Config
	// driver and dsn open the database at loc with database/sql.
	driver string
	dsn    func(loc string) string
	// holdWriteLock takes, on another connection to the database at
	// loc, the lock a change takes, until release is called.
	holdWriteLock func(ctx context.Context, c *sql.Conn) (release func() error, err error)
}

func sqliteEngine() *engine {
	return &engine{
		name:   sqliteName,
		d:      sqlite,
		fresh:  func(t *testing.T) string { return filepath.Join(t.TempDir(), "wiremesh.db") },
		config: func(loc string) Config { return Config{Path: loc} },
		driver: "sqlite",
		dsn:    func(loc string) string { return "file:" + loc },
		holdWriteLock: func(ctx context.Context, c *sql.Conn) (func() error, error) {
			_, err := c.ExecContext(ctx, "BEGIN IMMEDIATE")
			return func() error { _, err := c.ExecContext(ctx, "ROLLBACK"); return err }, err
		},
	}
}

func postgresEngine(c *pgtest.Cluster) *engine {
	return &engine{
		name:   postgresName,
		d:      postgres,
		fresh:  func(t *testing.T) string { return c.Database(t) },
		config: func(loc string) Config { return Config{URL: loc} },
		driver: "pgx",
		dsn:    func(loc string) string { return loc },
		holdWriteLock: func(ctx context.Context, c *sql.Conn) (func() error, error) {
			if _, err := c.ExecContext(ctx, "BEGIN"); err != nil {
				return nil, err
			}
			_, err := c.ExecContext(ctx, "SELECT value FROM settings WHERE key = 'version' FOR UPDATE")
			return func() error { _, err := c.ExecContext(ctx, "ROLLBACK"); return err }, err
		},
	}
}

// open opens a new database with the default prefixes, closed when t
// ends, and returns it and its location.
func (e *engine) open(t *testing.T) (*DB, string) {
	t.Helper()
	loc := e.fresh(t)
	return e.mustOpenAt(t, loc, netip.Prefix{}, netip.Prefix{}), loc
}

// openAt opens the database at loc with prefixes p4 and p6.
func (e *engine) openAt(loc string, p4, p6 netip.Prefix) (*DB, error) {
	cfg := e.config(loc)
	cfg.Prefix4, cfg.Prefix6 = p4, p6
	return Open(context.Background(), cfg)
}

func (e *engine) mustOpenAt(t *testing.T, loc string, p4, p6 netip.Prefix) *DB {
	t.Helper()
	s, err := e.openAt(loc, p4, p6)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// raw opens the database at loc with database/sql, closed when t ends.
func (e *engine) raw(t *testing.T, loc string) *sql.DB {
	t.Helper()
	db, err := sql.Open(e.driver, e.dsn(loc))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// cmpNet lets cmp compare the netip types, which have unexported fields.
var cmpNet = cmp.Options{
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
}

// cmpEmptyNil treats nil and empty string slices as equal.
var cmpEmptyNil = cmp.FilterValues(func(a, b []string) bool { return len(a) == 0 && len(b) == 0 }, cmp.Comparer(func(_, _ []string) bool { return true }))

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// newPublicKey returns the public half of a new X25519 (WireGuard) key.
func newPublicKey(t testing.TB) string {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(k.PublicKey().Bytes())
}

func newJoinKey(t *testing.T, s Store, req wire.CreateJoinKeyRequest) credential.Secret {
	t.Helper()
	_, sec, err := s.CreateJoinKey(context.Background(), "test", req)
	if err != nil {
		t.Fatalf("CreateJoinKey(%+v): %v", req, err)
	}
	return sec
}

// enrolled is a node the store admitted with its credential.
type enrolled struct {
	node wire.Node
	cred credential.Secret
}

func mustEnroll(t *testing.T, s Store, key credential.Secret, p EnrollParams) enrolled {
	t.Helper()
	if p.PublicKey == "" {
		p.PublicKey = newPublicKey(t)
	}
	n, cred, ver, err := s.Enroll(context.Background(), key, p)
	if err != nil {
		t.Fatalf("Enroll(%+v): %v", p, err)
	}
	if ver == 0 {
		t.Errorf("Enroll(%+v) returned version 0", p)
	}
	return enrolled{n, cred}
}

func joinKeyByID(t *testing.T, s Store, id string) wire.JoinKey {
	t.Helper()
	keys, err := s.JoinKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.ID == id {
			return k
		}
	}
	t.Fatalf("join key %s not listed in %+v", id, keys)
	return wire.JoinKey{}
}

func mustVersion(t *testing.T, s Store) uint64 {
	t.Helper()
	v, err := s.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mustNodes(t *testing.T, s Store) []wire.Node {
	t.Helper()
	nodes, _, err := s.Nodes(context.Background())
	if err != nil {
		t.Fatalf("Nodes: %v", err)
	}
	return nodes
}
