package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/wire"
)

// A join key's node expiry gives each node it admits an expiry from its
// enrollment; once it passes, the node is out of the state and its
// credential is refused, and ExpireDue records it once.
func TestNodeExpiryFromJoinKey(t *testing.T) {
	s, _ := openTestStore(t)
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

func TestCreateJoinKeyRefusesBadNodeExpiry(t *testing.T) {
	s, _ := openTestStore(t)
	for _, req := range []wire.CreateJoinKeyRequest{
		{NodeExpiry: wire.Duration(-time.Second)},
		{NodeExpiry: wire.Duration(time.Microsecond)},
	} {
		if _, _, err := s.CreateJoinKey(context.Background(), "test", req); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateJoinKey(node expiry %s) = %v, want ErrInvalid", time.Duration(req.NodeExpiry), err)
		}
	}
}

// An admin sets an expiry in the future, clears it, or expires now; an
// expired node cannot be brought back.
func TestExpireNodeAtAndNever(t *testing.T) {
	s, _ := openTestStore(t)
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

// The coordinator publishes a node's expiry when it falls due: a peer's
// open stream gets a netmap without it, with no admin action.
func TestScheduledExpiryReachesPeers(t *testing.T) {
	ts := startServer(t, time.Hour)
	ts.setPolicy(t, allowAll)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{Name: "a", PublicKey: newPublicKey(t)})
	b := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{Name: "b", PublicKey: newPublicKey(t)})
	sa := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey})
	sa.netmap(t, "b as a peer", func(nm *wire.Netmap) bool { return slices.Contains(peerNames(nm), "b") })

	at := time.Now().Add(300 * time.Millisecond)
	code, body := ts.doJSON(t, "POST", wire.PathNodes+"/b/expire", ts.admin, wire.ExpireRequest{At: at})
	if code != http.StatusOK {
		t.Fatalf("expire b at %s: %d %s", at, code, body)
	}
	var n wire.Node
	decodeStrict(t, body, &n)
	if !n.Expires.Equal(at.Truncate(time.Millisecond)) {
		t.Fatalf("b expires %s, want %s", n.Expires, at)
	}
	nm := sa.netmap(t, "b gone", func(nm *wire.Netmap) bool { return !slices.Contains(peerNames(nm), "b") })
	late := time.Since(at)
	if late < 0 {
		t.Fatalf("b left a's netmap %s before its expiry", -late)
	}
	if late > time.Second {
		t.Errorf("b left a's netmap %s after its expiry, want within 1 s", late)
	}
	t.Logf("expiry published %s after it fell due (netmap version %d)", late.Round(time.Millisecond), nm.Version)
	code, body = ts.doJSON(t, "POST", wire.PathNetmap, b.Credential, wire.MapRequest{PublicKey: b.Node.PublicKey})
	if code != http.StatusUnauthorized || !strings.Contains(errorOf(t, body).Error, "expired") {
		t.Errorf("expired b's netmap request: %d %s, want 401 saying expired", code, body)
	}

	// Bad bodies get a 400 saying what is wrong.
	for _, tc := range []struct{ body, want string }{
		{`{"at": "2030-01-01T00:00:00Z", "never": true}`, "not both"},
		{`{"at": "tomorrow"}`, "bad JSON"},
		{`{"when": 1}`, "unknown field"},
	} {
		code, body := ts.do(t, "POST", wire.PathNodes+"/a/expire", ts.admin, strings.NewReader(tc.body))
		if code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Error, tc.want) {
			t.Errorf("expire with %s: %d %s, want 400 containing %q", tc.body, code, body, tc.want)
		}
	}
}

// An ephemeral node is deleted once it has been offline for the ephemeral
// timeout; one that stays connected, and a node that is not ephemeral
// (keep, which never connects), stay.
func TestEphemeralNodesDeletedWhenOffline(t *testing.T) {
	const timeout = time.Second
	ts := startServer(t, time.Hour, func(c *Config) { c.EphemeralTimeout = timeout })
	ts.setPolicy(t, allowAll)
	eph := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true, Ephemeral: true})
	if !eph.Key.Ephemeral {
		t.Fatalf("join key not listed as ephemeral: %+v", eph.Key)
	}
	plain := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	gone := ts.enroll(t, eph.JoinKey, wire.EnrollRequest{Name: "gone", PublicKey: newPublicKey(t)})
	stays := ts.enroll(t, eph.JoinKey, wire.EnrollRequest{Name: "stays", PublicKey: newPublicKey(t)})
	ts.enroll(t, plain.JoinKey, wire.EnrollRequest{Name: "keep", PublicKey: newPublicKey(t)})
	if !gone.Node.Ephemeral {
		t.Fatalf("node from an ephemeral key is not ephemeral: %+v", gone.Node)
	}

	watch := ts.openStream(t, stays.Credential, wire.MapRequest{PublicKey: stays.Node.PublicKey})
	sg := ts.openStream(t, gone.Credential, wire.MapRequest{PublicKey: gone.Node.PublicKey})
	sg.netmap(t, "a first netmap", func(*wire.Netmap) bool { return true })
	watch.netmap(t, "gone as a peer", func(nm *wire.Netmap) bool { return slices.Contains(peerNames(nm), "gone") })
	// Held open for longer than the timeout, it is not deleted.
	time.Sleep(2 * timeout)
	if !slices.ContainsFunc(mustNodes(t, ts.c.Store()), func(n wire.Node) bool { return n.Name == "gone" }) {
		t.Fatal("an ephemeral node with an open stream was deleted")
	}
	offline := time.Now()
	sg.cancel()
	<-sg.done
	watch.netmap(t, "gone deleted", func(nm *wire.Netmap) bool { return !slices.Contains(peerNames(nm), "gone") })
	took := time.Since(offline)
	if took < timeout {
		t.Errorf("deleted %s after going offline, before the %s timeout", took, timeout)
	}
	t.Logf("ephemeral node deleted %s after going offline (timeout %s)", took.Round(time.Millisecond), timeout)
	names := []string{}
	for _, n := range mustNodes(t, ts.c.Store()) {
		names = append(names, n.Name)
	}
	if !slices.Equal(names, []string{"stays", "keep"}) {
		t.Errorf("nodes after the sweep: %v, want [stays keep]", names)
	}
	code, body := ts.doJSON(t, "POST", wire.PathNetmap, gone.Credential, wire.MapRequest{PublicKey: gone.Node.PublicKey})
	if code != http.StatusUnauthorized {
		t.Errorf("deleted ephemeral node's netmap request: %d %s, want 401", code, body)
	}
}

// TestExpireAnswersAdminView: the node that POST .../expire returns is the
// node as GET .../NAME shows it (online, services with their health), not
// the bare stored row, so `nodes expire` prints what `nodes get` does.
func TestExpireAnswersAdminView(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Tags: []string{"tag:db"}})
	n := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "db-1"})
	ts.setPolicy(t, `{"acls": [{"action": "accept", "src": ["*"], "dst": ["svc:db"], "proto": "tcp"}]}`)
	st := ts.openStream(t, n.Credential, wire.MapRequest{PublicKey: n.Node.PublicKey})
	st.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })
	svcs := []wire.Service{{Name: "db", Port: 5432, Health: "passing"}}
	if code, body := ts.doJSON(t, "PUT", wire.PathServicesReport, n.Credential, wire.ServicesReport{PublicKey: n.Node.PublicKey, Services: svcs, ContentProof: servicesProof(t, ts.c, n.Node.PublicKey, svcs)}); code != http.StatusNoContent {
		t.Fatalf("report: %d %s", code, body)
	}
	code, body := ts.doJSON(t, "POST", wire.PathNodes+"/db-1/expire", ts.admin, wire.ExpireRequest{At: time.Now().Add(time.Hour)})
	if code != http.StatusOK {
		t.Fatalf("expire: %d %s", code, body)
	}
	var got wire.Node
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	code, body = ts.doJSON(t, "GET", wire.PathNodes+"/db-1", ts.admin, nil)
	var want wire.NodeDetail
	if err := json.Unmarshal(body, &want); code != http.StatusOK || err != nil {
		t.Fatalf("get: %d %v %s", code, err, body)
	}
	if !got.Online || len(got.Services) != 1 || got.Services[0].Health != "passing" {
		t.Errorf("expire answered online=%v services=%+v; want online, db passing", got.Online, got.Services)
	}
	if d := cmp.Diff(want.Node, got, cmpNet); d != "" {
		t.Errorf("expire's node differs from GET's (-get +expire):\n%s", d)
	}
}

// TestEphemeralNodeGetsItsTimeoutToConnect: an ephemeral node that
// enrolled but has not opened its first stream yet counts as offline from
// its enrollment, not from the coordinator's start long before, so a sweep
// between the two does not delete it.
func TestEphemeralNodeGetsItsTimeoutToConnect(t *testing.T) {
	c, _ := newForTest(t, filepath.Join(t.TempDir(), "data"))
	defer c.Close()
	c.cfg.EphemeralTimeout = time.Minute
	c.started = time.Now().Add(-time.Hour) // up for an hour; no goroutine of c runs yet
	ctx := context.Background()
	key := newJoinKey(t, c.store, wire.CreateJoinKeyRequest{Ephemeral: true})
	mustEnroll(t, c.store, key, EnrollParams{Name: "ci-1"})
	c.sweepEphemeral(ctx)
	if !slices.ContainsFunc(mustNodes(t, c.store), func(n wire.Node) bool { return n.Name == "ci-1" }) {
		t.Fatal("an ephemeral node was deleted right after it enrolled, before it could connect")
	}
}

// TestAuditDetails: the audit log says what each change was, not only
// that it happened: a join key's kind, tags and lifetimes, an enrolled
// node's key and what its join key gave it, an admin token's comment.
func TestAuditDetails(t *testing.T) {
	s, _ := openTestStore(t)
	ctx := context.Background()
	if _, err := s.CreateAdminToken(ctx, "admin", "ci deploys"); err != nil {
		t.Fatal(err)
	}
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true, Tags: []string{"tag:web", "tag:api"}, Expiry: wire.Duration(24 * time.Hour), NodeExpiry: wire.Duration(720 * time.Hour)})
	pub := newPublicKey(t)
	mustEnroll(t, s, key, EnrollParams{Name: "web-1", PublicKey: pub})
	entries, err := s.Audit(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	details := map[string]string{}
	for _, e := range entries {
		details[e.Action] = e.Detail
	}
	for action, want := range map[string][]string{
		"admintoken.create": {"ci deploys"},
		"joinkey.create":    {"reusable", "tags tag:web,tag:api", "expires 20", "node expiry 720h0m0s"},
		"node.enroll":       {"key " + pub, "tags tag:web,tag:api", "expires in 720h0m0s"},
	} {
		for _, w := range want {
			if !strings.Contains(details[action], w) {
				t.Errorf("audit %s detail %q; want it to say %q", action, details[action], w)
			}
		}
	}
}
