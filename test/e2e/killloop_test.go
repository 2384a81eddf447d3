package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/report"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The shape of TestCoordinatorKillLoop.
const (
	stormClients = 200
	// stormCap bounds the kill loop and the clients: past it the test
	// fails instead of hanging.
	stormCap = 60 * time.Second
	// Uptime of the coordinator between kills, counted from its
	// "coordinator listening" line.
	stormUpMin, stormUpMax = 150 * time.Millisecond, 450 * time.Millisecond
	// The clients start in stormWaves waves, all of a wave at once: the
	// loop releases a wave 0 to stormLead before each of its first kills.
	// All 200 at once are through within one uptime (about 0.5 s), so the
	// loop would kill once or twice; spread evenly, a kill finds an
	// enrollment in flight now and then. Released just before a kill, a
	// wave is being enrolled when it lands, and the wave's clients whose
	// answers it cut off retry while the loop goes on.
	stormWaves = 20
	stormLead  = 60 * time.Millisecond
	// stormAttempt bounds one enrollment request.
	stormAttempt = 5 * time.Second
)

// TestCoordinatorKillLoop: while the coordinator is SIGKILLed and restarted
// every few hundred milliseconds, 200 clients enroll concurrently over the
// real protocol, released in waves just before kills, retrying with the same
// key until they get a definite answer. Afterwards every enrollment that was answered with success
// exists exactly once with the addresses it was told and a working
// credential, every client ends with exactly one node and there is no other,
// no address is given twice, no node is half-written, the join key counts
// one use per node, and the database passes SQLite's integrity check.
//
// The clients run in the test, dialling from inside the coordinator's
// namespace, each from a loopback address of its own (127.1.0.N): the
// per-source enrollment rate limit stays at its production default.
func TestCoordinatorKillLoop(t *testing.T) {
	m := newBareMesh(t)
	jk, err := credential.ParseJoinKey(m.joinKey)
	if err != nil {
		t.Fatal(err)
	}
	clients := make([]*stormClient, stormClients)
	for i := range clients {
		clients[i] = newStormClient(t, m.coordHost, jk, i)
	}

	ctx, cancel := context.WithTimeout(context.Background(), stormCap)
	var wg sync.WaitGroup
	t.Cleanup(func() { // before the lab's cleanup: nothing outlives the test
		cancel()
		wg.Wait()
		for _, c := range clients {
			c.http.CloseIdleConnections()
		}
	})
	m.coord.Kill() // the loop below runs it from now on
	start := time.Now()
	waves := make([]chan struct{}, stormWaves)
	for i := range waves {
		waves[i] = make(chan struct{})
	}
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.err = c.enroll(ctx, jk, waves[i%stormWaves])
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	kills, maxDown := m.killLoop(t, done, start.Add(stormCap), waves)
	took := time.Since(start)
	cancel()

	st := stormStats(t, clients)
	t.Logf("%d kills in %s (down at most %s after a kill); %d acknowledged, %d answer lost (409 on retry), %d retries, %d of them after a request cut off by a kill; time to an acknowledged enrollment p50 %s p99 %s (the answering request alone: p50 %s p99 %s)",
		kills, took.Round(time.Millisecond), maxDown.Round(time.Millisecond), st.acked, st.lost, st.retries, st.cut,
		st.p50.Round(time.Millisecond), st.p99.Round(time.Millisecond),
		st.lastP50.Round(time.Millisecond), st.lastP99.Round(time.Millisecond))
	if t.Failed() {
		t.FailNow()
	}

	// The database as the last SIGKILL left it.
	db := filepath.Join(m.dataDir, "wiremesh.db")
	integrity := checkIntegrity(t, db)
	rows := checkNodeRows(t, "sqlite", "file:"+db+"?_pragma=busy_timeout(10000)", jk.Secret.ID)

	// The coordinator once more, to check through the API what the
	// clients were told.
	m.startCoordinator()
	admin := newAdminClient(t, m.coordHost, m.tokenFile)
	nodes := admin.nodes(t, 50)
	dups := checkStormNodes(t, clients, nodes, rows)
	checkCredentials(t, clients)
	m.coord.Signal(sigterm)
	if code, err := m.coord.Wait(10 * time.Second); err != nil || code != 0 {
		t.Errorf("coordinator: exit %d, %v", code, err)
	}
	integrity = checkIntegrity(t, db) && integrity
	verdict := "integrity ok"
	if !integrity {
		verdict = "integrity check FAILED"
	}

	report.Add(t, report.Row{
		Fault: "coordinator SIGKILL every ~300 ms",
		Check: fmt.Sprintf("%d concurrent enrollments: each acknowledged one exists once, no address twice, no half-written node, integrity ok", stormClients),
		Figure: fmt.Sprintf("%d kills in %s; %d/%d enrolled (%d acknowledged, %d answer lost); %d duplicates; %s",
			kills, took.Round(100*time.Millisecond), len(nodes), stormClients, st.acked, st.lost, dups, verdict),
		Target: "no loss, no duplicate",
		Met:    !t.Failed(),
	})
}

// killLoop starts the coordinator, lets it serve for a random uptime, kills
// it with SIGKILL, and again, until done is closed; it fails the test at
// deadline. Before each of the first len(waves) kills it closes the next of
// waves, 0 to stormLead before the kill. It returns the number of kills and
// the longest time from a kill to the next "coordinator listening", and
// leaves the coordinator stopped.
func (m *mesh) killLoop(t *testing.T, done <-chan struct{}, deadline time.Time, waves []chan struct{}) (kills int, maxDown time.Duration) {
	t.Helper()
	killed := time.Now()
	for {
		m.startCoordinator() // waits for "coordinator listening"
		maxDown = max(maxDown, time.Since(killed))
		up := stormUpMin + rand.N(stormUpMax-stormUpMin)
		if len(waves) > 0 {
			lead := rand.N(stormLead)
			sleepUnless(done, up-lead)
			close(waves[0])
			waves = waves[1:]
			up = lead
		}
		sleepUnless(done, up)
		m.coord.Kill()
		killed = time.Now()
		select {
		case <-done:
			return kills, maxDown
		default:
		}
		kills++
		if killed.After(deadline) {
			t.Errorf("clients still enrolling after %s (%d kills)", stormCap, kills)
			<-done // their context ends at the deadline
			return kills, maxDown
		}
	}
}

// sleepUnless sleeps for d or until done is closed.
func sleepUnless(done <-chan struct{}, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
	}
}

// stormClient is one lightweight client: a WireGuard key, a host name and
// an HTTPS client that dials the coordinator from a source address of its
// own, as the agent does (the certificate pin, HTTP/2).
type stormClient struct {
	url      string // the coordinator's
	hostname string
	key      wgtypes.Key // the WireGuard private key; pub is its public half
	pub      string
	src      netip.Addr
	http     *http.Client

	// Results, written by enroll.
	acked    bool                // answered 200
	lost     bool                // the answer was lost: a retry met 409 "public key already enrolled"
	resp     wire.EnrollResponse // the 200 answer
	attempts int
	cut      int           // attempts that reached a coordinator and lost it: no answer, or a 5xx
	took     time.Duration // from the first attempt to the definite answer
	last     time.Duration // the answering attempt alone
	err      error         // no definite answer, or an unexpected one
}

func newStormClient(t *testing.T, h *lab.Host, jk credential.Bundle, i int) *stormClient {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	n := i + 1
	src := netip.AddrFrom4([4]byte{127, 1, byte(n >> 8), byte(n)})
	return &stormClient{
		url:      jk.URL,
		hostname: fmt.Sprintf("storm-%03d", n),
		key:      k,
		pub:      k.PublicKey().String(),
		src:      src,
		http:     pinnedClient(h, jk.Pins, src),
	}
}

// pinnedClient is an HTTPS client that trusts the coordinator by pins and
// dials from inside h's namespace, from src if it is valid.
func pinnedClient(h *lab.Host, pins credential.Pins, src netip.Addr) *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := h.Do(func() error {
			d := net.Dialer{Timeout: 5 * time.Second}
			if src.IsValid() {
				d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
			}
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     credential.ClientTLS(pins),
		DialContext:         dial,
		TLSHandshakeTimeout: 5 * time.Second,
		ForceAttemptHTTP2:   true,
	}}
}

// enroll waits for release, then posts the enrollment until it gets a
// definite answer: 200, or 409 "public key already enrolled" on a retry (an
// earlier attempt committed but its answer was lost). Connection errors,
// 5xx and 429 are retried with the same key after a short jittered pause
// (Retry-After for 429).
func (c *stormClient) enroll(ctx context.Context, jk credential.Bundle, release <-chan struct{}) error {
	body, _ := json.Marshal(wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: c.pub, Hostname: c.hostname})
	select {
	case <-ctx.Done():
		return fmt.Errorf("%s: %w before the first attempt", c.hostname, ctx.Err())
	case <-release:
	}
	start := time.Now()
	var last string
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no definite answer after %d attempts (last: %s)", c.hostname, c.attempts, last)
		}
		c.attempts++
		t0 := time.Now()
		code, hdr, b, err := c.post(ctx, jk, body)
		pause := 20*time.Millisecond + rand.N(80*time.Millisecond)
		switch {
		case err != nil:
			last = err.Error()
			if !errors.Is(err, syscall.ECONNREFUSED) {
				c.cut++
			}
		case code == http.StatusOK:
			if err := json.Unmarshal(b, &c.resp); err != nil {
				last = fmt.Sprintf("200 with a bad body: %v", err) // cut off: retry
				break
			}
			c.acked, c.took, c.last = true, time.Since(start), time.Since(t0)
			return nil
		case code == http.StatusConflict && bytes.Contains(b, []byte("public key already enrolled")):
			if c.attempts == 1 {
				return fmt.Errorf("%s: first attempt refused as already enrolled: %s", c.hostname, b)
			}
			c.lost, c.took, c.last = true, time.Since(start), time.Since(t0)
			return nil
		case code == http.StatusTooManyRequests:
			last = fmt.Sprintf("429: %s", b)
			if s, err := strconv.Atoi(hdr.Get("Retry-After")); err == nil {
				pause += time.Duration(s) * time.Second
			}
		case code >= 500:
			last = fmt.Sprintf("%d: %s", code, b)
			c.cut++
		default:
			return fmt.Errorf("%s: attempt %d: HTTP %d: %s", c.hostname, c.attempts, code, b)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

// post sends one enrollment request and returns the answer.
func (c *stormClient) post(ctx context.Context, jk credential.Bundle, body []byte) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, stormAttempt)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+wire.PathEnroll, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+jk.Secret.String())
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read answer: %w", err)
	}
	return resp.StatusCode, resp.Header, b, nil
}

// stormFigures sums up the clients.
type stormFigures struct {
	acked, lost, retries int
	cut                  int           // attempts cut off by a kill (or answered 5xx)
	p50, p99             time.Duration // time to an acknowledged enrollment
	lastP50, lastP99     time.Duration // its answering request alone
}

// stormStats fails the test for every client without a definite answer
// and returns the figures.
func stormStats(t *testing.T, clients []*stormClient) stormFigures {
	t.Helper()
	var f stormFigures
	var took, last []time.Duration
	for _, c := range clients {
		if c.err != nil {
			t.Error(c.err)
		}
		f.retries += max(0, c.attempts-1)
		f.cut += c.cut
		switch {
		case c.acked:
			f.acked++
			took, last = append(took, c.took), append(last, c.last)
		case c.lost:
			f.lost++
		}
	}
	f.p50, f.p99 = quantile(took, 0.50), quantile(took, 0.99)
	f.lastP50, f.lastP99 = quantile(last, 0.50), quantile(last, 0.99)
	return f
}

// quantile returns the q-quantile of ds (nearest rank); 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// nodeRow is a node as its database row has it.
type nodeRow struct {
	name, publicKey, credID, credHash string
	hostIndex                         int64
}

// checkNodeRows reads the nodes from the database (database/sql's driver
// and dsn) and fails the test for a half-written one, and unless the
// join key joinKeyID counts one use and the audit log one enrollment per
// node (they are written in the same transaction). It returns the rows by
// public key.
func checkNodeRows(t *testing.T, driver, dsn, joinKeyID string) map[string]nodeRow {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q, err := db.Query("SELECT name, public_key, cred_id, cred_hash, host_index FROM nodes")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	rows := map[string]nodeRow{}
	n := 0
	for q.Next() {
		var r nodeRow
		if err := q.Scan(&r.name, &r.publicKey, &r.credID, &r.credHash, &r.hostIndex); err != nil {
			t.Fatal(err)
		}
		n++
		if r.name == "" || r.publicKey == "" || r.credID == "" || r.credHash == "" || r.hostIndex <= 0 {
			t.Errorf("half-written node row: %+v", r)
		}
		rows[r.publicKey] = r
	}
	if err := q.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) != n {
		t.Errorf("%d node rows but %d public keys", n, len(rows))
	}
	var uses, enrolls int
	if err := db.QueryRow("SELECT uses FROM join_keys WHERE id = $1", joinKeyID).Scan(&uses); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT count(*) FROM audit WHERE action = 'node.enroll'").Scan(&enrolls); err != nil {
		t.Fatal(err)
	}
	if uses != n || enrolls != n {
		t.Errorf("%d nodes, but the join key counts %d uses and the audit log %d enrollments", n, uses, enrolls)
	}
	return rows
}

// checkIntegrity runs SQLite's integrity check on the database of a
// stopped coordinator and reports whether it passed.
func checkIntegrity(t *testing.T, path string) bool {
	t.Helper()
	s, err := store.Open(context.Background(), store.Config{Path: path})
	if err != nil {
		t.Fatalf("open the database after the kill loop: %v", err)
	}
	defer s.Close()
	if err := s.CheckIntegrity(context.Background()); err != nil {
		t.Error(err)
		return false
	}
	return true
}

// checkStormNodes compares the coordinator's node listing with what the
// clients were told and with the database rows, and returns the number of
// duplicates found (names, keys or addresses given twice).
func checkStormNodes(t *testing.T, clients []*stormClient, nodes []wire.Node, rows map[string]nodeRow) (dups int) {
	t.Helper()
	byKey, byName, byAddr := map[string]wire.Node{}, map[string]bool{}, map[netip.Addr]string{}
	for _, n := range nodes {
		if _, ok := byKey[n.PublicKey]; ok {
			dups++
			t.Errorf("public key %s listed twice", n.PublicKey)
		}
		if byName[n.Name] {
			dups++
			t.Errorf("name %s listed twice", n.Name)
		}
		byKey[n.PublicKey], byName[n.Name] = n, true
		var v4, v6 int
		for _, p := range n.Addresses {
			if p.Addr().Is4() {
				v4++
			} else {
				v6++
			}
			if other, ok := byAddr[p.Addr()]; ok {
				dups++
				t.Errorf("address %s given to %s and %s", p.Addr(), other, n.Name)
			}
			byAddr[p.Addr()] = n.Name
		}
		if v4 != 1 || v6 != 1 {
			t.Errorf("node %s has addresses %v, want one IPv4 and one IPv6", n.Name, n.Addresses)
		}
		if r, ok := rows[n.PublicKey]; !ok || r.name != n.Name {
			t.Errorf("node %s (%s) listed but its row is %+v", n.Name, n.PublicKey, r)
		}
	}
	if len(nodes) != len(clients) || len(rows) != len(clients) {
		t.Errorf("%d clients enrolled, but %d nodes listed and %d in the database", len(clients), len(nodes), len(rows))
	}
	asked := map[string]bool{}
	for _, c := range clients {
		asked[c.pub] = true
		n, ok := byKey[c.pub]
		switch {
		case !ok:
			t.Errorf("%s (acknowledged %v) has no node", c.hostname, c.acked)
		case n.Name != c.hostname:
			t.Errorf("%s enrolled as %q", c.hostname, n.Name)
		case c.acked && (n.ID != c.resp.Node.ID || n.Name != c.resp.Node.Name || !slices.Equal(n.Addresses, c.resp.Node.Addresses)):
			t.Errorf("%s was told %d %s %v, the coordinator has %d %s %v", c.hostname,
				c.resp.Node.ID, c.resp.Node.Name, c.resp.Node.Addresses, n.ID, n.Name, n.Addresses)
		}
	}
	for _, n := range nodes {
		if !asked[n.PublicKey] {
			t.Errorf("node %s (%s) was asked for by no client", n.Name, n.PublicKey)
		}
	}
	return dups
}

// checkCredentials opens a netmap stream with the credential of every
// acknowledged enrollment, a few at a time, and checks that the first
// netmap is the node's own.
func checkCredentials(t *testing.T, clients []*stormClient) {
	t.Helper()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	for i, c := range clients {
		if !c.acked {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = c.checkNetmap()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// checkNetmap reads the first netmap of the client's stream.
func (c *stormClient) checkNetmap() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	proof, err := credential.NetmapProof(c.key, c.resp.CoordinatorKey, time.Now())
	if err != nil {
		return fmt.Errorf("%s: netmap proof: %w", c.hostname, err)
	}
	body, _ := json.Marshal(wire.MapRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: c.pub, Proof: proof})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+wire.PathNetmap, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.resp.Credential)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: netmap: %w", c.hostname, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: netmap: HTTP %d: %s", c.hostname, resp.StatusCode, b)
	}
	var msg wire.MapMessage
	if err := json.NewDecoder(resp.Body).Decode(&msg); err != nil {
		return fmt.Errorf("%s: netmap: %w", c.hostname, err)
	}
	if msg.Netmap == nil || msg.Netmap.Self.Name != c.hostname || msg.Netmap.Self.PublicKey != c.pub {
		return fmt.Errorf("%s: first netmap message is not its own: %+v", c.hostname, msg)
	}
	return nil
}

// adminClient calls the admin API from inside the coordinator's namespace.
type adminClient struct {
	url   string
	token string
	http  *http.Client
}

func newAdminClient(t *testing.T, h *lab.Host, tokenFile string) *adminClient {
	t.Helper()
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := credential.ParseAdminToken(string(b))
	if err != nil {
		t.Fatal(err)
	}
	c := &adminClient{url: tok.URL, token: tok.Secret.String(), http: pinnedClient(h, tok.Pins, netip.Addr{})}
	t.Cleanup(c.http.CloseIdleConnections)
	return c
}

// nodes lists every node, following the pages of limit nodes.
func (c *adminClient) nodes(t *testing.T, limit int) []wire.Node {
	t.Helper()
	var all []wire.Node
	next := wire.PathNodes + "?limit=" + strconv.Itoa(limit)
	for pages := 0; next != ""; pages++ {
		if pages > 1000 {
			t.Fatal("GET /v1/nodes: more than 1000 pages")
		}
		var page []wire.Node
		var err error
		if next, err = c.get(next, &page); err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
	}
	return all
}

// get reads path into v and returns the path of the next page, if any.
func (c *adminClient) get(path string, v any) (next string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+path, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: HTTP %d: %s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return "", fmt.Errorf("GET %s: %w", path, err)
	}
	return nextLink(resp.Header.Get("Link"))
}

// nextLink returns the target of a `Link: <…>; rel="next"` header, or ""
// when there is none.
func nextLink(h string) (string, error) {
	if h == "" {
		return "", nil
	}
	target, params, ok := strings.Cut(h, ";")
	target = strings.TrimSpace(target)
	if !ok || !strings.Contains(params, `rel="next"`) || !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
		return "", errors.New("bad Link header " + strconv.Quote(h))
	}
	return strings.Trim(target, "<>"), nil
}
