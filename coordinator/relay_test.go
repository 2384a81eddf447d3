package coordinator

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/relay"
	"github.com/wiremesh/wiremesh/wire"
)

// relayClient attaches the node with public key pub (made by newPublicKey)
// to ts's embedded relay; packets it gets arrive on the returned channel.
func relayClient(t *testing.T, ts *testServer, pub string) (*relay.Client, <-chan []byte) {
	t.Helper()
	got := make(chan []byte, 16)
	c, err := relay.NewClient(relay.ClientConfig{
		URL: ts.c.URL(), Pins: ts.c.Pins(), RelayKey: ts.c.PublicProofKey(), NodeKey: privateKeyOf(t, pub),
		OnPacket:     func(_ [32]byte, pkt []byte) { got <- bytes.Clone(pkt) },
		PingInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return c, got
}

// The coordinator embeds a relay that every netmap names: enrolled nodes
// attach with a proof of their key and reach each other through it; a key
// the coordinator does not know never attaches, and a deleted node is
// dropped at once.
func TestEmbeddedRelay(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	b := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "b"})

	sa := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey})
	nm := sa.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })
	if len(nm.Relays) != 1 || nm.Relays[0].Name != DefaultRelayName || nm.Relays[0].URL != ts.c.URL() || nm.Relays[0].Key != ts.c.PublicProofKey() {
		t.Fatalf("relay map %+v, want the embedded relay at %s", nm.Relays, ts.c.URL())
	}

	ca, _ := relayClient(t, ts, a.Node.PublicKey)
	cb, gotB := relayClient(t, ts, b.Node.PublicKey)
	eventually(t, "both nodes to attach", func() bool { return ca.Connected() && cb.Connected() })
	keyB, _ := keyOf(b.Node.PublicKey)
	eventually(t, "a packet from a to reach b", func() bool {
		ca.Send(keyB, []byte("hello b"))
		select {
		case p := <-gotB:
			return string(p) == "hello b"
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})

	stranger, _ := relayClient(t, ts, newPublicKey(t))
	time.Sleep(300 * time.Millisecond) // a refused client never attaches: nothing to wait for
	if stranger.Connected() {
		t.Error("a key the coordinator does not know attached to its relay")
	}

	if code, body := ts.do(t, "DELETE", wire.PathNodes+"/b", ts.admin, nil); code != http.StatusNoContent {
		t.Fatalf("delete b: %d %s", code, body)
	}
	eventually(t, "the deleted node to leave the relay", func() bool { return !cb.Connected() })
	time.Sleep(300 * time.Millisecond)
	if cb.Connected() {
		t.Error("the deleted node attached again")
	}
}
