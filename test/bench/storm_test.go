package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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
	raiseFileLimit(b, uint64(2*sizes[len(sizes)-1]+256))
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
}

// stormAt runs the storm for n agents.
func stormAt(b *testing.B, bin string, n int) stormResult {
	dir := b.TempDir()
	agents := enrollStorm(b, dir, n)
	var extra []string
	pprofFile := os.Getenv("WIREMESH_STORM_PPROF") // a CPU profile of the storm's first 10 s goes to FILE-N
	pprofAddr := freeAddr(b)
	if pprofFile != "" {
		extra = append(extra, "--debug-pprof-listen", pprofAddr)
	}
	lc := startLoadCoordinatorIn(b, bin, dir, extra...)
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
	defer func() {
		cancel()
		wg.Wait()
		for _, a := range agents {
			a.tr.CloseIdleConnections()
		}
	}()
	cpu0, err := cpuSeconds(lc.pid)
	if err != nil {
		b.Fatal(err)
	}
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
	for _, a := range agents {
		wg.Go(func() {
			if err := a.stormStream(ctx, lc.url); err != nil && ctx.Err() == nil {
				errs <- err
			}
		})
	}
	deadline := time.Now().Add(10 * time.Minute)
	for left := n; left > 0; {
		select {
		case err := <-errs:
			b.Fatalf("N = %d: %v", n, err)
		case <-time.After(20 * time.Millisecond):
		}
		left = 0
		for _, a := range agents {
			if !a.done.Load() {
				left++
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("N = %d: %d agents not connected with every peer located after 10 min", n, left)
		}
	}
	wall := time.Since(start)
	cpu1, err := cpuSeconds(lc.pid)
	if err != nil {
		b.Fatal(err)
	}
	rss, err := rssMiB(lc.pid)
	if err != nil {
		b.Fatal(err)
	}
	var bytes int64
	for _, a := range agents {
		bytes += a.bytes.Load()
	}
	logf("storm N=%d: %s, coordinator CPU %.2f s, RSS %.0f MiB, %.1f MiB of netmaps decoded", n, wall.Round(time.Millisecond), cpu1-cpu0, rss, float64(bytes)/(1<<20))
	return stormResult{wall: wall, cpu: cpu1 - cpu0, rss: rss}
}

// enrollStorm makes the database of a coordinator in dir/data with n
// nodes in teams and the storm policy, through the store package, as the
// coordinator would have (nodes enrolled over time, then a restart), and
// returns the agents with their credentials.
func enrollStorm(b *testing.B, dir string, n int) []*stormAgent {
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Path: filepath.Join(data, "wiremesh.db")})
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

// stormStream opens the agent's netmap stream, reporting an endpoint of
// its own, and applies what comes until ctx is done; the agent is done
// once its netmap has every peer it should, each with endpoints.
func (a *stormAgent) stormStream(ctx context.Context, url string) error {
	proof, err := credential.NetmapProof(a.key, a.ckey, time.Now())
	if err != nil {
		return fmt.Errorf("%s: netmap proof: %w", a.name, err)
	}
	ep := fmt.Sprintf("198.51.100.%d:%d", 1+a.idx%250, 40000+a.idx/250)
	body, err := json.Marshal(wire.MapRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: a.pub, Endpoints: []string{ep}, Version: "bench", Proof: proof, Deltas: true})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+wire.PathNetmap, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.cred)
	resp, err := a.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s: open netmap stream: %w", a.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("%s: netmap stream: HTTP %d: %s", a.name, resp.StatusCode, raw)
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	var cur *wire.Netmap
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("%s: netmap stream: %w", a.name, err)
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
		if len(cur.Peers) == a.want && located(cur) == a.want+1 {
			a.done.Store(true)
		}
	}
}
