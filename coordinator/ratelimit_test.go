package coordinator

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
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
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time // guarded by mu
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var (
	addr1 = netip.MustParseAddr("192.0.2.1")
	addr2 = netip.MustParseAddr("192.0.2.2")
)

// allowN makes n attempts from addr, one after the other, and returns how
// many were allowed.
func allowN(l *sourceLimiter, addr netip.Addr, n int) int {
	ok := 0
	for range n {
		if _, allowed := l.allow(addr); allowed {
			l.done(addr, false)
			ok++
		}
	}
	return ok
}

// failN makes n attempts from addr, one after the other, that fail if
// allowed, and returns how many were allowed.
func failN(l *sourceLimiter, addr netip.Addr, n int) int {
	ok := 0
	for range n {
		if _, allowed := l.allow(addr); allowed {
			l.done(addr, true)
			ok++
		}
	}
	return ok
}

func TestSourceLimiterBurstAndRefill(t *testing.T) {
	clk := newFakeClock()
	l := newSourceLimiter(10, 20, clk.now)
	if got := allowN(l, addr1, 25); got != 20 {
		t.Fatalf("a fresh source was allowed %d of 25 attempts at once, want the burst of 20", got)
	}
	retry, ok := l.allow(addr1)
	if ok || retry != 100*time.Millisecond {
		t.Errorf("spent source: allow = %v, %v; want refused, retry in 100ms (10 a second)", retry, ok)
	}
	if got := allowN(l, addr2, 20); got != 20 {
		t.Errorf("another source was allowed %d of 20, want all: sources are apart", got)
	}
	clk.advance(100 * time.Millisecond)
	if got := allowN(l, addr1, 5); got != 1 {
		t.Errorf("100ms later: %d allowed, want 1", got)
	}
	clk.advance(time.Hour)
	if got := allowN(l, addr1, 25); got != 20 {
		t.Errorf("an hour later: %d allowed, want the burst of 20 and no more", got)
	}
}

func TestSourceLimiterFailures(t *testing.T) {
	clk := newFakeClock()
	l := newSourceLimiter(10, 20, clk.now) // failures: 1 a second, bursts of 5
	if got := failN(l, addr1, 5); got != 5 {
		t.Fatalf("%d of 5 failures let through, want 5", got)
	}
	retry, ok := l.allow(addr1)
	if ok || retry != time.Second {
		t.Fatalf("after 5 failures: allow = %v, %v; want refused, retry in 1s", retry, ok)
	}
	clk.advance(time.Second)
	if got := failN(l, addr1, 2); got != 1 {
		t.Errorf("a second later: %d failures allowed, want 1", got)
	}

	// Successes cost only the attempt.
	if got := allowN(l, addr2, 20); got != 20 {
		t.Errorf("a source without failures: %d of 20 allowed", got)
	}
}

// TestSourceLimiterInFlight: attempts in flight at once, all checked before
// any of them failed, cannot overdraw the failure bucket, however many
// there are; those that succeed give their failure token back.
func TestSourceLimiterInFlight(t *testing.T) {
	clk := newFakeClock()
	l := newSourceLimiter(10, 20, clk.now) // failures: 1 a second, bursts of 5
	const inFlight = 8
	allowed := 0
	for range inFlight {
		if _, ok := l.allow(addr1); ok {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("%d attempts in flight at once allowed, want the failure burst of 5", allowed)
	}
	l.done(addr1, false) // one succeeded
	if _, ok := l.allow(addr1); !ok {
		t.Fatal("an attempt in flight succeeded; the next one is refused, want allowed")
	}
	for range allowed {
		l.done(addr1, true)
	}
	if retry, ok := l.allow(addr1); ok || retry != time.Second {
		t.Fatalf("after 5 failures: allow = %v, %v; want refused, retry in 1s", retry, ok)
	}

	// A flood keeping inFlight attempts in flight, checked together each
	// 100 ms and failing together, for a minute: at most the burst and 1
	// a second got through, and no fewer than 1 a second.
	l = newSourceLimiter(10, 20, clk.now)
	const seconds = 60
	failures := 0
	for range seconds * 10 {
		n := 0
		for range inFlight {
			if _, ok := l.allow(addr1); ok {
				n++
			}
		}
		for range n {
			l.done(addr1, true)
		}
		failures += n
		clk.advance(100 * time.Millisecond)
	}
	if most := 5 + seconds; failures > most || failures < seconds {
		t.Errorf("a flood with %d attempts in flight got %d failures in %d s, want %d to %d (1 a second and the burst of 5)", inFlight, failures, seconds, seconds, most)
	}
}

func TestSourceKey(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"fe80::1%eth0", "fe80::2%eth1"},
	} {
		if ka, kb := sourceKey(netip.MustParseAddr(tc.a)), sourceKey(netip.MustParseAddr(tc.b)); ka != kb {
			t.Errorf("sourceKey(%s) = %s, sourceKey(%s) = %s; want one key", tc.a, ka, tc.b, kb)
		}
	}
	for _, tc := range []struct{ a, b string }{
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"192.0.2.1", "192.0.2.2"},
		{"::", "0.0.0.0"},
	} {
		if ka, kb := sourceKey(netip.MustParseAddr(tc.a)), sourceKey(netip.MustParseAddr(tc.b)); ka == kb {
			t.Errorf("sourceKey(%s) = sourceKey(%s) = %s; want two keys", tc.a, tc.b, ka)
		}
	}
	if got := sourceString(sourceKey(netip.MustParseAddr("2001:db8:1:2::1"))); got != "2001:db8:1:2::/64" {
		t.Errorf("an IPv6 source reads %q, want its /64", got)
	}

	// Through the limiter: one host spending its burst from one /64
	// spends it for the whole /64, not for the next one.
	l := newSourceLimiter(10, 20, newFakeClock().now)
	for i := range 20 {
		allowN(l, netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i+1)), 1)
	}
	if _, ok := l.allow(netip.MustParseAddr("2001:db8:1:2:abcd::1")); ok {
		t.Error("a 21st attempt from the same /64 was allowed")
	}
	if _, ok := l.allow(netip.MustParseAddr("2001:db8:1:3::1")); !ok {
		t.Error("the next /64 was refused")
	}
}

func TestSourceOf(t *testing.T) {
	for remote, want := range map[string]netip.Addr{
		"192.0.2.1:4711":           addr1,
		"[2001:db8::1]:4711":       netip.MustParseAddr("2001:db8::1"),
		"[::ffff:192.0.2.1]:4711":  netip.MustParseAddr("::ffff:192.0.2.1"),
		"":                         {},
		"not an address":           {},
		"192.0.2.1":                {},
		"[fe80::1%eth0]:4711":      netip.MustParseAddr("fe80::1%eth0"),
		"[2001:db8::1%zone]:65535": netip.MustParseAddr("2001:db8::1%zone"),
	} {
		r := &http.Request{RemoteAddr: remote}
		if got := sourceOf(r); got != want {
			t.Errorf("sourceOf(RemoteAddr %q) = %v, want %v", remote, got, want)
		}
	}
}

// TestSourceLimiterBounded: a flood from more addresses than the table
// holds leaves it at its bound; idle sources are swept; a source whose
// failures are spent survives sweeps.
func TestSourceLimiterBounded(t *testing.T) {
	clk := newFakeClock()
	l := newSourceLimiter(10, 20, clk.now)
	l.max = 100
	flooder := netip.MustParseAddr("198.51.100.1")
	allowN(l, flooder, 19)
	failN(l, flooder, 1)

	spread := func(n, from int) {
		for i := range n {
			j := from + i
			l.allow(netip.AddrFrom4([4]byte{10, byte(j >> 16), byte(j >> 8), byte(j)}))
		}
	}
	spread(10_000, 0) // all at one instant: nothing is idle, sources make room for each other
	if n := l.size(); n > l.max {
		t.Fatalf("%d sources in a table bounded at %d", n, l.max)
	}

	// Later every source but the flooder (if it was kept) is full again:
	// a new source finding the table full sweeps it.
	l2 := newSourceLimiter(10, 20, clk.now)
	l2.max = 100
	allowN(l2, flooder, 15)
	failN(l2, flooder, 5) // failures spent, full again in 5 s
	l = l2
	spread(99, 0)
	clk.advance(2 * time.Second)
	spread(1, 1000)
	if n := l.size(); n != 2 {
		t.Errorf("after a sweep of a full table: %d sources, want 2 (the flooder not full yet and the new one)", n)
	}
	if got := failN(l, flooder, 5); got != 2 {
		t.Errorf("2 s after the flooder spent its failures: %d allowed, want 2 (5: it was forgotten by the sweep)", got)
	}
	// Idle sources go by the periodic sweep without the table filling.
	clk.advance(sweepEvery)
	spread(1, 2000)
	if n := l.size(); n != 1 {
		t.Errorf("a minute later: %d sources, want 1 (the new one)", n)
	}
}

func TestNilSourceLimiter(t *testing.T) {
	l := newSourceLimiter(-1, 20, time.Now)
	if l != nil {
		t.Fatal("a negative rate made a limiter, want none")
	}
	l.done(addr1, true)
	if got := allowN(l, addr1, 1000); got != 1000 {
		t.Errorf("no limit allowed %d of 1000", got)
	}
}

func TestLogLimiter(t *testing.T) {
	clk := newFakeClock()
	l := newLogLimiter(1, 3, clk.now)
	var got []string
	for range 10 {
		if n, ok := l.allow(); ok {
			got = append(got, strconv.Itoa(n))
		}
	}
	clk.advance(time.Second)
	for range 2 {
		if n, ok := l.allow(); ok {
			got = append(got, strconv.Itoa(n))
		}
	}
	if s := strings.Join(got, " "); s != "0 0 0 7" {
		t.Errorf("lines let through, with their suppressed counts: %q, want %q", s, "0 0 0 7")
	}
}

// TestEnrollRateLimited: a source over its limit gets 429 with Retry-After
// and the error body, before its join key is looked at; other sources
// enroll meanwhile.
func TestEnrollRateLimited(t *testing.T) {
	ts := startServer(t, time.Hour, func(c *Config) { c.EnrollRate, c.EnrollBurst = 0.5, 8 }) // failures: 2, then 1 every 20 s
	jk := mustParseJoinKey(t, ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true}).JoinKey)
	flooder := clientFrom(t, ts, "127.0.0.1")
	bad := credential.NewSecret("jk").String()
	var codes []string
	var last *http.Response
	for range 4 {
		resp := enrollFrom(t, ts, flooder, bad)
		codes = append(codes, strconv.Itoa(resp.code))
		last = resp.resp
	}
	got := strings.Join(codes, " ")
	if got != "401 401 429 429" {
		t.Fatalf("bad join keys from one address: %s, want 401 401 429 429", got)
	}
	ra, err := strconv.Atoi(last.Header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 20 {
		t.Errorf("Retry-After %q, want 1..20 seconds", last.Header.Get("Retry-After"))
	}
	// A valid key from the same address waits too: the limit is on the
	// source, and the key is not looked at.
	same := enrollFrom(t, ts, flooder, jk.String())
	if same.code != http.StatusTooManyRequests || !strings.Contains(same.body.Error, "too many enrollment attempts") {
		t.Errorf("valid key from the limited address: %d %+v, want 429 with the error body", same.code, same.body)
	}
	other := enrollFrom(t, ts, clientFrom(t, ts, "127.0.0.2"), jk.String())
	if other.code != http.StatusOK {
		t.Errorf("valid key from another address: %d %+v, want 200", other.code, other.body)
	}
	report.Add(t, report.Row{Fault: "one source sends bad join keys past its limit (burst 2 failures, then 1 per 20 s)",
		Check:  "its requests, then a valid key from it, then a valid key from another source",
		Figure: fmt.Sprintf("%s, Retry-After %d s; %d; %d", got, ra, same.code, other.code), Target: "401 401 429 429, Retry-After 1–20 s; 429; 200",
		Met: err == nil && ra >= 1 && ra <= 20 && same.code == http.StatusTooManyRequests && other.code == http.StatusOK})
}

func TestEnrollConfigValidation(t *testing.T) {
	base := Config{DataDir: "x", Listen: "127.0.0.1:1"}
	c := base
	if err := c.Validate(); err != nil || c.EnrollRate != DefaultEnrollRate || c.EnrollBurst != DefaultEnrollBurst {
		t.Errorf("zero enroll limits validate to %v, %d, %v; want the defaults", c.EnrollRate, c.EnrollBurst, err)
	}
	c = base
	c.EnrollRate = -1
	if err := c.Validate(); err != nil || c.EnrollRate != -1 {
		t.Errorf("negative enroll rate: %v, %v; want kept (no limit)", c.EnrollRate, err)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.EnrollBurst = -1 },
		func(c *Config) { c.EnrollRate = math.Inf(1) },
	} {
		c := base
		bad(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("config %+v validated", c)
		}
	}
}

// clientFrom returns a client of ts whose connections come from the
// loopback address ip (all of 127.0.0.0/8 is loopback on Linux).
func clientFrom(tb testing.TB, ts *testServer, ip string) *http.Client {
	c, tr := newClientFrom(ts, ip)
	tb.Cleanup(tr.CloseIdleConnections)
	return c
}

func newClientFrom(ts *testServer, ip string) (*http.Client, *http.Transport) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext, TLSClientConfig: credential.ClientTLS(ts.c.Pins()), ForceAttemptHTTP2: true}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, tr
}

type enrollResult struct {
	code int
	body wire.Error // for an error
	resp *http.Response
}

// enrollFrom posts an enrollment with a new public key and bearer token.
func enrollFrom(tb testing.TB, ts *testServer, c *http.Client, token string) enrollResult {
	tb.Helper()
	code, body, resp, err := postEnroll(context.Background(), ts, c, token)
	if err != nil {
		tb.Fatalf("enroll: %v", err)
	}
	r := enrollResult{code: code, resp: resp}
	if code != http.StatusOK {
		if err := json.Unmarshal(body, &r.body); err != nil {
			tb.Errorf("enroll: %d with body %q: %v", code, body, err)
		}
	}
	return r
}

func postEnroll(ctx context.Context, ts *testServer, c *http.Client, token string) (int, []byte, *http.Response, error) {
	var pub [32]byte
	rand.Read(pub[:])
	b, _ := json.Marshal(wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: base64.StdEncoding.EncodeToString(pub[:])})
	req, err := http.NewRequestWithContext(ctx, "POST", ts.url+wire.PathEnroll, bytes.NewReader(b))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, resp, err
}

// agentAddr is the loopback source address of the i-th valid agent of a
// measurement: 127.1.0.0 and up, apart from the flooders' 127.0.0.x.
func agentAddr(i int) string {
	return netip.AddrFrom4([4]byte{127, byte(1 + i>>16), byte(i >> 8), byte(i)}).String()
}

// enrollOne enrolls a node the way an agent does: from its own address,
// over a new TLS connection. It returns the time it took.
func enrollOne(tb testing.TB, ts *testServer, key string, i int) time.Duration {
	c, tr := newClientFrom(ts, agentAddr(i))
	defer tr.CloseIdleConnections()
	start := time.Now()
	code, body, _, err := postEnroll(context.Background(), ts, c, key)
	d := time.Since(start)
	if err != nil || code != http.StatusOK {
		tb.Fatalf("valid enrollment from %s: %d %s %v", agentAddr(i), code, body, err)
	}
	return d
}

// floodCounts counts a flood's requests answered so far.
type floodCounts struct {
	answered atomic.Int64
	limited  atomic.Int64 // answered 429
}

// flood floods POST /v1/enroll with bad join keys from sources loopback
// addresses (127.0.0.1 and up), perSource connections each, at rate
// requests a second in all (0: as fast as they are answered), until stop
// is called, which returns the statuses the flood got and its duration:
// from before its first request to after its last answer.
func flood(ts *testServer, sources, perSource int, rate float64) (live *floodCounts, stop func() (map[int]int, time.Duration)) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	live = new(floodCounts)
	codes := map[int]int{}
	bad := credential.NewSecret("jk").String()
	start := time.Now()
	for s := range sources {
		for range perSource {
			c, tr := newClientFrom(ts, netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + s)}).String())
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer tr.CloseIdleConnections()
				next := func() bool { return ctx.Err() == nil }
				if rate > 0 {
					t := time.NewTicker(time.Duration(float64(sources*perSource) / rate * 1e9))
					defer t.Stop()
					next = func() bool {
						select {
						case <-t.C:
							return true
						case <-ctx.Done():
							return false
						}
					}
				}
				mine := map[int]int{}
				for next() {
					code, _, _, err := postEnroll(ctx, ts, c, bad)
					if err != nil {
						code = -1
					} else {
						live.answered.Add(1)
					}
					if code == http.StatusTooManyRequests {
						live.limited.Add(1)
					}
					mine[code]++
				}
				mu.Lock()
				defer mu.Unlock()
				for k, v := range mine {
					codes[k] += v
				}
			}()
		}
	}
	return live, func() (map[int]int, time.Duration) {
		cancel()
		wg.Wait()
		delete(codes, -1) // the requests cancelled by stopping
		return codes, time.Since(start)
	}
}

// percentile returns the p-th percentile (0 < p ≤ 1) of ds, which it sorts.
func percentile(ds []time.Duration, p float64) time.Duration {
	slices.Sort(ds)
	i := int(math.Ceil(p*float64(len(ds)))) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

// Shape of the flood in the measurements. On 2 shared CPUs the flooders
// compete with the coordinator and the valid agents for CPU, so a flood
// as fast as it is answered measures the machine as much as the
// coordinator; a paced flood compares what refusing costs at the same
// offered load.
const (
	floodSources   = 2
	floodPerSource = 8
)

type floodFigures struct {
	quietP50, quietP99, floodP50, floodP99 time.Duration
	codes                                  map[int]int
	rate                                   float64       // flood requests answered a second
	took                                   time.Duration // the flood's duration
	cpu                                    time.Duration // CPU time of the process (flooders included) per flood request
}

// measureFlood enrolls n valid agents on a quiet coordinator, then n more
// while bad join keys flood it at rate requests a second (0: as fast as
// they are answered), and returns the figures.
func measureFlood(tb testing.TB, ts *testServer, n int, rate float64) floodFigures {
	key := createJoinKeyTB(tb, ts, wire.CreateJoinKeyRequest{Reusable: true})
	next := 0
	lat := func() []time.Duration {
		ds := make([]time.Duration, n)
		for i := range ds {
			next++
			ds[i] = enrollOne(tb, ts, key.String(), next)
		}
		return ds
	}
	var f floodFigures
	quiet := lat()
	live, stop := flood(ts, floodSources, floodPerSource, rate)
	time.Sleep(100 * time.Millisecond) // the flood under way
	cpu0, n0 := cpuTime(), live.answered.Load()
	time.Sleep(time.Second) // the flood alone, for its CPU cost
	cpu, nf := cpuTime()-cpu0, live.answered.Load()-n0
	loud := lat()
	codes, d := stop()
	f.quietP50, f.quietP99 = percentile(quiet, 0.5), percentile(quiet, 0.99)
	f.floodP50, f.floodP99 = percentile(loud, 0.5), percentile(loud, 0.99)
	f.codes = codes
	total := 0
	for _, v := range codes {
		total += v
	}
	f.rate, f.took = float64(total)/d.Seconds(), d
	if nf > 0 {
		f.cpu = cpu / time.Duration(nf)
	}
	return f
}

// cpuTime is the user and system CPU time the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func createJoinKeyTB(tb testing.TB, ts *testServer, req wire.CreateJoinKeyRequest) credential.Secret {
	tb.Helper()
	_, sec, err := ts.c.store.CreateJoinKey(context.Background(), "test", req)
	if err != nil {
		tb.Fatal(err)
	}
	return sec
}

func (f floodFigures) String() string {
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	return fmt.Sprintf("quiet p50 %v p99 %v; under a flood of %.0f bad keys/s (statuses %v, %v CPU each): p50 %v p99 %v (p99 ×%.2f)",
		r(f.quietP50), r(f.quietP99), f.rate, f.codes, f.cpu.Round(time.Microsecond),
		r(f.floodP50), r(f.floodP99), float64(f.floodP99)/float64(f.quietP99))
}

// TestEnrollUnderFlood: while bad join keys flood the coordinator from
// floodSources addresses, valid agents enrolling from their own addresses
// all succeed, none of them refused with a 429, and the flooders get 429s
// meanwhile; the flood's bad keys are looked at no more often than the
// failure limit allows. How much the flood slows valid agents is a figure
// of BenchmarkEnrollUnderFlood: a bound on it here would test the machine.
func TestEnrollUnderFlood(t *testing.T) {
	ts := startServer(t, time.Hour)
	key := createJoinKeyTB(t, ts, wire.CreateJoinKeyRequest{Reusable: true}).String()
	live, stop := flood(ts, floodSources, floodPerSource, 1000)
	t.Cleanup(func() { stop() })
	eventually(t, "the flood to be refused (429)", func() bool { return live.limited.Load() > 0 })

	const agents = 100
	limited0 := live.limited.Load()
	for i := range agents {
		enrollOne(t, ts, key, i+1) // fails the test on anything but 200
	}
	limited := live.limited.Load() - limited0
	codes, took := stop()
	answered := 0
	for _, n := range codes {
		answered += n
	}
	fault := fmt.Sprintf("flood of bad join keys, %.0f/s from %d sources × %d connections, default limit", float64(answered)/took.Seconds(), floodSources, floodPerSource)
	report.Add(t, report.Row{Fault: fault,
		Check:  fmt.Sprintf("%d valid enrollments from their own addresses during the flood; flood requests answered 429 meanwhile", agents),
		Figure: fmt.Sprintf("%d of %d enrolled, none refused; %d", agents, agents, limited), Target: fmt.Sprintf("%d of %d; > 0", agents, agents),
		Met: limited > 0})
	if limited == 0 {
		t.Errorf("the flood got no 429s while the valid agents enrolled: %v", codes)
	}

	// A source's n-th bad key looked at (401) was let in holding a
	// failure token, of which the source had failBurst at its first
	// request and failRate a second more since, less the n-1 that
	// earlier requests took: whether still in flight or failed, they
	// hold theirs. So n ≤ failBurst + failRate × t, t the time from the
	// source's first request to its n-th on the limiter's clock, which
	// took (from before the flood's first request to after its last
	// answer, also by time.Now) exceeds. The bound does not depend on
	// how many requests were in flight at once, nor on the machine's
	// speed. And each source's first failBurst keys were looked at.
	l := ts.c.enroll.sources
	got := codes[http.StatusUnauthorized]
	least, most := floodSources*int(l.failBurst), floodSources*int(l.failBurst+l.failRate*took.Seconds())
	report.Add(t, report.Row{Fault: fault,
		Check:  fmt.Sprintf("bad keys looked at (401) in %s", took.Round(100*time.Millisecond)),
		Figure: strconv.Itoa(got),
		Target: fmt.Sprintf("%d to %d (%d sources × (%.0f + %.0f/s × %s))", least, most, floodSources, l.failBurst, l.failRate, took.Round(100*time.Millisecond)),
		Met:    least <= got && got <= most})
	if got < least || got > most {
		t.Errorf("the flood got %d bad keys looked at in %v, want %d to %d", got, took, least, most)
	}
}

// BenchmarkEnrollUnderFlood measures valid enrollments (each from its own
// loopback address, over a new TLS connection, as an agent) while bad
// join keys flood the coordinator from two other addresses, against the
// same coordinator's quiet figures: with the default limit and with none,
// for a flood as fast as it is answered and ones of 2,000 and 1,000
// requests a second (TestEnrollUnderFlood's).
func BenchmarkEnrollUnderFlood(b *testing.B) {
	for _, load := range []struct {
		name string
		rate float64
	}{{"flood=max", 0}, {"flood=2000/s", 2000}, {"flood=1000/s", 1000}} {
		for _, lim := range []struct {
			name string
			rate float64
		}{{"limit=default", 0}, {"limit=none", -1}} {
			b.Run(load.name+"/"+lim.name, func(b *testing.B) {
				ts := startServer(b, time.Hour, func(c *Config) { c.EnrollRate = lim.rate })
				n := max(b.N, 50)
				f := measureFlood(b, ts, n, load.rate)
				b.ReportMetric(float64(f.quietP50.Microseconds())/1000, "quiet-p50-ms")
				b.ReportMetric(float64(f.quietP99.Microseconds())/1000, "quiet-p99-ms")
				b.ReportMetric(float64(f.floodP50.Microseconds())/1000, "flood-p50-ms")
				b.ReportMetric(float64(f.floodP99.Microseconds())/1000, "flood-p99-ms")
				b.ReportMetric(float64(f.floodP99)/float64(f.quietP99), "p99-ratio")
				b.ReportMetric(f.rate, "flood-req/s")
				b.ReportMetric(float64(f.cpu.Microseconds()), "cpu-us/flood-req")
				b.ReportMetric(0, "ns/op")
				b.Logf("n=%d: %v", n, f)
				r := func(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }
				report.Add(b, report.Row{Fault: fmt.Sprintf("flood of bad join keys (%s, %.0f/s answered), %s", load.name, f.rate, lim.name),
					Check:  fmt.Sprintf("p99 (p50) of %d valid enrollments, quiet → under the flood; CPU per flood request", n),
					Figure: fmt.Sprintf("%s (%s) → %s (%s), ×%.2f; %s", r(f.quietP99), r(f.quietP50), r(f.floodP99), r(f.floodP50), float64(f.floodP99)/float64(f.quietP99), f.cpu.Round(time.Microsecond))})
			})
		}
	}
}
