package node

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestEnrollAnswerLost: an agent whose key the coordinator enrolled
// without the agent reading the answer (here, an enrollment made before
// it starts, with the key in its state dir, where an agent killed during
// its enrollment left it: enrollOnce writes the key first) is refused,
// its one-time key counting as used; it asks again with a proof of its
// key and comes up as that node, instead of exiting refused.
func TestEnrollAnswerLost(t *testing.T) {
	tc := startCoordinator(t)
	joinKey := tc.joinKey(t, false)
	dir := filepath.Join(t.TempDir(), "a")
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	st, err := openStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	err = st.saveKey(key)
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	jk, err := credential.ParseJoinKey(joinKey)
	if err != nil {
		t.Fatal(err)
	}
	api, err := client.New(client.Config{URL: jk.URL, Pins: jk.Pins, Token: jk.Secret.String()})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	lost, err := api.Enroll(context.Background(), wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: key.PublicKey().String(), Name: "a"})
	if err != nil {
		t.Fatal(err)
	}

	a := startAgent(t, "a", dir, joinKey)
	a.waitUp(t)
	a.ctl.mu.Lock()
	id := a.ctl.id
	a.ctl.mu.Unlock()
	if id.Node.ID != lost.Node.ID || a.pub() != lost.Node.PublicKey || id.Credential == lost.Credential {
		t.Errorf("agent runs as node %d with key %s and credential %s..., want node %d with key %s and a new credential",
			id.Node.ID, a.pub(), id.Credential[:8], lost.Node.ID, lost.Node.PublicKey)
	}
	if nodes, _, err := tc.c.Store().Nodes(context.Background()); err != nil || len(nodes) != 1 {
		t.Errorf("%d nodes (%v), want 1", len(nodes), err)
	}
}
