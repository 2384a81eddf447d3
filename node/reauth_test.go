package node

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

// runWith makes and runs an agent from cfg, stopped when the test ends.
func runWith(t *testing.T, cfg Config, eng *fakeEngine) *runningAgent {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.Name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{Agent: a, name: cfg.Name, eng: eng, dir: cfg.StateDir, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(func() { ra.stop(t) })
	return ra
}

// checkStateDir checks that the state dir holds one consistent identity:
// node.json names the key in private.key, no rotation file is left, and
// the node is called name.
func checkStateDir(t *testing.T, ra *runningAgent, name string) {
	t.Helper()
	s := &stateDir{path: ra.dir}
	k, ok, err := s.loadKey()
	if err != nil || !ok {
		t.Fatalf("%s: key %v, %v", ra.dir, ok, err)
	}
	id, ok, err := s.loadIdentity()
	if err != nil || !ok {
		t.Fatalf("%s: identity %v, %v", ra.dir, ok, err)
	}
	if id.Node.PublicKey != k.PublicKey().String() || id.Node.Name != name {
		t.Errorf("node.json: node %s with key %s; want %s with the key in private.key, %s", id.Node.Name, id.Node.PublicKey, name, k.PublicKey())
	}
	if _, err := os.Stat(filepath.Join(ra.dir, nextKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind: %v", nextKeyFile, err)
	}
}

// TestReauth: an agent whose node was deleted or expired enrolls again
// with the join key it is restarted with, under a new key and keeping its
// state dir; without a join key it stops with one piece of advice; with
// --force-reauth it enrolls again although its identity is valid, and
// with a join key alone it keeps a valid identity.
func TestReauth(t *testing.T) {
	co := startCoordinator(t)
	co.setPolicy(t, allowAll)
	key := co.joinKey(t, true)
	dir := filepath.Join(t.TempDir(), "a")
	a := startAgent(t, "a", dir, key)
	b := startAgent(t, "b", filepath.Join(t.TempDir(), "b"), key)
	a.waitUp(t)
	b.eng.wait(t, "a in b", hasPeers(a.pub()))

	// Deleted while running: the agent stops and says once what to do.
	co.deleteNode(t, "a")
	err := a.wait(t)
	if !isIdentityRefusal(err) {
		t.Fatalf("deleted a's Run: %v; want a refusal of its credential", err)
	}
	if n := strings.Count(err.Error(), "--join NEWKEY"); n != 1 || strings.Contains(err.Error(), "empty state dir") {
		t.Errorf("deleted a's error %q gives the --join NEWKEY advice %d times, or says to empty the state dir; want it once, alone", err, n)
	}

	// Restarted with a new join key: enrolls again, same dir, new key.
	old := a.pub()
	a = startAgent(t, "a", dir, co.joinKey(t, false))
	a.waitUp(t)
	if a.pub() == old {
		t.Fatal("a enrolled again with its old key")
	}
	b.eng.wait(t, "a's new key in b", hasPeers(a.pub()))
	checkStateDir(t, a, "a")

	// Expired: the same with the reusable key.
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	co.adminDo(t, http.MethodPost, wire.PathNodes+"/a/expire", nil, http.StatusOK)
	old = a.pub()
	eng := newFakeEngine()
	cfg := testAgentConfig(t, "a", dir, key, eng)
	cfg.Name = "" // made unique from the old name: the expired a keeps it
	a = runWith(t, cfg, eng)
	a.waitUp(t)
	if a.pub() == old {
		t.Fatal("expired a enrolled again with its old key")
	}
	b.eng.wait(t, "expired a replaced in b", hasPeers(a.pub()))
	checkStateDir(t, a, "a-2")

	// A join key and a valid identity: kept.
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	old = a.pub()
	a = startAgent(t, "a-2", dir, key)
	a.waitUp(t)
	if a.pub() != old {
		t.Fatal("a valid identity was replaced without --force-reauth")
	}

	// --force-reauth: a new node beside the old one.
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	eng = newFakeEngine()
	cfg = testAgentConfig(t, "a-2", dir, key, eng)
	cfg.ForceReauth = true
	a = runWith(t, cfg, eng)
	a.waitUp(t)
	if a.pub() == old {
		t.Fatal("--force-reauth kept the old key")
	}
	b.eng.wait(t, "old and new a-2 in b", hasPeers(old, a.pub()))
	checkStateDir(t, a, "a-2-2")

	// --force-reauth needs a join key.
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	cfg.JoinKey = ""
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "--join") {
		t.Errorf("--force-reauth without a join key: %v; want an error asking for --join", err)
	}
}

// TestReauthInterrupted: an agent that died while writing the state dir of
// a new enrollment, after node.json but before private.key, starts with
// the new identity and the old key, and settles on the new key from
// private.key.next.
func TestReauthInterrupted(t *testing.T) {
	co := startCoordinator(t)
	co.setPolicy(t, allowAll)
	dir := filepath.Join(t.TempDir(), "a")
	a := startAgent(t, "a", dir, co.joinKey(t, false))
	a.waitUp(t)
	oldKey, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	co.deleteNode(t, "a")
	a = startAgent(t, "a", dir, co.joinKey(t, false))
	a.waitUp(t)
	newPub := a.pub()
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	newKey, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	// The state of a crash between node.json and private.key.
	if err := os.WriteFile(filepath.Join(dir, nextKeyFile), newKey, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, keyFile), oldKey, 0o600); err != nil {
		t.Fatal(err)
	}
	a = startAgent(t, "a", dir, "")
	a.waitUp(t)
	if a.pub() != newPub {
		t.Fatalf("after the interrupted re-enrolment the agent runs with %s; want the new key %s", a.pub(), newPub)
	}
	checkStateDir(t, a, "a")
}
