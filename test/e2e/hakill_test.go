package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/pgtest"
	"github.com/wiremesh/wiremesh/internal/report"
	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
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

// coordinatorSet is the agent's rule for moving between coordinators
// (node/control.go, controlClient.failover): after a failure, to one at
// random of those that have not failed since the last success; when all
// have, the caller pauses and a new round starts.
type coordinatorSet struct {
	urls  []string
	url   string // the one in use
	tried map[string]bool
}

// newCoordinatorSet returns the set of urls with urls[first % len] in use.
func newCoordinatorSet(urls []string, first int) *coordinatorSet {
	return &coordinatorSet{urls: slices.Clone(urls), url: urls[first%len(urls)], tried: map[string]bool{}}
}

// failover marks the URL in use as failed and moves to another; false
// when every one has failed since the last success (and a new round
// starts).
func (s *coordinatorSet) failover() bool {
	s.tried[s.url] = true
	var left []string
	for _, u := range s.urls {
		if !s.tried[u] {
			left = append(left, u)
		}
	}
	if len(left) == 0 {
		clear(s.tried)
		return false
	}
	s.url = left[rand.IntN(len(left))]
	return true
}

// succeeded records that the URL in use answered.
func (s *coordinatorSet) succeeded() { clear(s.tried) }

// setURLs makes urls, from a netmap, the coordinators' URLs.
func (s *coordinatorSet) setURLs(urls []string) {
	if len(urls) > 0 {
		s.urls = slices.Clone(urls)
	}
}

// haPause is the agent's pause after a round over every coordinator:
// jittered, from 100 ms doubling to 2 s.
type haPause struct{ d time.Duration }

func (p *haPause) reset() { p.d = 0 }

// wait pauses, or returns when ctx is done.
func (p *haPause) wait(ctx context.Context) {
	p.d = min(max(2*p.d, 100*time.Millisecond), 2*time.Second)
	select {
	case <-ctx.Done():
	case <-time.After(p.d/2 + rand.N(p.d/2+1)):
	}
}

// haClient is a stormClient that knows every coordinator and moves to
// another on a failure, as the agent does, and follows its netmap stream
// once enrolled. Its fields but those under mu belong to its goroutine
// until that ends.
type haClient struct {
	*stormClient
	coords      *coordinatorSet
	answeredErr map[int]int // enrollment attempts answered with an error (429, 5xx), by status
	recovered   bool        // answered 200 to a proven retry: an earlier attempt's answer was lost
	failovers   int         // moves to another coordinator
	lastProof   int64       // unix time of the last netmap proof made

	mu      sync.Mutex
	netmap  *wire.Netmap // guarded by mu; the newest netmap received
	streams []haStream   // guarded by mu; every stream that delivered a netmap
	failed  error        // guarded by mu; a stream refused: the agent would stop
}

// haStream is one netmap stream.
type haStream struct {
	url    string
	opened time.Time // its first netmap
	ended  time.Time // zero while open
}

// newHAClient returns a client named name that dials from h, from src if
// it is valid, and starts with the coordinator jk.URLs()[first].
func newHAClient(t *testing.T, h *lab.Host, src netip.Addr, jk credential.Bundle, name string, first int) *haClient {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &haClient{
		stormClient: &stormClient{hostname: name, key: k, pub: k.PublicKey().String(), src: src, http: pinnedClient(h, jk.Pins, src)},
		coords:      newCoordinatorSet(jk.URLs(), first),
		answeredErr: map[int]int{},
	}
}

// enroll waits for release, then posts the enrollment until it gets a
// definite answer (see TestCoordinatorsKillLoop), moving to another
// coordinator after each failure and pausing after a round over all.
func (c *haClient) enroll(ctx context.Context, jk credential.Bundle, release <-chan struct{}) error {
	req := wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: c.pub, Hostname: c.hostname}
	select {
	case <-ctx.Done():
		return fmt.Errorf("%s: %w before the first attempt", c.hostname, ctx.Err())
	case <-release:
	}
	start := time.Now()
	var last string
	var pause haPause
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no definite answer after %d attempts (last: %s)", c.hostname, c.attempts, last)
		}
		c.attempts++
		c.url = c.coords.url
		t0 := time.Now()
		body, _ := json.Marshal(req)
		code, _, b, err := c.post(ctx, jk, body)
		switch {
		case err != nil:
			last = fmt.Sprintf("%s: %v", c.url, err)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				c.cut++ // sent, perhaps: its fate is unknown
			}
		case code == http.StatusOK:
			if err := json.Unmarshal(b, &c.resp); err != nil {
				last = fmt.Sprintf("%s: 200 with a bad body: %v", c.url, err)
				c.cut++
				break
			}
			c.acked, c.took, c.last = true, time.Since(start), time.Since(t0)
			c.recovered = req.Proof != ""
			return nil
		case code == http.StatusConflict && req.Proof == "" && errorCode(b) == wire.CodeAlreadyEnrolled:
			if c.cut == 0 {
				return fmt.Errorf("%s: attempt %d at %s refused as already enrolled, but every earlier attempt was answered (with an error: %v, the last %s): an attempt answered with an error created a node",
					c.hostname, c.attempts, c.url, c.answeredErr, last)
			}
			if req.Proof, err = c.enrollProof(ctx); err == nil {
				continue // at once, there
			}
			last = fmt.Sprintf("%s: %v", c.url, err)
		case code == http.StatusTooManyRequests || code >= 500:
			last = fmt.Sprintf("%s: %d: %s", c.url, code, b)
			c.answeredErr[code]++
		default:
			return fmt.Errorf("%s: attempt %d at %s: HTTP %d: %s", c.hostname, c.attempts, c.url, code, b)
		}
		c.next(ctx, &pause)
	}
}

// errorCode returns the code of an error answer's body.
func errorCode(body []byte) wire.ErrorCode {
	var e wire.Error
	json.Unmarshal(body, &e)
	return e.Code
}

// enrollProof fetches the proof key of the coordinator in use and proves
// c's key to it, as the agent does to be given back the node an attempt
// whose answer was lost enrolled.
func (c *haClient) enrollProof(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, stormAttempt)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+wire.PathCoordinatorKey, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var k wire.CoordinatorKey
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("coordinator key: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil {
		return "", fmt.Errorf("coordinator key: %w", err)
	}
	return credential.EnrollProof(c.key, k.PublicKey, time.Now())
}

// next moves to another coordinator after a failure, or pauses when all
// have failed since the last success.
func (c *haClient) next(ctx context.Context, pause *haPause) {
	if c.coords.failover() {
		c.failovers++
		return
	}
	pause.wait(ctx)
}

// follow keeps a netmap stream open, moving to another coordinator when
// one fails, until ctx is done or a coordinator refuses the node.
func (c *haClient) follow(ctx context.Context) {
	var pause haPause
	for {
		err := c.stream(ctx, pause.reset)
		if ctx.Err() != nil {
			return
		}
		var se *streamRefusal
		if errors.As(err, &se) && se.code != http.StatusTooManyRequests && se.code < 500 {
			c.mu.Lock()
			c.failed = fmt.Errorf("%s: %w", c.hostname, err)
			c.mu.Unlock()
			return
		}
		c.next(ctx, &pause)
	}
}

// streamRefusal is a netmap request answered with an error.
type streamRefusal struct {
	url  string
	code int
	body []byte
}

func (e *streamRefusal) Error() string {
	return fmt.Sprintf("netmap stream at %s: HTTP %d: %s", e.url, e.code, e.body)
}

// stream opens one netmap stream at the coordinator in use and takes its
// netmaps until it ends, ctx is done or nothing arrives for three
// keep-alive intervals; opened runs with the first netmap.
func (c *haClient) stream(ctx context.Context, opened func()) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	silence := 6 * time.Second // three of the coordinators' keep-alive intervals
	watchdog := time.AfterFunc(silence, func() { cancel(errors.New("netmap stream silent")) })
	defer watchdog.Stop()
	url := c.coords.url
	at := max(time.Now().Unix(), c.lastProof)
	c.lastProof = at
	proof, err := credential.NetmapProof(c.key, c.resp.CoordinatorKey, time.Unix(at, 0))
	if err != nil {
		return err
	}
	body, _ := json.Marshal(wire.MapRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: c.pub, Proof: proof})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+wire.PathNetmap, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.resp.Credential)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return &streamRefusal{url: url, code: resp.StatusCode, body: b}
	}
	dec := json.NewDecoder(resp.Body)
	first := true
	defer func() {
		if !first {
			c.mu.Lock()
			c.streams[len(c.streams)-1].ended = time.Now()
			c.mu.Unlock()
		}
	}()
	for {
		var msg wire.MapMessage
		if err := dec.Decode(&msg); err != nil {
			if cause := context.Cause(ctx); cause != nil {
				return cause
			}
			return fmt.Errorf("netmap stream at %s: %w", url, err)
		}
		watchdog.Reset(silence)
		nm := msg.Netmap
		if nm == nil {
			continue
		}
		c.coords.setURLs(nm.CoordinatorURLs)
		c.mu.Lock()
		if first {
			c.streams = append(c.streams, haStream{url: url, opened: time.Now()})
		}
		if c.netmap == nil || nm.Version >= c.netmap.Version { // the agent ignores an older one
			c.netmap = nm
		}
		c.mu.Unlock()
		if first {
			first = false
			c.coords.succeeded()
			opened()
		}
	}
}

// latest returns the newest netmap received, nil before the first.
func (c *haClient) latest() *wire.Netmap {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.netmap
}

// streaming reports whether c has a stream open and where.
func (c *haClient) streaming() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.streams); n > 0 && c.streams[n-1].ended.IsZero() {
		return c.streams[n-1].url, true
	}
	return "", false
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

// haAdmin sets policy versions through whichever coordinator answers,
// moving to another on a failure.
type haAdmin struct {
	c      *adminClient
	coords *coordinatorSet

	// Results, written by setPolicy.
	acked map[uint64]string // version → text of each policy answered 200
	ports map[string]int    // text → port of each policy sent
	last  uint64            // the last version answered 200
	// Attempts refused a connection, without an answer, answered with an
	// error (5xx).
	refused, cut, answeredErr int
	err                       error // run's: a policy refused
}

// run sets a policy every haPolicyEvery, on a new port each time, until
// stop is closed or ctx is done.
func (a *haAdmin) run(ctx context.Context, stop <-chan struct{}) {
	tick := time.NewTicker(haPolicyEvery)
	defer tick.Stop()
	for port := 1001; ; port++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if a.err = a.setPolicy(ctx, port); a.err != nil {
			return
		}
	}
}

// haPolicy is the policy of port: every node may reach the hub on it.
func haPolicy(port int) string {
	return fmt.Sprintf(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["node:hub:%d"], "proto": "tcp"}]}`, port)
}

// setPolicy sets haPolicy(port), retrying on another coordinator until it
// is answered 200. It starts at the coordinators in turn, as an admin does
// behind round-robin DNS.
func (a *haAdmin) setPolicy(ctx context.Context, port int) error {
	text := haPolicy(port)
	a.ports[text] = port
	a.coords.url = a.coords.urls[port%len(a.coords.urls)]
	body, _ := json.Marshal(wire.SetPolicyRequest{Text: text})
	var pause haPause
	for ctx.Err() == nil {
		a.c.url = a.coords.url
		code, b, err := a.c.put(ctx, wire.PathPolicy, body)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			a.refused++
		case err != nil:
			a.cut++
		case code == http.StatusOK:
			var p wire.Policy
			if err := json.Unmarshal(b, &p); err != nil {
				a.cut++
				break
			}
			a.coords.succeeded()
			a.acked[p.Version], a.last = text, p.Version
			return nil
		case code >= 500:
			a.answeredErr++
		default:
			return fmt.Errorf("set policy at %s: HTTP %d: %s", a.c.url, code, b)
		}
		if !a.coords.failover() {
			pause.wait(ctx)
		}
	}
	return ctx.Err()
}

// put sends body to path with PUT and returns the answer.
func (c *adminClient) put(ctx context.Context, path string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}
