package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/report"
	"github.com/wiremesh/wiremesh/wire"
)

// runAgent runs `wiremesh agent` on host h to completion (it must fail) and
// returns its output.
func (m *mesh) runAgentFail(t *testing.T, a *agent, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"netns", "exec", a.host.NS, bin, "agent", "--state-dir", a.stateDir, "--interface", a.iface, "--name", a.name}, args...)
	out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
	if err == nil {
		t.Fatalf("agent %s with %v succeeded; want an error\n%s", a.name, args, out)
	}
	if ctx.Err() != nil {
		t.Fatalf("agent %s with %v hung\n%s", a.name, args, out)
	}
	return string(out)
}

// stateFiles lists what is in dir (nothing if it does not exist), without
// the lock file that any start creates.
func stateFiles(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if e.Name() != "agent.lock" {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestBadInput: every malformed or refused input gives a clear error and a
// non-zero exit, and leaves nothing half-written.
func TestBadInput(t *testing.T) {
	m := newMesh(t)
	h := &agent{name: "bad", host: m.lab.AddHost("bad"), iface: m.lab.Prefix() + "bad"}
	fresh := func() { h.stateDir = filepath.Join(t.TempDir(), "state") }
	key := func(args ...string) string {
		return strings.TrimSpace(m.cli(append([]string{"keys", "create"}, args...)...))
	}
	keyID := func(k string) string {
		b, err := credential.ParseJoinKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return b.Secret.ID
	}

	used := key()
	first := m.addAgent("first", "--join", used)
	_ = first
	revoked := key()
	m.cli("keys", "revoke", keyID(revoked))
	expired := key("--expiry", "1ms")
	time.Sleep(5 * time.Millisecond)
	wrongPin := func() string {
		b, _ := credential.ParseJoinKey(key())
		b.Pins[0].Sum[0] ^= 0xff
		return b.Encode(credential.JoinKeyPrefix)
	}()

	joins := 0 // refused as they should be
	for _, tc := range []struct {
		name, join, want string
	}{
		{"malformed", "wmjoin1-@@@not-a-key", "malformed join key"},
		{"not a join key", "hello", "--join: this is not a join key (they start with wmjoin1-)"},
		{"revoked", revoked, "was revoked"},
		{"expired", expired, "expired at"},
		{"used one-time", used, "already used"},
		{"pin mismatch", wrongPin, "does not match the pin"},
	} {
		ok := t.Run(tc.name, func(t *testing.T) {
			fresh()
			out := m.runAgentFail(t, h, "--join", tc.join)
			if !strings.Contains(out, tc.want) {
				t.Fatalf("error does not say %q:\n%s", tc.want, out)
			}
			if files := stateFiles(h.stateDir); len(files) != 0 {
				t.Fatalf("refused enrollment left %v in the state dir", files)
			}
		})
		if ok {
			joins++
		}
	}
	n := len(m.nodes())
	report.Add(t, report.Row{Fault: "agent started with a malformed, revoked, expired, used one-time or mis-pinned join key",
		Check:  "clear error, non-zero exit, empty state dir, no node enrolled",
		Figure: fmt.Sprintf("%d of 6 refused cleanly; %d nodes added", joins, n-1), Target: "6 of 6; 0 added", Met: joins == 6 && n == 1})
	if n != 1 {
		t.Fatalf("coordinator has %d nodes after refused enrollments; want 1", n)
	}

	local := 0 // bad local states refused as they should be
	run := func(name string, f func(*testing.T)) {
		if t.Run(name, f) {
			local++
		}
	}
	run("state dir mode", func(t *testing.T) {
		fresh()
		os.MkdirAll(h.stateDir, 0o755)
		os.Chmod(h.stateDir, 0o755)
		out := m.runAgentFail(t, h, "--join", m.joinKey)
		if !strings.Contains(out, "chmod 700") {
			t.Fatalf("error does not say how to fix the mode:\n%s", out)
		}
	})
	run("corrupt identity", func(t *testing.T) {
		fresh()
		os.MkdirAll(h.stateDir, 0o700)
		os.WriteFile(filepath.Join(h.stateDir, "private.key"), []byte("not a key\n"), 0o600)
		os.WriteFile(filepath.Join(h.stateDir, "node.json"), []byte(`{"coordinator": "https://x"`), 0o600)
		out := m.runAgentFail(t, h)
		if !strings.Contains(out, "corrupt") || !strings.Contains(out, "private.key") {
			t.Fatalf("error does not name the corrupt file:\n%s", out)
		}
		os.WriteFile(filepath.Join(h.stateDir, "private.key"), []byte("cGRhbmthbmtwZGFua2Fua3BkYW5rYW5rcGRhbmthbms=\n"), 0o600)
		out = m.runAgentFail(t, h)
		if !strings.Contains(out, "corrupt") || !strings.Contains(out, "node.json") {
			t.Fatalf("error does not name the corrupt file:\n%s", out)
		}
	})
	run("file mode", func(t *testing.T) {
		fresh()
		os.MkdirAll(h.stateDir, 0o700)
		os.WriteFile(filepath.Join(h.stateDir, "private.key"), []byte("x\n"), 0o644)
		out := m.runAgentFail(t, h)
		if !strings.Contains(out, "want 0600") {
			t.Fatalf("error does not mention the mode:\n%s", out)
		}
	})
	run("no join key", func(t *testing.T) {
		fresh()
		out := m.runAgentFail(t, h)
		if !strings.Contains(out, "--join") {
			t.Fatalf("error does not say a join key is needed:\n%s", out)
		}
	})
	run("listen port in use", func(t *testing.T) {
		fresh()
		pc, err := h.host.ListenPacket("udp", ":51820")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		out := m.runAgentFail(t, h, "--join", m.joinKey, "--name", "portclash")
		if !strings.Contains(out, "listen port 51820 is already in use (by another program or agent): free it or choose another with --listen-port") {
			t.Fatalf("error does not name the port and --listen-port:\n%s", out)
		}
	})
	run("dns port in use", func(t *testing.T) {
		fresh()
		pc, err := h.host.ListenPacket("udp", "127.0.0.1:53")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		out := m.runAgentFail(t, h, "--join", m.joinKey, "--name", "dnsclash")
		if !strings.Contains(out, "dns listen") || !strings.Contains(out, "127.0.0.1:53") || !strings.Contains(out, "--dns-port") {
			t.Fatalf("error does not name the DNS port and the way out:\n%s", out)
		}
		if slices.ContainsFunc(m.nodes(), func(n wire.Node) bool { return n.Name == "dnsclash" }) {
			t.Fatal("an agent that cannot serve DNS enrolled")
		}
	})
	run("second agent on one state dir", func(t *testing.T) {
		a := m.agents["first"]
		other := &agent{name: "first", host: a.host, iface: m.lab.Prefix() + "x", stateDir: a.stateDir}
		out := m.runAgentFail(t, other, "--listen-port", "51999")
		if !strings.Contains(out, "in use by another agent") {
			t.Fatalf("second agent not refused clearly:\n%s", out)
		}
		if a.proc.Exited() {
			t.Fatalf("first agent died")
		}
	})
	report.Add(t, report.Row{Fault: "agent started on a bad state dir, corrupt identity, taken port or a state dir in use",
		Check:  "clear error naming the problem, non-zero exit",
		Figure: fmt.Sprintf("%d of 7 refused clearly", local), Target: "7 of 7", Met: local == 7})
}
