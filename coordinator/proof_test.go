package coordinator

import (
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// TestCoordinatorKey: the proof key is served without auth and in the
// enrollment answer, the same in both.
func TestCoordinatorKey(t *testing.T) {
	ts := startServer(t, time.Hour)
	code, body := ts.do(t, "GET", wire.PathCoordinatorKey, "", nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", wire.PathCoordinatorKey, code, body)
	}
	var ck wire.CoordinatorKey
	decodeStrict(t, body, &ck)
	if ck.PublicKey != ts.c.PublicProofKey() || validPublicKey(ck.PublicKey) != nil {
		t.Errorf("served key %q, want %q", ck.PublicKey, ts.c.PublicProofKey())
	}
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{})
	if got := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t)}).CoordinatorKey; got != ck.PublicKey {
		t.Errorf("enrollment answer has coordinator key %q, want %q", got, ck.PublicKey)
	}
}

// TestProofKeyFile: a data dir without proof.key (from an older
// coordinator) gets one at the next start; a corrupt one stops the start.
func TestProofKeyFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c, f := newForTest(t, dir)
	first := c.PublicProofKey()
	c.Close()
	if err := os.Remove(f.ProofKey); err != nil {
		t.Fatal(err)
	}
	c, f = newForTest(t, dir)
	second := c.PublicProofKey()
	c.Close()
	if !slices.Contains(f.Created, f.ProofKey) || second == first {
		t.Errorf("after removing proof.key: created %v, key %s (was %s); want a new one", f.Created, second, first)
	}
	if fi, err := os.Stat(f.ProofKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("proof.key: %v, %v; want mode 0600", fi, err)
	}
	if err := os.WriteFile(f.ProofKey, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "proof.key")) {
		t.Errorf("New with a corrupt proof.key: %v, want an error naming it", err)
	}
}
