package e2e

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// matrixPolicy: web may reach api on tcp/8080, udp/5353 and by ping; api
// may reach db on tcp/5432. Nothing else.
const matrixPolicy = `{
  // the demo's three tiers
  "acls": [
    {"action": "accept", "src": ["tag:web"], "dst": ["tag:api:8080"], "proto": "tcp"},
    {"action": "accept", "src": ["tag:web"], "dst": ["tag:api:5353"], "proto": "udp"},
    {"action": "accept", "src": ["tag:web"], "dst": ["tag:api:*"], "proto": "icmp"},
    {"action": "accept", "src": ["tag:api"], "dst": ["tag:db:5432"], "proto": "tcp"},
  ],
  "tests": [
    {"src": "tag:web", "accept": ["tag:api:8080"], "deny": ["tag:api:9090", "tag:db:5432"]},
  ],
}`

// tiers starts web, api and db agents under matrixPolicy.
func tiers(t *testing.T) (m *mesh, web, api, db *agent) {
	m = newBareMesh(t)
	web = m.taggedAgent("web", "tag:web")
	api = m.taggedAgent("api", "tag:api")
	db = m.taggedAgent("db", "tag:db")
	m.setPolicy(matrixPolicy)
	waitFor(t, 5*time.Second, "peers under the policy", func() bool {
		// Both ends of each pair: a receiver filters by the rules of the
		// netmap that made the sender its peer.
		return web.hasPeer(api.publicKey(t)) && api.hasPeer(web.publicKey(t)) &&
			db.hasPeer(api.publicKey(t)) && api.hasPeer(db.publicKey(t))
	})
	return m, web, api, db
}

// server listens on TCP and UDP port on the agent's overlay address and
// echoes; it stops, with every connection, at the end of the test.
func server(t *testing.T, a *agent, port uint16) {
	t.Helper()
	ap := netip.AddrPortFrom(a.addr(t, false), port).String()
	ln, err := a.host.Listen("tcp", ap)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := a.host.ListenPacket("udp", ap)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
			}()
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 1024)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// canTCP reports whether src completes a TCP echo with dst:port within
// the timeout.
func canTCP(t *testing.T, src, dst *agent, port uint16, timeout time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := src.host.DialContext(ctx, "tcp", netip.AddrPortFrom(dst.addr(t, false), port).String())
	if err != nil {
		return false
	}
	defer c.Close()
	return echo(c, timeout)
}

func echo(c net.Conn, timeout time.Duration) bool {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping")); err != nil {
		return false
	}
	buf := make([]byte, 4)
	n, err := c.Read(buf)
	return err == nil && string(buf[:n]) == "ping"
}

// canUDP reports whether src gets a UDP echo from dst:port.
func canUDP(t *testing.T, src, dst *agent, port uint16, timeout time.Duration) bool {
	t.Helper()
	pc, err := src.host.ListenPacket("udp", netip.AddrPortFrom(src.addr(t, false), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst.addr(t, false), port))
	pc.SetDeadline(time.Now().Add(timeout))
	if _, err := pc.WriteTo([]byte("ping"), to); err != nil {
		return false
	}
	buf := make([]byte, 16)
	n, _, err := pc.ReadFrom(buf)
	return err == nil && string(buf[:n]) == "ping"
}

// canPing reports whether one ping from src to dst gets an answer.
func canPing(t *testing.T, src, dst *agent) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := src.host.Run(ctx, "ping", "-n", "-c", "1", "-W", "1", dst.addr(t, false).String())
	return err == nil
}

// TestPolicyMatrix checks allowed and denied flows over TCP, UDP and ICMP
// with real sockets and ping, the peer sets the policy implies, and that
// denials are counted and logged with the sender's name.
func TestPolicyMatrix(t *testing.T) {
	m, web, api, db := tiers(t)
	for _, a := range []*agent{web, api, db} {
		server(t, a, 8080)
		server(t, a, 9090)
		server(t, a, 5353)
		server(t, a, 5432)
	}
	short := 700 * time.Millisecond
	for _, c := range []struct {
		name     string
		ok       func() bool
		want     bool
		maxDelay time.Duration
	}{
		{"web→api tcp/8080", func() bool { return canTCP(t, web, api, 8080, 2*time.Second) }, true, 0},
		{"web→api tcp/9090", func() bool { return canTCP(t, web, api, 9090, short) }, false, 0},
		{"web→api udp/5353", func() bool { return canUDP(t, web, api, 5353, 2*time.Second) }, true, 0},
		{"web→api udp/5432", func() bool { return canUDP(t, web, api, 5432, short) }, false, 0},
		{"web→api tcp/5353 (udp-only rule)", func() bool { return canTCP(t, web, api, 5353, short) }, false, 0},
		{"web→api icmp", func() bool { return canPing(t, web, api) }, true, 0},
		{"api→web tcp/8080 (reverse)", func() bool { return canTCP(t, api, web, 8080, short) }, false, 0},
		{"api→web icmp (reverse)", func() bool { return canPing(t, api, web) }, false, 0},
		{"api→db tcp/5432", func() bool { return canTCP(t, api, db, 5432, 2*time.Second) }, true, 0},
		{"api→db tcp/8080", func() bool { return canTCP(t, api, db, 8080, short) }, false, 0},
		{"db→api tcp/5432 (reverse)", func() bool { return canTCP(t, db, api, 5432, short) }, false, 0},
		{"web→db tcp/5432 (not peers)", func() bool { return canTCP(t, web, db, 5432, short) }, false, 0},
		{"web→db icmp (not peers)", func() bool { return canPing(t, web, db) }, false, 0},
	} {
		if got := c.ok(); got != c.want {
			t.Errorf("%s: reachable=%v, want %v", c.name, got, c.want)
		}
	}
	// Peer sets: web and db never see each other.
	if web.hasPeer(db.publicKey(t)) || db.hasPeer(web.publicKey(t)) {
		t.Errorf("web and db are WireGuard peers though the policy keeps them apart")
	}
	if !api.hasPeer(web.publicKey(t)) || !api.hasPeer(db.publicKey(t)) {
		t.Errorf("api lacks a peer")
	}
	st := api.status(t)
	if st.Filter == nil || st.Filter.Dropped["no rule"] == 0 || st.PolicyVersion == 0 {
		t.Errorf("api status does not count denied packets: %+v", st.Filter)
	}
	if err := api.proc.WaitLog(`"msg":"packet denied"`, 2*time.Second); err != nil || !strings.Contains(api.proc.Log(), `"peer":"web"`) {
		t.Errorf("api did not log a denied packet naming web: %v", err)
	}
	m.assertNoSecrets(t)
}

// TestPolicyChanges: a live policy change flips access within 1 s, an
// established connection is cut when its rule goes away, a rejected policy
// leaves the active one in force, and a new tag takes effect within 1 s.
func TestPolicyChanges(t *testing.T) {
	m, web, api, db := tiers(t)
	t.Cleanup(func() {
		if t.Failed() {
			for _, a := range []*agent{web, api, db} {
				out, _ := a.host.Run(context.Background(), "wg", "show", a.iface)
				t.Logf("%s: wg show %s at failure:\n%s", time.Now().Format("15:04:05.000"), a.name, out)
			}
		}
	})
	server(t, api, 9090)
	server(t, api, 8080)

	// Granting tcp/9090.
	if canTCP(t, web, api, 9090, 500*time.Millisecond) {
		t.Fatal("web reaches api:9090 before the change")
	}
	granted := strings.Replace(matrixPolicy, `"tag:api:8080"], "proto"`, `"tag:api:8080,9090"], "proto"`, 1)
	granted = strings.Replace(granted, `"deny": ["tag:api:9090", `, `"deny": [`, 1)
	// acl check shows exactly the access the change grants, and sets nothing.
	f := filepath.Join(t.TempDir(), "granted.hujson")
	os.WriteFile(f, []byte(granted), 0o600)
	check := m.cli("acl", "check", f)
	if !strings.Contains(check, "+ web → api tcp/9090") || strings.Count(check, "\n  ") != 1 {
		t.Fatalf("acl check does not show the one change:\n%s", check)
	}
	if canTCP(t, web, api, 9090, 300*time.Millisecond) {
		t.Fatal("acl check changed access")
	}
	m.setPolicy(granted)
	d := waitFor(t, 5*time.Second, "web reaches api:9090", func() bool { return canTCP(t, web, api, 9090, 200*time.Millisecond) })
	if d > time.Second {
		t.Fatalf("access granted %s after the policy change; want ≤ 1 s", d)
	}
	t.Logf("policy change → new access: %s", d.Round(time.Millisecond))

	// A rejected policy (syntax, failing test) changes nothing.
	out, err := m.trySetPolicy(`{"acls": [{"action": "accept", "src": ["tag:web"], "dst": ["tag:api:70000"]}]}`)
	if err == nil || !strings.Contains(out, "policy.hujson:1:") || !strings.Contains(out, "70000") {
		t.Fatalf("bad policy: err=%v, output does not point at the problem:\n%s", err, out)
	}
	failing := strings.Replace(granted, `"accept": ["tag:api:8080"]`, `"accept": ["tag:db:5432"]`, 1)
	out, err = m.trySetPolicy(failing)
	if err == nil || !strings.Contains(out, "test 1 failed: web → db on tcp/5432 is denied") {
		t.Fatalf("policy with a failing test: err=%v\n%s", err, out)
	}
	if got := m.cli("acl", "get"); got != granted {
		t.Fatalf("active policy changed after rejected sets:\n%s", got)
	}
	if !canTCP(t, web, api, 9090, 2*time.Second) {
		t.Fatal("access lost after a rejected policy")
	}

	// An established connection is cut when its rule goes away.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := web.host.DialContext(ctx, "tcp", netip.AddrPortFrom(api.addr(t, false), 9090).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if !echo(conn, 2*time.Second) {
		t.Fatal("no echo on the established connection")
	}
	m.setPolicy(matrixPolicy)
	cut := waitFor(t, 5*time.Second, "the established connection to stop", func() bool { return !echo(conn, 300*time.Millisecond) })
	t.Logf("policy change → established connection cut: ≤ %s", cut.Round(time.Millisecond))
	if !canTCP(t, web, api, 8080, 2*time.Second) {
		t.Fatal("web lost api:8080, which the policy still allows")
	}

	// A new tag reaches every affected agent within 1 s: db gets tag:api.
	if canTCP(t, web, db, 8080, 300*time.Millisecond) {
		t.Fatal("web reaches db before the tag")
	}
	server(t, db, 8080)
	m.cli("nodes", "tag", "db", "tag:db", "tag:api")
	d = waitFor(t, 5*time.Second, "web reaches db:8080 after tagging", func() bool { return canTCP(t, web, db, 8080, 200*time.Millisecond) })
	if d > time.Second {
		t.Fatalf("tag took %s to take effect; want ≤ 1 s", d)
	}
	t.Logf("new tag → new access: %s", d.Round(time.Millisecond))

	// History and rollback.
	hist := m.cli("acl", "history")
	if strings.Count(hist, "\n") != 4 { // header + versions 1, 2, 3
		t.Fatalf("history:\n%s", hist)
	}
	if got := m.cli("acl", "get", "--version", "2"); got != granted {
		t.Fatalf("acl get --version 2 printed:\n%s\nwant version 2:\n%s", got, granted)
	}
	m.cli("acl", "rollback", "2")
	waitFor(t, 5*time.Second, "rollback to the policy with 9090", func() bool { return canTCP(t, web, api, 9090, 200*time.Millisecond) })
}

// TestNoPolicyDeniesAll: a fresh coordinator has no policy, nodes see no
// peers and nothing passes, and both sides say so.
func TestNoPolicyDeniesAll(t *testing.T) {
	m := newBareMesh(t)
	h1, h2 := m.addAgent("h1"), m.addAgent("h2")
	if !strings.Contains(m.coord.Log(), "no access policy is set") {
		t.Errorf("coordinator log does not say there is no policy")
	}
	time.Sleep(300 * time.Millisecond)
	if h1.hasPeer(h2.publicKey(t)) || canPing(t, h1, h2) {
		t.Fatal("traffic or peers without a policy")
	}
	st := h1.status(t)
	if st.PolicyVersion != 0 || len(st.Peers) != 0 {
		t.Fatalf("status: policy %d, %d peers; want none", st.PolicyVersion, len(st.Peers))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := h1.host.Run(ctx, bin, "status", "--state-dir", h1.stateDir)
	if !strings.Contains(string(out), "policy:      none") {
		t.Fatalf("status does not say there is no policy:\n%s", out)
	}
	m.setPolicy(allowAll)
	waitFor(t, 2*time.Second, "peers after setting a policy", func() bool { return h1.hasPeer(h2.publicKey(t)) && h2.hasPeer(h1.publicKey(t)) })
	if !canPing(t, h1, h2) {
		t.Fatal("no traffic after setting an allow-all policy")
	}
}
