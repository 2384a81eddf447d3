package coordinator

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
)

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
	mustEnroll(t, c.store, key, store.EnrollParams{Name: "ci-1"})
	c.sweepEphemeral(ctx)
	if !slices.ContainsFunc(mustNodes(t, c.store), func(n wire.Node) bool { return n.Name == "ci-1" }) {
		t.Fatal("an ephemeral node was deleted right after it enrolled, before it could connect")
	}
}
