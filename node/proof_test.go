package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/service"
	"github.com/wiremesh/wiremesh/wire"
)

// TestCoordinatorKeyFetched: a node.json from before proofs (no
// coordinator_key) still works: the agent fetches the key, connects, and
// keeps it.
func TestCoordinatorKeyFetched(t *testing.T) {
	tc := startCoordinator(t)
	dir := filepath.Join(t.TempDir(), "state")
	a := startAgent(t, "a", dir, tc.joinKey(t, false))
	a.waitUp(t)
	if got := readIdentity(t, dir).CoordinatorKey; got != tc.c.PublicProofKey() {
		t.Fatalf("enrollment kept coordinator key %q, want %q", got, tc.c.PublicProofKey())
	}
	a.stop(t)

	id := readIdentity(t, dir)
	id.CoordinatorKey = ""
	writeIdentity(t, dir, id)
	a = startAgent(t, "a", dir, "")
	waitConnected(t, a)
	if got := readIdentity(t, dir); got.CoordinatorKey != tc.c.PublicProofKey() || got.Node.PublicKey != a.pub() {
		t.Errorf("node.json after fetching: coordinator key %q and node key %s, want %q and %s",
			got.CoordinatorKey, got.Node.PublicKey, tc.c.PublicProofKey(), a.pub())
	}
	// A rotation keeps it in node.json too.
	if _, err := a.RotateKey(context.Background()); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	if got := readIdentity(t, dir); got.CoordinatorKey != tc.c.PublicProofKey() || got.Node.PublicKey != a.pub() {
		t.Errorf("node.json after rotating: coordinator key %q and node key %s, want %q and %s",
			got.CoordinatorKey, got.Node.PublicKey, tc.c.PublicProofKey(), a.pub())
	}
}

// TestCoordinatorKeyReplaced: an agent whose proofs are refused because
// it keeps another proof key (the coordinator's was replaced) fetches the
// key again and connects.
func TestCoordinatorKeyReplaced(t *testing.T) {
	tc := startCoordinator(t)
	dir := filepath.Join(t.TempDir(), "state")
	a := startAgent(t, "a", dir, tc.joinKey(t, false))
	a.waitUp(t)
	a.stop(t)
	id := readIdentity(t, dir)
	id.CoordinatorKey = startCoordinator(t).c.PublicProofKey() // another coordinator's
	writeIdentity(t, dir, id)
	a = startAgent(t, "a", dir, "")
	waitConnected(t, a)
	if got := readIdentity(t, dir).CoordinatorKey; got != tc.c.PublicProofKey() {
		t.Errorf("node.json keeps coordinator key %q, want %q", got, tc.c.PublicProofKey())
	}
}

// TestClockRefusalNotFatal: an agent whose clock is off by more than the
// proof window is refused, keeps running on its netmap and says why, and
// connects once its clock is right.
func TestClockRefusalNotFatal(t *testing.T) {
	tc := startCoordinator(t)
	var skew atomic.Int64
	skew.Store(int64(-time.Hour))
	eng := newFakeEngine()
	cfg := testAgentConfig(t, "a", filepath.Join(t.TempDir(), "state"), tc.joinKey(t, false), eng)
	cfg.Clock = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &runningAgent{Agent: ag, name: "a", eng: eng, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- ag.Run(ctx) }()
	t.Cleanup(func() { a.stop(t) })

	deadline := time.Now().Add(waitFor)
	for st := status(t, cfg.StateDir); !strings.Contains(st.LastError, "check the node's clock"); st = status(t, cfg.StateDir) {
		if time.Now().After(deadline) {
			t.Fatalf("status: connected %v, last error %q; want the clock refusal", st.Connected, st.LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-a.done:
		a.done = nil
		t.Fatalf("agent stopped over its clock: %v", err)
	default:
	}
	skew.Store(0)
	waitConnected(t, a)
}

// TestCoordinatorKeyNotServed: a coordinator that predates proofs answers
// 404 for its key, which the client tells apart.
func TestCoordinatorKeyNotServed(t *testing.T) {
	c := fakeCoordinator(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != wire.PathCoordinatorKey || r.Header.Get("Authorization") != "" {
			http.Error(w, `{"error":"unexpected request"}`, http.StatusBadRequest)
			return
		}
		http.Error(w, `{"error":"no such endpoint"}`, http.StatusNotFound)
	})
	_, err := c.coordinatorKey(context.Background())
	if client.CodeOf(err) != wire.CodeNotFound || errors.Is(err, ErrRefused) {
		t.Errorf("coordinator key from an old coordinator: %v, want not_found", err)
	}
	bad := fakeCoordinator(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(wire.CoordinatorKey{PublicKey: "AAAA"})
	})
	if k, err := bad.coordinatorKey(context.Background()); err == nil {
		t.Errorf("malformed coordinator key accepted: %q", k)
	}
}

func readIdentity(t *testing.T, dir string) Identity {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if err != nil {
		t.Fatal(err)
	}
	var id Identity
	if err := json.Unmarshal(b, &id); err != nil {
		t.Fatal(err)
	}
	return id
}

func writeIdentity(t *testing.T, dir string, id Identity) {
	t.Helper()
	b, _ := json.MarshalIndent(id, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, identityFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReportsInOneInstant: an agent whose clock stands still gets each of
// its services reports accepted: their proofs' times grow by a nanosecond
// at least, and the coordinator, which refuses a report whose time is not
// after the last one's as a replay, takes every one.
func TestReportsInOneInstant(t *testing.T) {
	tc := startCoordinator(t)
	frozen := time.Now()
	eng := newFakeEngine()
	cfg := testAgentConfig(t, "a", filepath.Join(t.TempDir(), "state"), tc.joinKey(t, false), eng)
	cfg.Clock = func() time.Time { return frozen }
	ag, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &runningAgent{Agent: ag, name: "a", eng: eng, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- ag.Run(ctx) }()
	t.Cleanup(func() { a.stop(t) })
	waitConnected(t, a)

	var defs []service.Definition
	for i, name := range []string{"web", "db", "api"} {
		defs = append(defs, service.Definition{Name: name, Port: uint16(8000 + i), Protocol: service.TCP})
		if err := ag.svc.Load().register(defs[i:]); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(waitFor)
		for {
			nodes, err := tc.c.Store().AdminNodes(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(nodes) == 1 && len(nodes[0].Services) == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("report %d (%s registered) not accepted within %s: the coordinator has %+v", i+1, name, waitFor, nodes)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
