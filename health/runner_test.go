package health

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/wiremesh/wiremesh/service"
)

// fakeProber answers every check with the status set for its ID (Critical
// when none is), and counts the calls.
type fakeProber struct {
	mu     sync.Mutex
	status map[string]Status // guarded by mu
	calls  map[string]int    // guarded by mu
}

func newFakeProber() *fakeProber {
	return &fakeProber{status: map[string]Status{}, calls: map[string]int{}}
}

func (p *fakeProber) Probe(ctx context.Context, c service.CheckDef) (Status, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls[c.ID]++
	st := p.status[c.ID]
	return st, "fake " + st.String()
}

func (p *fakeProber) set(id string, st Status) {
	p.mu.Lock()
	p.status[id] = st
	p.mu.Unlock()
}

func (p *fakeProber) count(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[id]
}

func probeCheck(id string, interval time.Duration, succ, fail int) service.CheckDef {
	return service.CheckDef{ID: id, Kind: service.KindTCP, Target: "127.0.0.1:1", Interval: interval, SuccessBeforePassing: succ, FailuresBeforeCritical: fail}
}

func ttlCheck(id string, ttl time.Duration) service.CheckDef {
	return service.CheckDef{ID: id, Kind: service.KindTTL, TTL: ttl}
}

// statuses returns "ID=status" for every result.
func statuses(r *Runner) string {
	var parts []string
	for _, res := range r.Results() {
		parts = append(parts, res.CheckID+"="+res.Status.String())
	}
	return strings.Join(parts, " ")
}

func result(t *testing.T, r *Runner, id string) Result {
	t.Helper()
	for _, res := range r.Results() {
		if res.CheckID == id {
			return res
		}
	}
	t.Fatalf("no result for %s in %s", id, statuses(r))
	return Result{}
}

// changed reports whether a change was signalled since the last call.
func changed(r *Runner) bool {
	select {
	case <-r.Changes():
		return true
	default:
		return false
	}
}

func TestRunnerThresholds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProber()
		r := New(Config{Prober: p})
		defer r.Close()
		if err := r.Set([]service.Definition{{Name: "web", Port: 80, Checks: []service.CheckDef{probeCheck("web:1", time.Second, 2, 3)}}}); err != nil {
			t.Fatal(err)
		}
		// One step per run: the result the probe gives, then the status
		// the check should show and whether a change was signalled.
		steps := []struct {
			probe   Status
			want    Status
			changed bool
		}{
			{Passing, Critical, false}, // runs at once; 1 of 2 passes
			{Passing, Passing, true},
			{Critical, Passing, false},
			{Critical, Passing, false},
			{Passing, Passing, false}, // the failures in a row start over
			{Critical, Passing, false},
			{Critical, Passing, false},
			{Critical, Critical, true},
			{Warning, Critical, false},
			{Warning, Warning, true},
		}
		for i, s := range steps {
			p.set("web:1", s.probe)
			if i > 0 {
				time.Sleep(time.Second)
			}
			synctest.Wait()
			res := result(t, r, "web:1")
			if res.Status != s.want || changed(r) != s.changed {
				t.Fatalf("run %d (probe %s): status %s; want %s, changed %v", i+1, s.probe, res.Status, s.want, s.changed)
			}
			if n := p.count("web:1"); n != i+1 {
				t.Fatalf("run %d: the probe ran %d times", i+1, n)
			}
		}
		if res := result(t, r, "web:1"); res.Service != "web" || res.Output != "fake warning" {
			t.Errorf("result %+v", res)
		}
	})
}

func TestRunnerTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := New(Config{Prober: newFakeProber()})
		defer r.Close()
		defs := []service.Definition{{Name: "api", Port: 9000, Checks: []service.CheckDef{
			ttlCheck("api:1", 10*time.Second),
			probeCheck("api:2", time.Minute, 1, 1),
		}}}
		if err := r.Set(defs); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		start := time.Now()
		if res := result(t, r, "api:1"); res.Status != Critical || res.Output != "no report yet" || !res.Updated.Equal(start) {
			t.Errorf("initial state %+v", res)
		}
		expect := func(st Status, output string) {
			t.Helper()
			synctest.Wait()
			if res := result(t, r, "api:1"); res.Status != st || res.Output != output {
				t.Errorf("at %s: %s %q; want %s %q", time.Since(start), res.Status, res.Output, st, output)
			}
		}
		report := func(st Status, note string) {
			t.Helper()
			if err := r.ReportTTL("api:1", st, note); err != nil {
				t.Fatal(err)
			}
		}
		report(Passing, "  ready\n")
		expect(Passing, "ready")
		time.Sleep(9 * time.Second)
		expect(Passing, "ready")
		report(Warning, "queue is long")
		time.Sleep(9500 * time.Millisecond)
		expect(Warning, "queue is long") // 18.5 s: the report of 9 s holds
		time.Sleep(time.Second)
		expect(Critical, "TTL expired: no report in 10s")
		time.Sleep(time.Minute)
		expect(Critical, "TTL expired: no report in 10s")
		report(Passing, "")
		expect(Passing, "")

		for _, tc := range []struct {
			id   string
			st   Status
			want error
		}{
			{"nope", Passing, ErrUnknownCheck},
			{"api:2", Passing, ErrNotTTL},
			{"api:1", Status(3), nil},
		} {
			err := r.ReportTTL(tc.id, tc.st, "")
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("ReportTTL(%s, %d) = %v, want %v", tc.id, tc.st, err, tc.want)
			}
		}
	})
}

// TestRunnerSet replaces the checks: unchanged ones keep their state and
// schedule, changed and new ones start over, removed ones stop.
func TestRunnerSet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProber()
		r := New(Config{Prober: p})
		defer r.Close()
		for _, id := range []string{"web:1", "web:2", "db:1", "cache:1"} {
			p.set(id, Passing)
		}
		web := service.Definition{Name: "web", Port: 80, Checks: []service.CheckDef{
			probeCheck("web:1", 10*time.Second, 1, 1),
			probeCheck("web:2", 10*time.Second, 1, 1),
			ttlCheck("web:3", time.Minute),
		}}
		db := service.Definition{Name: "db", Port: 5432, Checks: []service.CheckDef{probeCheck("db:1", 10*time.Second, 1, 1)}}
		if err := r.Set([]service.Definition{web, db}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := r.ReportTTL("web:3", Passing, "up"); err != nil {
			t.Fatal(err)
		}
		if got, want := statuses(r), "db:1=passing web:1=passing web:2=passing web:3=passing"; got != want {
			t.Fatalf("before: %s, want %s", got, want)
		}
		before := result(t, r, "web:1")
		time.Sleep(time.Second)

		// web:1 and web:3 unchanged (web's port changes: checks stay);
		// web:2 gets another interval; db goes; cache comes.
		web2 := web
		web2.Port = 8080
		web2.Checks = []service.CheckDef{web.Checks[0], probeCheck("web:2", 20*time.Second, 1, 1), web.Checks[2]}
		web2.Checks[0].Timeout = service.DefaultTimeout(web2.Checks[0].Interval) // the default, spelled out
		cache := service.Definition{Name: "cache", Port: 6379, Checks: []service.CheckDef{probeCheck("cache:1", 10*time.Second, 3, 1)}}
		if err := r.Set([]service.Definition{web2, cache}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got, want := statuses(r), "cache:1=critical web:1=passing web:2=passing web:3=passing"; got != want {
			t.Errorf("after the new checks ran: %s, want %s", got, want)
		}
		if after := result(t, r, "web:1"); !reflect.DeepEqual(after, before) {
			t.Errorf("web:1 was %+v, now %+v", before, after)
		}
		if n := p.count("web:1"); n != 1 {
			t.Errorf("web:1 ran %d times; Set restarted it", n)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := p.count("db:1"); n != 1 {
			t.Errorf("db:1 ran %d times; it should have stopped", n)
		}
		if got, want := statuses(r), "cache:1=passing web:1=passing web:2=passing web:3=critical"; got != want {
			t.Errorf("a minute later: %s, want %s", got, want)
		}

		// Invalid definitions change nothing.
		bad := []service.Definition{{Name: "x", Checks: []service.CheckDef{ttlCheck("x:1", time.Second), ttlCheck("x:1", time.Second)}}}
		if err := r.Set(bad); err == nil {
			t.Error("Set accepted a check ID twice")
		}
		for _, c := range []service.CheckDef{
			{ID: "x:1", Kind: "grpc", Interval: time.Second},
			{ID: "x:1", Kind: service.KindHTTP},
			{ID: "x:1", Kind: service.KindTTL},
			{ID: "x:1", Kind: service.KindExec, Interval: time.Second},
			{Kind: service.KindTTL, TTL: time.Second},
		} {
			if err := r.Set([]service.Definition{{Name: "x", Checks: []service.CheckDef{c}}}); err == nil {
				t.Errorf("Set accepted %+v", c)
			}
		}
		if got := len(r.Results()); got != 4 {
			t.Errorf("%d results after invalid Sets, want 4", got)
		}
		if err := r.Set(nil); err != nil || len(r.Results()) != 0 {
			t.Errorf("Set(nil) = %v, results %v", err, r.Results())
		}
	})
}

func TestRunnerClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProber()
		r := New(Config{Prober: p})
		defs := []service.Definition{{Name: "web", Port: 80, Checks: []service.CheckDef{
			probeCheck("web:1", time.Second, 1, 1), ttlCheck("web:2", time.Second),
		}}}
		if err := r.Set(defs); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		r.Close()
		r.Close()
		if err := r.Set(defs); !errors.Is(err, ErrClosed) {
			t.Errorf("Set after Close = %v", err)
		}
		if err := r.ReportTTL("web:2", Passing, ""); !errors.Is(err, ErrClosed) {
			t.Errorf("ReportTTL after Close = %v", err)
		}
		n := p.count("web:1")
		time.Sleep(time.Minute)
		if p.count("web:1") != n {
			t.Error("a check ran after Close")
		}
		// synctest.Test fails if a goroutine of the bubble is left.
	})
}

// blockingProber blocks every probe until its context is done.
type blockingProber struct{ started chan string }

func (p blockingProber) Probe(ctx context.Context, c service.CheckDef) (Status, string) {
	p.started <- c.ID
	<-ctx.Done()
	return Critical, ctx.Err().Error()
}

func TestRunnerTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := blockingProber{started: make(chan string, 10)}
		r := New(Config{Prober: p})
		defer r.Close()
		c := probeCheck("web:1", 5*time.Second, 1, 1)
		c.Timeout = 2 * time.Second
		if err := r.Set([]service.Definition{{Name: "web", Checks: []service.CheckDef{c}}}); err != nil {
			t.Fatal(err)
		}
		<-p.started
		start := time.Now()
		time.Sleep(2*time.Second - time.Millisecond)
		synctest.Wait()
		if res := result(t, r, "web:1"); res.Output != "no result yet" {
			t.Errorf("before the timeout: %+v", res)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if res := result(t, r, "web:1"); res.Output != "context deadline exceeded" || !res.Updated.Equal(start.Add(2*time.Second)) {
			t.Errorf("after the timeout: %+v", res)
		}
		<-p.started // the next run starts 5 s after the first began
		if d := time.Since(start); d != 5*time.Second {
			t.Errorf("second run after %s", d)
		}
		// Removing a check cancels its running probe and waits for it.
		if err := r.Set(nil); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRunnerReal runs real checks against a local server and script, with
// the real clock, and removes a check while its script runs.
func TestRunnerReal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	var logs strings.Builder
	var logMu sync.Mutex
	r := New(Config{Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))})
	defer r.Close()
	pidFile := filepath.Join(t.TempDir(), "pid")
	defs := []service.Definition{{Name: "web", Port: 80, Checks: []service.CheckDef{
		{ID: "web:1", Kind: service.KindHTTP, Target: srv.URL, Interval: time.Second},
		{ID: "web:2", Kind: service.KindExec, Args: []string{"/bin/sh", "-c", "sleep 30 & echo $! > " + pidFile + "; wait"}, Interval: time.Minute},
	}}}
	if err := r.Set(defs); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for result(t, r, "web:1").Status != Passing {
		select {
		case <-r.Changes():
		case <-deadline:
			t.Fatalf("web:1 never passed: %+v", r.Results())
		}
	}
	var pid int
	for {
		b, _ := os.ReadFile(pidFile)
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			pid = n
			break
		}
		select {
		case <-deadline:
			t.Fatal("the script never started")
		case <-time.After(10 * time.Millisecond):
		}
	}
	defs[0].Checks = defs[0].Checks[:1]
	if err := r.Set(defs); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	r.Close()
	logMu.Lock()
	defer logMu.Unlock()
	if !strings.Contains(logs.String(), `msg="check status changed" service=web check=web:1 status=passing was=critical`) {
		t.Errorf("logs:\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *strings.Builder
}

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(b)
}
