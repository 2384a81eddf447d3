package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/internal/report"
	"github.com/wiremesh/wiremesh/wire"
)

// restartCoordinator restarts the mesh's coordinator with extra flags.
func (m *mesh) restartCoordinator(extra ...string) {
	m.t.Helper()
	m.coord.Kill()
	if _, err := m.coord.Wait(5 * time.Second); err != nil {
		m.t.Fatal(err)
	}
	m.coord = m.coordHost.Start(m.t, "coordinator", nil, append([]string{bin, "coordinator",
		"--data-dir", m.dataDir, "--listen", fmt.Sprintf("%s:%d", m.coordHost.Addr, coordPort),
		"--keepalive", "2s", "--log-format", "json"}, extra...)...)
	if err := m.coord.WaitLog("coordinator listening", 10*time.Second); err != nil {
		m.t.Fatalf("coordinator did not start: %v\n%s", err, m.coord.Log())
	}
}

// node returns the admin view of the node called name.
func (m *mesh) node(name string) wire.Node {
	m.t.Helper()
	var d wire.NodeDetail
	if err := json.Unmarshal([]byte(m.cli("nodes", "get", name, "--json")), &d); err != nil {
		m.t.Fatalf("nodes get %s: %v", name, err)
	}
	return d.Node
}

// TestNodeExpiry: a node's expiry, from its join key or set by an admin
// for a later time, cuts it off when it falls due, with no admin action
// then: every peer drops it within 1 s, its agent stops saying why, and
// its credential is refused. A future expiry can be cleared; a passed one
// cannot.
func TestNodeExpiry(t *testing.T) {
	m := newMesh(t)
	h1, h2 := m.addAgent("h1"), m.addAgent("h2")
	key := strings.TrimSpace(m.cli("keys", "create", "--node-expiry", "5s"))
	if out := m.cli("keys", "list"); !strings.Contains(out, "expire after 5s") {
		t.Errorf("keys list does not show the node expiry:\n%s", out)
	}
	h3 := m.addAgent("h3", "--join", key)
	pub3 := h3.publicKey(t)
	waitFor(t, 5*time.Second, "h3 in h1 and h2", func() bool { return h1.hasPeer(pub3) && h2.hasPeer(pub3) })
	n3 := m.node("h3")
	if want := n3.Created.Add(5 * time.Second); !n3.Expires.Equal(want) {
		t.Fatalf("h3 expires %s, want its enrollment + 5s = %s", n3.Expires, want)
	}
	cred3 := h3.identity(t).Credential
	waitFor(t, 10*time.Second, "h3 gone from h1 and h2", func() bool { return !h1.hasPeer(pub3) && !h2.hasPeer(pub3) })
	lateKey := time.Since(n3.Expires)
	if lateKey > time.Second {
		t.Errorf("h3 left its peers %s after its expiry from the join key; want ≤ 1 s", lateKey)
	}
	if code, err := h3.proc.Wait(10 * time.Second); err != nil || code == 0 || !strings.Contains(h3.proc.Log(), "expired") {
		t.Fatalf("expired h3's agent: exit %d, %v; want a non-zero exit that says it expired:\n%s", code, err, h3.proc.Log())
	}
	if got := m.netmapStatus(t, cred3, pub3); got != 401 {
		t.Fatalf("expired h3's credential: HTTP %d, want 401", got)
	}

	// An admin schedules h2's expiry two seconds ahead.
	pub2 := h2.publicKey(t)
	m.cli("nodes", "expire", "h2", "--in", "2s")
	n2 := m.node("h2")
	if d := time.Until(n2.Expires); d < time.Second || d > 2*time.Second {
		t.Fatalf("h2 expires in %s, want about 2 s", d)
	}
	if !h1.hasPeer(pub2) {
		t.Fatal("h2 left h1 before its expiry")
	}
	waitFor(t, 5*time.Second, "h2 gone from h1", func() bool { return !h1.hasPeer(pub2) })
	lateAdmin := time.Since(n2.Expires)
	if lateAdmin > time.Second {
		t.Errorf("h2 left h1 %s after the expiry an admin set; want ≤ 1 s", lateAdmin)
	}
	if out, err := m.cliErr("nodes", "expire", "h2", "--never"); err == nil || !strings.Contains(err.Error(), "must enroll again") {
		t.Errorf("--never on an expired node: %v\n%s; want a refusal saying it must enroll again", err, out)
	}

	// A future expiry can be cleared.
	at := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	m.cli("nodes", "expire", "h1", "--at", at)
	if got := m.node("h1").Expires.UTC().Format(time.RFC3339); got != at {
		t.Fatalf("h1 expires %s, want %s", got, at)
	}
	m.cli("nodes", "expire", "h1", "--never")
	if e := m.node("h1").Expires; !e.IsZero() {
		t.Fatalf("h1 still expires at %s after --never", e)
	}
	t.Logf("expiry → dropped by peers: %s (from the join key), %s (set by an admin)", lateKey.Round(time.Millisecond), lateAdmin.Round(time.Millisecond))
	late := max(lateKey, lateAdmin)
	report.Add(t, report.Row{
		Fault:  "node expiry falls due (join key --node-expiry, admin --in)",
		Check:  "every peer drops the node, its agent stops, its credential gets 401",
		Figure: fmt.Sprintf("dropped %s and %s after the expiry", lateKey.Round(time.Millisecond), lateAdmin.Round(time.Millisecond)),
		Target: "≤ 1 s", Met: late <= time.Second,
	})
}

// TestEphemeralNodes: a node enrolled with an ephemeral join key is
// deleted once it has been offline for the coordinator's ephemeral
// timeout; one that stays connected is kept, also across a coordinator
// restart longer than the timeout.
func TestEphemeralNodes(t *testing.T) {
	const timeout = 5 * time.Second
	m := newMesh(t)
	m.restartCoordinator("--ephemeral-timeout", timeout.String())
	h1 := m.addAgent("h1")
	key := strings.TrimSpace(m.cli("keys", "create", "--reusable", "--ephemeral"))
	e1, e2 := m.addAgent("e1", "--join", key), m.addAgent("e2", "--join", key)
	pub1, pub2 := e1.publicKey(t), e2.publicKey(t)
	waitFor(t, 5*time.Second, "e1 and e2 in h1", func() bool { return h1.hasPeer(pub1) && h1.hasPeer(pub2) })
	if !m.node("e1").Ephemeral || m.node("h1").Ephemeral {
		t.Fatal("nodes get does not tell the ephemeral node from the other")
	}
	if out := m.cli("nodes", "list"); !strings.Contains(out, "ephemeral") {
		t.Errorf("nodes list does not show the ephemeral nodes:\n%s", out)
	}
	cred1 := e1.identity(t).Credential

	// e1's host dies.
	e1.proc.Kill()
	offline := time.Now()
	if _, err := e1.proc.Wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, timeout+10*time.Second, "e1 gone from h1", func() bool { return !h1.hasPeer(pub1) })
	took := time.Since(offline)
	if took < timeout {
		t.Errorf("e1 deleted %s after it went offline, before the %s timeout", took, timeout)
	}
	if got := m.netmapStatus(t, cred1, pub1); got != 401 {
		t.Errorf("deleted e1's credential: HTTP %d, want 401", got)
	}
	if out := m.cli("audit"); !strings.Contains(out, "ephemeral, offline since") {
		t.Errorf("audit log does not say why e1 was deleted:\n%s", out)
	}

	// The coordinator is down for longer than the timeout: e2, connected
	// before and after, stays.
	m.coord.Kill()
	if _, err := m.coord.Wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(timeout + time.Second)
	m.restartCoordinator("--ephemeral-timeout", timeout.String())
	time.Sleep(timeout + time.Second)
	if !h1.hasPeer(pub2) {
		t.Fatal("e2, online throughout, was dropped after the coordinator restart")
	}
	for _, n := range m.nodes() {
		if n.Name == "e1" {
			t.Fatal("e1 is listed again")
		}
	}
	if !m.node("e2").Online {
		t.Error("e2 is not online after the coordinator restart")
	}
	t.Logf("ephemeral node deleted %s after going offline (timeout %s)", took.Round(time.Millisecond), timeout)
	report.Add(t, report.Row{
		Fault:  "ephemeral node's agent killed",
		Check:  "deleted after the timeout and dropped by peers; a connected one survives a coordinator restart",
		Figure: fmt.Sprintf("deleted %s after going offline (timeout %s)", took.Round(100*time.Millisecond), timeout),
		Target: fmt.Sprintf("≥ %s and ≤ %s", timeout, timeout+2*time.Second),
		Met:    took >= timeout && took <= timeout+2*time.Second,
	})
}
