package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/service"
)

// Errors a caller of ReportTTL or Set may branch on.
var (
	ErrClosed       = errors.New("health runner closed")
	ErrUnknownCheck = errors.New("unknown check")
	ErrNotTTL       = errors.New("not a ttl check")
)

// Config configures a Runner. The zero Config is usable: each nil field
// means the default DefaultConfig gives.
type Config struct {
	// Logger gets a line (fields service, check, status, was) whenever a
	// check changes status; nil discards.
	Logger *slog.Logger
	// Prober runs the http, tcp and exec checks; nil means
	// Probes{HTTP: NewHTTPClient()}.
	Prober Prober
}

// DefaultConfig returns the defaults: no logging, the real probes.
func DefaultConfig() Config {
	return Config{
		Logger: slog.New(slog.DiscardHandler),
		Prober: Probes{HTTP: NewHTTPClient()},
	}
}

// Runner runs the checks of the local services and keeps their results.
// Each check has one goroutine, started by Set and stopped by Set or Close,
// which wait for it.
//
// A new check is Critical ("no result yet") until results say otherwise,
// as in Consul: a service is not announced healthy before it has shown it.
// An http, tcp or exec check first runs as soon as it is set, then every
// Interval (from start to start).
type Runner struct {
	log     *slog.Logger
	prober  Prober
	changes chan struct{}
	ctx     context.Context // done after Close; every check's context derives from it
	cancel  context.CancelFunc
	wg      sync.WaitGroup // one count per check goroutine

	mu sync.Mutex
	// checks holds the current checks by ID; guarded by mu. So is each
	// check's mutable state.
	checks map[string]*check
	closed bool // guarded by mu; no check starts once it is set
}

// check is one check and its goroutine.
type check struct {
	svc  string
	def  service.CheckDef
	stop context.CancelFunc // ends the goroutine
	done chan struct{}      // closed when the goroutine has returned
	wake chan struct{}      // ttl: a report arrived (buffered, 1)

	st       state     // guarded by Runner.mu
	deadline time.Time // ttl: when the last report expires; guarded by Runner.mu
}

// New returns a Runner with no checks.
func New(cfg Config) *Runner {
	def := DefaultConfig()
	if cfg.Logger == nil {
		cfg.Logger = def.Logger
	}
	if cfg.Prober == nil {
		cfg.Prober = def.Prober
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{
		log:     cfg.Logger,
		prober:  cfg.Prober,
		changes: make(chan struct{}, 1),
		ctx:     ctx,
		cancel:  cancel,
		checks:  map[string]*check{},
	}
}

// Changes receives a value after a check's status changed. Sends do not
// block: several changes may come as one, so read Results for the news.
// The channel is never closed.
func (r *Runner) Changes() <-chan struct{} { return r.changes }

// Set makes defs the checks to run. A check whose ID, service and
// definition are all unchanged keeps running with its state; every other
// current check is stopped, and Set waits for it (killing its script, if
// one is running) before it returns; new and changed checks start
// Critical. Invalid definitions (an ID given twice, an unknown kind, a
// missing interval, TTL or argv) change nothing. Set fails with ErrClosed
// after Close.
func (r *Runner) Set(defs []service.Definition) error {
	want, err := flatten(defs)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	var stopped []*check
	for id, c := range r.checks {
		if n, ok := want[id]; ok && n.svc == c.svc && n.def.Equal(c.def) {
			delete(want, id)
			continue
		}
		c.stop()
		delete(r.checks, id)
		stopped = append(stopped, c)
	}
	now := time.Now()
	for _, c := range want {
		r.startLocked(c, now)
	}
	r.mu.Unlock()
	for _, c := range stopped {
		<-c.done
	}
	return nil
}

// flatten validates defs and returns their checks by ID, with defaults
// filled in as the parser fills them.
func flatten(defs []service.Definition) (map[string]*check, error) {
	out := map[string]*check{}
	for _, d := range defs {
		for _, def := range d.Checks {
			if _, dup := out[def.ID]; dup || def.ID == "" {
				return nil, fmt.Errorf("service %q: check ID %q is empty or used twice", d.Name, def.ID)
			}
			switch {
			case def.Kind == service.KindTTL && def.TTL <= 0,
				def.Kind != service.KindTTL && def.Interval <= 0,
				def.Kind == service.KindExec && len(def.Args) == 0:
				return nil, fmt.Errorf("check %q: no TTL, interval or argv", def.ID)
			case def.Kind != service.KindHTTP && def.Kind != service.KindTCP &&
				def.Kind != service.KindExec && def.Kind != service.KindTTL:
				return nil, fmt.Errorf("check %q: unknown kind %q", def.ID, def.Kind)
			}
			if def.Kind != service.KindTTL && def.Timeout <= 0 {
				def.Timeout = service.DefaultTimeout(def.Interval)
			}
			def.SuccessBeforePassing = max(def.SuccessBeforePassing, 1)
			def.FailuresBeforeCritical = max(def.FailuresBeforeCritical, 1)
			out[def.ID] = &check{svc: d.Name, def: def}
		}
	}
	return out, nil
}

// startLocked starts c's goroutine. r.mu is held and r is not closed.
func (r *Runner) startLocked(c *check, now time.Time) {
	ctx, stop := context.WithCancel(r.ctx)
	c.stop, c.done = stop, make(chan struct{})
	c.st = state{status: Critical, output: "no result yet", updated: now}
	run := r.probeLoop
	if c.def.Kind == service.KindTTL {
		c.st.output = "no report yet"
		c.deadline = now.Add(c.def.TTL)
		c.wake = make(chan struct{}, 1)
		run = r.watchTTL
	}
	r.checks[c.def.ID] = c
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(c.done)
		run(ctx, c)
	}()
}

// probeLoop runs an http, tcp or exec check until ctx is done.
func (r *Runner) probeLoop(ctx context.Context, c *check) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, c.def.Timeout)
		st, out := r.prober.Probe(pctx, c.def)
		cancel()
		if ctx.Err() != nil {
			return
		}
		r.record(c, st, trimOutput(out), c.def.SuccessBeforePassing, c.def.FailuresBeforeCritical)
		timer.Reset(max(0, c.def.Interval-time.Since(start)))
	}
}

// watchTTL turns a ttl check critical when its last report (or its start)
// is older than its TTL, until ctx is done.
func (r *Runner) watchTTL(ctx context.Context, c *check) {
	timer := time.NewTimer(c.def.TTL)
	defer timer.Stop()
	expired := fmt.Sprintf("TTL expired: no report in %s", c.def.TTL)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		case <-timer.C:
		}
		r.mu.Lock()
		left := time.Until(c.deadline)
		r.mu.Unlock()
		if left > 0 {
			timer.Reset(left)
			continue
		}
		r.record(c, Critical, expired, 1, 1)
	}
}

// record applies a result to c, if c is still current.
func (r *Runner) record(c *check, st Status, out string, successBefore, failuresBefore int) {
	r.mu.Lock()
	if r.checks[c.def.ID] != c {
		r.mu.Unlock()
		return
	}
	was := c.st.status
	flipped := c.st.apply(st, out, time.Now(), successBefore, failuresBefore)
	r.mu.Unlock()
	if flipped {
		r.changed(c, was, st)
	}
}

func (r *Runner) changed(c *check, was, st Status) {
	r.log.Info("check status changed", "service", c.svc, "check", c.def.ID, "status", st.String(), "was", was.String())
	select {
	case r.changes <- struct{}{}:
	default:
	}
}

// ReportTTL records a report from a service for its ttl check id: the
// status, with note as the output, holds for the check's TTL. It fails
// with ErrUnknownCheck, ErrNotTTL or ErrClosed (wrapped).
func (r *Runner) ReportTTL(id string, st Status, note string) error {
	if !st.Valid() {
		return fmt.Errorf("check %q: bad status %d", id, st)
	}
	r.mu.Lock()
	c, ok := r.checks[id]
	switch {
	case r.closed:
		r.mu.Unlock()
		return ErrClosed
	case !ok:
		r.mu.Unlock()
		return fmt.Errorf("check %q: %w", id, ErrUnknownCheck)
	case c.def.Kind != service.KindTTL:
		r.mu.Unlock()
		return fmt.Errorf("check %q is a %s check: %w", id, c.def.Kind, ErrNotTTL)
	}
	now := time.Now()
	c.deadline = now.Add(c.def.TTL)
	was := c.st.status
	flipped := c.st.apply(st, trimOutput(note), now, 1, 1)
	r.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	if flipped {
		r.changed(c, was, st)
	}
	return nil
}

// Results returns the state of every check, by service and then check ID.
func (r *Runner) Results() []Result {
	r.mu.Lock()
	out := make([]Result, 0, len(r.checks))
	for id, c := range r.checks {
		out = append(out, Result{CheckID: id, Service: c.svc, Status: c.st.status, Output: c.st.output, Updated: c.st.updated})
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Service != out[j].Service {
			return out[i].Service < out[j].Service
		}
		return out[i].CheckID < out[j].CheckID
	})
	return out
}

// Close stops every check and waits for their goroutines (and scripts) to
// end. Results still answers afterwards; Set and ReportTTL fail. Close may
// be called more than once.
func (r *Runner) Close() {
	r.mu.Lock()
	r.closed = true
	r.cancel()
	r.mu.Unlock()
	r.wg.Wait()
}
