package node

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestInterruptedRotation: an agent that died after writing its next key
// finishes the rotation on its next start if the coordinator took the key,
// and drops it if the coordinator never heard of it.
func TestInterruptedRotation(t *testing.T) {
	tc := startCoordinator(t)
	tc.setPolicy(t, allowAll)
	dir := filepath.Join(t.TempDir(), "state")
	a := startAgent(t, "a", dir, tc.joinKey(t, false))
	a.waitUp(t)
	old, oldKey := a.pub(), a.ctl.privateKey()
	cred := a.ctl.id.Credential
	a.stop(t)
	nextFile := filepath.Join(dir, nextKeyFile)

	// Died before telling the coordinator: the old key stays.
	k, _ := wgtypes.GeneratePrivateKey()
	if err := os.WriteFile(nextFile, []byte(k.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a = startAgent(t, "a", dir, "")
	waitConnected(t, a)
	if a.pub() != old {
		t.Fatalf("key changed to %s without the coordinator", a.pub())
	}
	if _, err := os.Stat(nextFile); !os.IsNotExist(err) {
		t.Errorf("an unused rotation file stayed: %v", err)
	}
	a.stop(t)

	// Died after the coordinator took the new key: the next start adopts it.
	k, _ = wgtypes.GeneratePrivateKey()
	if err := os.WriteFile(nextFile, []byte(k.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The agent made the rotation's proof with the old key, which it holds
	// until it adopts the new one.
	proof, err := credential.RotationProof(oldKey, tc.c.PublicProofKey(), k.PublicKey().String())
	if err != nil {
		t.Fatal(err)
	}
	tc.nodeDo(t, cred, wire.PathRotateKey, wire.RotateKeyRequest{PublicKey: old, NewPublicKey: k.PublicKey().String(), Proof: proof})
	a = startAgent(t, "a", dir, "")
	a.eng.wait(t, "a netmap with the new key", func(e *fakeEngine) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.last != nil && e.last.Self.PublicKey == k.PublicKey().String() && e.cfg.PrivateKey == k
	})
	if a.pub() != k.PublicKey().String() {
		t.Fatalf("agent runs with %s, want the rotated key", a.pub())
	}
	saved, ok, err := a.state.loadKey()
	if err != nil || !ok || saved != k {
		t.Errorf("private.key holds %v (%v, %v), want the rotated key", saved, ok, err)
	}
	if _, err := os.Stat(nextFile); !os.IsNotExist(err) {
		t.Errorf("the rotation file stayed: %v", err)
	}
}

// waitConnected waits until the agent holds a netmap stream (a netmap of
// its cache does not count).
func waitConnected(t *testing.T, a *runningAgent) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !a.ctl.isConnected() {
		if time.Now().After(deadline) {
			t.Fatalf("agent %s did not connect", a.name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nodeDo sends an agent request with a node credential and wants 200.
func (tc *testCoordinator) nodeDo(t *testing.T, cred, path string, body any) {
	t.Helper()
	tc.do(t, cred, http.MethodPost, path, body, http.StatusOK)
}
