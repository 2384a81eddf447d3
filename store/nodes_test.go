package store

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

func testDeleteNode(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	a := mustEnroll(t, s, key, EnrollParams{Name: "a"})
	b := mustEnroll(t, s, key, EnrollParams{Name: "b"})

	got, err := s.NodeByCredential(ctx, b.cred)
	if err != nil || got.Name != "b" {
		t.Fatalf("NodeByCredential(b) = %q, %v", got.Name, err)
	}
	before := mustVersion(t, s)
	ver, err := s.DeleteNode(ctx, "test", "b")
	if err != nil {
		t.Fatal(err)
	}
	if ver <= before {
		t.Errorf("DeleteNode returned version %d, want more than %d", ver, before)
	}
	if _, err := s.NodeByCredential(ctx, b.cred); !errors.Is(err, ErrDenied) {
		t.Errorf("deleted node's credential: %v, want ErrDenied", err)
	}
	if got, err := s.NodeByCredential(ctx, a.cred); err != nil || got.Name != "a" {
		t.Errorf("other node's credential: %q, %v", got.Name, err)
	}
	if _, err := s.DeleteNode(ctx, "test", "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleting again: %v, want ErrNotFound", err)
	}
	if nodes := mustNodes(t, s); len(nodes) != 1 || nodes[0].Name != "a" {
		t.Errorf("nodes after delete: %+v, want only a", nodes)
	}

	// The name is free again, but the address is not handed out again.
	c := mustEnroll(t, s, key, EnrollParams{Name: "b"}).node
	if diff := cmp.Diff([]netip.Prefix{pfx("100.64.0.3/32"), pfx("fd77:6d65:7368::3/128")}, c.Addresses, cmpNet); diff != "" {
		t.Errorf("address after delete (-want +got):\n%s", diff)
	}
	if c.ID == b.node.ID {
		t.Errorf("node id %d reused", c.ID)
	}
}

func testNodeByCredentialWrongSecret(t *testing.T, e *engine) {
	s, _ := e.open(t)
	a := mustEnroll(t, s, newJoinKey(t, s, wire.CreateJoinKeyRequest{}), EnrollParams{})
	for name, bad := range map[string]credential.Secret{
		"wrong value": {ID: a.cred.ID, Value: credential.NewSecret("nd").Value},
		"unknown id":  credential.NewSecret("nd"),
	} {
		if _, err := s.NodeByCredential(context.Background(), bad); !errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v, want ErrDenied", name, err)
		}
	}
}

func testSetEndpoints(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	a := mustEnroll(t, s, newJoinKey(t, s, wire.CreateJoinKeyRequest{}), EnrollParams{})
	for _, step := range []struct {
		eps     []string
		changed bool
	}{
		{nil, false},
		{[]string{}, false},
		{[]string{"192.0.2.1:51820"}, true},
		{[]string{"192.0.2.1:51820"}, false},
		{[]string{"192.0.2.1:51820", "[2001:db8::1]:51820"}, true},
		{[]string{"[2001:db8::1]:51820", "192.0.2.1:51820"}, true}, // order is preference
		{nil, true},
		{[]string{}, false},
	} {
		before := mustVersion(t, s)
		ver, err := s.SetEndpoints(ctx, a.node.ID, step.eps)
		if err != nil {
			t.Fatal(err)
		}
		if got := ver != 0; got != step.changed {
			t.Errorf("SetEndpoints(%q) = version %d, want changed=%v", step.eps, ver, step.changed)
		}
		if step.changed && ver <= before {
			t.Errorf("SetEndpoints(%q) = version %d, want more than %d", step.eps, ver, before)
		}
		if !step.changed && mustVersion(t, s) != before {
			t.Errorf("SetEndpoints(%q) without change moved the version", step.eps)
		}
		got := mustNodes(t, s)[0].Endpoints
		if diff := cmp.Diff(step.eps, got, cmpEmptyNil); diff != "" {
			t.Errorf("endpoints after SetEndpoints(%q) (-want +got):\n%s", step.eps, diff)
		}
	}
}

func testTouchKeepsVersion(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	a := mustEnroll(t, s, newJoinKey(t, s, wire.CreateJoinKeyRequest{}), EnrollParams{})
	before := mustVersion(t, s)
	seen := time.UnixMilli(time.Now().UnixMilli())
	if err := s.Touch(ctx, a.node.ID, seen); err != nil {
		t.Fatal(err)
	}
	if v := mustVersion(t, s); v != before {
		t.Errorf("Touch moved the version from %d to %d", before, v)
	}
	if got := mustNodes(t, s)[0].LastSeen; !got.Equal(seen) {
		t.Errorf("LastSeen = %v, want %v", got, seen)
	}
}

// A join key's node expiry gives each node it admits an expiry from its
// enrollment; once it passes, the node is out of the state and its
// credential is refused, and ExpireDue records it once.
func testNodeExpiryFromJoinKey(t *testing.T, e *engine) {
	s, _ := e.open(t)
	start := time.Now().Truncate(time.Millisecond)
	now := start
	s.now = func() time.Time { return now }
	ctx := context.Background()
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true, NodeExpiry: wire.Duration(time.Hour)})
	if k := joinKeyByID(t, s, key.ID); time.Duration(k.NodeExpiry) != time.Hour {
		t.Fatalf("join key lists node expiry %s, want 1h", time.Duration(k.NodeExpiry))
	}
	a := mustEnroll(t, s, key, EnrollParams{Name: "a"})
	if want := start.Add(time.Hour); !a.node.Expires.Equal(want) {
		t.Fatalf("node expires %s, want %s", a.node.Expires, want)
	}
	plain := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	b := mustEnroll(t, s, plain, EnrollParams{Name: "b"})
	if !b.node.Expires.IsZero() {
		t.Fatalf("node from a key without node expiry expires %s", b.node.Expires)
	}

	st, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 2 || !st.NextExpiry.Equal(start.Add(time.Hour)) {
		t.Fatalf("state before expiry: %d nodes, next expiry %s", len(st.Nodes), st.NextExpiry)
	}
	if names, err := s.ExpireDue(ctx); err != nil || len(names) != 0 {
		t.Fatalf("ExpireDue before the expiry = %v, %v", names, err)
	}

	now = start.Add(time.Hour)
	if _, err := s.NodeByCredential(ctx, a.cred); !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("credential of the expired node: %v, want denied as expired", err)
	}
	v := mustVersion(t, s)
	names, err := s.ExpireDue(ctx)
	if err != nil || !slices.Equal(names, []string{"a"}) {
		t.Fatalf("ExpireDue = %v, %v; want [a]", names, err)
	}
	if mustVersion(t, s) <= v {
		t.Error("ExpireDue did not bump the state version")
	}
	if names, err := s.ExpireDue(ctx); err != nil || len(names) != 0 {
		t.Fatalf("second ExpireDue = %v, %v; want none", names, err)
	}
	st, err = s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 1 || st.Nodes[0].Name != "b" || !st.NextExpiry.IsZero() {
		t.Fatalf("state after expiry: %+v, next expiry %s", st.Nodes, st.NextExpiry)
	}
	entries, err := s.Audit(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.Action == "node.expired" && e.Target == "a" && e.Actor == "coordinator" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d node.expired audit entries for a, want 1: %+v", n, entries)
	}
}

// An admin sets an expiry in the future, clears it, or expires now; an
// expired node cannot be brought back.
func testExpireNodeAtAndNever(t *testing.T, e *engine) {
	s, _ := e.open(t)
	start := time.Now().Truncate(time.Millisecond)
	now := start
	s.now = func() time.Time { return now }
	ctx := context.Background()
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	a := mustEnroll(t, s, key, EnrollParams{Name: "a"})

	at := start.Add(24 * time.Hour)
	if _, err := s.ExpireNode(ctx, "admin", "a", at, false); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.NodeByName(ctx, "a"); !n.Expires.Equal(at) {
		t.Fatalf("expires %s, want %s", n.Expires, at)
	}
	if _, err := s.NodeByCredential(ctx, a.cred); err != nil {
		t.Fatalf("credential refused before the expiry: %v", err)
	}
	if _, err := s.ExpireNode(ctx, "admin", "a", time.Time{}, true); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.NodeByName(ctx, "a"); !n.Expires.IsZero() {
		t.Fatalf("--never left expiry %s", n.Expires)
	}
	// A time in the past means now.
	if _, err := s.ExpireNode(ctx, "admin", "a", start.Add(-time.Hour), false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NodeByCredential(ctx, a.cred); !errors.Is(err, ErrDenied) {
		t.Fatalf("credential after expiry: %v, want denied", err)
	}
	if _, err := s.ExpireNode(ctx, "admin", "a", time.Time{}, true); !errors.Is(err, ErrConflict) {
		t.Fatalf("never on an expired node: %v, want ErrConflict", err)
	}
	if _, err := s.ExpireNode(ctx, "admin", "a", at, false); err != nil {
		t.Fatalf("expiring an expired node again: %v", err)
	}
	if n, _ := s.NodeByName(ctx, "a"); !n.Expires.Equal(start) {
		t.Fatalf("expiring again moved the expiry to %s", n.Expires)
	}
	// "Expire now" is published by its own change: nothing is due after.
	if names, err := s.ExpireDue(ctx); err != nil || len(names) != 0 {
		t.Fatalf("ExpireDue after expire-now = %v, %v; want none", names, err)
	}
	if _, err := s.ExpireNode(ctx, "admin", "nobody", time.Time{}, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown node: %v, want ErrNotFound", err)
	}
}

// An ephemeral node is deleted only while its last-seen time is the one
// the sweep read: one seen again meanwhile stays, and so does a node that
// is not ephemeral.
func testDeleteEphemeral(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	a := mustEnroll(t, s, newJoinKey(t, s, wire.CreateJoinKeyRequest{Ephemeral: true}), EnrollParams{Name: "a"})
	plain := mustEnroll(t, s, newJoinKey(t, s, wire.CreateJoinKeyRequest{}), EnrollParams{Name: "plain"})
	if !a.node.Ephemeral || plain.node.Ephemeral {
		t.Fatalf("ephemeral: a %v, plain %v; want true, false", a.node.Ephemeral, plain.node.Ephemeral)
	}
	seen := time.UnixMilli(time.Now().UnixMilli())
	if err := s.Touch(ctx, a.node.ID, seen); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		id       int64
		lastSeen time.Time
	}{
		{"seen since the sweep read it", a.node.ID, time.Time{}},
		{"not ephemeral", plain.node.ID, time.Time{}},
	} {
		if ok, err := s.DeleteEphemeral(ctx, tc.id, tc.lastSeen); ok || err != nil {
			t.Errorf("%s: DeleteEphemeral = %v, %v; want false, nil", tc.name, ok, err)
		}
	}
	before := mustVersion(t, s)
	if ok, err := s.DeleteEphemeral(ctx, a.node.ID, seen); !ok || err != nil {
		t.Fatalf("DeleteEphemeral(a, last seen) = %v, %v; want true, nil", ok, err)
	}
	if mustVersion(t, s) <= before {
		t.Error("deleting an ephemeral node did not bump the version")
	}
	if _, err := s.NodeByName(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted ephemeral node: %v, want ErrNotFound", err)
	}
	entries, err := s.Audit(ctx, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if want := "ephemeral, offline since " + seen.UTC().Format(time.RFC3339); len(entries) != 1 || entries[0].Action != "node.delete" || entries[0].Target != "a" || entries[0].Detail != want {
		t.Errorf("audit %+v, want node.delete of a: %q", entries, want)
	}
}

// A node's key is rotated only from its current key, and only to a key
// nobody has.
func testRotateNodeKey(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	a := mustEnroll(t, s, key, EnrollParams{Name: "a"})
	b := mustEnroll(t, s, key, EnrollParams{Name: "b"})
	next := newPublicKey(t)
	before := mustVersion(t, s)
	ver, err := s.RotateNodeKey(ctx, a.node.ID, a.node.PublicKey, next)
	if err != nil || ver <= before {
		t.Fatalf("RotateNodeKey = %d, %v; want a version above %d", ver, err, before)
	}
	if n, _ := s.NodeByName(ctx, "a"); n.PublicKey != next {
		t.Errorf("key after rotation %s, want %s", n.PublicKey, next)
	}
	if _, err := s.RotateNodeKey(ctx, a.node.ID, a.node.PublicKey, newPublicKey(t)); !errors.Is(err, ErrConflict) {
		t.Errorf("rotation from the old key: %v, want ErrConflict", err)
	}
	if _, err := s.RotateNodeKey(ctx, a.node.ID, next, b.node.PublicKey); !errors.Is(err, ErrConflict) {
		t.Errorf("rotation to b's key: %v, want ErrConflict", err)
	}
	if got, err := s.NodeByCredential(ctx, a.cred); err != nil || got.PublicKey != next {
		t.Errorf("a after refused rotations: %s, %v; want key %s", got.PublicKey, err, next)
	}
}

// A relay node describes itself; an agent may not, and the kinds of join
// key and node must match.
func testRelay(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	rk := newJoinKey(t, s, wire.CreateJoinKeyRequest{Relay: true, Reusable: true})
	ak := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	rpub := newPublicKey(t)
	desc := wire.Relay{Name: "r1", URL: "https://192.0.2.1", Key: rpub}
	if _, _, _, err := s.Enroll(ctx, ak, EnrollParams{PublicKey: rpub, Name: "r1", Relay: &desc}); !errors.Is(err, ErrForbidden) {
		t.Errorf("relay with an agent key: %v, want ErrForbidden", err)
	}
	if _, _, _, err := s.Enroll(ctx, rk, EnrollParams{PublicKey: newPublicKey(t), Name: "x"}); !errors.Is(err, ErrForbidden) {
		t.Errorf("agent with a relay key: %v, want ErrForbidden", err)
	}
	if k := joinKeyByID(t, s, rk.ID); k.Uses != 0 {
		t.Errorf("refused enrollments counted as uses of the relay key: %d", k.Uses)
	}
	r := mustEnroll(t, s, rk, EnrollParams{PublicKey: rpub, Name: "r1", Relay: &desc})
	if diff := cmp.Diff(&desc, r.node.Relay); diff != "" {
		t.Fatalf("relay node's description (-want +got):\n%s", diff)
	}
	if ver, err := s.SetRelay(ctx, r.node.ID, desc); ver != 0 || err != nil {
		t.Errorf("SetRelay unchanged = %d, %v; want 0, nil", ver, err)
	}
	desc.URL = "https://192.0.2.2"
	if ver, err := s.SetRelay(ctx, r.node.ID, desc); ver == 0 || err != nil {
		t.Errorf("SetRelay changed = %d, %v; want a version", ver, err)
	}
	if n, _ := s.NodeByName(ctx, "r1"); n.Relay == nil || n.Relay.URL != desc.URL {
		t.Errorf("relay after SetRelay: %+v", n.Relay)
	}
	a := mustEnroll(t, s, ak, EnrollParams{Name: "a"})
	if _, err := s.SetRelay(ctx, a.node.ID, desc); !errors.Is(err, ErrForbidden) {
		t.Errorf("SetRelay on an agent: %v, want ErrForbidden", err)
	}
}

// State reads one snapshot: while nodes enroll, each State's nodes are
// those of its version, never a version ahead of them.
func testStateIsOneSnapshot(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	base := mustVersion(t, s) // no node yet; each enrollment adds one version and one node
	const n = 100
	pubs := make([]string, n)
	for i := range pubs {
		pubs[i] = newPublicKey(t)
	}
	done := make(chan error, 1)
	go func() {
		var errs []error
		for _, pub := range pubs {
			_, _, _, err := s.Enroll(ctx, key, EnrollParams{PublicKey: pub})
			errs = append(errs, err)
		}
		done <- errors.Join(errs...)
	}()
	reads, torn := 0, 0
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if torn > 0 {
				t.Errorf("%d of %d State reads had nodes of another version than theirs", torn, reads)
			}
			return
		default:
		}
		st, err := s.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(len(st.Nodes)) != st.Version-base {
			torn++
		}
		reads++
	}
}

// SetConnectivity records a node's report for admins, without a new
// version; a second store on the database (another coordinator) lists
// it; netmaps' State does not carry it.
func testSetConnectivity(t *testing.T, e *engine) {
	ctx := context.Background()
	s, loc := e.open(t)
	a := mustEnroll(t, s, newJoinKey(t, s, wire.CreateJoinKeyRequest{}), EnrollParams{})
	before := mustVersion(t, s)
	conn := wire.Connectivity{NAT: wire.NATHard, HomeRelay: "eu-1", Reported: time.UnixMilli(time.Now().UnixMilli()).UTC(),
		Paths: []wire.PeerPath{{Peer: "b", Kind: wire.PathKindRelay, Relay: "eu-1", RTT: wire.Duration(3 * time.Millisecond)}}}
	if err := s.SetConnectivity(ctx, a.node.ID, conn); err != nil {
		t.Fatal(err)
	}
	if v := mustVersion(t, s); v != before {
		t.Errorf("SetConnectivity moved the version from %d to %d", before, v)
	}
	other := e.mustOpenAt(t, loc, netip.Prefix{}, netip.Prefix{})
	for _, st := range []*DB{s, other} {
		if got := mustNodes(t, st)[0].Connectivity; got == nil || !reflect.DeepEqual(*got, conn) {
			t.Errorf("listed connectivity %+v, want %+v", got, conn)
		}
	}
	state, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if state.Nodes[0].Connectivity != nil {
		t.Error("State's nodes carry Connectivity, an admin-only field")
	}
}
