package coordinator

import (
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// Defaults of Config.EnrollRate and Config.EnrollBurst: enough for a fleet
// behind one NAT address to enroll a few hundred nodes a minute (agents
// retry a 429), far too little for a flood to matter.
const (
	DefaultEnrollRate  = 10.0
	DefaultEnrollBurst = 20
)

// The shape of the per-source limits and the bounds of their table.
const (
	// failRateShare and failBurstShare size the bucket of attempts
	// refused for a bad join key: EnrollRate/failRateShare a second, in
	// bursts of EnrollBurst/failBurstShare (at least 1).
	failRateShare  = 10
	failBurstShare = 4
	// maxSources bounds the table of buckets, so that a flood from many
	// addresses cannot grow it without bound: full, it takes 8 MiB, and
	// a sweep of it holds the lock for about 0.6 ms.
	maxSources = 1 << 16
	// sweepEvery is how often buckets that have filled up again (a
	// missing bucket is a full one) are dropped.
	sweepEvery = time.Minute
	// sweepGap is the least time between two sweeps of a full table; in
	// between, a new source takes the place of an arbitrary one.
	sweepGap = time.Second
)

// clock reads an injected time as nanoseconds since an epoch, so that
// buckets hold one int64 and time.Now's monotonic reading is used.
type clock struct {
	now   func() time.Time
	epoch time.Time
}

func newClock(now func() time.Time) clock { return clock{now: now, epoch: now()} }

func (c clock) nanos() int64 { return int64(c.now().Sub(c.epoch)) }

// bucket is a token bucket.
type bucket struct {
	tokens float64
	at     int64 // clock.nanos when tokens was last brought up to date
}

// refill brings b up to date at now, for rate tokens a second up to burst.
func (b *bucket) refill(now int64, rate, burst float64) {
	if now > b.at {
		b.tokens = min(burst, b.tokens+float64(now-b.at)*rate/1e9)
		b.at = now
	}
}

// wait is how long until b, brought up to date, holds a whole token.
func (b *bucket) wait(rate float64) time.Duration {
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - b.tokens) / rate * 1e9))
}

// sourceLimiter limits attempts per source address: an IPv4 address, or an
// IPv6 /64 (what one host can be expected to hold). Each source has two
// buckets: every attempt takes a token from the first; an attempt that
// failed (a bad join key) also takes one from the second, stricter one,
// and a source with either empty is refused. Work under the lock is a map
// access and some arithmetic, plus at most once a minute (or a second, when
// the table is full) a sweep of the table.
//
// An attempt takes its failure token when it is allowed, as if it were
// going to fail, since whether it does is known only after its key was
// looked at; done gives the token back if it did not. So however many
// attempts a source has in flight, it gets at most failBurst + failRate × t
// failed attempts in any t seconds (unless the table is full: see
// makeRoomLocked), and at most failBurst attempts in flight at once.
//
// A nil *sourceLimiter lets everything through.
type sourceLimiter struct {
	rate, burst         float64 // attempts
	failRate, failBurst float64 // failed attempts
	max                 int     // the most sources kept
	clock

	mu        sync.Mutex
	sources   map[netip.Addr]sourceState // guarded by mu; a missing source has both buckets full
	lastSweep int64                      // guarded by mu; clock.nanos
}

// sourceState is one source's buckets.
type sourceState struct {
	attempts, fails bucket
}

// newSourceLimiter returns a limiter of rate attempts a second in bursts of
// burst per source, or nil (no limit) for a negative rate.
func newSourceLimiter(rate float64, burst int, now func() time.Time) *sourceLimiter {
	if rate < 0 {
		return nil
	}
	return &sourceLimiter{
		rate: rate, burst: float64(burst),
		failRate: rate / failRateShare, failBurst: float64(max(1, burst/failBurstShare)),
		max: maxSources, clock: newClock(now),
		sources: make(map[netip.Addr]sourceState),
	}
}

// sourceKey is the bucket addr counts against: the address itself for
// IPv4 (also when mapped into IPv6), its /64 for IPv6. The invalid address
// (a request whose peer address could not be read) is a key of its own.
func sourceKey(addr netip.Addr) netip.Addr {
	addr = addr.Unmap()
	if addr.Is6() {
		p, _ := addr.Prefix(64) // drops the zone
		return p.Addr()
	}
	return addr
}

// sourceString names a source key in logs and answers.
func sourceString(key netip.Addr) string {
	switch {
	case key.Is6():
		return netip.PrefixFrom(key, 64).String()
	case key.IsValid():
		return key.String()
	}
	return "unknown"
}

// sourceOf returns the address of the request's TCP peer. Headers such as
// X-Forwarded-For are not trusted: any client can write them.
func sourceOf(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}

// allow counts an attempt from addr and takes a failure token for it, or
// refuses it when addr's attempts or failures are spent (or held by
// attempts in flight); retry is then how long until one would be allowed.
// Every allowed attempt must be followed by done.
func (l *sourceLimiter) allow(addr netip.Addr) (retry time.Duration, ok bool) {
	if l == nil {
		return 0, true
	}
	key, now := sourceKey(addr), l.nanos()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.stateLocked(key, now)
	if st.attempts.tokens < 1 || st.fails.tokens < 1 {
		return max(st.attempts.wait(l.rate), st.fails.wait(l.failRate)), false
	}
	st.attempts.tokens--
	st.fails.tokens--
	l.sources[key] = st
	return 0, true
}

// done ends an attempt from addr that allow let through: one that failed
// (a bad join key) keeps the failure token allow took, any other gives it
// back.
func (l *sourceLimiter) done(addr netip.Addr, failed bool) {
	if l == nil || failed {
		return
	}
	key, now := sourceKey(addr), l.nanos()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.stateLocked(key, now)
	st.fails.tokens = min(st.fails.tokens+1, l.failBurst)
	l.sources[key] = st
}

// stateLocked returns key's buckets brought up to date at now, making room
// in the table for a new source. It sweeps the table when it is due.
func (l *sourceLimiter) stateLocked(key netip.Addr, now int64) sourceState {
	if now-l.lastSweep >= int64(sweepEvery) {
		l.sweepLocked(now)
	}
	st, ok := l.sources[key]
	if !ok {
		l.makeRoomLocked(now)
		return sourceState{attempts: bucket{l.burst, now}, fails: bucket{l.failBurst, now}}
	}
	st.attempts.refill(now, l.rate, l.burst)
	st.fails.refill(now, l.failRate, l.failBurst)
	return st
}

// makeRoomLocked frees a place in a full table: by a sweep if none ran for
// sweepGap, else (or if the sweep freed nothing) by dropping an arbitrary
// source, which forgets what that source had spent. Memory stays bounded;
// a flood from more than l.max addresses weakens the per-source limit.
func (l *sourceLimiter) makeRoomLocked(now int64) {
	if len(l.sources) < l.max {
		return
	}
	if now-l.lastSweep >= int64(sweepGap) {
		l.sweepLocked(now)
		if len(l.sources) < l.max {
			return
		}
	}
	for k := range l.sources { // map order: an arbitrary source
		delete(l.sources, k)
		break
	}
}

// sweepLocked drops the sources whose buckets are full again: they allow
// what a source never seen allows.
func (l *sourceLimiter) sweepLocked(now int64) {
	for k, st := range l.sources {
		st.attempts.refill(now, l.rate, l.burst)
		st.fails.refill(now, l.failRate, l.failBurst)
		if st.attempts.tokens >= l.burst && st.fails.tokens >= l.failBurst {
			delete(l.sources, k)
		}
	}
	l.lastSweep = now
}

// size returns the number of sources in the table.
func (l *sourceLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sources)
}

// logLimiter lets log lines through at rate a second in bursts of burst
// and counts the ones it holds back, so that a flood is one line now and
// then with a count.
type logLimiter struct {
	rate, burst float64
	clock

	mu         sync.Mutex
	b          bucket // guarded by mu
	suppressed int    // guarded by mu; lines held back since the last one let through
}

func newLogLimiter(rate float64, burst int, now func() time.Time) *logLimiter {
	return &logLimiter{rate: rate, burst: float64(burst), clock: newClock(now), b: bucket{tokens: float64(burst)}}
}

// allow reports whether a line may be logged now and, if so, how many were
// held back since the last one.
func (l *logLimiter) allow() (suppressed int, ok bool) {
	now := l.nanos()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.refill(now, l.rate, l.burst)
	if l.b.tokens < 1 {
		l.suppressed++
		return 0, false
	}
	l.b.tokens--
	suppressed, l.suppressed = l.suppressed, 0
	return suppressed, true
}

// enrollGate is what POST /v1/enroll passes before any other work: the
// per-source limiter, and the limiters of the endpoint's log lines.
type enrollGate struct {
	sources *sourceLimiter // nil: no limit
	// limited throttles "enrollment rate-limited": a line every 10 s.
	limited *logLimiter
	// refused throttles "enrollment refused": a line a second, bursts of 10.
	refused *logLimiter
}

func newEnrollGate(cfg Config, now func() time.Time) *enrollGate {
	return &enrollGate{
		sources: newSourceLimiter(cfg.EnrollRate, cfg.EnrollBurst, now),
		limited: newLogLimiter(0.1, 1, now),
		refused: newLogLimiter(1, 10, now),
	}
}

// enrollAttempt is an enrollment attempt the limiter let through.
type enrollAttempt struct {
	sources *sourceLimiter
	src     netip.Addr
	failed  bool
}

// fail marks the attempt failed: a bad join key, which costs its source a
// failure token.
func (a *enrollAttempt) fail() { a.failed = true }

// done ends the attempt. Every attempt admitEnroll returns must be ended.
func (a *enrollAttempt) done() { a.sources.done(a.src, a.failed) }

// admitEnroll counts an enrollment attempt from src. When src is over its
// limit it answers 429 with Retry-After and returns nil.
func (c *Coordinator) admitEnroll(w http.ResponseWriter, src netip.Addr) *enrollAttempt {
	retry, ok := c.enroll.sources.allow(src)
	if ok {
		return &enrollAttempt{sources: c.enroll.sources, src: src}
	}
	secs := max(1, int(math.Ceil(retry.Seconds())))
	if n, ok := c.enroll.limited.allow(); ok {
		attrs := []any{"addr", sourceString(sourceKey(src)), "retry_in", retry.Round(time.Millisecond).String()}
		if n > 0 {
			attrs = append(attrs, "suppressed", n)
		}
		c.log.Warn("enrollment rate-limited", attrs...)
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, wire.CodeRateLimited, fmt.Sprintf("too many enrollment attempts from this address; retry in %d s", secs), nil)
	return nil
}

// logEnrollRefused logs a refused enrollment, if the log limiter lets it.
func (c *Coordinator) logEnrollRefused(r *http.Request, why string) {
	n, ok := c.enroll.refused.allow()
	if !ok {
		return
	}
	attrs := []any{"why", why, "addr", r.RemoteAddr}
	if n > 0 {
		attrs = append(attrs, "suppressed", n)
	}
	c.log.Info("enrollment refused", attrs...)
}
