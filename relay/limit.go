package relay

import (
	"sync"
	"time"
)

// logLimiter lets log lines through at rate a second in bursts of burst,
// and counts those it held back.
type logLimiter struct {
	rate, burst float64

	// mu guards the fields below it.
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed int
}

func newLogLimiter(rate float64, burst int) *logLimiter {
	return &logLimiter{rate: rate, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// allow reports whether a line may be logged now, and how many were
// held back since the last one let through.
func (l *logLimiter) allow() (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return 0, false
	}
	l.tokens--
	suppressed, l.suppressed = l.suppressed, 0
	return suppressed, true
}
