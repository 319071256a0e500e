package httpapi

import (
	"sync"
	"time"
)

// limiter lets one log line of a kind through per interval and counts the rest, so a
// flood of bad reports costs a line every few seconds, not one per request.
type limiter struct {
	every time.Duration
	mu    sync.Mutex
	last  map[string]time.Time
	held  map[string]int
}

func newLimiter(every time.Duration) *limiter {
	return &limiter{every: every, last: map[string]time.Time{}, held: map[string]int{}}
}

// do runs log with the number of lines held back since the last one, or counts this one.
func (l *limiter) do(kind string, log func(suppressed int)) {
	now := time.Now()
	l.mu.Lock()
	if t, ok := l.last[kind]; ok && now.Sub(t) < l.every {
		l.held[kind]++
		l.mu.Unlock()
		return
	}
	n := l.held[kind]
	l.last[kind], l.held[kind] = now, 0
	l.mu.Unlock()
	// Logged after the lock: a slow log writer must not hold up other requests.
	log(n)
}
