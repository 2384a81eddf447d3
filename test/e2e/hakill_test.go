package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/pgtest"
	"github.com/wiremesh/wiremesh/internal/report"
	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
)

// The shape of TestCoordinatorsKillLoop.
const (
	haClients = 200
	// The clients start in haWaves waves, each released 0 to haLead
	// before one of the first kills, so that kills land on enrollments
	// in flight.
	haWaves = 10
	haLead  = 100 * time.Millisecond
	// haKillsAfter kills follow once every client has its answer: they
	// cut netmap streams only.
	haKillsAfter = 3
	// The time from a killed coordinator listening again to the next
	// kill.
	haUpMin, haUpMax = 1500 * time.Millisecond, 3 * time.Second
	// haCap bounds the kill loop: past it the test fails instead of
	// hanging.
	haCap = 90 * time.Second
	// haSettle bounds the wait, after the last kill, for every client to
	// stream the last policy version.
	haSettle = 20 * time.Second
	// haPolicyEvery is how often the admin sets a new policy version.
	haPolicyEvery = time.Second
)

// TestCoordinatorsKillLoop: three coordinators share one PostgreSQL; one
// after another is SIGKILLed every few seconds and restarted on its data
// dir and port (never two down at once) while 200 lightweight clients
// enroll concurrently across them and then follow their netmap streams,
// and an admin sets a new policy version every second. Clients and admin
// move to another coordinator on any failure, by the agent's rule
// (coordinatorSet), knowing every coordinator from the join key and then
// from the netmaps.
//
// A client enrolls with one key and one name and retries, on another
// coordinator, until it is answered 200, as the agent does: refused as
// already enrolled (an earlier attempt committed, its answer lost), it
// asks again with a proof of its key and gets the node back. That refusal
// is allowed only if some earlier attempt got no answer at all: an attempt
// answered with an error must not have created a node. Afterwards the
// three coordinators list the same nodes: one for each client, under its
// name, with the id and addresses it was told, and no other; no address is
// given twice; the database counts one join key use and one audit entry
// per node; every policy version the admin was answered for is stored
// with its text; and within haSettle of the last kill every client streams
// a netmap of the last policy version with the peers it gives (a hub that
// every node may reach: the hub has every node as a peer, every other node
// the hub only).
func TestCoordinatorsKillLoop(t *testing.T) {
	pg := pgtest.Start(t)
	db := pg.Database(t)
	m := newBareMesh(t, "--database", db)
	cos := []*coordinator{
		{host: m.coordHost, proc: m.coord, db: db, dataDir: m.dataDir, tokenFile: m.tokenFile},
		m.startCoordinatorOn("co2", db),
		m.startCoordinatorOn("co3", db),
	}
	jk, err := credential.ParseJoinKey(strings.TrimSpace(cos[0].cli(t, "keys", "create", "--reusable")))
	if err != nil {
		t.Fatal(err)
	}
	if urls := jk.URLs(); len(urls) != len(cos) {
		t.Fatalf("the join key names %v, want the %d coordinators", urls, len(cos))
	}
	// The clients dial from a host of their own, each from an address of
	// its own: the per-source enrollment limit stays at its default.
	from := m.lab.AddHost("clients")
	srcs := addSources(t, from, haClients)
	admin := &haAdmin{c: newAdminClient(t, from, m.tokenFile), coords: newCoordinatorSet(jk.URLs(), 0), acked: map[uint64]string{}, ports: map[string]int{}}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	hub := newHAClient(t, from, netip.Addr{}, jk, "hub", 0)
	clients := make([]*haClient, haClients)
	for i := range clients {
		clients[i] = newHAClient(t, from, srcs[i], jk, fmt.Sprintf("storm-%03d", i+1), i)
	}
	t.Cleanup(func() { // before the lab's cleanup: nothing outlives the test
		cancel()
		wg.Wait()
		for _, c := range append(clients, hub) {
			c.http.CloseIdleConnections()
		}
	})

	// The hub enrolls before the storm and the policy names it.
	released := make(chan struct{})
	close(released)
	if err := hub.enroll(ctx, jk, released); err != nil || !hub.acked {
		t.Fatalf("hub: %v", err)
	}
	if err := admin.setPolicy(ctx, 1000); err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); hub.follow(ctx) }()
	waitFor(t, 10*time.Second, "the hub's first netmap", func() bool { return hub.latest() != nil })

	start := time.Now()
	waves, enrolled := startStorm(ctx, &wg, jk, clients)
	stopPolicy, policyDone := make(chan struct{}), make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(policyDone)
		admin.run(ctx, stopPolicy)
	}()
	kills, maxDown := haKillLoop(t, cos, waves, enrolled, start.Add(haCap))
	chaos := time.Since(start)
	close(stopPolicy)
	<-policyDone
	if admin.err != nil {
		t.Error(admin.err)
	}
	if t.Failed() {
		t.FailNow()
	}
	// One more policy, the last, while the clients cut by the last kill
	// move.
	if err := admin.setPolicy(ctx, 999); err != nil {
		t.Fatal(err)
	}
	final, port := checkPolicies(t, admin)
	settled := waitSettled(t, hub, clients, final.Version, port, kills[len(kills)-1].at)
	cancel()
	wg.Wait()

	all := append(clients, hub)
	st := stormStats(t, haStorm(all))
	answeredErr, failovers, recovered := haSums(t, all)
	gaps := haGaps(t, kills, all)
	worst := quantile(gaps, 1)
	t.Logf("%d kills in %s (down at most %s); policy versions: %d acknowledged (last %d, active %d), %d attempts refused a connection, %d cut, %d answered with an error",
		len(kills), chaos.Round(time.Millisecond), maxDown.Round(time.Millisecond), len(admin.acked), admin.last, final.Version, admin.refused, admin.cut, admin.answeredErr)
	t.Logf("enrollments: %d acknowledged, %d of them to a proven retry (an answer lost), %d retries, %d cut, answered with an error (by status) %v; time to an acknowledged enrollment p50 %s p99 %s",
		st.acked, recovered, st.retries, st.cut, answeredErr, st.p50.Round(time.Millisecond), st.p99.Round(time.Millisecond))
	t.Logf("streams: %d cut by a kill; time from the kill to the next stream p50 %s p99 %s max %s; %d moves to another coordinator in all; every client on policy version %d %s after the last kill",
		len(gaps), quantile(gaps, 0.5).Round(time.Millisecond), quantile(gaps, 0.99).Round(time.Millisecond), worst.Round(time.Millisecond), failovers, final.Version, settled.Round(time.Millisecond))

	nodes := sameNodes(t, admin.c, cos)
	dups := checkStormNodes(t, haStorm(all), nodes, checkNodeRows(t, "pgx", db, jk.Secret.ID))
	report.Add(t, report.Row{
		Fault: "one of three coordinators on PostgreSQL SIGKILLed every few seconds, a policy change every second",
		Check: fmt.Sprintf("%d concurrent enrollments across them: each one exists once, no address twice; every client ends on the last policy", haClients),
		Figure: fmt.Sprintf("%d kills in %s; %d/%d enrolled (%d answers lost, the node given back); %d duplicates; worst time without a stream after a kill %s; last policy everywhere %s after the last kill",
			len(kills), chaos.Round(100*time.Millisecond), len(nodes)-1, haClients, recovered, dups, worst.Round(time.Millisecond), settled.Round(time.Millisecond)),
		Target: "no loss, no duplicate",
		Met:    !t.Failed(),
	})
}

// startStorm starts the clients in haWaves waves, each client enrolling
// when its wave's channel is closed and then following its stream until
// ctx is done; wg counts them. enrolled is closed once every client has
// its answer.
func startStorm(ctx context.Context, wg *sync.WaitGroup, jk credential.Bundle, clients []*haClient) (waves []chan struct{}, enrolled <-chan struct{}) {
	waves = make([]chan struct{}, haWaves)
	for i := range waves {
		waves[i] = make(chan struct{})
	}
	var enrolling sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		enrolling.Add(1)
		go func() {
			defer wg.Done()
			c.err = c.enroll(ctx, jk, waves[i%haWaves])
			enrolling.Done()
			if c.acked {
				c.follow(ctx)
			}
		}()
	}
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		enrolling.Wait()
		close(done)
	}()
	return waves, done
}

// checkPolicies checks that the active policy is one the admin set and no
// older than the last it was answered for, and that every policy it was
// answered for is stored with its text. It returns the active policy and
// its port.
func checkPolicies(t *testing.T, admin *haAdmin) (wire.Policy, int) {
	t.Helper()
	var final wire.Policy
	if _, err := admin.c.get(wire.PathPolicy, &final); err != nil {
		t.Fatal(err)
	}
	port, ok := admin.ports[final.Text]
	if !ok || final.Version < admin.last {
		t.Fatalf("the active policy is version %d (%q), but version %d was acknowledged last", final.Version, final.Text, admin.last)
	}
	for v, text := range admin.acked {
		var p wire.Policy
		if _, err := admin.c.get(fmt.Sprintf("%s?version=%d", wire.PathPolicy, v), &p); err != nil {
			t.Errorf("acknowledged policy version %d: %v", v, err)
		} else if p.Text != text {
			t.Errorf("acknowledged policy version %d has text %q, want %q", v, p.Text, text)
		}
	}
	return final, port
}

// waitSettled waits until every client streams policy version v with the
// peers it gives (haStragglers), failing the test haSettle after since.
// It returns how long after since that was.
func waitSettled(t *testing.T, hub *haClient, clients []*haClient, v uint64, port int, since time.Time) time.Duration {
	t.Helper()
	for {
		stragglers := haStragglers(hub, clients, v, port)
		if stragglers == "" {
			return time.Since(since)
		}
		if time.Since(since) > haSettle {
			t.Errorf("%s after the last kill, not every client streams policy version %d: %s", haSettle, v, stragglers)
			return time.Since(since)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// haSums fails the test for every client a stream refused, and returns the
// enrollment attempts answered with an error by status, the moves to
// another coordinator and the enrollments answered to a proven retry.
func haSums(t *testing.T, clients []*haClient) (answeredErr map[int]int, failovers, recovered int) {
	t.Helper()
	answeredErr = map[int]int{}
	for _, c := range clients {
		if c.failed != nil {
			t.Error(c.failed)
		}
		for code, n := range c.answeredErr {
			answeredErr[code] += n
		}
		failovers += c.failovers
		if c.recovered {
			recovered++
		}
	}
	return answeredErr, failovers, recovered
}

// sameNodes lists the nodes through every coordinator, fails the test
// unless they list the same (haNodeList), and returns the first listing.
func sameNodes(t *testing.T, admin *adminClient, cos []*coordinator) []wire.Node {
	t.Helper()
	var nodes []wire.Node
	for i, co := range cos {
		admin.url = co.url()
		ns := admin.nodes(t, 50)
		if i == 0 {
			nodes = ns
		} else if a, b := haNodeList(nodes), haNodeList(ns); a != b {
			t.Errorf("%s lists other nodes than %s:\n%s\n%s", co.host.Name, cos[0].host.Name, b, a)
		}
	}
	return nodes
}

// addSources gives h n more underlay addresses, 198.51.100.50 and up, and
// returns them.
func addSources(t *testing.T, h *lab.Host, n int) []netip.Addr {
	t.Helper()
	if n > 200 || h.Addr.As4()[3] >= 50 {
		t.Fatalf("%d sources from .50 do not fit beside the lab's hosts (%s)", n, h.Addr)
	}
	var batch strings.Builder
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{198, 51, 100, byte(50 + i)})
		fmt.Fprintf(&batch, "addr add %s/32 dev eth0\n", addrs[i])
	}
	f := filepath.Join(t.TempDir(), "sources")
	if err := os.WriteFile(f, []byte(batch.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := h.Run(ctx, "ip", "-batch", f); err != nil {
		t.Fatal(err)
	}
	return addrs
}

// haKill is one SIGKILL of a coordinator.
type haKill struct {
	url string
	at  time.Time // just before the signal
}

// haKillLoop kills the coordinators one after another, round robin, each
// restarted at once on its data dir and port, so that never more than one
// is down; between a restart and the next kill it waits a random uptime.
// Before each of the first len(waves) kills it closes the next of waves, 0
// to haLead before the kill. It returns once haKillsAfter kills have
// followed the close of enrolled, right after the last one's restart,
// leaving every coordinator running, or at deadline, failing the test. It
// returns the kills and the longest time from a kill to the coordinator
// listening again.
func haKillLoop(t *testing.T, cos []*coordinator, waves []chan struct{}, enrolled <-chan struct{}, deadline time.Time) (kills []haKill, maxDown time.Duration) {
	t.Helper()
	after := 0 // kills since every client had its answer
	for i := 0; after < haKillsAfter; i++ {
		up := haUpMin + rand.N(haUpMax-haUpMin)
		if len(waves) > 0 {
			lead := rand.N(haLead)
			time.Sleep(up - lead)
			close(waves[0])
			waves = waves[1:]
			up = lead
		}
		time.Sleep(up)
		if time.Now().After(deadline) {
			t.Errorf("clients still enrolling after %s (%d kills)", haCap, len(kills))
			return kills, maxDown
		}
		select {
		case <-enrolled:
			after++
		default:
		}
		c := cos[i%len(cos)]
		kills = append(kills, haKill{url: c.url(), at: time.Now()})
		c.proc.Kill()
		c.start(t)
		maxDown = max(maxDown, time.Since(kills[len(kills)-1].at))
	}
	return kills, maxDown
}

// haStragglers describes the clients holding a credential that have no
// open stream or whose newest netmap is not of policy version v with the
// peers it gives (the hub: every other node, and the rule for port; every
// other node: the hub), "" if none.
func haStragglers(hub *haClient, clients []*haClient, v uint64, port int) string {
	var out []string
	rule := []wire.PortRange{{First: uint16(port), Last: uint16(port)}}
	for _, c := range append([]*haClient{hub}, clients...) {
		if !c.acked {
			continue
		}
		nm := c.latest()
		url, open := c.streaming()
		var why string
		switch {
		case !open:
			why = "no stream open"
		case nm == nil:
			why = "no netmap"
		case nm.PolicyVersion != v:
			why = fmt.Sprintf("policy version %d (netmap %d)", nm.PolicyVersion, nm.Version)
		case c == hub && (!peersAre(nm, clients) || len(nm.Rules) != 1 || !slices.Equal(nm.Rules[0].Ports, rule)):
			why = fmt.Sprintf("%d peers and rules %+v, want the %d other nodes and port %d", len(nm.Peers), nm.Rules, len(clients), port)
		case c != hub && (len(nm.Peers) != 1 || nm.Peers[0].PublicKey != hub.pub):
			why = fmt.Sprintf("%d peers, want the hub only", len(nm.Peers))
		}
		if why != "" {
			out = append(out, fmt.Sprintf("%s (at %s): %s", c.hostname, url, why))
		}
	}
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("and %d more", len(out)-5))
	}
	return strings.Join(out, "; ")
}

// peersAre reports whether nm's peers are clients, each once.
func peersAre(nm *wire.Netmap, clients []*haClient) bool {
	keys := make(map[string]bool, len(nm.Peers))
	for _, p := range nm.Peers {
		keys[p.PublicKey] = true
	}
	if len(keys) != len(nm.Peers) || len(keys) != len(clients) {
		return false
	}
	for _, c := range clients {
		if !keys[c.pub] {
			return false
		}
	}
	return true
}

// haGaps returns, for every kill and every client whose stream it cut,
// the time from the kill to the client's next stream. A client without a
// next stream fails the test.
func haGaps(t *testing.T, kills []haKill, clients []*haClient) (gaps []time.Duration) {
	t.Helper()
	for _, k := range kills {
		for _, c := range clients {
			c.mu.Lock()
			for i, s := range c.streams {
				if s.url != k.url || !s.opened.Before(k.at) || (!s.ended.IsZero() && s.ended.Before(k.at)) {
					continue
				}
				if i+1 == len(c.streams) {
					t.Errorf("%s: no stream after the kill of %s at %s", c.hostname, k.url, k.at.Format(time.StampMilli))
					continue
				}
				gaps = append(gaps, c.streams[i+1].opened.Sub(k.at))
			}
			c.mu.Unlock()
		}
	}
	return gaps
}

// haStorm returns the clients' stormClients.
func haStorm(clients []*haClient) []*stormClient {
	out := make([]*stormClient, len(clients))
	for i, c := range clients {
		out[i] = c.stormClient
	}
	return out
}

// haNodeList describes the nodes by what every coordinator must list
// alike: id, name, key and addresses.
func haNodeList(nodes []wire.Node) string {
	lines := make([]string, len(nodes))
	for i, n := range nodes {
		lines[i] = fmt.Sprintf("%d %s %s %v", n.ID, n.Name, n.PublicKey, n.Addresses)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
