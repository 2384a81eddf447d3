package node

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// TestAgentAdoptsNetmapPins: the agent trusts the coordinator by the pin
// set of its last netmap and keeps it in node.json, so a stale pin it
// enrolled with (a public CA's, from before key pins, or the one before a
// certificate roll) is dropped on its first netmap.
func TestAgentAdoptsNetmapPins(t *testing.T) {
	co := startCoordinator(t)
	_, sec, err := co.c.Store().CreateJoinKey(context.Background(), "test", wire.CreateJoinKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	stale := credential.Pin{Kind: credential.PinCA, Sum: [32]byte{7}}
	key := credential.Bundle{URL: co.url, Pins: append(credential.Pins{stale}, co.c.Pins()...), Secret: sec}.Encode(credential.JoinKeyPrefix)
	dir := filepath.Join(t.TempDir(), "a")
	a := startAgent(t, "a", dir, key)
	a.waitUp(t)
	if got := a.coordinatorPins(); !got.Equal(co.c.Pins()) {
		t.Errorf("agent trusts %s, want the netmap's %s", got, co.c.Pins())
	}
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	st, err := openStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	id, _, err := st.loadIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if !id.Pins.Equal(co.c.Pins()) {
		t.Errorf("node.json keeps pins %s, want the netmap's %s", id.Pins, co.c.Pins())
	}
}
