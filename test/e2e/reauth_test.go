package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReenrol: a deleted node's agent, restarted with --join NEWKEY and its
// old state dir, enrolls again under a new key, keeping the dir, and its
// pings work; --force-reauth enrolls a node with a valid identity again,
// beside the old node; an expired node's agent stops with the advice of
// what to do said once.
func TestReenrol(t *testing.T) {
	m := newMesh(t)
	h1, h2 := m.addAgent("h1"), m.addAgent("h2")
	waitFor(t, 5*time.Second, "h1 and h2 peered", func() bool { return h1.hasPeer(h2.publicKey(t)) && h2.hasPeer(h1.publicKey(t)) })

	// Deleted: the agent stops and says once what to do.
	old2 := h2.publicKey(t)
	m.cli("nodes", "delete", "h2")
	if code, err := h2.proc.Wait(10 * time.Second); err != nil || code == 0 {
		t.Fatalf("deleted h2's agent: exit %d, %v; want a non-zero exit\n%s", code, err, h2.proc.Log())
	}
	checkAdviceOnce(t, "deleted h2", h2.proc.Log())

	// Restarted with a new join key and the same state dir.
	h2.start(t, "--join", strings.TrimSpace(m.cli("keys", "create")))
	pub2 := h2.publicKey(t)
	if pub2 == old2 {
		t.Fatal("h2 enrolled again with its old key")
	}
	if !strings.Contains(h2.proc.Log(), "re-enrolled with a new key") || !strings.Contains(h2.proc.Log(), "deleted or expired") {
		t.Errorf("h2's agent does not say it enrolled again and why:\n%s", h2.proc.Log())
	}
	if _, err := os.Stat(filepath.Join(h2.stateDir, "private.key.next")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("private.key.next left in h2's state dir: %v", err)
	}
	if n := h2.identity(t).Node.Name; n != "h2" {
		t.Errorf("h2 enrolled again as %q; want its old name, freed by the deletion", n)
	}
	waitFor(t, 5*time.Second, "h2's new key in h1", func() bool { return h1.hasPeer(pub2) && h2.hasPeer(h1.publicKey(t)) })
	// Its probes and its relay client use the new key too: the relay
	// refuses the old one.
	waitFor(t, 10*time.Second, "h2 attached to the relay with its new key", func() bool { return h2.relayConnected(t, "coordinator") })
	h1.ping(t, h2.addr(t, false), 1, 200*time.Millisecond)
	h2.ping(t, h1.addr(t, false), 1, 200*time.Millisecond)

	// --force-reauth with a valid identity: a new node; the old one stays.
	old1 := h1.publicKey(t)
	h1.stop(t)
	h1.start(t, "--join", m.joinKey, "--force-reauth")
	pub1 := h1.publicKey(t)
	if pub1 == old1 {
		t.Fatal("--force-reauth kept h1's key")
	}
	if n := h1.identity(t).Node.Name; n != "h1-2" {
		t.Errorf("h1 enrolled again as %q; want h1-2 (h1 is still taken by the old node)", n)
	}
	if n := m.node("h1"); n.PublicKey != old1 {
		t.Errorf("the old h1 has key %s; want it kept with %s", n.PublicKey, old1)
	}
	if !strings.Contains(h1.proc.Log(), "the old node stays") {
		t.Errorf("h1's agent does not say the old node stays:\n%s", h1.proc.Log())
	}
	waitFor(t, 5*time.Second, "h1's new key in h2", func() bool { return h2.hasPeer(pub1) && h1.hasPeer(pub2) })
	waitFor(t, 10*time.Second, "h1 attached to the relay with its new key", func() bool { return h1.relayConnected(t, "coordinator") })
	h1.ping(t, h2.addr(t, false), 1, 200*time.Millisecond)

	// Expired: the agent stops and says once what to do.
	m.cli("nodes", "expire", "h2")
	if code, err := h2.proc.Wait(10 * time.Second); err != nil || code == 0 {
		t.Fatalf("expired h2's agent: exit %d, %v; want a non-zero exit\n%s", code, err, h2.proc.Log())
	}
	checkAdviceOnce(t, "expired h2", h2.proc.Log())
}

// checkAdviceOnce checks that an agent's log tells to restart it with
// --join NEWKEY once, and nothing about emptying the state dir.
func checkAdviceOnce(t *testing.T, who, log string) {
	t.Helper()
	// The log of a restarted agent holds those of its earlier runs too:
	// look from the last start.
	if i := strings.LastIndex(log, `"msg":"agent up"`); i >= 0 {
		log = log[i:]
	}
	if n := strings.Count(log, "--join NEWKEY"); n != 1 || strings.Contains(log, "empty state dir") {
		t.Errorf("%s's agent gives the --join NEWKEY advice %d times, or says to empty the state dir; want it once, alone:\n%s", who, n, log)
	}
}
