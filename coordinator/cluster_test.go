package coordinator

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/pgtest"
	"github.com/wiremesh/wiremesh/wire"
)

// startCluster runs n coordinators on one new PostgreSQL database. They
// poll for changes only once an hour: what reaches the others in time
// arrived by NOTIFY.
func startCluster(t *testing.T, n int, opts ...func(*Config)) []*testServer {
	t.Helper()
	ts, _ := startClusterOn(t, pgtest.Start(t), n, opts...)
	return ts
}

// startClusterOn is startCluster on PostgreSQL server pg.
func startClusterOn(t *testing.T, pg *pgtest.Cluster, n int, opts ...func(*Config)) ([]*testServer, string) {
	t.Helper()
	db := pg.Database(t)
	var ts []*testServer
	for range n {
		ts = append(ts, startServer(t, time.Hour, append([]func(*Config){func(c *Config) {
			c.Database, c.PollInterval = db, time.Hour
		}}, opts...)...))
	}
	return ts, db
}

// TestCoordinatorsActAsOne: three coordinators on one PostgreSQL share one
// identity, and a change made through any of them reaches the agents
// streaming from the others within a second.
func TestCoordinatorsActAsOne(t *testing.T) {
	ts := startCluster(t, 3)
	for _, s := range ts[1:] {
		if !s.c.Pins().Equal(ts[0].c.Pins()) || s.c.PublicProofKey() != ts[0].c.PublicProofKey() {
			t.Fatalf("coordinators do not share one identity: pins %s and %s, proof keys %s and %s", ts[0].c.Pins(), s.c.Pins(), ts[0].c.PublicProofKey(), s.c.PublicProofKey())
		}
	}
	// A join key made on one enrolls on each; it names every coordinator.
	jk := ts[2].createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	b, err := credential.ParseJoinKey(jk.JoinKey)
	if err != nil {
		t.Fatal(err)
	}
	if b.URL != ts[2].url || !sameSet(b.URLs(), urlsOf(ts)) {
		t.Errorf("join key names %v, want %s first and all of %v", b.URLs(), ts[2].url, urlsOf(ts))
	}
	var streams []*stream
	for i, s := range ts {
		e := s.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "n" + string(rune('a'+i))})
		streams = append(streams, s.openStream(t, e.Credential, wire.MapRequest{PublicKey: e.Node.PublicKey}))
	}
	var first []string
	for i, st := range streams {
		nm := st.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })
		// The same list from each: netmaps do not depend on the
		// coordinator that builds them.
		if first == nil {
			first = nm.CoordinatorURLs
		}
		if !slices.Equal(nm.CoordinatorURLs, first) || !sameSet(nm.CoordinatorURLs, urlsOf(ts)) {
			t.Errorf("netmap from coordinator %d names coordinators %v, want all of %v in the order of the others (%v)", i, nm.CoordinatorURLs, urlsOf(ts), first)
		}
		var names []string
		for _, r := range nm.Relays {
			names = append(names, r.Name)
		}
		if len(names) != 3 || names[0] == names[1] || names[1] == names[2] || names[0] == names[2] {
			t.Errorf("relay map %v: want the three coordinators' relays under three names", names)
		}
	}
	// A policy change through the second reaches the agents on all three.
	start := time.Now()
	ts[1].setPolicy(t, allowAll)
	for i, st := range streams {
		st.netmap(t, "two peers", func(nm *wire.Netmap) bool { return len(nm.Peers) == 2 })
		if d := time.Since(start); d > time.Second {
			t.Errorf("the policy change reached the agent on coordinator %d after %s, want within 1 s", i, d)
		}
	}
	// Every coordinator sees every node online, wherever it streams.
	for i, s := range ts {
		var nodes []wire.Node
		code, body := s.do(t, "GET", wire.PathNodes, s.admin, nil)
		decodeStrict(t, body, &nodes)
		if code != http.StatusOK || len(nodes) != 3 || slices.ContainsFunc(nodes, func(n wire.Node) bool { return !n.Online }) {
			t.Errorf("coordinator %d lists %d %s: want 3 nodes, all online", i, code, body)
		}
	}
	// A node deleted through the first drops out everywhere within 1 s.
	start = time.Now()
	if code, body := ts[0].do(t, "DELETE", wire.PathNodes+"/nc", ts[0].admin, nil); code != http.StatusNoContent {
		t.Fatalf("delete nc: %d %s", code, body)
	}
	for i, st := range streams[:2] {
		st.netmap(t, "nc gone", func(nm *wire.Netmap) bool { return len(nm.Peers) == 1 })
		if d := time.Since(start); d > time.Second {
			t.Errorf("the deletion reached the agent on coordinator %d after %s, want within 1 s", i, d)
		}
	}
	streams[2].ended(t)
	// An admin token made on one works on the others.
	code, body := ts[0].doJSON(t, "POST", wire.PathAdminTokens, ts[0].admin, wire.CreateAdminTokenRequest{Comment: "ha"})
	if code != http.StatusCreated {
		t.Fatalf("create token: %d %s", code, body)
	}
	var tok wire.CreateAdminTokenResponse
	decodeStrict(t, body, &tok)
	ab, err := credential.ParseAdminToken(tok.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := ts[2].do(t, "GET", wire.PathNodes, ab.Secret.String(), nil); code != http.StatusOK {
		t.Errorf("another coordinator's admin token: %d %s", code, body)
	}
}

// TestOneTimeKeyOnTwoCoordinators: a one-time join key used at the same
// moment on two coordinators enrolls exactly one node.
func TestOneTimeKeyOnTwoCoordinators(t *testing.T) {
	ts := startCluster(t, 2)
	for round := range 10 {
		jk := ts[0].createJoinKey(t, wire.CreateJoinKeyRequest{})
		codes := make([]int, 2)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, s := range ts {
			wg.Go(func() {
				<-start
				req := withProtocol(wire.EnrollRequest{PublicKey: newPublicKey(t)})
				codes[i], _ = s.doJSON(t, "POST", wire.PathEnroll, jk.JoinKey, req)
			})
		}
		close(start)
		wg.Wait()
		if ok := countOf(codes, http.StatusOK); ok != 1 {
			t.Fatalf("round %d: answers %v; want exactly one 200", round, codes)
		}
	}
	if n := len(mustNodes(t, ts[0].c.Store())); n != 10 {
		t.Errorf("%d nodes after 10 one-time keys, want 10", n)
	}
}

// TestTimersRunOnce: one coordinator of a database at a time holds the
// timers lease; when it stops, another takes it over.
func TestTimersRunOnce(t *testing.T) {
	ts := startCluster(t, 3, func(c *Config) { c.beat = 50 * time.Millisecond })
	leaders := func() (n int, which int) {
		for i, s := range ts {
			if s.c.isLeader() {
				n, which = n+1, i
			}
		}
		return n, which
	}
	var first int
	waitUntil(t, "a leader", func() bool {
		n, w := leaders()
		first = w
		return n == 1
	})
	for range 20 { // a second of beats: never two
		if n, _ := leaders(); n != 1 {
			t.Fatalf("%d coordinators hold the timers lease", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ts[first].stop()
	waitUntil(t, "another leader", func() bool {
		n, w := leaders()
		return n == 1 && w != first
	})
}

// TestOnlineOnAnotherCoordinator: a node streaming from one coordinator
// is online on the others, and not swept as an offline ephemeral node.
func TestOnlineOnAnotherCoordinator(t *testing.T) {
	ts := startCluster(t, 2, func(c *Config) {
		c.beat = 50 * time.Millisecond
		// Long enough for the stream to open after the enrollment on a
		// loaded machine: a node that never streamed is swept too.
		c.EphemeralTimeout = 2 * time.Second
	})
	jk := ts[0].createJoinKey(t, wire.CreateJoinKeyRequest{Ephemeral: true})
	e := ts[0].enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "eph"})
	st := ts[1].openStream(t, e.Credential, wire.MapRequest{PublicKey: e.Node.PublicKey})
	st.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })
	time.Sleep(5 * time.Second) // sweeps and two ephemeral timeouts, on whichever holds the lease
	for i, s := range ts {
		n, err := s.c.adminNode(context.Background(), "eph")
		if err != nil || !n.Online {
			t.Errorf("coordinator %d: node %+v, %v; want it online", i, n, err)
		}
	}
	st.cancel()
	waitUntil(t, "the node swept once offline", func() bool {
		_, err := ts[0].c.adminNode(context.Background(), "eph")
		return err != nil && strings.Contains(err.Error(), "no node named")
	})
}

// TestDatabaseRestart: PostgreSQL restarts while enrollments and admin
// reads run on two coordinators. Each is answered 200, or 503 while the
// database is away (never a refusal or an internal error); every
// enrollment answered 200 is kept, open
// netmap streams stay open, and the coordinators' listeners reconnect by
// themselves: a change through one reaches the other's agents at once
// again (their poll is an hour).
func TestDatabaseRestart(t *testing.T) {
	pg := pgtest.Start(t)
	ts, _ := startClusterOn(t, pg, 2, func(c *Config) { c.EnrollRate = -1 })
	jk := ts[0].createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	e := ts[0].enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "watcher"})
	st := ts[1].openStream(t, e.Credential, wire.MapRequest{PublicKey: e.Node.PublicKey})
	st.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := map[string]bool{}
	answers := map[int]int{} // status → count, of every request
	for i, s := range ts {
		wg.Go(func() { // an admin reading all along
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, _ := s.do(t, "GET", wire.PathNodes, s.admin, nil)
				mu.Lock()
				answers[code]++
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				name := "e" + string(rune('a'+i)) + strconv.Itoa(n)
				code, _ := s.doJSON(t, "POST", wire.PathEnroll, jk.JoinKey, withProtocol(wire.EnrollRequest{PublicKey: newPublicKey(t), Name: name}))
				mu.Lock()
				answers[code]++
				if code == http.StatusOK {
					admitted[name] = true
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	listens := ts[1].c.listens.Load()
	pg.Restart(t)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	nodes := mustNodes(t, ts[1].c.Store())
	have := map[string]bool{}
	for _, n := range nodes {
		have[n.Name] = true
	}
	for name := range admitted {
		if !have[name] {
			t.Errorf("node %s was admitted (200) but is not in the database", name)
		}
	}
	for code, n := range answers {
		if code != http.StatusOK && code != http.StatusServiceUnavailable {
			t.Errorf("%d requests answered %d around the restart; want 200, or 503 while the database was away", n, code)
		}
	}
	t.Logf("answers around the restart: %v", answers)
	if len(admitted) < 10 {
		t.Errorf("only %d enrollments were admitted around the restart", len(admitted))
	}
	// The stream stayed open through the restart, and the listeners are
	// back: a policy change through the first reaches it within 1 s.
	waitUntil(t, "the listener back", func() bool { return ts[1].c.listens.Load() > listens })
	waitUntil(t, "a policy change made after the restart", func() bool {
		code, _ := ts[0].doJSON(t, "PUT", wire.PathPolicy, ts[0].admin, wire.SetPolicyRequest{Text: allowAll})
		return code == http.StatusOK
	})
	start := time.Now()
	st.netmap(t, "peers after the policy change", func(nm *wire.Netmap) bool { return len(nm.Peers) > 0 })
	if d := time.Since(start); d > time.Second {
		t.Errorf("the policy change reached the other coordinator's agent after %s, want within 1 s", d)
	}
}

func urlsOf(ts []*testServer) []string {
	var out []string
	for _, s := range ts {
		out = append(out, s.url)
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	return slices.Equal(a, b)
}

// waitUntil polls ok for up to waitFor.
func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, waitFor)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func countOf[T comparable](s []T, v T) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// TestReportReplayAtAnotherCoordinator: a services or connectivity
// report accepted by one coordinator, replayed at another, is refused
// (403, a replayed report): every coordinator shares the newest proof
// times in the database. The other shows what the node reported.
func TestReportReplayAtAnotherCoordinator(t *testing.T) {
	ts := startCluster(t, 2)
	jk := ts[0].createJoinKey(t, wire.CreateJoinKeyRequest{})
	a := ts[0].enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	pub := a.Node.PublicKey
	web := []wire.Service{{Name: "web", Port: 8080, Health: "passing"}}
	svc := wire.ServicesReport{PublicKey: pub, Services: web, ContentProof: servicesProof(t, ts[0].c, pub, web)}
	conn := wire.ConnectivityReport{PublicKey: pub, Endpoints: []string{"192.0.2.34:51820"}, Connectivity: wire.Connectivity{NAT: wire.NATEasy}}
	conn.ContentProof = connectivityProof(t, ts[0].c, pub, conn)
	for _, r := range []struct {
		what string
		path string
		body any
	}{{"services", wire.PathServicesReport, svc}, {"connectivity", wire.PathConnectivity, conn}} {
		if code, body := ts[0].doJSON(t, "PUT", r.path, a.Credential, r.body); code != 204 {
			t.Fatalf("%s report at the first coordinator: %d %s", r.what, code, body)
		}
		code, body := ts[1].doJSON(t, "PUT", r.path, a.Credential, r.body)
		if code != 403 || !strings.Contains(errorOf(t, body).Error, "a replayed report") {
			t.Errorf("the %s report replayed at the second coordinator: %d %s, want 403, a replayed report", r.what, code, body)
		}
	}
	// What the node reported is in the database: the other coordinator
	// shows it too.
	if c := adminNodeOf(t, ts[1], "a").Connectivity; c == nil || c.NAT != wire.NATEasy {
		t.Errorf("the second coordinator shows a's connectivity as %+v, want the report made to the first", c)
	}
}
