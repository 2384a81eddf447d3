package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/coordinator"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// testCoordinator is a coordinator serving on a loopback port.
type testCoordinator struct {
	c     *coordinator.Coordinator
	dir   string // data dir
	url   string
	admin string // bearer form of the admin token
	stop  func() // stops serving and closes the store; idempotent
}

func startCoordinator(t *testing.T) *testCoordinator {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startCoordinatorOn(t, ln, filepath.Join(t.TempDir(), "coordinator"))
}

// startCoordinatorOn serves a coordinator with data dir dir on ln: a new
// one, or one that was stopped, again.
func startCoordinatorOn(t *testing.T, ln net.Listener, dir string, opts ...func(*coordinator.Config)) *testCoordinator {
	t.Helper()
	url := "https://" + ln.Addr().String()
	cfg := coordinator.Config{
		DataDir: dir, Listen: ln.Addr().String(), AdvertiseURL: url,
		KeepAlive: time.Hour, Logger: testLogger(t, "coordinator"),
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, files, err := coordinator.New(cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	b, err := os.ReadFile(files.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := credential.ParseAdminToken(string(b))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, ln) }()
	stopped := false
	tc := &testCoordinator{c: c, dir: dir, url: url, admin: tok.Secret.String()}
	tc.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("coordinator Serve: %v", err)
		}
		c.Close()
	}
	t.Cleanup(tc.stop)
	return tc
}

func (tc *testCoordinator) joinKey(t *testing.T, reusable bool) string {
	t.Helper()
	_, sec, err := tc.c.Store().CreateJoinKey(context.Background(), "test", wire.CreateJoinKeyRequest{Reusable: reusable})
	if err != nil {
		t.Fatal(err)
	}
	return credential.Bundle{URL: tc.url, Pins: tc.c.Pins(), Secret: sec}.Encode(credential.JoinKeyPrefix)
}

// adminDo sends an admin API request and checks its status.
func (tc *testCoordinator) adminDo(t *testing.T, method, path string, body any, want int) {
	t.Helper()
	tc.do(t, tc.admin, method, path, body, want)
}

// do sends an API request with a bearer token and checks its status.
func (tc *testCoordinator) do(t *testing.T, token, method, path string, body any, want int) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: credential.ClientTLS(tc.c.Pins())}
	defer tr.CloseIdleConnections()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, tc.url+path, r)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Transport: tr, Timeout: waitFor}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
	}
}

// allowAll is a policy that lets every node reach every other.
const allowAll = `{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}`

// setPolicy sets the access policy through the admin API.
func (tc *testCoordinator) setPolicy(t *testing.T, text string) {
	t.Helper()
	tc.adminDo(t, "PUT", wire.PathPolicy, wire.SetPolicyRequest{Text: text}, http.StatusOK)
}

// deleteNode deletes a node through the admin API, which pushes the change.
func (tc *testCoordinator) deleteNode(t *testing.T, name string) {
	t.Helper()
	tc.adminDo(t, "DELETE", wire.PathNodes+"/"+name, nil, http.StatusNoContent)
}

// runningAgent is an agent whose Run is in progress.
type runningAgent struct {
	*Agent
	name   string
	eng    *fakeEngine
	dir    string
	cancel context.CancelFunc
	done   chan error
	err    error // Run's result, after done
}

func testAgentConfig(t *testing.T, name, dir, joinKey string, eng *fakeEngine) Config {
	return Config{
		StateDir: dir, JoinKey: joinKey, Name: name, Interface: "wm-" + name,
		ListenPort: 40000 + int(name[0]), EnrollTimeout: waitFor,
		NewEngine: eng.new, Logger: testLogger(t, "agent "+name),
		DNSPort: -1, NoGossip: true, // the fake engine assigns no addresses to bind to
	}
}

// startAgent makes and runs an agent with a fake engine; it is stopped
// when the test ends.
func startAgent(t *testing.T, name, dir, joinKey string) *runningAgent {
	t.Helper()
	eng := newFakeEngine()
	a, err := New(testAgentConfig(t, name, dir, joinKey, eng))
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{Agent: a, name: name, eng: eng, dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(func() { ra.stop(t) })
	return ra
}

// wait waits for Run to return and returns its error.
func (ra *runningAgent) wait(t *testing.T) error {
	t.Helper()
	if ra.done == nil {
		return ra.err
	}
	select {
	case ra.err = <-ra.done:
		ra.done = nil
		return ra.err
	case <-time.After(waitFor):
		t.Fatalf("agent %s: Run did not return", ra.name)
		return nil
	}
}

// stop cancels Run and waits for it.
func (ra *runningAgent) stop(t *testing.T) error {
	t.Helper()
	ra.cancel()
	return ra.wait(t)
}

// storedIdentity reads the node.json of the stopped agent whose state dir
// is dir.
func storedIdentity(t *testing.T, dir string) Identity {
	t.Helper()
	st, err := openStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	id, _, err := st.loadIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// waitUp waits until the agent has enrolled and has a netmap from the
// coordinator.
func (ra *runningAgent) waitUp(t *testing.T) {
	t.Helper()
	ra.eng.wait(t, "netmap from the coordinator for "+ra.name, func(e *fakeEngine) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.last != nil && e.last.Version != 0
	})
}

// pub returns the agent's public key, which New loads or makes.
func (ra *runningAgent) pub() string { return ra.ctl.publicKey() }

func sorted(keys ...string) []string {
	slices.Sort(keys)
	return keys
}

func hasPeers(keys ...string) func(*fakeEngine) bool {
	want := sorted(keys...)
	return func(e *fakeEngine) bool { return slices.Equal(e.peers(), want) }
}

// status asks the agent with state dir dir for its status over the local
// API. Run opens the socket just after applying the cached netmap, with
// nothing to wait on, so a missing socket is retried for a while.
func status(t *testing.T, dir string) Status {
	t.Helper()
	c := LocalClient(dir)
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(waitFor)
	for {
		resp, err := c.Get("http://agent/v1/status")
		if err != nil {
			if time.Now().Before(deadline) && (errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)) {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			t.Fatalf("local API: %v", err)
		}
		defer resp.Body.Close()
		var st Status
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("local API: %s", resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}
}

func TestAgentEndToEnd(t *testing.T) {
	co := startCoordinator(t)
	co.setPolicy(t, allowAll)
	key := co.joinKey(t, true)
	dirs := map[string]string{}
	for _, n := range []string{"a", "b", "c"} {
		dirs[n] = filepath.Join(t.TempDir(), n)
	}
	a := startAgent(t, "a", dirs["a"], key)
	b := startAgent(t, "b", dirs["b"], key)
	c := startAgent(t, "c", dirs["c"], key)

	// Each engine gets the other two as peers, with the node's own key.
	for _, x := range []struct {
		ag     *runningAgent
		others []string
	}{
		{a, []string{b.pub(), c.pub()}},
		{b, []string{a.pub(), c.pub()}},
		{c, []string{a.pub(), b.pub()}},
	} {
		x.ag.eng.wait(t, "two peers for "+x.ag.name, hasPeers(x.others...))
		x.ag.eng.mu.Lock()
		cfg, self := x.ag.eng.cfg, x.ag.eng.last.Self
		x.ag.eng.mu.Unlock()
		if cfg.PrivateKey.PublicKey().String() != x.ag.pub() || self.PublicKey != x.ag.pub() || cfg.Interface != "wm-"+self.Name {
			t.Errorf("engine of %s made with key %s, interface %s; netmap self %s", self.Name, cfg.PrivateKey.PublicKey(), cfg.Interface, self.PublicKey)
		}
	}
	st := status(t, dirs["a"])
	var names []string
	for _, p := range st.Peers {
		names = append(names, p.Name)
		if p.RxBytes != 1 || len(p.Addresses) != 2 {
			t.Errorf("status peer %+v, want engine counters and two addresses", p)
		}
	}
	if st.Self.Name != "a" || !st.Connected || st.NetmapVersion == 0 || st.PolicyVersion == 0 || !cmp.Equal(sorted(names...), []string{"b", "c"}) {
		t.Errorf("status of a: self %s, connected %v, version %d, policy %d, peers %v", st.Self.Name, st.Connected, st.NetmapVersion, st.PolicyVersion, names)
	}

	// Deleting c removes it from the others; c's agent gives up.
	co.deleteNode(t, "c")
	a.eng.wait(t, "c dropped from a", hasPeers(b.pub()))
	b.eng.wait(t, "c dropped from b", hasPeers(a.pub()))
	if err := c.wait(t); !errors.Is(err, ErrRefused) {
		t.Errorf("deleted agent's Run returned %v, want an error wrapping ErrRefused", err)
	}
	if !c.eng.isClosed() {
		t.Error("deleted agent's Run returned without closing its engine")
	}

	// Stopping is clean and closes the engine.
	if err := a.stop(t); err != nil {
		t.Errorf("a's Run after cancel: %v, want nil", err)
	}
	if !a.eng.isClosed() {
		t.Error("a's Run returned without closing its engine")
	}
	if _, err := os.Stat(filepath.Join(dirs["a"], SocketName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("local API socket left behind: %v", err)
	}
	aVersion := st.NetmapVersion
	b.stop(t)
	co.stop()

	// With the coordinator down, a restarts from its state dir alone and
	// brings up the peers it had.
	a2 := startAgent(t, "a", dirs["a"], "")
	a2.eng.wait(t, "cached peer b", hasPeers(b.pub()))
	if a2.pub() != a.pub() {
		t.Errorf("restarted agent has key %s, want %s", a2.pub(), a.pub())
	}
	st = status(t, dirs["a"])
	if st.Connected || st.NetmapVersion < aVersion || len(st.Peers) != 1 || st.Peers[0].Name != "b" {
		t.Errorf("status of restarted a: connected %v, version %d (had %d), peers %+v", st.Connected, st.NetmapVersion, aVersion, st.Peers)
	}
	if err := a2.stop(t); err != nil {
		t.Errorf("restarted a's Run after cancel: %v", err)
	}
}

// A second agent on a state dir in use is refused before it touches it.
func TestAgentStateDirInUse(t *testing.T) {
	co := startCoordinator(t)
	dir := filepath.Join(t.TempDir(), "a")
	startAgent(t, "a", dir, co.joinKey(t, false))
	_, err := New(testAgentConfig(t, "a", dir, "", newFakeEngine()))
	if err == nil || !strings.Contains(err.Error(), "in use by another agent") {
		t.Errorf("second agent on the same state dir: %v", err)
	}
}

// A join key that cannot admit the node fails New (malformed, none) or
// Run (refused, unreachable) and leaves no key and no identity behind; a
// refusal is final, not retried until the enrollment timeout.
func TestEnrollRefused(t *testing.T) {
	co := startCoordinator(t)
	used := co.joinKey(t, false)
	startAgent(t, "first", filepath.Join(t.TempDir(), "first"), used).waitUp(t)

	wrongPin := func() string {
		b, _ := credential.ParseJoinKey(co.joinKey(t, true))
		b.Pins = credential.Pins{{Kind: credential.PinCA, Sum: [32]byte{9}}}
		return b.Encode(credential.JoinKeyPrefix)
	}()
	freePort := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()
	unreachable := func() string {
		b, _ := credential.ParseJoinKey(co.joinKey(t, true))
		b.URL = "https://" + freePort
		return b.Encode(credential.JoinKeyPrefix)
	}()

	for _, tc := range []struct {
		name        string
		joinKey     string
		timeout     time.Duration
		inRun       bool // the refusal comes from Run, not New
		wantRefused bool
		wantErr     string
	}{
		{name: "used one-time key", joinKey: used, inRun: true, wantRefused: true, wantErr: "already used"},
		{name: "revoked key", joinKey: func() string {
			k := co.joinKey(t, true)
			b, _ := credential.ParseJoinKey(k)
			if err := co.c.Store().RevokeJoinKey(context.Background(), "test", b.Secret.ID); err != nil {
				t.Fatal(err)
			}
			return k
		}(), inRun: true, wantRefused: true, wantErr: "revoked"},
		{name: "wrong pin", joinKey: wrongPin, inRun: true, wantRefused: true, wantErr: "does not match the pin"},
		{name: "malformed", joinKey: "wmjoin1-nope!", wantErr: "malformed join key"},
		{name: "none", joinKey: "", wantErr: "holds no enrollment"},
		{name: "unreachable", joinKey: unreachable, inRun: true, timeout: 300 * time.Millisecond, wantErr: "unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "s")
			eng := newFakeEngine()
			cfg := testAgentConfig(t, "x", dir, tc.joinKey, eng)
			if tc.timeout != 0 {
				cfg.EnrollTimeout = tc.timeout
			}
			var err error
			if a, nerr := New(cfg); nerr != nil {
				err = nerr
				if tc.inRun {
					t.Errorf("New: %v; want the refusal from Run", nerr)
				}
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), waitFor)
				defer cancel()
				err = a.Run(ctx)
				if err == nil {
					t.Fatal("Run returned nil, want the enrollment refused")
				}
				if !eng.isClosed() {
					t.Error("Run returned without closing the engine")
				}
			}
			if got := errors.Is(err, ErrRefused); got != tc.wantRefused {
				t.Errorf("error %v; wraps ErrRefused: %v, want %v", err, got, tc.wantRefused)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want it to contain %q", err, tc.wantErr)
			}
			// A refused enrollment leaves nothing behind; one that got no
			// answer keeps the key, which the coordinator may have
			// admitted, for the next start to enroll again.
			for _, f := range []string{keyFile, identityFile, netmapFile} {
				_, err := os.Stat(filepath.Join(dir, f))
				kept, want := !errors.Is(err, os.ErrNotExist), f == keyFile && !tc.wantRefused && tc.inRun
				if kept != want {
					t.Errorf("after the failed enrollment %s is there: %v, want %v", f, kept, want)
				}
			}
			// The state dir is free again.
			s, err := openStateDir(dir)
			if err != nil {
				t.Fatalf("state dir still locked: %v", err)
			}
			s.Close()
		})
	}
}

// An engine that cannot start fails Run, which releases the state dir.
func TestRunEngineFailure(t *testing.T) {
	co := startCoordinator(t)
	dir := filepath.Join(t.TempDir(), "a")
	cfg := testAgentConfig(t, "a", dir, co.joinKey(t, false), newFakeEngine())
	boom := errors.New("no TUN for you")
	cfg.NewEngine = func(EngineConfig) (Engine, error) { return nil, boom }
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(context.Background()); !errors.Is(err, boom) {
		t.Errorf("Run: %v, want %v", err, boom)
	}
	s, err := openStateDir(dir)
	if err != nil {
		t.Fatalf("state dir still locked after Run: %v", err)
	}
	s.Close()
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no state dir", Config{}, "state dir is required"},
		{"long interface", Config{StateDir: "d", Interface: "wiremesh-iface-0"}, "longer than 15 bytes"},
		{"negative port", Config{StateDir: "d", ListenPort: -1}, "bad listen port"},
		{"port too big", Config{StateDir: "d", ListenPort: 65536}, "bad listen port"},
		{"small MTU", Config{StateDir: "d", MTU: 1000}, "bad MTU"},
	} {
		cfg := tc.cfg
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
	cfg := Config{StateDir: "d", Hostname: "h"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Interface != "wm0" || cfg.ListenPort != 51820 || cfg.MTU != 1420 || cfg.EnrollTimeout != time.Minute || cfg.NewEngine == nil || cfg.Logger == nil {
		t.Errorf("defaults not filled: %+v", cfg)
	}
}

func TestBackoff(t *testing.T) {
	b := newBackoff()
	lo, hi := 50*time.Millisecond, 100*time.Millisecond
	for i := range 10 {
		d := b.next()
		if d < lo || d > hi {
			t.Errorf("delay %d = %v, want in [%v, %v]", i, d, lo, hi)
		}
		lo, hi = min(2*lo, time.Second), min(2*hi, 2*time.Second)
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("delay after reset %v, want at most 100ms", d)
	}
}
