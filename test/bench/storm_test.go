package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The segmented policy of BenchmarkConnectStorm: teams of stormTeam nodes
// that reach each other, and the first team, the platform, which every
// node reaches on tcp/443: a worker has stormTeam-1 team mates and
// stormTeam platform nodes as peers (~200), a platform node everyone.
const stormTeam = 100

// stormSizes are the mesh sizes of BenchmarkConnectStorm; WIREMESH_STORM
// ("1000,3000") overrides them.
var stormSizes = []int{1000, 3000, 10000}

// BenchmarkConnectStorm measures the connect storm: N agents, enrolled
// already (as after a coordinator restart), open their netmap streams at
// once, each reporting its endpoints, until every agent's netmap has all
// its peers with their endpoints. Every connect is a change its peers
// must learn; a coordinator that rebuilt every netmap on every change
// would take time quadratic in N, one that sends each change to the
// change's peers only, linear. For each N in stormSizes, a fresh
// coordinator process (the built binary, SQLite, on loopback) starts on
// a database that holds the N nodes and the policy; the agents are
// lightweight clients in the benchmark process (protocol 6, deltas
// applied), each on its own HTTPS connection from its own loopback
// address. The figures: the storm's wall time and the coordinator's CPU
// time, and their growth per 1,000 agents (linear if constant), and the
// coordinator's RSS at the end per 1,000 agents.
func BenchmarkConnectStorm(b *testing.B) {
	sizes := stormSizes
	if env := os.Getenv("WIREMESH_STORM"); env != "" {
		sizes = nil
		for _, f := range strings.Split(env, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 2*stormTeam {
				b.Fatalf("WIREMESH_STORM=%q: want sizes of at least %d, comma-separated", env, 2*stormTeam)
			}
			sizes = append(sizes, n)
		}
	}
	raiseFileLimit(b, uint64(sizes[len(sizes)-1]+512)) // the agents' connections; the coordinator (which inherits the limit) holds as many
	bin := build(b, b.TempDir(), "wiremesh", "github.com/wiremesh/wiremesh/cmd/wiremesh")
	rows := [][]string{}
	var first stormResult
	for i, n := range sizes {
		r := stormAt(b, bin, n)
		if i == 0 {
			first = r
		}
		k := float64(n) / 1000
		rows = append(rows, []string{
			fmt.Sprintf("N = %d: storm time / coordinator CPU", n),
			fmt.Sprintf("%.2f s / %.2f s", r.wall.Seconds(), r.cpu),
			fmt.Sprintf("per 1,000 agents: %.2f s / %.2f s; RSS %.0f MiB (%.1f MiB per 1,000)", r.wall.Seconds()/k, r.cpu/k, r.rss, r.rss/k),
			"–", "–",
		})
		if i > 0 {
			f := float64(n) / float64(sizes[0])
			rows = append(rows, []string{
				fmt.Sprintf("N = %d vs %d (×%.0f agents): time, CPU", n, sizes[0], f),
				fmt.Sprintf("×%.2f, ×%.2f", r.wall.Seconds()/first.wall.Seconds(), r.cpu/first.cpu),
				"linear: ×" + strconv.FormatFloat(f, 'f', 0, 64) + "; quadratic: ×" + strconv.FormatFloat(f*f, 'f', 0, 64),
				"–", "–",
			})
		}
	}
	fmt.Println()
	fmt.Printf("Connect storm, teams of %d (%s, load %s)\n", stormTeam, time.Now().Format(time.DateOnly), loadAvg())
	figureTable(rows)
}

type stormResult struct {
	wall time.Duration
	cpu  float64 // coordinator CPU seconds during the storm
	rss  float64 // coordinator MiB at the end
}

// stormPolicy is the segmented policy for n nodes.
func stormPolicy(n int) string {
	var b strings.Builder
	b.WriteString(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["tag:t000:443"]}`)
	for t := 0; t*stormTeam < n; t++ {
		fmt.Fprintf(&b, `, {"action": "accept", "src": ["tag:t%03d"], "dst": ["tag:t%03d:*"]}`, t, t)
	}
	b.WriteString("]}")
	return b.String()
}

// stormAgent is one simulated agent of the storm.
type stormAgent struct {
	*simAgent
	team  int
	want  int         // peers its netmap must have
	done  atomic.Bool // its netmap has every peer, each with endpoints
	bytes atomic.Int64

	redials atomic.Int64 // connections tried again after failing
	drops   atomic.Int64 // streams that broke once open

	mu    sync.Mutex
	cur   *wire.Netmap // guarded by mu; the stream's netmap, deltas applied
	since msgCount     // guarded by mu; the messages since the last mark
}

// msgCount counts the netmap messages an agent received.
type msgCount struct {
	msgs, whole, bytes int
	at                 time.Time // of the last
}

// mark starts a new count of the agent's messages, and returns the last.
func (a *stormAgent) mark() msgCount {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.since
	a.since = msgCount{}
	return c
}

// received reports whether the agent received a message since the last
// mark.
func (a *stormAgent) received() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.since.msgs > 0
}

// netmap returns the agent's current netmap.
func (a *stormAgent) netmap() *wire.Netmap {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur
}

// stormMesh is a mesh after its storm: coordinators, and agents that
// hold their streams until the benchmark ends.
type stormMesh struct {
	coords []*loadCoordinator
	agents []*stormAgent
	result stormResult
	errs   chan error // of the agents' streams
}

// stormAt runs the storm for n agents on one coordinator on SQLite.
func stormAt(b *testing.B, bin string, n int) stormResult {
	return runStorm(b, bin, n, "", 1).result
}

// runStorm makes a mesh of n agents on coordinators coordinators (on
// SQLite if db is "", else on PostgreSQL database db) and runs its storm;
// agent i streams from coordinator i mod coordinators.
func runStorm(b *testing.B, bin string, n int, db string, coordinators int) *stormMesh {
	dir := b.TempDir()
	cfg := store.Config{Path: filepath.Join(dir, "c0", "data", "wiremesh.db"), URL: db}
	for i := range coordinators {
		if err := os.MkdirAll(filepath.Join(dir, fmt.Sprintf("c%d", i), "data"), 0o700); err != nil {
			b.Fatal(err)
		}
	}
	agents := enrollStorm(b, cfg, n)
	m := &stormMesh{agents: agents}
	pprofFile := os.Getenv("WIREMESH_STORM_PPROF") // a CPU profile of the first coordinator's first 10 s goes to FILE-N
	pprofAddr := freeAddr(b)
	for i := range coordinators {
		var extra []string
		if db != "" {
			extra = append(extra, "--database", db)
		}
		if pprofFile != "" && i == 0 {
			extra = append(extra, "--debug-pprof-listen", pprofAddr)
		}
		m.coords = append(m.coords, startLoadCoordinatorIn(b, bin, filepath.Join(dir, fmt.Sprintf("c%d", i)), extra...))
		if !m.coords[i].pins.Equal(m.coords[0].pins) {
			b.Fatalf("coordinator %d has pins %s, the first %s", i, m.coords[i].pins, m.coords[0].pins)
		}
	}
	lc := m.coords[0]
	var ck wire.CoordinatorKey
	if err := callJSON(context.Background(), lc.admin, http.MethodGet, lc.url+wire.PathCoordinatorKey, "", nil, &ck); err != nil {
		b.Fatal(err)
	}
	for _, a := range agents {
		a.ckey = ck.PublicKey
		a.tr.TLSClientConfig = credential.ClientTLS(lc.pins) // known only now; the transport is unused yet
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() {
		cancel()
		wg.Wait()
		for _, a := range agents {
			a.tr.CloseIdleConnections()
		}
	})
	cpu0 := m.cpu(b)
	if pprofFile != "" {
		wg.Go(func() {
			resp, err := http.Get("http://" + pprofAddr + "/debug/pprof/profile?seconds=10")
			if err != nil {
				logf("pprof: %v", err)
				return
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			os.WriteFile(fmt.Sprintf("%s-%d", pprofFile, n), raw, 0o600)
		})
	}
	start := time.Now()
	errs := make(chan error, n)
	m.errs = errs
	for i, a := range agents {
		url := m.coords[i%coordinators].url
		wg.Go(func() {
			if err := a.stormStream(ctx, url); err != nil && ctx.Err() == nil {
				errs <- err
			}
		})
	}
	m.waitAll(b, "every agent connected with every peer located", errs, 10*time.Minute, func(a *stormAgent) bool { return a.done.Load() })
	wall := time.Since(start)
	var rss float64
	for _, c := range m.coords {
		r, err := rssMiB(c.pid)
		if err != nil {
			b.Fatal(err)
		}
		rss += r
	}
	var bytes, redials, drops int64
	for _, a := range agents {
		bytes += a.bytes.Load()
		redials += a.redials.Load()
		drops += a.drops.Load()
	}
	m.result = stormResult{wall: wall, cpu: m.cpu(b) - cpu0, rss: rss}
	logf("storm N=%d on %d coordinator(s): %s, coordinator CPU %.2f s, RSS %.0f MiB, %.1f MiB of netmaps decoded, %d connections tried again, %d streams broke", n, coordinators, wall.Round(time.Millisecond), m.result.cpu, rss, float64(bytes)/(1<<20), redials, drops)
	return m
}

// cpu is the CPU time of the coordinators, in seconds.
func (m *stormMesh) cpu(b *testing.B) float64 {
	var sum float64
	for _, c := range m.coords {
		s, err := cpuSeconds(c.pid)
		if err != nil {
			b.Fatal(err)
		}
		sum += s
	}
	return sum
}

// waitAll waits until ok holds for every agent, failing on an error from
// errs (nil: none to watch) or after timeout.
func (m *stormMesh) waitAll(b *testing.B, what string, errs chan error, timeout time.Duration, ok func(*stormAgent) bool) {
	deadline := time.Now().Add(timeout)
	for {
		left := 0
		for _, a := range m.agents {
			if !ok(a) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d agents of %d not there after %s: %s", left, len(m.agents), timeout, what)
		}
		select {
		case err := <-errs:
			b.Fatal(err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// enrollStorm makes the database cfg names with n nodes in teams and the
// storm policy, through the store package, as the
// coordinator would have (nodes enrolled over time, then a restart), and
// returns the agents with their credentials.
func enrollStorm(b *testing.B, cfg store.Config, n int) []*stormAgent {
	ctx := context.Background()
	st, err := store.Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if _, err := st.SetPolicy(ctx, "bench", stormPolicy(n), ""); err != nil {
		b.Fatal(err)
	}
	var agents []*stormAgent
	keys := map[int]credential.Secret{}
	for i := range n {
		team := i % ((n + stormTeam - 1) / stormTeam)
		key, ok := keys[team]
		if !ok {
			_, key, err = st.CreateJoinKey(ctx, "bench", wire.CreateJoinKeyRequest{Reusable: true, Tags: []string{fmt.Sprintf("tag:t%03d", team)}})
			if err != nil {
				b.Fatal(err)
			}
			keys[team] = key
		}
		pk, err := wgtypes.GeneratePrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		sa, err := newSimAgent(i, nil)
		if err != nil {
			b.Fatal(err)
		}
		sa.key, sa.pub, sa.name = pk, pk.PublicKey().String(), fmt.Sprintf("t%03d-%04d", team, i)
		_, cred, _, err := st.Enroll(ctx, key, store.EnrollParams{PublicKey: sa.pub, Name: sa.name})
		if err != nil {
			b.Fatal(err)
		}
		sa.cred = cred.String()
		agents = append(agents, &stormAgent{simAgent: sa, team: team})
	}
	teams := map[int]int{}
	for _, a := range agents {
		teams[a.team]++
	}
	for _, a := range agents {
		if a.team == 0 {
			a.want = n - 1
		} else {
			a.want = teams[a.team] - 1 + teams[0]
		}
	}
	return agents
}

// stormStream holds the agent's netmap stream (streamOnce) until ctx is
// done: as the agent does, it opens another when one ends or breaks (a
// coordinator drops a stream it cannot write to within its write
// timeout), and counts it.
func (a *stormAgent) stormStream(ctx context.Context, url string) error {
	for {
		err := a.streamOnce(ctx, url)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, errStreamBroke) {
			return err
		}
		a.drops.Add(1)
	}
}

// errStreamBroke marks the end of a stream that was open.
var errStreamBroke = errors.New("stream broke")

// streamOnce opens the agent's netmap stream, reporting an endpoint of
// its own, and applies what comes until ctx is done; the agent is done
// once its netmap has every peer it should, each with endpoints.
func (a *stormAgent) streamOnce(ctx context.Context, url string) error {
	ep := fmt.Sprintf("198.51.100.%d:%d", 1+a.idx%250, 40000+a.idx/250)
	resp, err := a.openStream(ctx, url, wire.MapRequest{Endpoints: []string{ep}, Deltas: true}, &a.redials)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	var cur *wire.Netmap // the stream's own; a.cur is its copy for others
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("%s: netmap stream: %w: %w", a.name, errStreamBroke, err)
		}
		a.bytes.Add(int64(len(line)))
		var m wire.MapMessage
		if err := json.Unmarshal(line, &m); err != nil {
			return fmt.Errorf("%s: netmap stream: %w", a.name, err)
		}
		switch {
		case m.Netmap != nil:
			cur = m.Netmap
		case m.Delta != nil && cur != nil:
			if cur, err = m.Delta.Apply(cur); err != nil {
				return fmt.Errorf("%s: %w", a.name, err)
			}
		case m.Delta != nil:
			return fmt.Errorf("%s: a delta before any netmap", a.name)
		default:
			continue
		}
		a.mu.Lock()
		a.cur = cur
		a.since.msgs++
		a.since.bytes += len(line)
		a.since.at = time.Now()
		if m.Netmap != nil {
			a.since.whole++
		}
		a.mu.Unlock()
		if len(cur.Peers) == a.want && located(cur) == a.want+1 {
			a.done.Store(true)
		}
	}
}
