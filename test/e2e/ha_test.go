package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/internal/pgtest"
	"github.com/wiremesh/wiremesh/test/lab"
)

// coordinator is one of several coordinator processes on their own hosts.
type coordinator struct {
	host      *lab.Host
	proc      *lab.Proc
	db        string // the PostgreSQL database
	dataDir   string
	tokenFile string
}

// startCoordinatorOn starts a coordinator on a new host of m's lab that
// keeps its state in PostgreSQL database db.
func (m *mesh) startCoordinatorOn(name, db string) *coordinator {
	m.t.Helper()
	c := &coordinator{host: m.lab.AddHost(name), db: db, dataDir: filepath.Join(m.t.TempDir(), name)}
	c.tokenFile = filepath.Join(c.dataDir, "admin.token")
	c.start(m.t)
	return c
}

// start starts c's process on its host, data dir and port, and waits
// until it listens.
func (c *coordinator) start(t *testing.T) {
	t.Helper()
	c.proc = c.host.Start(t, "coordinator", nil, bin, "coordinator", "--database", c.db,
		"--data-dir", c.dataDir, "--listen", fmt.Sprintf("%s:%d", c.host.Addr, coordPort),
		"--keepalive", "2s", "--log-format", "json")
	if err := c.proc.WaitLog("coordinator listening", 10*time.Second); err != nil {
		t.Fatalf("coordinator %s did not start: %v\n%s", c.host.Name, err, c.proc.Log())
	}
}

// url is c's advertised URL.
func (c *coordinator) url() string {
	return "https://" + netip.AddrPortFrom(c.host.Addr, coordPort).String()
}

// cli runs an admin verb against coordinator c, from its host, with its
// admin token.
func (c *coordinator) cli(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.host.Run(ctx, append([]string{bin}, append(args, "--token-file", c.tokenFile)...)...)
	if err != nil {
		t.Fatalf("wiremesh %s on %s: %v\n%s", strings.Join(args, " "), c.host.Name, err, out)
	}
	return string(out)
}

// appliedAfter returns when agent a first logged a netmap applied after
// since for which ok holds on the log line's fields.
func (a *agent) appliedAfter(since time.Time, ok func(policy, peers int) bool) (time.Time, bool) {
	for _, line := range strings.Split(a.proc.Log(), "\n") {
		var l struct {
			Time   time.Time `json:"time"`
			Msg    string    `json:"msg"`
			Policy int       `json:"policy"`
			Peers  int       `json:"peers"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "netmap applied" && l.Time.After(since) && ok(l.Policy, l.Peers) {
			return l.Time, true
		}
	}
	return time.Time{}, false
}

// TestCoordinatorsOnPostgres: three coordinator processes on one
// PostgreSQL serve agents on namespace hosts as one coordinator. Agents
// enroll through each; the one most agents use is killed with SIGKILL
// and they move to the others within 5 s while their traffic goes on
// without a lost packet; a policy change through one reaches every agent
// within 1 s, as does a node deleted through another; PostgreSQL restarts
// under it all, and the coordinators carry on by themselves.
func TestCoordinatorsOnPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	db := pg.Database(t)
	m := newBareMesh(t, "--database", db)
	m.setPolicy(allowAll)
	co1 := &coordinator{host: m.coordHost, proc: m.coord, dataDir: m.dataDir, tokenFile: m.tokenFile}
	co2 := m.startCoordinatorOn("co2", db)
	co3 := m.startCoordinatorOn("co3", db)

	// Two agents enroll through the first, one through each other one.
	a1 := m.addAgent("a1")
	a4 := m.addAgent("a4")
	a2 := m.addAgent("a2", "--join", strings.TrimSpace(co2.cli(t, "keys", "create")))
	a3 := m.addAgent("a3", "--join", strings.TrimSpace(co3.cli(t, "keys", "create")))
	agents := []*agent{a1, a2, a3, a4}
	for _, a := range agents {
		for _, b := range agents {
			if a != b {
				waitFor(t, 20*time.Second, a.name+" has "+b.name+" as a peer", func() bool { return a.hasPeer(b.publicKey(t)) })
			}
		}
	}
	for _, a := range agents[1:] {
		a1.ping(t, a.addr(t, false), 2, 200*time.Millisecond)
		a.ping(t, a1.addr(t, false), 2, 200*time.Millisecond)
	}
	if st := a2.status(t); st.Coordinator != "https://"+co2.host.Addr.String()+":"+strconv.Itoa(coordPort) {
		t.Errorf("a2 talks to %s, want co2", st.Coordinator)
	}

	// An admin token made through the first names all three.
	tok := filepath.Join(t.TempDir(), "ha.token")
	if err := os.WriteFile(tok, []byte(m.cli("tokens", "create", "--comment", "ha")), 0o600); err != nil {
		t.Fatal(err)
	}

	// SIGKILL the first coordinator while a1 and a2 talk.
	pings := a2.host.PingInBackground(a1.addr(t, false).String(), 40, 200*time.Millisecond)
	time.Sleep(time.Second)
	killed := time.Now()
	co1.proc.Kill()
	for _, a := range []*agent{a1, a4} {
		d := waitFor(t, 10*time.Second, a.name+" streaming from another coordinator", func() bool {
			st := a.status(t)
			return st.Connected && st.Coordinator != m.coordURL()
		})
		if d > 5*time.Second {
			t.Errorf("%s took %s to move to another coordinator, want at most 5 s", a.name, d)
		}
		t.Logf("%s moved to another coordinator within %s of the kill", a.name, time.Since(killed).Round(time.Millisecond))
	}
	if p := pings(t); p.Lost() > 0 {
		t.Errorf("a2 → a1 lost packets while a1's coordinator was killed: %s\n%s", p, p.Out)
	}

	// The CLI with that token goes on through the others.
	if out, err := m.cliErrWith(tok, "nodes", "list"); err != nil || !strings.Contains(out, "a4") {
		t.Errorf("nodes list with the first coordinator dead: %v\n%s", err, out)
	}

	// A policy change through co2 reaches every agent within 1 s of its
	// commit.
	f := filepath.Join(t.TempDir(), "policy.hujson")
	// Every node's rules change (agents that take deltas are sent no
	// policy version that leaves their rules as they were).
	if err := os.WriteFile(f, []byte(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:1-65535"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	v, set := policyVersion(t, co2.cli(t, "acl", "set", f, "--json"))
	for _, a := range agents {
		at := waitApplied(t, a, set.Add(-time.Second), func(p, _ int) bool { return p >= v })
		if d := at.Sub(set); d > time.Second {
			t.Errorf("the policy change through co2 reached %s after %s, want within 1 s", a.name, d)
		}
	}

	// A node deleted through co3 leaves every peer within 1 s.
	gone := a4.publicKey(t)
	co3.cli(t, "nodes", "delete", "a4")
	deleted := time.Now() // committed: the CLI has its answer
	for _, a := range agents[:3] {
		waitFor(t, 10*time.Second, a.name+" dropping a4", func() bool { return !a.hasPeer(gone) })
		if d := time.Since(deleted); d > time.Second {
			t.Errorf("the deletion through co3 reached %s after %s, want within 1 s", a.name, d)
		}
	}
	agents = agents[:3]

	// PostgreSQL restarts under traffic: the traffic goes on, the
	// coordinators notice and listen again by themselves, and a change
	// through co3 reaches every agent.
	pings = a1.host.PingInBackground(a3.addr(t, false).String(), 25, 200*time.Millisecond)
	time.Sleep(time.Second)
	pg.Restart(t)
	for _, c := range []*coordinator{co2, co3} {
		if err := c.proc.WaitLog("database listener lost", 5*time.Second); err != nil {
			t.Errorf("%s: %v", c.host.Name, err)
		}
	}
	if err := os.WriteFile(f, []byte(allowAll), 0o600); err != nil {
		t.Fatal(err)
	}
	v, set = policyVersion(t, co3.cli(t, "acl", "set", f, "--json"))
	for _, a := range agents {
		waitApplied(t, a, set.Add(-time.Second), func(p, _ int) bool { return p >= v })
	}
	if p := pings(t); p.Lost() > 0 {
		t.Errorf("a1 → a3 lost packets while PostgreSQL restarted: %s\n%s", p, p.Out)
	}
}

// policyVersion reads the version, and when the coordinator committed
// it, from the JSON that acl set prints.
func policyVersion(t *testing.T, out string) (int, time.Time) {
	t.Helper()
	var p struct {
		Version int       `json:"version"`
		Created time.Time `json:"created"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil || p.Version == 0 || p.Created.IsZero() {
		t.Fatalf("acl set: %v\n%s", err, out)
	}
	return p.Version, p.Created
}

// waitApplied waits up to 10 s for agent a to log a netmap applied after
// since for which ok holds, and returns when it did.
func waitApplied(t *testing.T, a *agent, since time.Time, ok func(policy, peers int) bool) time.Time {
	t.Helper()
	var at time.Time
	waitFor(t, 10*time.Second, a.name+" applying the change", func() bool {
		var found bool
		at, found = a.appliedAfter(since, ok)
		return found
	})
	return at
}
