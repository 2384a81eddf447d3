// Package e2e runs the real wiremesh binary on namespace hosts: a
// coordinator host and agent hosts wired through a switch, checked with real
// clients (ping, TCP, wg).
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/node"
	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// bin is the wiremesh binary built for this run.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wiremesh-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "wiremesh")
	build := exec.Command("go", "build", "-o", bin, "github.com/wiremesh/wiremesh/cmd/wiremesh")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build wiremesh:", err)
		os.Exit(1)
	}
	code := 0
	func() {
		defer os.RemoveAll(dir)
		goleak.VerifyTestMain(leakCheck{m, &code})
	}()
	os.Exit(code)
}

// leakCheck lets TestMain clean up before exiting.
type leakCheck struct {
	m    *testing.M
	code *int
}

func (l leakCheck) Run() int { *l.code = l.m.Run(); return *l.code }

const coordPort = 8443

// mesh is a coordinator host plus agent hosts in one lab.
type mesh struct {
	t         *testing.T
	lab       *lab.Lab
	coordHost *lab.Host
	coord     *lab.Proc
	dataDir   string
	tokenFile string
	joinKey   string   // a reusable join key
	coordArgs []string // extra flags of the coordinator (its TLS certificate, say)
	agents    map[string]*agent
}

// agent is one agent host.
type agent struct {
	name     string
	host     *lab.Host
	iface    string
	stateDir string
	proc     *lab.Proc
}

// newMesh starts a coordinator with an allow-all policy and creates a
// reusable join key. Agents come with addAgent.
func newMesh(t *testing.T) *mesh {
	t.Helper()
	m := newBareMesh(t)
	m.setPolicy(allowAll)
	return m
}

// newBareMesh is newMesh without a policy: everything is denied.
// coordArgs are extra flags for the coordinator.
func newBareMesh(t *testing.T, coordArgs ...string) *mesh {
	t.Helper()
	lab.Require(t, "ip", "ping", "wg")
	l := lab.New(t)
	m := &mesh{t: t, lab: l, agents: map[string]*agent{}, coordArgs: coordArgs}
	m.coordHost = l.AddHost("coord")
	m.dataDir = filepath.Join(t.TempDir(), "coordinator") // made 0700 by the coordinator
	m.tokenFile = filepath.Join(m.dataDir, "admin.token")
	m.startCoordinator()
	m.joinKey = strings.TrimSpace(m.cli("keys", "create", "--reusable"))
	return m
}

// taggedAgent adds an agent enrolled with a one-time key carrying tags.
func (m *mesh) taggedAgent(name string, tags ...string) *agent {
	m.t.Helper()
	return m.addAgent(name, "--join", m.tagKey(tags...))
}

// tagKey creates a one-time join key carrying tags.
func (m *mesh) tagKey(tags ...string) string {
	m.t.Helper()
	args := []string{"keys", "create"}
	for _, t := range tags {
		args = append(args, "--tag", t)
	}
	return strings.TrimSpace(m.cli(args...))
}

// allowAll lets every node reach every other on every port.
const allowAll = `{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}`

// setPolicy makes text the active policy through the CLI.
func (m *mesh) setPolicy(text string) {
	m.t.Helper()
	if out, err := m.trySetPolicy(text); err != nil {
		m.t.Fatalf("acl set: %v\n%s", err, out)
	}
}

// trySetPolicy runs `wiremesh acl set` and returns its stdout and, on
// failure, stderr.
func (m *mesh) trySetPolicy(text string) (string, error) {
	f := filepath.Join(m.t.TempDir(), "policy.hujson")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		m.t.Fatal(err)
	}
	out, err := m.cliErr("acl", "set", f)
	if err != nil {
		out += err.Error()
	}
	return out, err
}

// coordURL is the coordinator's advertised URL.
func (m *mesh) coordURL() string {
	return "https://" + netip.AddrPortFrom(m.coordHost.Addr, coordPort).String()
}

func (m *mesh) startCoordinator() {
	m.t.Helper()
	m.coord = m.coordHost.Start(m.t, "coordinator", nil, append([]string{bin, "coordinator",
		"--data-dir", m.dataDir, "--listen", fmt.Sprintf("%s:%d", m.coordHost.Addr, coordPort),
		"--keepalive", "2s", "--log-format", "json"}, m.coordArgs...)...)
	if err := m.coord.WaitLog("coordinator listening", 10*time.Second); err != nil {
		m.t.Fatalf("coordinator did not start: %v\n%s", err, m.coord.Log())
	}
}

// cli runs a wiremesh admin verb against the coordinator and returns its
// stdout; it fails the test on a non-zero exit.
func (m *mesh) cli(args ...string) string {
	m.t.Helper()
	out, err := m.cliErr(args...)
	if err != nil {
		m.t.Fatalf("wiremesh %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (m *mesh) cliErr(args ...string) (string, error) { return m.cliErrWith(m.tokenFile, args...) }

// cliErrWith is cliErr with the admin token in tokenFile.
func (m *mesh) cliErrWith(tokenFile string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", m.coordHost.NS, bin}, append(args, "--token-file", tokenFile)...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return string(out), nil
}

// addAgent creates a host and starts an agent on it that enrolls with the
// mesh's reusable join key.
func (m *mesh) addAgent(name string, extra ...string) *agent {
	m.t.Helper()
	a := m.agentHost(name)
	a.start(m.t, append([]string{"--join", m.joinKey}, extra...)...)
	return a
}

// agentHost adds the host of an agent without starting the agent, for a
// test that prepares the host first.
func (m *mesh) agentHost(name string) *agent {
	m.t.Helper()
	a := &agent{
		name:     name,
		host:     m.lab.AddHost(name),
		iface:    m.lab.Prefix() + name,
		stateDir: filepath.Join(m.t.TempDir(), "state"),
	}
	if len(a.iface) > 15 {
		m.t.Fatalf("interface name %q too long", a.iface)
	}
	m.agents[name] = a
	return a
}

// start starts the agent process and waits until its interface is up.
func (a *agent) start(t *testing.T, extra ...string) {
	t.Helper()
	// An empty resolv.conf: nothing is forwarded out of the lab unless a
	// test names an upstream in it.
	args := append([]string{bin, "agent", "--state-dir", a.stateDir, "--name", a.name,
		"--interface", a.iface, "--log-format", "json", "--resolv-conf", "/dev/null"}, extra...)
	a.proc = a.host.Start(t, "agent", nil, args...)
	// Registered after Start's cleanup, so it runs first, while the agent
	// still runs: what a failed test's reader needs besides the logs.
	t.Cleanup(func() {
		if t.Failed() && !a.proc.Exited() {
			a.dumpState(t)
		}
	})
	if err := a.proc.WaitLog(`"msg":"agent up"`, 15*time.Second); err != nil {
		t.Fatalf("agent %s did not come up: %v\n%s", a.name, err, a.proc.Log())
	}
}

// dumpState logs the agent's status and its WireGuard device as wg(8)
// shows them (handshakes, endpoints, byte counts).
func (a *agent) dumpState(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, cmd := range [][]string{
		{bin, "status", "--state-dir", a.stateDir},
		{"wg", "show", a.iface},
	} {
		out, err := a.host.Run(ctx, cmd...)
		if err != nil {
			t.Logf("%s: %v", a.name, err)
			continue
		}
		t.Logf("%s: %s:\n%s", a.name, strings.Join(cmd, " "), out)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (a *agent) stop(t *testing.T) {
	t.Helper()
	a.proc.Signal(sigterm)
	code, err := a.proc.Wait(10 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("agent %s: exit %d, %v\n%s", a.name, code, err, a.proc.Log())
	}
}

// identity reads the agent's enrolled identity from its state dir.
func (a *agent) identity(t *testing.T) node.Identity {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.stateDir, "node.json"))
	if err != nil {
		t.Fatalf("agent %s: %v", a.name, err)
	}
	var id node.Identity
	if err := json.Unmarshal(b, &id); err != nil {
		t.Fatalf("agent %s: node.json: %v", a.name, err)
	}
	return id
}

// cachedPeer reports whether the netmap the agent cached in its state dir,
// the one it starts from while the coordinator is away, has the peer pub.
func (a *agent) cachedPeer(t *testing.T, pub string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.stateDir, "netmap.json"))
	if errors.Is(err, os.ErrNotExist) {
		return false
	}
	if err != nil {
		t.Fatalf("agent %s: %v", a.name, err)
	}
	var nm wire.Netmap
	if err := json.Unmarshal(b, &nm); err != nil {
		return false // written atomically, so only a bug gets here; the wait fails
	}
	return slices.ContainsFunc(nm.Peers, func(p wire.Node) bool { return p.PublicKey == pub })
}

// addr returns the agent's overlay IPv4 (or IPv6) address.
func (a *agent) addr(t *testing.T, v6 bool) netip.Addr {
	t.Helper()
	for _, p := range a.identity(t).Node.Addresses {
		if p.Addr().Is6() == v6 {
			return p.Addr()
		}
	}
	t.Fatalf("agent %s has no address (v6=%v)", a.name, v6)
	return netip.Addr{}
}

// publicKey returns the agent's WireGuard public key.
func (a *agent) publicKey(t *testing.T) string { return a.identity(t).Node.PublicKey }

// status runs `wiremesh status --json` on the agent's host.
func (a *agent) status(t *testing.T) node.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := a.host.Run(ctx, bin, "status", "--json", "--state-dir", a.stateDir)
	if err != nil {
		t.Fatalf("status on %s: %v", a.name, err)
	}
	var st node.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status on %s: %v: %s", a.name, err, out)
	}
	return st
}

// wgPeers returns the public keys of the WireGuard peers configured on the
// agent's interface, read through the UAPI socket as wg(8) does.
func (a *agent) wgPeers() (map[string]wgtypes.Peer, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	d, err := c.Device(a.iface)
	if err != nil {
		return nil, err
	}
	out := map[string]wgtypes.Peer{}
	for _, p := range d.Peers {
		out[p.PublicKey.String()] = p
	}
	return out, nil
}

// waitFor polls cond every 10 ms until it holds or timeout passes, and
// returns how long it took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// hasPeer reports whether a's interface has a peer with key pub.
func (a *agent) hasPeer(pub string) bool {
	peers, err := a.wgPeers()
	if err != nil {
		return false
	}
	_, ok := peers[pub]
	return ok
}

// ping sends count pings from a to dst over the overlay, one every
// interval, and fails the test unless every one is answered.
func (a *agent) ping(t *testing.T, dst netip.Addr, count int, interval time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := a.host.Ping(ctx, dst.String(), count, interval)
	if err != nil {
		t.Fatal(err)
	}
	if p.Lost() > 0 {
		t.Fatalf("ping %s → %s: %s:\n%s", a.name, dst, p, p.Out)
	}
}

// logTime returns the time of the first JSON log line of p whose msg is msg.
func logTime(t *testing.T, p *lab.Proc, msg string) time.Time {
	t.Helper()
	for _, line := range strings.Split(p.Log(), "\n") {
		var l struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == msg {
			return l.Time
		}
	}
	t.Fatalf("%s: no log line %q", p, msg)
	return time.Time{}
}

// nodes lists the nodes through the admin CLI.
func (m *mesh) nodes() []wire.Node {
	m.t.Helper()
	var ns []wire.Node
	if err := json.Unmarshal([]byte(m.cli("nodes", "list", "--json")), &ns); err != nil {
		m.t.Fatalf("nodes list: %v", err)
	}
	return ns
}

// assertNoSecrets fails if any process log of the mesh holds a secret: the
// join key or its secret, the admin token secret, a node credential or a
// private key.
func (m *mesh) assertNoSecrets(t *testing.T) {
	t.Helper()
	var secrets []string
	jk, err := credential.ParseJoinKey(m.joinKey)
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, m.joinKey, jk.Secret.Value)
	tb, _ := os.ReadFile(m.tokenFile)
	if tok, err := credential.ParseAdminToken(string(tb)); err == nil {
		secrets = append(secrets, tok.Secret.Value)
	}
	for _, a := range m.agents {
		b, err := os.ReadFile(filepath.Join(a.stateDir, "private.key"))
		if err == nil {
			secrets = append(secrets, strings.TrimSpace(string(b)))
		}
		if id, err := os.ReadFile(filepath.Join(a.stateDir, "node.json")); err == nil {
			var n node.Identity
			json.Unmarshal(id, &n)
			if _, v, ok := strings.Cut(n.Credential, "."); ok {
				secrets = append(secrets, v)
			}
		}
	}
	for _, a := range m.agents {
		var nm wire.Netmap
		if b, err := os.ReadFile(filepath.Join(a.stateDir, "netmap.json")); err == nil && json.Unmarshal(b, &nm) == nil && nm.Gossip != nil {
			secrets = append(secrets, nm.Gossip.Keys...)
		}
	}
	procs := []*lab.Proc{m.coord}
	for _, a := range m.agents {
		procs = append(procs, a.proc)
	}
	for _, p := range procs {
		log := p.Log()
		for _, s := range secrets {
			if s != "" && strings.Contains(log, s) {
				t.Errorf("log of %s contains a secret (%.12s…)", p, s)
			}
		}
	}
}
