package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/report"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The simulated mesh of BenchmarkLoad.
const (
	loadAgents   = 1000            // simulated agents, each with a netmap stream on a connection of its own
	loadBastions = 10              // agents tagged tag:bastion, which reach every other agent
	loadGroups   = 20              // the others are tagged tag:g00 … tag:g19; a group's members reach each other
	loadChanges  = 5               // policy changes timed
	loadTarget   = 2 * time.Second // p99 of policy change → netmap decoded
	loadTimeout  = time.Minute     // the longest wait for one change to reach every agent
)

// BenchmarkLoad measures how fast one coordinator fans a change out to
// 1,000 agents. The coordinator runs as its own process of the built
// binary on loopback, so its CPU time and memory come from /proc; the
// agents are lightweight clients in the benchmark process that speak the
// real protocol over real HTTPS: each generates a WireGuard key, enrolls
// with POST /v1/enroll, reports its services, and holds a netmap stream on
// its own TCP+TLS connection (pinned, HTTP/2, from a loopback address of
// its own, as 1,000 hosts would), decoding every ndjson message as the
// agent does.
//
// The policy splits the agents into 20 groups of ~50 that reach each
// other's app service (tcp/8080), plus 10 bastions that reach everyone's
// ssh and metrics service: a worker sees ~59 peers, a bastion 999. The
// benchmark times, per agent, policy change (PUT /v1/policy sent) → a
// netmap with the new policy version decoded, over 5 changes (target p99
// < 2 s), and one enrollment → the bastions and the new node's group
// decode a netmap that has it; it counts the netmaps that the enrollment
// sends (the coordinator sends a stream a netmap only when the change
// alters it, so the other agents get none). It needs no root; it takes
// about 1 minute.
func BenchmarkLoad(b *testing.B) {
	began := time.Now()
	raiseFileLimit(b, loadAgents+256)
	bin := build(b, b.TempDir(), "wiremesh", "github.com/wiremesh/wiremesh/cmd/wiremesh")
	lc := startLoadCoordinator(b, bin)
	r := newLoadRun(b, lc)
	defer r.close()
	rows := r.measure(b)
	rows = append(rows, []string{"benchmark wall time (build included)", time.Since(began).Round(time.Second).String(), "", "–", "–"})
	fmt.Println()
	fmt.Printf("Netmap fan-out, %d agents (%s, load %s)\n", loadAgents, time.Now().Format(time.DateOnly), loadAvg())
	figureTable(rows)
}

// raiseFileLimit raises the soft limit of open files to the hard limit if
// it is below need: every simulated agent holds a socket.
func raiseFileLimit(b *testing.B, need uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur >= need {
		return
	}
	if lim.Max < need {
		b.Fatalf("open file limit %d (hard) is below the %d the benchmark needs", lim.Max, need)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("setrlimit: %v", err)
	}
}

// loadCoordinator is a coordinator process on loopback and an admin
// client of it.
type loadCoordinator struct {
	url        string
	metricsURL string
	pins       credential.Pins
	token      string // the admin token
	admin      *http.Client
	pid        int
	stop       func() // SIGTERM, and wait; idempotent
}

// startLoadCoordinator starts bin's coordinator on free loopback ports; it
// stops (SIGTERM) when the benchmark ends.
func startLoadCoordinator(b *testing.B, bin string) *loadCoordinator {
	return startLoadCoordinatorIn(b, bin, b.TempDir())
}

// startLoadCoordinatorIn is startLoadCoordinator with the data dir
// dir/data, which may hold a database already.
func startLoadCoordinatorIn(b *testing.B, bin, dir string, extra ...string) *loadCoordinator {
	addr, maddr := freeAddr(b), freeAddr(b)
	logPath := filepath.Join(dir, "coordinator.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()
	args := []string{"coordinator", "--data-dir", filepath.Join(dir, "data"), "--listen", addr,
		"--metrics-listen", maddr, "--stun-listen", "", "--log-format", "json"} // on loopback: no STUN ports on the host
	cmd := exec.Command(bin, append(args, extra...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		b.Fatalf("start coordinator: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := sync.OnceFunc(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	b.Cleanup(stop)
	lc := &loadCoordinator{url: "https://" + addr, metricsURL: "http://" + maddr + "/metrics", pid: cmd.Process.Pid, stop: stop}
	tokenFile := filepath.Join(dir, "data", "admin.token")
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := lc.ready(tokenFile)
		if err == nil {
			return lc
		}
		if time.Now().After(deadline) || len(exited) > 0 {
			log, _ := os.ReadFile(logPath)
			b.Fatalf("coordinator not ready: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ready reads the admin token and checks that the API answers.
func (lc *loadCoordinator) ready(tokenFile string) error {
	raw, err := os.ReadFile(tokenFile)
	if err != nil {
		return err
	}
	tok, err := credential.ParseAdminToken(strings.TrimSpace(string(raw)))
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	lc.pins, lc.token = tok.Pins, strings.TrimSpace(string(raw))
	if lc.admin == nil {
		lc.admin = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: credential.ClientTLS(lc.pins), ForceAttemptHTTP2: true}}
	}
	return callJSON(context.Background(), lc.admin, http.MethodGet, lc.url+wire.PathNodes, lc.token, nil, nil)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// callJSON sends in as JSON with a bearer token and decodes a 2xx answer
// into out (nil: discarded).
func callJSON(ctx context.Context, hc *http.Client, method, url, token string, in, out any) error {
	var body io.Reader = http.NoBody
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, req.URL.Path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %.300s", method, req.URL.Path, resp.StatusCode, raw)
	}
	if out == nil || len(raw) == 0 {
		return nil
	}
	return json.Unmarshal(raw, out)
}

// simAgent is one simulated agent: a WireGuard identity, a node credential
// and an HTTPS client whose one connection comes from a loopback source
// address of its own.
type simAgent struct {
	idx   int
	name  string
	group int         // -1: a bastion
	key   wgtypes.Key // the WireGuard private key; pub is its public half
	pub   string
	ckey  string // the coordinator's proof key, from the enrollment answer
	cred  string
	tr    *http.Transport
	hc    *http.Client

	// Written by the agent's stream goroutine only.
	version atomic.Uint64 // of the newest netmap decoded
	netmaps atomic.Int64  // netmaps decoded
	bytes   atomic.Int64  // bytes of the netmap messages decoded
	peers   atomic.Int64  // in the newest netmap
	located atomic.Int64  // nodes with endpoints in the newest netmap, itself included
	size    atomic.Int64  // bytes of the newest netmap message
}

// newSimAgent makes agent i, with the name and group that i gives it.
func newSimAgent(i int, pins credential.Pins) (*simAgent, error) {
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return nil, fmt.Errorf("agent %d: generate key: %w", i, err)
	}
	a := &simAgent{idx: i, key: key, pub: key.PublicKey().String(), group: -1, name: fmt.Sprintf("bastion-%02d", i)}
	if i >= loadBastions {
		a.group = (i - loadBastions) % loadGroups
		a.name = fmt.Sprintf("g%02d-%03d", a.group, (i-loadBastions)/loadGroups)
	}
	src := &net.TCPAddr{IP: net.IPv4(127, 1, byte(i/250), byte(i%250+1))}
	// The agent's transport (node/control.go), bound to the source address.
	a.tr = &http.Transport{
		TLSClientConfig:     credential.ClientTLS(pins),
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second, LocalAddr: src}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		ForceAttemptHTTP2:   true,
		IdleConnTimeout:     time.Minute,
	}
	a.hc = &http.Client{Transport: a.tr}
	return a, nil
}

// tag is the agent's tag.
func (a *simAgent) tag() string {
	if a.group < 0 {
		return "tag:bastion"
	}
	return fmt.Sprintf("tag:g%02d", a.group)
}

// wantPeers is how many peers the agent's netmap has under loadPolicy.
func (a *simAgent) wantPeers(agents int) int {
	if a.group < 0 {
		return agents - 1
	}
	members := 0
	for i := loadBastions; i < agents; i++ {
		if (i-loadBastions)%loadGroups == a.group {
			members++
		}
	}
	return members - 1 + loadBastions
}

// enroll admits the agent with joinKey and reports its services: app
// (tcp/8080) and metrics (tcp/9100) on workers, none on bastions. (The
// agent reports after its stream opened; doing it first keeps the
// benchmark's connect phase to one change per agent, its endpoint.)
func (a *simAgent) enroll(ctx context.Context, url, joinKey string) error {
	var resp wire.EnrollResponse
	req := wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: a.pub, Name: a.name}
	if err := callJSON(ctx, a.hc, http.MethodPost, url+wire.PathEnroll, joinKey, req, &resp); err != nil {
		return fmt.Errorf("enroll %s: %w", a.name, err)
	}
	a.cred, a.ckey = resp.Credential, resp.CoordinatorKey
	if a.group < 0 {
		return nil
	}
	rep := wire.ServicesReport{PublicKey: a.pub, Services: []wire.Service{
		{Name: "app", Port: 8080, Proto: wire.ServiceTCP},
		{Name: "metrics", Port: 9100, Proto: wire.ServiceTCP},
	}}
	content, err := wire.ServicesContent(rep.Services)
	if err != nil {
		return err
	}
	if rep.ContentProof, err = credential.ServicesProof(a.key, a.ckey, time.Now(), content); err != nil {
		return fmt.Errorf("%s: services proof: %w", a.name, err)
	}
	if err := callJSON(ctx, a.hc, http.MethodPut, url+wire.PathServicesReport, a.cred, rep, nil); err != nil {
		return fmt.Errorf("services report of %s: %w", a.name, err)
	}
	return nil
}

// openStream opens a's netmap stream with req and a fresh proof of a's
// key, and checks that it is open (HTTP 200). With redials, a stream that
// cannot be opened is tried again after a backoff, as the agent does (a
// storm overflows the coordinator's listen backlog), and each such
// attempt is counted there.
func (a *simAgent) openStream(ctx context.Context, url string, req wire.MapRequest, redials *atomic.Int64) (*http.Response, error) {
	proof, err := credential.NetmapProof(a.key, a.ckey, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%s: netmap proof: %w", a.name, err)
	}
	req.ProtocolVersion, req.PublicKey, req.Version, req.Proof = wire.ProtocolVersion, a.pub, "bench", proof
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url+wire.PathNetmap, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Authorization", "Bearer "+a.cred)
	hreq.Header.Set("Content-Type", "application/json")
	var resp *http.Response
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		if resp, err = a.hc.Do(hreq); err == nil || redials == nil || ctx.Err() != nil {
			break
		}
		redials.Add(1)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait/2 + rand.N(wait/2)):
		}
		hreq.Body = io.NopCloser(bytes.NewReader(body))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: open netmap stream: %w", a.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		return nil, fmt.Errorf("%s: netmap stream: HTTP %d: %s", a.name, resp.StatusCode, raw)
	}
	return resp, nil
}

// stream holds the agent's netmap stream until ctx is done, passing every
// netmap to r's probes.
func (a *simAgent) stream(ctx context.Context, url string, r *loadRun) error {
	resp, err := a.openStream(ctx, url, wire.MapRequest{ListenPort: 51820}, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		return fmt.Errorf("%s: netmap stream over %s, want HTTP/2 as the agent's", a.name, resp.Proto)
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("%s: netmap stream: %w", a.name, err)
		}
		var m wire.MapMessage
		if err := json.Unmarshal(line, &m); err != nil {
			return fmt.Errorf("%s: netmap stream: %w", a.name, err)
		}
		if m.Netmap == nil {
			continue
		}
		now := time.Now()
		if ps := r.probes.Load(); ps != nil {
			for _, p := range *ps {
				p.observe(a.idx, m.Netmap, len(line), now)
			}
		}
		a.peers.Store(int64(len(m.Netmap.Peers)))
		a.located.Store(int64(located(m.Netmap)))
		a.size.Store(int64(len(line)))
		a.version.Store(m.Netmap.Version)
		a.bytes.Add(int64(len(line)))
		a.netmaps.Add(1)
	}
}

// located counts the nodes of nm, itself and its peers, whose endpoints it
// has.
func located(nm *wire.Netmap) int {
	n := 0
	if len(nm.Self.Endpoints) > 0 {
		n++
	}
	for _, p := range nm.Peers {
		if len(p.Endpoints) > 0 {
			n++
		}
	}
	return n
}

// probe records when each agent it watches first decodes a netmap that
// match accepts.
type probe struct {
	watch []bool
	match func(*wire.Netmap) bool
	start time.Time       // set before the probe is installed
	at    []time.Duration // since start; agent i's entry is written by its stream only
	size  []int           // bytes of that netmap message
	left  atomic.Int64
	done  chan struct{} // closed when left reaches 0
}

func newProbe(agents []*simAgent, watch func(*simAgent) bool, match func(*wire.Netmap) bool) *probe {
	p := &probe{watch: make([]bool, len(agents)), match: match, at: make([]time.Duration, len(agents)),
		size: make([]int, len(agents)), done: make(chan struct{})}
	for i, a := range agents {
		if p.watch[i] = watch(a); p.watch[i] {
			p.left.Add(1)
		}
	}
	if p.left.Load() == 0 {
		close(p.done)
	}
	return p
}

func (p *probe) observe(i int, nm *wire.Netmap, size int, now time.Time) {
	if i >= len(p.watch) || !p.watch[i] || p.at[i] != 0 || !p.match(nm) {
		return
	}
	p.at[i], p.size[i] = max(now.Sub(p.start), 1), size
	if p.left.Add(-1) == 0 {
		close(p.done)
	}
}

// seconds returns the delivery times of the watched agents, sorted.
func (p *probe) seconds() []float64 {
	var out []float64
	for i, d := range p.at {
		if p.watch[i] {
			out = append(out, d.Seconds())
		}
	}
	slices.Sort(out)
	return out
}

// loadRun is the simulated agents and the probes that their streams feed.
type loadRun struct {
	coord  *loadCoordinator
	agents []*simAgent
	keys   map[string]string // tag → reusable join key
	// enrolled is how long enrolling every agent took, and the
	// coordinator's CPU seconds for it.
	enrolled    time.Duration
	enrolledCPU float64
	probes      atomic.Pointer[[]*probe] // nil: none

	cancel context.CancelFunc
	wg     sync.WaitGroup // the agents' streams

	errMu sync.Mutex
	err   error // the first stream that ended while the run went on; guarded by errMu
}

// newLoadRun makes the agents and enrolls them, four at a time.
func newLoadRun(b *testing.B, lc *loadCoordinator) *loadRun {
	r := &loadRun{coord: lc, keys: map[string]string{}, cancel: func() {}}
	ctx := context.Background()
	for _, tag := range append([]string{"tag:bastion"}, groupTags()...) {
		var jk wire.CreateJoinKeyResponse
		if err := callJSON(ctx, lc.admin, http.MethodPost, lc.url+wire.PathJoinKeys, lc.token,
			wire.CreateJoinKeyRequest{Reusable: true, Tags: []string{tag}}, &jk); err != nil {
			b.Fatal(err)
		}
		r.keys[tag] = jk.JoinKey
	}
	start, cpu0 := time.Now(), coordCPU(b, lc)
	r.agents = make([]*simAgent, loadAgents)
	err := forEach(loadAgents, 4, func(i int) error {
		a, err := newSimAgent(i, lc.pins)
		if err != nil {
			return err
		}
		r.agents[i] = a
		return a.enroll(ctx, lc.url, r.keys[a.tag()])
	})
	if err != nil {
		r.close()
		b.Fatal(err)
	}
	r.enrolled, r.enrolledCPU = time.Since(start), coordCPU(b, lc)-cpu0
	logf("%d agents enrolled and reported services in %s (coordinator CPU %.1f s)", loadAgents, r.enrolled.Round(time.Millisecond), r.enrolledCPU)
	return r
}

func groupTags() []string {
	var tags []string
	for g := range loadGroups {
		tags = append(tags, fmt.Sprintf("tag:g%02d", g))
	}
	return tags
}

// forEach calls fn(0) … fn(n-1), par at a time, and returns the first
// error; after one, the calls not yet started are skipped.
func forEach(n, par int, fn func(i int) error) error {
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := fn(i); err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
					next.Store(int64(n))
				}
			}
		})
	}
	wg.Wait()
	return first
}

// fail records why a stream ended.
func (r *loadRun) fail(err error) {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	r.err = cmp.Or(r.err, err)
}

func (r *loadRun) failed() error {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.err
}

// close ends every stream, waits for them, and closes the connections.
func (r *loadRun) close() {
	r.cancel()
	r.wg.Wait()
	for _, a := range r.agents {
		if a != nil {
			a.tr.CloseIdleConnections()
		}
	}
	if r.coord.admin != nil {
		r.coord.admin.CloseIdleConnections()
	}
}

// connect opens every agent's stream at once and waits until each has
// decoded a netmap with all its peers and every endpoint in it: the
// connect phase's changes are the endpoints, and a stream is sent a
// netmap only when a change alters it, so agents rightly end at different
// versions.
func (r *loadRun) connect() (time.Duration, error) {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	start := time.Now()
	for _, a := range r.agents {
		r.wg.Go(func() {
			if err := a.stream(ctx, r.coord.url, r); ctx.Err() == nil {
				r.fail(err)
			}
		})
	}
	deadline := start.Add(2 * time.Minute)
	for ; time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err := r.failed(); err != nil {
			return 0, err
		}
		if !slices.ContainsFunc(r.agents, func(a *simAgent) bool { return int(a.located.Load()) != a.wantPeers(loadAgents)+1 }) {
			return time.Since(start), nil
		}
	}
	return 0, errors.New("netmaps without every peer's endpoint after 2 minutes")
}

// sent returns how many netmaps and bytes of them the agents decoded so
// far, per agent.
func (r *loadRun) sent() (netmaps, bytes []int64) {
	for _, a := range r.agents {
		netmaps, bytes = append(netmaps, a.netmaps.Load()), append(bytes, a.bytes.Load())
	}
	return netmaps, bytes
}

// quiet waits until no agent has decoded a netmap for d: the netmaps a
// change called for are all in.
func (r *loadRun) quiet(d time.Duration) error {
	total := func() (n int64) {
		for _, a := range r.agents {
			n += a.netmaps.Load()
		}
		return n
	}
	last, since := total(), time.Now()
	for deadline := time.Now().Add(loadTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if n := total(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= d {
			return nil
		}
	}
	return fmt.Errorf("netmaps still arriving after %v", loadTimeout)
}

// delivered is what a phase sent: netmaps and their bytes over all
// streams, and the agents that got at least one.
type delivered struct {
	netmaps, agents int
	mib             float64
	got             []bool // by agent
}

// since returns what the agents decoded since sent returned netmaps0 and
// bytes0.
func (r *loadRun) since(netmaps0, bytes0 []int64) delivered {
	d := delivered{got: make([]bool, len(r.agents))}
	var bytes int64
	for i, a := range r.agents {
		n := int(a.netmaps.Load() - netmaps0[i])
		d.netmaps += n
		bytes += a.bytes.Load() - bytes0[i]
		if d.got[i] = n > 0; d.got[i] {
			d.agents++
		}
	}
	d.mib = float64(bytes) / (1 << 20)
	return d
}

// await installs ps, calls change, and waits until every probe is done.
// It returns how long change took.
func (r *loadRun) await(change func() error, ps ...*probe) (time.Duration, error) {
	start := time.Now()
	for _, p := range ps {
		p.start = start
	}
	r.probes.Store(&ps)
	defer r.probes.Store(nil)
	if err := change(); err != nil {
		return 0, err
	}
	answered := time.Since(start)
	timeout := time.After(loadTimeout)
	for _, p := range ps {
		select {
		case <-p.done:
		case <-timeout:
			return 0, fmt.Errorf("%d agents still waiting after %v (stream error: %v)", p.left.Load(), loadTimeout, r.failed())
		}
	}
	return answered, nil
}

// loadPolicy is the policy of change k: each group reaches its members'
// app port, and bastions reach everyone's ssh (on 22 and 2200+k, so that
// every change alters every agent's rules), metrics service and ping.
func loadPolicy(k int) string {
	var sb strings.Builder
	sb.WriteString("{\"acls\": [\n")
	for _, tag := range groupTags() {
		fmt.Fprintf(&sb, "  {\"action\": \"accept\", \"src\": [%q], \"dst\": [\"%s:8080\"], \"proto\": \"tcp\"},\n", tag, tag)
	}
	fmt.Fprintf(&sb, "  {\"action\": \"accept\", \"src\": [\"tag:bastion\"], \"dst\": [\"*:22,%d\"], \"proto\": \"tcp\"},\n", 2200+k)
	sb.WriteString("  {\"action\": \"accept\", \"src\": [\"tag:bastion\"], \"dst\": [\"svc:metrics\"], \"proto\": \"tcp\"},\n")
	sb.WriteString("  {\"action\": \"accept\", \"src\": [\"tag:bastion\"], \"dst\": [\"*:*\"], \"proto\": \"icmp\"},\n")
	sb.WriteString("],\n\"tests\": [{\"src\": \"tag:g00\", \"proto\": \"tcp\", \"accept\": [\"tag:g00:8080\"], \"deny\": [\"tag:g01:8080\"]}]}\n")
	return sb.String()
}

// setPolicy sets loadPolicy(k) and returns its version.
func (r *loadRun) setPolicy(k int) (uint64, error) {
	var p wire.Policy
	err := callJSON(context.Background(), r.coord.admin, http.MethodPut, r.coord.url+wire.PathPolicy, r.coord.token,
		wire.SetPolicyRequest{Text: loadPolicy(k)}, &p)
	return p.Version, err
}

// loadFigures are what BenchmarkLoad measures.
type loadFigures struct {
	connect               time.Duration
	connectCPU, connectMe float64 // CPU seconds of the coordinator and of the benchmark process
	sockets               int     // the coordinator's, after connect
	rssConnect            float64 // MiB
	workerPeers           []int

	delivery                []float64 // seconds, every agent of every change, sorted
	p99s, cpus, mine        []float64 // per change
	answers                 []float64 // ms until PUT /v1/policy answered, per change
	changeMiB               []float64 // bytes of netmaps sent per change, all streams
	workerSize, bastionSize []float64 // bytes of one netmap message
	connectSent             delivered
	learned                 []float64 // seconds, sorted
	enrollSent              delivered
	enrollStrays            int // agents sent a netmap by the enrollment that need not learn it
	enrollVersions          uint64
	enrollCPU               float64 // coordinator CPU seconds
}

// measure runs the phases and returns the figures.
func (r *loadRun) measure(b *testing.B) [][]string {
	var f loadFigures
	pv, err := r.setPolicy(0)
	if err != nil {
		b.Fatal(err)
	}
	r.measureConnect(b, &f)
	for k := 1; k <= loadChanges; k++ {
		time.Sleep(time.Second) // let the previous change settle
		pv = r.measureChange(b, &f, k, pv)
	}
	slices.Sort(f.delivery)
	time.Sleep(time.Second)
	r.measureEnrollment(b, &f)
	if err := r.failed(); err != nil {
		b.Fatalf("a stream ended: %v", err)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(quantile(f.delivery, 0.99)*1000, "p99-ms")
	b.ReportMetric(median(f.cpus), "coord-cpu-s/change")
	r.report(b, &f)
	return r.rows(b, &f)
}

// report adds the figures' rows to the reliability report.
func (r *loadRun) report(b *testing.B, f *loadFigures) {
	fault := fmt.Sprintf("policy change with %d agents on one coordinator", loadAgents)
	p99 := quantile(f.delivery, 0.99)
	report.Add(b, report.Row{Fault: fault, Check: fmt.Sprintf("PUT /v1/policy → netmap decoded at every agent, p50 / p99 / max of %d × %d", loadChanges, loadAgents),
		Figure: fmt.Sprintf("%.3f / %.3f / %.3f s", quantile(f.delivery, 0.5), p99, f.delivery[len(f.delivery)-1]),
		Target: fmt.Sprintf("p99 < %.0f s", loadTarget.Seconds()), Met: p99 < loadTarget.Seconds()})
	report.Add(b, report.Row{Fault: fault, Check: "coordinator CPU per change (median)", Figure: fmt.Sprintf("%.2f s", median(f.cpus))})
	pid := r.coord.pid
	report.Add(b, report.Row{Fault: fmt.Sprintf("%d agents holding netmap streams", loadAgents), Check: "coordinator RSS after connect / at the end / peak",
		Figure: fmt.Sprintf("%.0f / %.0f / %.0f MiB", f.rssConnect, procMiB(b, pid, "VmRSS"), procMiB(b, pid, "VmHWM"))})
	report.Add(b, report.Row{Fault: fmt.Sprintf("a node enrolls while %d agents hold streams", loadAgents),
		Check:  fmt.Sprintf("in the netmaps of the %d agents that may reach it, p50 / p99 / max", len(f.learned)),
		Figure: fmt.Sprintf("%.3f / %.3f / %.3f s", quantile(f.learned, 0.5), quantile(f.learned, 0.99), f.learned[len(f.learned)-1])})
	report.Add(b, report.Row{Fault: fmt.Sprintf("a node enrolls while %d agents hold streams", loadAgents),
		Check:  "netmaps sent, all streams: to the agents that may reach it only",
		Figure: fmt.Sprintf("%d to %d agents (%d others), %.1f MiB", f.enrollSent.netmaps, f.enrollSent.agents, f.enrollStrays, f.enrollSent.mib),
		Target: fmt.Sprintf("none to the other %d", loadAgents-len(f.learned)), Met: f.enrollStrays == 0})
}

// measureConnect opens the streams and checks every agent's peers.
func (r *loadRun) measureConnect(b *testing.B, f *loadFigures) {
	cpu0, me0 := coordCPU(b, r.coord), selfCPU(b)
	took, err := r.connect()
	if err != nil {
		b.Fatal(err)
	}
	f.connect, f.connectCPU, f.connectMe = took, coordCPU(b, r.coord)-cpu0, selfCPU(b)-me0
	f.rssConnect, f.sockets = procMiB(b, r.coord.pid, "VmRSS"), procSockets(b, r.coord.pid)
	if err := r.quiet(500 * time.Millisecond); err != nil {
		b.Fatal(err)
	}
	f.connectSent = r.since(make([]int64, len(r.agents)), make([]int64, len(r.agents)))
	logf("%d streams opened at once; every netmap complete after %s (coordinator CPU %.1f s, clients %.1f s); %d netmaps, %.0f MiB sent",
		loadAgents, took.Round(time.Millisecond), f.connectCPU, f.connectMe, f.connectSent.netmaps, f.connectSent.mib)
	for _, a := range r.agents {
		if got, want := int(a.peers.Load()), a.wantPeers(loadAgents); got != want {
			b.Fatalf("%s has %d peers, want %d", a.name, got, want)
		}
		if a.group >= 0 {
			f.workerPeers = append(f.workerPeers, int(a.peers.Load()))
		}
	}
}

// measureChange sets loadPolicy(k) and times its arrival at every agent;
// prev is the policy version before it. It returns the new version.
func (r *loadRun) measureChange(b *testing.B, f *loadFigures, k int, prev uint64) uint64 {
	p := newProbe(r.agents, func(*simAgent) bool { return true }, func(nm *wire.Netmap) bool { return nm.PolicyVersion > prev })
	cpu0, me0 := coordCPU(b, r.coord), selfCPU(b)
	var pv uint64
	answered, err := r.await(func() (err error) { pv, err = r.setPolicy(k); return err }, p)
	if err != nil {
		b.Fatalf("policy change %d: %v", k, err)
	}
	cpu, me := coordCPU(b, r.coord)-cpu0, selfCPU(b)-me0
	d := p.seconds()
	f.delivery = append(f.delivery, d...)
	f.p99s, f.cpus, f.mine = append(f.p99s, quantile(d, 0.99)), append(f.cpus, cpu), append(f.mine, me)
	f.answers = append(f.answers, answered.Seconds()*1000)
	var total float64
	for i, a := range r.agents {
		total += float64(p.size[i])
		if a.group < 0 {
			f.bastionSize = append(f.bastionSize, float64(p.size[i]))
		} else {
			f.workerSize = append(f.workerSize, float64(p.size[i]))
		}
	}
	f.changeMiB = append(f.changeMiB, total/(1<<20))
	logf("policy change %d (v%d): answered %.0f ms; delivered p50 %.3f s, p99 %.3f s, max %.3f s; coordinator CPU %.2f s, clients %.2f s",
		k, pv, answered.Seconds()*1000, quantile(d, 0.5), quantile(d, 0.99), d[len(d)-1], cpu, me)
	return pv
}

// measureEnrollment enrolls one more agent (it holds no stream) and times
// its arrival in the netmaps of the bastions and of its group, and counts
// the netmaps that its enrollment and service report sent.
func (r *loadRun) measureEnrollment(b *testing.B, f *loadFigures) {
	newcomer, err := newSimAgent(loadAgents, r.coord.pins)
	if err != nil {
		b.Fatal(err)
	}
	defer newcomer.tr.CloseIdleConnections()
	learns := func(a *simAgent) bool { return a.group < 0 || a.group == newcomer.group }
	learned := newProbe(r.agents, learns, func(nm *wire.Netmap) bool {
		return slices.ContainsFunc(nm.Peers, func(n wire.Node) bool { return n.PublicKey == newcomer.pub })
	})
	if err := r.quiet(500 * time.Millisecond); err != nil {
		b.Fatal(err)
	}
	netmaps0, bytes0 := r.sent()
	v0, cpu0 := r.stateVersion(b), coordCPU(b, r.coord)
	enroll := func() error { return newcomer.enroll(context.Background(), r.coord.url, r.keys[newcomer.tag()]) }
	if _, err := r.await(enroll, learned); err != nil {
		b.Fatalf("enrollment: %v", err)
	}
	if err := r.quiet(500 * time.Millisecond); err != nil {
		b.Fatal(err)
	}
	f.enrollCPU = coordCPU(b, r.coord) - cpu0
	f.learned, f.enrollSent, f.enrollVersions = learned.seconds(), r.since(netmaps0, bytes0), r.stateVersion(b)-v0
	for i, a := range r.agents {
		if f.enrollSent.got[i] && !learns(a) {
			f.enrollStrays++
		}
	}
	logf("enrollment of %s (%d state versions): %d agents learned it, p99 %.3f s; %d netmaps to %d agents (%d others), %.1f MiB; coordinator CPU %.2f s",
		newcomer.name, f.enrollVersions, len(f.learned), quantile(f.learned, 0.99), f.enrollSent.netmaps, f.enrollSent.agents, f.enrollStrays, f.enrollSent.mib, f.enrollCPU)
}

// stateVersion is the coordinator's published state version.
func (r *loadRun) stateVersion(b *testing.B) uint64 {
	v, err := scrapeMetrics(r.coord.metricsURL, "wiremesh_coordinator_state_version")
	if err != nil {
		b.Fatal(err)
	}
	return uint64(v[0])
}

// rows is the figure table.
func (r *loadRun) rows(b *testing.B, f *loadFigures) [][]string {
	pid := r.coord.pid
	heap, err := scrapeMetrics(r.coord.metricsURL, "go_memstats_heap_inuse_bytes", "go_memstats_next_gc_bytes")
	if err != nil {
		b.Fatal(err)
	}
	p99, last := quantile(f.delivery, 0.99), func(xs []float64) float64 { return xs[len(xs)-1] }
	return [][]string{
		{"agents holding a netmap stream (one TCP+TLS connection each)", strconv.Itoa(loadAgents), fmt.Sprintf("coordinator sockets: %d", f.sockets), "–", "–"},
		{"peers per netmap", fmt.Sprintf("worker %d–%d, bastion %d", slices.Min(f.workerPeers), slices.Max(f.workerPeers), loadAgents-1), "", "–", "–"},
		{"netmap message size (median)", fmt.Sprintf("worker %.1f KiB, bastion %.1f KiB", median(f.workerSize)/1024, median(f.bastionSize)/1024), "", "–", "–"},
		{"netmaps sent per change, all streams", fmt.Sprintf("%.1f MiB", median(f.changeMiB)), floats(f.changeMiB, "%.1f"), "–", "–"},
		{"enroll and report services, 1,000 agents, 4 at a time", r.enrolled.Round(time.Millisecond).String(),
			fmt.Sprintf("coordinator CPU %.1f s", r.enrolledCPU), "–", "–"},
		{"connect: 1,000 streams opened at once → every netmap has all its peers' endpoints", f.connect.Round(time.Millisecond).String(),
			fmt.Sprintf("coordinator CPU %.1f s, clients %.1f s", f.connectCPU, f.connectMe), "–", "–"},
		{"netmaps sent while connecting, all streams", fmt.Sprintf("%d, %.0f MiB", f.connectSent.netmaps, f.connectSent.mib), "", "–", "–"},
		{"policy change → netmap decoded, p50", fmt.Sprintf("%.3f s", quantile(f.delivery, 0.5)), fmt.Sprintf("%d × %d", loadChanges, loadAgents), "–", "–"},
		{"policy change → netmap decoded, p99", fmt.Sprintf("%.3f s", p99), "per change: " + floats(f.p99s, "%.3f"), "< 2 s", passFail(p99 < loadTarget.Seconds())},
		{"policy change → netmap decoded, max", fmt.Sprintf("%.3f s", last(f.delivery)), "", "–", "–"},
		{"PUT /v1/policy answered", fmt.Sprintf("%.0f ms (median)", median(f.answers)), floats(f.answers, "%.0f"), "–", "–"},
		{fmt.Sprintf("enrollment → learned by the bastions and its group (%d agents), p50 / p99 / max", len(f.learned)),
			fmt.Sprintf("%.3f / %.3f / %.3f s", quantile(f.learned, 0.5), quantile(f.learned, 0.99), last(f.learned)), "1", "–", "–"},
		{"enrollment → netmaps sent, all streams", fmt.Sprintf("%d to %d agents, %.1f MiB", f.enrollSent.netmaps, f.enrollSent.agents, f.enrollSent.mib),
			fmt.Sprintf("%d state versions (enrollment, service report); to others: %d; coordinator CPU %.2f s", f.enrollVersions, f.enrollStrays, f.enrollCPU),
			"only those that see it", passFail(f.enrollStrays == 0)},
		{"coordinator CPU per policy change", fmt.Sprintf("%.2f s (median)", median(f.cpus)), floats(f.cpus, "%.2f"), "–", "–"},
		{"clients (benchmark process) CPU per policy change", fmt.Sprintf("%.2f s (median)", median(f.mine)), floats(f.mine, "%.2f"), "–", "–"},
		{"coordinator RSS after connect / at the end / peak", fmt.Sprintf("%.0f / %.0f / %.0f MiB", f.rssConnect, procMiB(b, pid, "VmRSS"), procMiB(b, pid, "VmHWM")), "", "–", "–"},
		{"coordinator Go heap in use at the end (garbage included) / next GC goal", fmt.Sprintf("%.0f / %.0f MiB", heap[0]/(1<<20), heap[1]/(1<<20)), "", "–", "–"},
	}
}

func coordCPU(b *testing.B, lc *loadCoordinator) float64 {
	s, err := cpuSeconds(lc.pid)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func selfCPU(b *testing.B) float64 {
	s, err := cpuSeconds(os.Getpid())
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// procMiB returns a "kB" field of /proc/PID/status (VmRSS, VmHWM) in MiB.
func procMiB(b *testing.B, pid int, field string) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatalf("pid %d: %s: %v", pid, field, err)
			}
			return kb / 1024
		}
	}
	b.Fatalf("pid %d: no %s in /proc status", pid, field)
	return 0
}

// procSockets counts the sockets process pid has open.
func procSockets(b *testing.B, pid int) int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// scrapeMetrics returns the values of unlabelled metrics from a
// Prometheus text endpoint.
func scrapeMetrics(url string, names ...string) ([]float64, error) {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	vals := make([]float64, len(names))
	found := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, _ := strings.Cut(sc.Text(), " ")
		if i := slices.Index(names, name); i >= 0 {
			if vals[i], err = strconv.ParseFloat(v, 64); err != nil {
				return nil, fmt.Errorf("scrape %s: %s: %w", url, name, err)
			}
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	if found != len(names) {
		return nil, fmt.Errorf("scrape %s: want %s, found %d of them", url, strings.Join(names, ", "), found)
	}
	return vals, nil
}
