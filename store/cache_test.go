package store

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/wire"
)

// After each kind of write through a Cached store, its listing is what
// the database holds.
func testCachedSeesEveryWrite(t *testing.T, e *engine) {
	ctx := context.Background()
	db, _ := e.open(t)
	start := time.Now().Truncate(time.Millisecond)
	now := start
	db.now = func() time.Time { return now }
	c := NewCached(db)
	key := newJoinKey(t, c, wire.CreateJoinKeyRequest{Reusable: true})
	a := mustEnroll(t, c, key, EnrollParams{Name: "a"})
	b := mustEnroll(t, c, newJoinKey(t, c, wire.CreateJoinKeyRequest{Ephemeral: true}), EnrollParams{Name: "b"})
	rpub := newPublicKey(t)
	relay := wire.Relay{Name: "r", URL: "https://192.0.2.1", Key: rpub}
	r := mustEnroll(t, c, newJoinKey(t, c, wire.CreateJoinKeyRequest{Relay: true}), EnrollParams{Name: "r", PublicKey: rpub, Relay: &relay})
	ok := func(string) string { return "" }
	dPub, aNext := newPublicKey(t), newPublicKey(t)
	for _, w := range []struct {
		name string
		fn   func() error
	}{
		{"enroll", func() error { _, _, _, err := c.Enroll(ctx, key, EnrollParams{Name: "d", PublicKey: dPub}); return err }},
		{"endpoints", func() error { _, err := c.SetEndpoints(ctx, a.node.ID, []string{"192.0.2.7:51820"}); return err }},
		{"touch", func() error { return c.Touch(ctx, a.node.ID, start.Add(time.Second)) }},
		{"agent version", func() error { return c.SetAgentVersion(ctx, a.node.ID, "v9.9.9") }},
		{"services", func() error {
			_, err := c.SetServices(ctx, a.node, []wire.Service{{Name: "web", Port: 80, Health: "passing"}}, ok)
			return err
		}},
		{"health", func() error {
			_, err := c.SetServices(ctx, a.node, []wire.Service{{Name: "web", Port: 80, Health: "critical"}}, ok)
			return err
		}},
		{"relay", func() error {
			relay.URL = "https://192.0.2.2"
			_, err := c.SetRelay(ctx, r.node.ID, relay)
			return err
		}},
		{"tags", func() error { _, err := c.SetTags(ctx, "test", "a", []string{"tag:x"}); return err }},
		{"rotate key", func() error { _, err := c.RotateNodeKey(ctx, a.node.ID, a.node.PublicKey, aNext); return err }},
		{"expire", func() error { _, err := c.ExpireNode(ctx, "test", "a", start.Add(time.Hour), false); return err }},
		{"delete ephemeral", func() error { _, err := c.DeleteEphemeral(ctx, b.node.ID, time.Time{}); return err }},
		{"delete", func() error { _, err := c.DeleteNode(ctx, "test", "d"); return err }},
	} {
		if _, err := c.AdminNodes(ctx); err != nil { // a current listing before each write
			t.Fatal(err)
		}
		if err := w.fn(); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		got, err := c.AdminNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(mustNodes(t, db), got, cmpNet); diff != "" {
			t.Errorf("after %s: listing (-database +cached):\n%s", w.name, diff)
		}
	}
}

// countingStore counts the reads of the admin listing that reach it, and
// runs during, if set, after each read of the database and before the
// listing is returned.
type countingStore struct {
	Store
	reads  atomic.Int64
	during func()
}

func (s *countingStore) AdminNodes(ctx context.Context) ([]wire.Node, error) {
	s.reads.Add(1)
	nodes, err := s.Store.AdminNodes(ctx)
	if s.during != nil {
		s.during()
	}
	return nodes, err
}

// A Cached store reads the listing from the database only when a write
// left it stale: not when nothing changed, not after writes it patches in,
// not after the State read that publishes a change; and a listing read
// while a write happens is not served after it.
func testCachedListingReads(t *testing.T, e *engine) {
	ctx := context.Background()
	db, _ := e.open(t)
	cs := &countingStore{Store: db}
	c := NewCached(cs)
	a := mustEnroll(t, c, newJoinKey(t, c, wire.CreateJoinKeyRequest{}), EnrollParams{Name: "a"})
	list := func() wire.Node {
		t.Helper()
		nodes, err := c.AdminNodes(ctx)
		if err != nil || len(nodes) != 1 {
			t.Fatalf("AdminNodes = %+v, %v", nodes, err)
		}
		return nodes[0]
	}
	step := func(name string, wantReads int64) {
		t.Helper()
		if n := cs.reads.Load(); n != wantReads {
			t.Errorf("%s: %d listings read from the database, want %d", name, n, wantReads)
		}
	}
	list()
	list()
	step("listed twice", 1)

	seen := time.UnixMilli(time.Now().UnixMilli())
	if err := c.Touch(ctx, a.node.ID, seen); err != nil {
		t.Fatal(err)
	}
	if err := c.SetAgentVersion(ctx, a.node.ID, "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetServices(ctx, a.node, nil, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if n := list(); !n.LastSeen.Equal(seen) || n.Version != "v1" {
		t.Errorf("patched listing: last seen %s, version %q; want %s, v1", n.LastSeen, n.Version, seen)
	}
	step("after the writes it patches", 1)

	if _, err := c.SetTags(ctx, "test", "a", []string{"tag:x"}); err != nil {
		t.Fatal(err)
	}
	list()
	step("after a change", 2)

	if _, err := c.SetTags(ctx, "test", "a", []string{"tag:y"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.State(ctx); err != nil { // as a publish does
		t.Fatal(err)
	}
	if n := list(); len(n.Tags) != 1 || n.Tags[0] != "tag:y" {
		t.Errorf("tags after the publish %q, want [tag:y]", n.Tags)
	}
	step("after a change and its publish", 2)

	// A write lands while a stale listing is being read: the listing read
	// is not served after it.
	if _, err := c.SetTags(ctx, "test", "a", nil); err != nil {
		t.Fatal(err)
	}
	later := seen.Add(time.Second)
	cs.during = func() {
		cs.during = nil
		if err := c.Touch(ctx, a.node.ID, later); err != nil {
			t.Error(err)
		}
	}
	list()
	if n := list(); !n.LastSeen.Equal(later) {
		t.Errorf("last seen %s, want %s: a listing read before the touch was kept", n.LastSeen, later)
	}
	step("after a write during a read", 4)
}
