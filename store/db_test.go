package store

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

func testVersionIncreases(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	last := mustVersion(t, s)
	step := func(name string, fn func() error) {
		t.Helper()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		v := mustVersion(t, s)
		if v <= last {
			t.Errorf("%s: version %d, want more than %d", name, v, last)
		}
		last = v
	}
	var key credential.Secret
	step("create join key", func() (err error) {
		_, key, err = s.CreateJoinKey(ctx, "test", wire.CreateJoinKeyRequest{Reusable: true})
		return err
	})
	step("enroll", func() error {
		_, _, _, err := s.Enroll(ctx, key, EnrollParams{Name: "a", PublicKey: newPublicKey(t)})
		return err
	})
	step("revoke", func() error { return s.RevokeJoinKey(ctx, "test", key.ID) })
	step("admin token", func() error { _, _, err := s.CreateAdminToken(ctx, "test", ""); return err })
	step("delete", func() error { _, err := s.DeleteNode(ctx, "test", "a"); return err })
}

func testSurvivesReopen(t *testing.T, e *engine) {
	ctx := context.Background()
	s, loc := e.open(t)
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true, Tags: []string{"tag:x"}})
	newJoinKey(t, s, wire.CreateJoinKeyRequest{Expiry: wire.Duration(time.Hour)})
	_, adm, err := s.CreateAdminToken(ctx, "test", "")
	if err != nil {
		t.Fatal(err)
	}
	a := mustEnroll(t, s, key, EnrollParams{Name: "a"})
	mustEnroll(t, s, key, EnrollParams{Name: "b"})
	if _, err := s.SetEndpoints(ctx, a.node.ID, []string{"192.0.2.1:51820"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteNode(ctx, "test", "b"); err != nil {
		t.Fatal(err)
	}
	nodes, ver, err := s.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := s.JoinKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := e.openAt(loc, netip.Prefix{}, netip.Prefix{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if err := s2.CheckIntegrity(ctx); err != nil {
		t.Error(err)
	}
	nodes2, ver2, err := s2.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(nodes, nodes2, cmpNet); diff != "" {
		t.Errorf("nodes after reopen (-before +after):\n%s", diff)
	}
	if ver2 != ver {
		t.Errorf("version after reopen %d, want %d", ver2, ver)
	}
	keys2, err := s2.JoinKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(keys, keys2); diff != "" {
		t.Errorf("join keys after reopen (-before +after):\n%s", diff)
	}
	if got, err := s2.NodeByCredential(ctx, a.cred); err != nil || got.Name != "a" {
		t.Errorf("credential after reopen: %q, %v", got.Name, err)
	}
	if err := s2.CheckAdminToken(ctx, adm); err != nil {
		t.Errorf("admin token after reopen: %v", err)
	}
	c, _, ver3, err := s2.Enroll(ctx, key, EnrollParams{PublicKey: newPublicKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if ver3 <= ver {
		t.Errorf("version after reopen and enroll %d, want more than %d", ver3, ver)
	}
	if want := pfx("100.64.0.3/32"); c.Addresses[0] != want {
		t.Errorf("address after reopen %s, want %s (the deleted node's address must not come back)", c.Addresses[0], want)
	}
}

func testOpenPrefixes(t *testing.T, e *engine) {
	ctx := context.Background()
	loc := e.fresh(t)
	p4, p6 := pfx("10.99.0.0/16"), pfx("fd00:99::/64")
	s, err := e.openAt(loc, p4, p6)
	if err != nil {
		t.Fatal(err)
	}
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	n := mustEnroll(t, s, key, EnrollParams{}).node
	if diff := cmp.Diff([]netip.Prefix{pfx("10.99.0.1/32"), pfx("fd00:99::1/128")}, n.Addresses, cmpNet); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	s.Close()

	for _, tc := range []struct {
		name    string
		p4, p6  netip.Prefix
		wantErr string
	}{
		{name: "as created", p4: p4, p6: p6},
		{name: "unspecified"},
		{name: "other IPv4", p4: pfx("10.98.0.0/16"), wantErr: "differs"},
		{name: "default IPv4", p4: DefaultPrefix4, p6: p6, wantErr: "differs"},
		{name: "other IPv6", p6: pfx("fd00:98::/64"), wantErr: "differs"},
	} {
		s, err := e.openAt(loc, tc.p4, tc.p6)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: Open error %v, want %q", tc.name, err, tc.wantErr)
			}
			if err == nil {
				s.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if diff := cmp.Diff([]netip.Prefix{p4, p6}, s.Prefixes(), cmpNet); diff != "" {
			t.Errorf("%s: Prefixes() (-want +got):\n%s", tc.name, diff)
		}
		if err := s.CheckIntegrity(ctx); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		s.Close()
	}
}

// Migration 6 on a database of schema 5 with a join key and a node: both
// are of the agent kind, and relay keys and nodes work after it.
func testMigration6(t *testing.T, e *engine) {
	ctx := context.Background()
	loc := e.fresh(t)
	c, err := e.raw(t, loc).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, c, e.d, 5); err != nil {
		t.Fatal(err)
	}
	pub := newPublicKey(t)
	sec := credential.NewSecret("jk")
	q := conn{e.d, c}
	if _, err := q.exec(ctx, "INSERT INTO join_keys(id, hash, reusable, tags, created) VALUES(?, ?, ?, '[]', 1)", sec.ID, sec.Hash(), true); err != nil {
		t.Fatal(err)
	}
	if _, err := q.exec(ctx, "INSERT INTO nodes(name, public_key, host_index, cred_id, cred_hash, tags, join_key_id, created) VALUES('old', ?, 1, 'nd1', 'x', '[]', ?, 1)", pub, sec.ID); err != nil {
		t.Fatal(err)
	}
	c.Close()

	s := e.mustOpenAt(t, loc, netip.Prefix{}, netip.Prefix{})
	if v, err := e.d.schemaVersion(ctx, s.q()); err != nil || v != len(migrations) {
		t.Fatalf("schema version %d (%v), want %d", v, err, len(migrations))
	}
	if k := joinKeyByID(t, s, sec.ID); k.Relay {
		t.Error("a join key from before migration 6 enrolls relays")
	}
	if n := mustNodes(t, s); len(n) != 1 || n[0].Relay != nil {
		t.Errorf("nodes after migration 6: %+v, want the old agent", n)
	}
	mustEnroll(t, s, sec, EnrollParams{Name: "new"})
	rk := newJoinKey(t, s, wire.CreateJoinKeyRequest{Relay: true})
	rpub := newPublicKey(t)
	r := mustEnroll(t, s, rk, EnrollParams{PublicKey: rpub, Name: "r1", Relay: &wire.Relay{Name: "r1", URL: "https://192.0.2.1", Key: rpub}})
	if r.node.Relay == nil || r.node.Relay.Name != "r1" {
		t.Errorf("relay node %+v", r.node)
	}
	if _, err := s.SetRelay(ctx, 1, wire.Relay{Name: "old"}); !errors.Is(err, ErrForbidden) {
		t.Errorf("SetRelay on the old agent: %v, want ErrForbidden", err)
	}
}

// Coordinators that start at once on a new PostgreSQL database migrate it
// once: all open it, and it has one keyring.
func testConcurrentOpen(t *testing.T, e *engine) {
	loc := e.fresh(t)
	const n = 4
	stores := make([]*DB, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = e.openAt(loc, netip.Prefix{}, netip.Prefix{})
		})
	}
	close(start)
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Errorf("store %d: %v", i, errs[i])
			continue
		}
		t.Cleanup(func() { s.Close() })
	}
	ctx := context.Background()
	db := e.raw(t, loc)
	var versions, keys int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM schema_version").Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM gossip_keys").Scan(&keys); err != nil {
		t.Fatal(err)
	}
	if versions != 1 || keys != 1 {
		t.Errorf("%d schema versions and %d gossip keys, want 1 and 1", versions, keys)
	}
}

// Every migration renders for both engines: no word left unknown.
func TestMigrationWords(t *testing.T) {
	for _, d := range []*dialect{sqlite, postgres} {
		for i, m := range migrations {
			if r := d.types.Replace(m); strings.Contains(r, "{{") {
				t.Errorf("%s: migration %d keeps a word it does not know: %s", d.name, i+1, r)
			}
		}
	}
}

func TestRebind(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"UPDATE nodes SET tags = ? WHERE name = ?", "UPDATE nodes SET tags = $1 WHERE name = $2"},
		{"SELECT '?' FROM t WHERE a = ? AND b = 'x?y'", "SELECT '?' FROM t WHERE a = $1 AND b = 'x?y'"},
	} {
		for range 2 { // the second time from the cache
			if got := postgres.rebind(tc.in); got != tc.want {
				t.Errorf("rebind(%q) = %q, want %q", tc.in, got, tc.want)
			}
		}
		if got := sqlite.rebind(tc.in); got != tc.in {
			t.Errorf("SQLite rebind(%q) = %q", tc.in, got)
		}
	}
}

// A bad PostgreSQL URL or a server that does not answer is a clear error
// that never shows the password.
func TestOpenPostgresErrors(t *testing.T) {
	const secret = "s3cret-pw"
	for _, tc := range []struct {
		url  string
		want error
		msg  string
	}{
		{"postgres://wm:" + secret + "@[::1/wm", ErrInvalid, "bad PostgreSQL URL"},
		{"mysql://wm:" + secret + "@db.example/wm", ErrInvalid, "bad PostgreSQL URL mysql://wm:xxxxx@db.example/wm"},
		{"postgres://wm:" + secret + "@db.example/wm?sslmode=bogus", ErrInvalid, "cannot parse `postgres://wm:xxxxx@db.example/wm?sslmode=bogus`"},
		{"postgres://wm@127.0.0.1:1/wm?connect_timeout=5&password=" + secret, ErrUnavailable, "database unavailable: postgres://wm@127.0.0.1:1/wm?connect_timeout=5&password=xxxxx"},
		{"postgres://wm:" + secret + "@127.0.0.1:1/wm?connect_timeout=5", ErrUnavailable, "database unavailable: postgres://wm:xxxxx@127.0.0.1:1/wm"},
	} {
		s, err := Open(context.Background(), Config{URL: tc.url})
		if err == nil {
			s.Close()
			t.Errorf("Open(%s) worked", Redact(tc.url))
			continue
		}
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), secret) {
			t.Errorf("Open(%s): %v; want %v saying %q, without the password", Redact(tc.url), err, tc.want, tc.msg)
		}
	}
}
