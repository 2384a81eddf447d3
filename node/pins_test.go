package node

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	if got := a.ctl.coordinatorPins(); !got.Equal(co.c.Pins()) {
		t.Errorf("agent trusts %s, want the netmap's %s", got, co.c.Pins())
	}
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	id := storedIdentity(t, dir)
	if !id.Pins.Equal(co.c.Pins()) {
		t.Errorf("node.json keeps pins %s, want the netmap's %s", id.Pins, co.c.Pins())
	}
}

// TestPinMismatchKeepsRunning: an enrolled agent whose coordinator URL is
// answered by a server with another certificate (a man in the middle)
// refuses it but keeps running on its last netmap and retries, instead of
// exiting and taking the data path down with it: once the coordinator
// answers again, the agent is connected.
func TestPinMismatchKeepsRunning(t *testing.T) {
	co := startCoordinator(t)
	a := startAgent(t, "a", filepath.Join(t.TempDir(), "a"), co.joinKey(t, false))
	a.waitUp(t)
	addr := strings.TrimPrefix(co.url, "https://")
	co.stop()
	ln, err := net.Listen("tcp", addr) // the impostor takes the coordinator's address
	if err != nil {
		t.Fatal(err)
	}
	impostor := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	impostor.Listener.Close()
	impostor.Listener = ln
	impostor.Config.ErrorLog = log.New(io.Discard, "", 0)
	impostor.StartTLS()
	// The netmap stream met the impostor (the services report may have
	// met it first).
	for deadline := time.Now().Add(waitFor); ; time.Sleep(10 * time.Millisecond) {
		if st := status(t, a.dir); strings.Contains(st.LastError, credential.ErrPinMismatch.Error()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's stream did not meet the impostor: %+v", status(t, a.dir))
		}
	}
	impostor.Close()
	if a.eng.isClosed() {
		t.Error("the data path was closed")
	}
	// The coordinator is back at its address: the agent, still running,
	// connects.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	startCoordinatorOn(t, ln, co.dir)
	for deadline := time.Now().Add(waitFor); !status(t, a.dir).Connected; time.Sleep(10 * time.Millisecond) {
		select {
		case err := <-a.done:
			a.done, a.err = nil, err
			t.Fatalf("agent stopped on a pin mismatch: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not connected again: %+v", status(t, a.dir))
		}
	}
}
