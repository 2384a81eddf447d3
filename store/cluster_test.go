package store

import (
	"cmp"
	"context"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/wire"
)

// testRegisterCoordinator: a new or changed coordinator is a change of
// state, one that only says it is up is not, and State lists them all.
func testRegisterCoordinator(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	a := Coordinator{URLs: []string{"https://a.example:8443"}, Relay: &wire.Relay{Name: "eu-1", URL: "https://a.example:8443"}}
	b := Coordinator{URLs: []string{"https://b.example:8443", "https://b.internal:8443"}}
	before := mustVersion(t, s)
	ver, err := s.RegisterCoordinator(ctx, a)
	if err != nil || ver <= before {
		t.Fatalf("register a new coordinator: version %d, %v; want > %d", ver, err, before)
	}
	if ver, err := s.RegisterCoordinator(ctx, a); err != nil || ver != 0 {
		t.Fatalf("register the same again: version %d, %v; want 0 (no change of state)", ver, err)
	}
	if _, err := s.RegisterCoordinator(ctx, b); err != nil {
		t.Fatal(err)
	}
	a.Relay.Name = "eu-2"
	if ver, err := s.RegisterCoordinator(ctx, a); err != nil || ver == 0 {
		t.Fatalf("register a changed coordinator: version %d, %v; want a new version", ver, err)
	}
	st, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got [][]string
	for _, c := range st.Coordinators {
		got = append(got, c.URLs)
		if c.Seen.IsZero() {
			t.Errorf("coordinator %s: no time seen", c.URLs[0])
		}
	}
	if len(got) != 2 || !slices.Equal(got[0], a.URLs) || !slices.Equal(got[1], b.URLs) {
		t.Fatalf("State lists coordinators %v, want %v and %v", got, a.URLs, b.URLs)
	}
	if st.Coordinators[0].Relay == nil || st.Coordinators[0].Relay.Name != "eu-2" {
		t.Errorf("coordinator a's relay %+v, want eu-2", st.Coordinators[0].Relay)
	}
	if _, err := s.RegisterCoordinator(ctx, Coordinator{}); err == nil {
		t.Error("a coordinator without a URL was registered")
	}
	// One that has not said it is up for CoordinatorAge drops out.
	s.now = func() time.Time { return time.Now().Add(CoordinatorAge + time.Hour) }
	if _, err := s.RegisterCoordinator(ctx, b); err != nil {
		t.Fatal(err)
	}
	if st, err = s.State(ctx); err != nil {
		t.Fatal(err)
	}
	if len(st.Coordinators) != 1 || st.Coordinators[0].URLs[0] != b.URLs[0] {
		t.Errorf("after CoordinatorAge, State lists %+v; want b alone", st.Coordinators)
	}
}

// testLease: one holder at a time; the holder renews; another takes it
// only once it has run out.
func testLease(t *testing.T, e *engine) {
	ctx := context.Background()
	s, loc := e.open(t)
	s2 := e.mustOpenAt(t, loc, netip.Prefix{}, netip.Prefix{})
	now := time.Now()
	s.now = func() time.Time { return now }
	s2.now = s.now
	take := func(db *DB, holder string, want bool) {
		t.Helper()
		got, err := db.Lease(ctx, "timers", holder, 10*time.Second)
		if err != nil || got != want {
			t.Fatalf("Lease(%s) = %v, %v; want %v", holder, got, err, want)
		}
	}
	take(s, "a", true)
	take(s2, "b", false)
	now = now.Add(8 * time.Second)
	take(s, "a", true) // renewed until now+10 s
	now = now.Add(8 * time.Second)
	take(s2, "b", false)
	if got, err := s2.Lease(ctx, "other", "b", time.Second); err != nil || !got {
		t.Fatalf("another lease: %v, %v; want it free", got, err)
	}
	now = now.Add(3 * time.Second) // a's has run out
	take(s2, "b", true)
	take(s, "a", false)
}

// testLeaseSQLite: one process owns a SQLite database, so the lease is
// always the caller's, even one its crashed former self still holds.
func testLeaseSQLite(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	for _, holder := range []string{"a", "b", "a"} {
		if ok, err := s.Lease(ctx, "timers", holder, time.Hour); err != nil || !ok {
			t.Fatalf("Lease(%s) = %v, %v; want it", holder, ok, err)
		}
	}
}

// testSharedSecret: the first value stored is everyone's.
func testSharedSecret(t *testing.T, e *engine) {
	ctx := context.Background()
	s, loc := e.open(t)
	s2 := e.mustOpenAt(t, loc, netip.Prefix{}, netip.Prefix{})
	if v, err := s.SharedSecret(ctx, "ca", "first"); err != nil || v != "first" {
		t.Fatalf("SharedSecret = %q, %v; want first", v, err)
	}
	if v, err := s2.SharedSecret(ctx, "ca", "second"); err != nil || v != "first" {
		t.Fatalf("second SharedSecret = %q, %v; want the first's value", v, err)
	}
	if v, err := s2.SharedSecret(ctx, "proof", "p2"); err != nil || v != "p2" {
		t.Fatalf("another name: %q, %v; want p2", v, err)
	}
}

// testSetOnline: a vouch sets when the node is online until, and when it
// was seen, without a new version; a zero until ends it.
func testSetOnline(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	a := mustEnroll(t, s, key, EnrollParams{PublicKey: newPublicKey(t)})
	b := mustEnroll(t, s, key, EnrollParams{PublicKey: newPublicKey(t)})
	ver := mustVersion(t, s)
	until := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	if err := s.SetOnline(ctx, []int64{a.node.ID, b.node.ID}, until); err != nil {
		t.Fatal(err)
	}
	if v := mustVersion(t, s); v != ver {
		t.Errorf("SetOnline changed the version %d → %d", ver, v)
	}
	for _, n := range mustNodes(t, s) {
		if !n.OnlineUntil.Equal(until) || n.LastSeen.IsZero() {
			t.Errorf("node %s: online until %v, last seen %v; want %v and a time", n.Name, n.OnlineUntil, n.LastSeen, until)
		}
	}
	if err := s.SetOnline(ctx, []int64{a.node.ID}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	nodes := mustNodes(t, s)
	if !nodes[0].OnlineUntil.IsZero() || !nodes[1].OnlineUntil.Equal(until) {
		t.Errorf("after a's stream ended: online until %v and %v; want zero and %v", nodes[0].OnlineUntil, nodes[1].OnlineUntil, until)
	}
	// More ids than one statement takes.
	ids := make([]int64, 2*onlineBatch+1)
	for i := range ids {
		ids[i] = int64(i + 1)
	}
	if err := s.SetOnline(ctx, ids, until); err != nil {
		t.Fatalf("SetOnline of %d ids: %v", len(ids), err)
	}
	st, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Nodes[0].OnlineUntil.IsZero() {
		t.Error("State's nodes carry OnlineUntil, an admin-only field")
	}
}

// testListen: on PostgreSQL, a listener reads the version once it is
// listening (what was announced before is not lost), and a change
// committed through another handle reaches it at once (not at its next
// poll), with its version.
func testListen(t *testing.T, e *engine) {
	ctx, cancel := context.WithCancel(context.Background())
	s, loc := e.open(t)
	other := e.mustOpenAt(t, loc, netip.Prefix{}, netip.Prefix{})
	got := make(chan uint64, 100)
	done := make(chan error, 1)
	go func() { done <- s.Listen(ctx, time.Hour, func(v uint64) { got <- v }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Listen after its context ended: %v, want nil", err)
		}
	}()
	wait := func(want uint64) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case v := <-got:
				if v == want {
					if s.Committed() < want {
						t.Errorf("changed(%d) ran with Committed %d", v, s.Committed())
					}
					return
				}
			case <-deadline:
				t.Fatalf("listener never saw version %d", want)
			}
		}
	}
	wait(mustVersion(t, s)) // once listening
	key := newJoinKey(t, other, wire.CreateJoinKeyRequest{})
	start := time.Now()
	mustEnroll(t, other, key, EnrollParams{PublicKey: newPublicKey(t)})
	wait(mustVersion(t, other))
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the announcement took %s (the poll interval is an hour)", d)
	}
}

// testListenSQLite: no other process shares a SQLite database; Listen
// waits for its context and calls nothing.
func testListenSQLite(t *testing.T, e *engine) {
	s, _ := e.open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	called := false
	if err := s.Listen(ctx, 10*time.Millisecond, func(uint64) { called = true }); err != nil || called {
		t.Errorf("Listen on SQLite: %v, called %v; want nil, not called", err, called)
	}
}

// testStateSince: after every kind of change, the State read before it
// with StateSince's delta applied is the State read after it.
func testStateSince(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	prev, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	step := func(what string, change func()) {
		t.Helper()
		change()
		d, err := s.StateSince(ctx, prev.Version)
		if err != nil {
			t.Fatalf("%s: StateSince: %v", what, err)
		}
		want, err := s.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d.Version != want.Version {
			t.Errorf("%s: delta to version %d, state at %d", what, d.Version, want.Version)
		}
		byID := map[int64]wire.Node{}
		for _, n := range prev.Nodes {
			byID[n.ID] = n
		}
		for _, id := range d.Removed {
			delete(byID, id)
		}
		for _, n := range d.Nodes {
			byID[n.ID] = n
		}
		got := slices.SortedFunc(maps.Values(byID), func(a, b wire.Node) int { return cmp.Compare(a.ID, b.ID) })
		if diff := gocmp.Diff(want.Nodes, got, cmpNet, cmpEmptyNil); diff != "" {
			t.Errorf("%s: state at %d + delta differs from the state at %d (-want +got):\n%s", what, prev.Version, want.Version, diff)
		}
		if len(d.Nodes)+len(d.Removed) > 2 {
			t.Errorf("%s: the delta carries %d nodes and %d removals; want only what changed", what, len(d.Nodes), len(d.Removed))
		}
		if d.Policy.Version != want.Policy.Version || !slices.Equal(d.GossipKeys, want.GossipKeys) || !d.NextExpiry.Equal(want.NextExpiry) {
			t.Errorf("%s: delta policy %d, keys %v, next expiry %v; state %d, %v, %v", what, d.Policy.Version, d.GossipKeys, d.NextExpiry, want.Policy.Version, want.GossipKeys, want.NextExpiry)
		}
		prev = want
	}
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	var a, b enrolled
	step("enroll a", func() { a = mustEnroll(t, s, key, EnrollParams{Name: "a"}) })
	step("enroll b", func() { b = mustEnroll(t, s, key, EnrollParams{Name: "b"}) })
	step("endpoints", func() {
		if _, err := s.SetEndpoints(ctx, a.node.ID, []string{"192.0.2.1:41641"}); err != nil {
			t.Fatal(err)
		}
	})
	step("tags", func() {
		if _, err := s.SetTags(ctx, "admin", "b", []string{"tag:db"}); err != nil {
			t.Fatal(err)
		}
	})
	step("services", func() {
		if _, err := s.SetServices(ctx, a.node, []wire.Service{{Name: "web", Port: 80, Proto: wire.ServiceTCP}}, func(string) string { return "" }); err != nil {
			t.Fatal(err)
		}
	})
	step("key", func() {
		if _, err := s.RotateNodeKey(ctx, b.node.ID, b.node.PublicKey, newPublicKey(t)); err != nil {
			t.Fatal(err)
		}
	})
	step("expiry in an hour", func() {
		if _, err := s.ExpireNode(ctx, "admin", "a", time.Now().Add(time.Hour), false); err != nil {
			t.Fatal(err)
		}
	})
	step("expired now", func() {
		if _, err := s.ExpireNode(ctx, "admin", "a", time.Time{}, false); err != nil {
			t.Fatal(err)
		}
	})
	step("policy", func() {
		if _, err := s.SetPolicy(ctx, "admin", `{"acls": []}`, ""); err != nil {
			t.Fatal(err)
		}
	})
	step("delete", func() {
		if _, err := s.DeleteNode(ctx, "admin", "b"); err != nil {
			t.Fatal(err)
		}
	})
	step("nothing", func() {})
}

// AcceptProof takes each newer proof time of a kind once: the same time
// again, or an older one, is refused with the newest, also through a
// second store on the same database (another coordinator) and when both
// try at once; kinds and nodes are apart; a deleted node's times go with
// it; the version stays.
func testAcceptProof(t *testing.T, e *engine) {
	ctx := context.Background()
	s, loc := e.open(t)
	other := e.mustOpenAt(t, loc, netip.Prefix{}, netip.Prefix{})
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	a := mustEnroll(t, s, key, EnrollParams{Name: "a", PublicKey: newPublicKey(t)})
	b := mustEnroll(t, s, key, EnrollParams{Name: "b", PublicKey: newPublicKey(t)})
	ver := mustVersion(t, s)
	t0 := time.Unix(1_800_000_000, 123456789)
	accept := func(st *DB, id int64, kind string, at time.Time, want bool, newest time.Time) {
		t.Helper()
		ok, got, err := st.AcceptProof(ctx, id, kind, at)
		if err != nil || ok != want || !got.Equal(newest) {
			t.Errorf("AcceptProof(node %d, %s, %v) = %v, %v, %v; want %v, %v", id, kind, at, ok, got, err, want, newest)
		}
	}
	accept(s, a.node.ID, "services", t0, true, t0)
	accept(s, a.node.ID, "services", t0, false, t0)     // the same report again
	accept(other, a.node.ID, "services", t0, false, t0) // at another coordinator
	accept(other, a.node.ID, "services", t0.Add(-time.Nanosecond), false, t0)
	accept(other, a.node.ID, "services", t0.Add(time.Nanosecond), true, t0.Add(time.Nanosecond))
	accept(s, a.node.ID, "connectivity", t0, true, t0)
	accept(s, b.node.ID, "services", t0, true, t0)
	if v := mustVersion(t, s); v != ver {
		t.Errorf("AcceptProof changed the version %d → %d", ver, v)
	}
	// Both stores at once with one new time: one takes it.
	t1 := t0.Add(time.Second)
	oks := make([]bool, 2)
	var wg sync.WaitGroup
	for i, st := range []*DB{s, other} {
		wg.Go(func() {
			ok, _, err := st.AcceptProof(ctx, a.node.ID, "services", t1)
			if err != nil {
				t.Error(err)
			}
			oks[i] = ok
		})
	}
	wg.Wait()
	if oks[0] == oks[1] {
		t.Errorf("one proof time given to two stores at once: accepted %v", oks)
	}
	if _, err := s.DeleteNode(ctx, "test", "a"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.q().row(ctx, "SELECT COUNT(*) FROM proof_times WHERE node_id = ?", a.node.ID).Scan(&n); err != nil || n != 0 {
		t.Errorf("a deleted node's proof times: %d rows (%v), want none", n, err)
	}
}
