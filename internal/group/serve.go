package group

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// StreamConfig tunes one group stream.
type StreamConfig struct {
	Heartbeat    time.Duration
	WriteTimeout time.Duration
	Retry        time.Duration
}

// Serve streams q's groups to one client: an `event: snapshot` message with a GroupList,
// then plain data messages with GroupEvents, a batch per interval, until the client goes
// away. A follower that falls behind gets a fresh snapshot. Group summaries are state,
// not history, so there are no event ids to resume from: a reconnect starts with a
// snapshot.
func (ix *Index) Serve(w http.ResponseWriter, r *http.Request, q api.GroupQuery, cfg StreamConfig) {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 15 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 3 * time.Second
	}
	if !ix.admit() {
		w.Header().Set("Retry-After", "3")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "{\"error\":\"too many group stream followers (the cap is %d); retry later\"}\n", ix.cfg.MaxFollowers)
		return
	}
	defer ix.followers.Add(-1)
	rc := http.NewResponseController(w)
	// A stream reads nothing after its request; the server's read deadline would end it.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(p []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(cfg.WriteTimeout))
		if _, err := w.Write(p); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(fmt.Appendf(nil, "retry: %d\n\n", cfg.Retry.Milliseconds())) {
		return
	}
	tick := time.NewTicker(cfg.Heartbeat)
	defer tick.Stop()
	for {
		s, groups := ix.subscribe(q)
		snap, _ := json.Marshal(api.GroupList{SchemaVersion: api.SchemaVersion, By: q.By, Groups: groups})
		ok := write(fmt.Appendf(nil, "event: snapshot\ndata: %s\n\n", snap)) && pump(r, s, tick, write)
		ix.unsubscribe(s)
		if !ok || !s.overflow {
			return
		}
	}
}

// pump writes batches until the client leaves (false) or overflows (true).
func pump(r *http.Request, s *sub, tick *time.Ticker, write func([]byte) bool) bool {
	for {
		select {
		case <-r.Context().Done():
			return false
		case <-tick.C:
			if !write([]byte(": ping\n\n")) {
				return false
			}
		case data, ok := <-s.ch:
			if !ok {
				return true
			}
			if !write(data) {
				return false
			}
		}
	}
}

func (ix *Index) admit() bool {
	if ix.followers.Add(1) > int64(ix.cfg.MaxFollowers) {
		ix.followers.Add(-1)
		return false
	}
	return true
}
