// Package stream fans lifecycle events out to SSE clients.
//
// Publishing costs the same however many clients follow: it appends each event, already
// framed as SSE, to one shared window and wakes the clients; nothing is queued per client.
// Each client's goroutine copies what it has not sent yet out of the window under a read
// lock, then filters and writes it without any lock. A client that falls out of the window
// (a slow reader, or a resume from too far back) gets the current state instead of the
// events it missed: a snapshot, encoded once per store version and filter and shared by
// every client that needs it, built outside the store lock. Memory is bounded by the
// window's bytes and the cached snapshots, not by the number of clients or how slow they
// are.
//
// It is written here rather than on r3labs/sse: that library replays every event forever
// by default (AutoReplay), a subscriber that stops reading blocks its whole stream
// (r3labs/sse#192), and it has no per-client filter, snapshot-on-connect or comment
// heartbeat, which are the three things this stream is for.
package stream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// Config tunes the broker. Zero values take the defaults.
type Config struct {
	// WindowBytes bounds the recent events kept for resuming and lagging clients, by the
	// size of their frames.
	WindowBytes int
	// Window bounds the same window by count of events.
	Window int
	// MaxClients caps concurrent followers; one more gets 503 with Retry-After.
	MaxClients int
	// Heartbeat is the interval of comment lines that keep proxies from cutting an idle
	// stream (load balancers in front of an apiserver cut after 20-60 s).
	Heartbeat time.Duration
	// WriteTimeout drops a client whose socket accepts nothing for this long.
	WriteTimeout time.Duration
	// Retry is the reconnect delay suggested to browsers.
	Retry time.Duration
	// SnapshotMaxAge lets clients share a snapshot that is a little older than the newest
	// event (they then read the events after it from the window), so a burst of connects
	// while reports stream in costs one encode, not one per client.
	SnapshotMaxAge time.Duration
	// SnapshotCacheBytes bounds the encoded snapshots kept for sharing.
	SnapshotCacheBytes int
	// MinInterval is the least time between two writes to one follower, so that a follower
	// costs a write per interval, not one per report: events that arrive meanwhile go out
	// together, progress superseded within the batch coalesced. Zero: 20 ms, growing with the
	// number of followers (125 us each) up to 100 ms.
	MinInterval time.Duration
	// Epoch prefixes every event id; empty takes a random one. Ids restart with every
	// process, so a Last-Event-ID from another epoch cannot pick a place in this stream.
	Epoch string
}

// Defaults of Config, documented in docs/architecture.md.
const (
	DefaultWindowBytes = 16 << 20
	DefaultWindow      = 16384
	DefaultMaxClients  = 1000
	// DefaultSnapshotCacheBytes holds the unfiltered snapshot at the default store cap.
	DefaultSnapshotCacheBytes = 51 << 20
)

func (c *Config) defaults() {
	if c.WindowBytes <= 0 {
		c.WindowBytes = DefaultWindowBytes
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.MaxClients <= 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.Retry <= 0 {
		c.Retry = 3 * time.Second
	}
	if c.SnapshotCacheBytes <= 0 {
		c.SnapshotCacheBytes = DefaultSnapshotCacheBytes
	}
	if c.SnapshotMaxAge <= 0 {
		c.SnapshotMaxAge = 5 * time.Second
	}
	if c.Epoch == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		c.Epoch = hex.EncodeToString(b[:])
	}
}

// record is one event in the window: its SSE frame, encoded once for every client, and
// what a filter needs to know about its pull.
type record struct {
	seq   uint64
	frame []byte
	match *api.Pull // NodeName, ImageRef, Repository, State and Pods only
	typ   api.EventType
	layer string // the layer's digest on layer.* events
}

// Store is what the broker needs of the aggregate: a copy of the current pulls that match
// f, taken under the lock that also orders publishing, so the copy sits exactly between
// two events. at is called under that lock and gives the position the copy stands at.
type Store interface {
	SnapshotPulls(f api.Filter, at func() uint64) ([]api.Pull, uint64)
}

// Broker is the SSE hub.
type Broker struct {
	cfg   Config
	store Store

	// pubMu serializes publishers (the store's lock already does; this keeps the
	// sequence numbers right without relying on it).
	pubMu sync.Mutex
	mu    sync.RWMutex
	// ring holds the newest events; head is the oldest, n how many. A circular buffer,
	// so publishing is O(1) however large the window.
	ring  []record
	head  int
	n     int
	bytes int
	last  uint64
	// wake is closed (and replaced) by every publish; waiting clients select on it.
	wake chan struct{}

	clients  atomic.Int64
	rejected atomic.Uint64
	builds   atomic.Uint64

	snaps snapshotCache
}

// New returns a broker reading snapshots from store.
func New(cfg Config, store Store) *Broker {
	cfg.defaults()
	b := &Broker{cfg: cfg, store: store, wake: make(chan struct{})}
	b.snaps.init()
	return b
}

// Clients is the number of connected SSE clients.
func (b *Broker) Clients() int { return int(b.clients.Load()) }

// Rejected is how many followers were turned away at the cap.
func (b *Broker) Rejected() uint64 { return b.rejected.Load() }

// SnapshotBuilds is how many snapshots were encoded: clients share them.
func (b *Broker) SnapshotBuilds() uint64 { return b.builds.Load() }

// MaxClients is the follower cap.
func (b *Broker) MaxClients() int { return b.cfg.MaxClients }

// LastID is the id of the newest event.
func (b *Broker) LastID() api.EventID {
	return api.EventID{Epoch: b.cfg.Epoch, Seq: b.Seq()}
}

// Seq is the sequence number of the newest event.
func (b *Broker) Seq() uint64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.last
}

// Epoch is this broker's id prefix.
func (b *Broker) Epoch() string { return b.cfg.Epoch }

// WindowBytes is the size of the frames held for resuming clients.
func (b *Broker) WindowBytes() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.bytes
}

// Publish numbers events and appends them, already encoded (data[i] is events[i], so the
// server encodes each event once for its log and its stream), to the window. It runs
// under the store's lock and never waits for a client: its cost does not depend on how
// many follow.
func (b *Broker) Publish(events []api.PullEvent, data [][]byte) {
	if len(events) == 0 {
		return
	}
	// Frames are built before taking the lock clients read under.
	b.pubMu.Lock()
	defer b.pubMu.Unlock()
	b.mu.RLock()
	next := b.last
	b.mu.RUnlock()
	recs := make([]record, 0, len(events))
	for i := range events {
		if data[i] == nil {
			continue // a Pull always marshals; nothing to deliver if it somehow does not
		}
		next++
		p := &events[i].Pull
		rec := record{seq: next, frame: b.frame(next, data[i]), typ: events[i].Type,
			match: &api.Pull{ID: p.ID, NodeName: p.NodeName, ImageRef: p.ImageRef, Repository: p.Repository, State: p.State, Pods: p.Pods}}
		if l := events[i].Layer; l != nil {
			rec.layer = l.Digest
		}
		recs = append(recs, rec)
	}
	if len(recs) == 0 {
		return
	}
	b.mu.Lock()
	for _, r := range recs {
		b.push(r)
	}
	b.last = recs[len(recs)-1].seq
	close(b.wake)
	b.wake = make(chan struct{})
	b.mu.Unlock()
}

func (b *Broker) push(r record) {
	if len(b.ring) == 0 {
		b.ring = make([]record, 64)
	}
	for b.n > 0 && (b.n >= b.cfg.Window || b.bytes+len(r.frame) > b.cfg.WindowBytes) {
		b.bytes -= len(b.ring[b.head].frame)
		b.ring[b.head] = record{}
		b.head = (b.head + 1) % len(b.ring)
		b.n--
	}
	if b.n == len(b.ring) {
		grown := make([]record, min(2*len(b.ring), b.cfg.Window))
		for i := range b.n {
			grown[i] = b.ring[(b.head+i)%len(b.ring)]
		}
		b.ring, b.head = grown, 0
	}
	b.ring[(b.head+b.n)%len(b.ring)] = r
	b.n++
	b.bytes += len(r.frame)
}

// frame writes a plain message: no `event:` field, so EventSource.onmessage gets it (the
// type is inside the JSON, as in the seed's stream).
func (b *Broker) frame(seq uint64, data []byte) []byte {
	buf := make([]byte, 0, len(data)+len(b.cfg.Epoch)+32)
	buf = append(buf, "id: "...)
	buf = append(buf, b.cfg.Epoch...)
	buf = append(buf, '-')
	buf = strconv.AppendUint(buf, seq, 10)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, data...)
	return append(buf, "\n\n"...)
}

// errLagged says a client's place is no longer in the window.
var errLagged = errors.New("fell out of the replay window")

// since copies up to max records after seq into buf. It reports errLagged when events
// after seq have already left the window, and returns the wake channel to wait on when
// there is nothing new.
func (b *Broker) since(seq uint64, buf []record, limit int) ([]record, <-chan struct{}, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if seq >= b.last {
		return buf, b.wake, nil
	}
	oldest := b.last - uint64(b.n) + 1
	if b.n == 0 || seq+1 < oldest {
		return buf, nil, errLagged
	}
	start := int(seq + 1 - oldest)
	for i := start; i < b.n && len(buf) < limit; i++ {
		buf = append(buf, b.ring[(b.head+i)%len(b.ring)])
	}
	return buf, nil, nil
}

// resumable reports whether a client standing at seq can continue from the window.
func (b *Broker) resumable(seq uint64) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if seq == b.last {
		return true
	}
	return seq < b.last && b.n > 0 && seq+1 >= b.last-uint64(b.n)+1
}

// Serve streams events matching f to one client until it goes away or ctx ends.
func (b *Broker) Serve(w http.ResponseWriter, r *http.Request, f api.Filter) {
	if n := b.clients.Add(1); n > int64(b.cfg.MaxClients) {
		b.clients.Add(-1)
		b.rejected.Add(1)
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(b.cfg.Retry.Seconds()))))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "{\"error\":\"too many event stream followers (the cap is %d); retry later\"}\n", b.cfg.MaxClients)
		return
	}
	defer b.clients.Add(-1)

	rc := http.NewResponseController(w)
	// The server's read timeout bounds how long a request may take to arrive; a stream
	// reads nothing more, and an expiring read deadline would end it.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	// nginx-style proxies buffer responses unless told not to.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	wr := &writer{w: w, rc: rc, timeout: b.cfg.WriteTimeout}
	write := func(p []byte) bool { wr.begin(); return wr.add(p) && wr.flush() }
	if !write(fmt.Appendf(nil, "retry: %d\n\n", b.cfg.Retry.Milliseconds())) {
		return
	}
	seq, ok := b.lastEventID(r)
	if !ok || !b.resumable(seq) {
		seq, ok = b.sendSnapshot(r.Context(), f, write)
		if !ok {
			return
		}
	}
	b.pump(r.Context(), f, seq, wr, write)
}

// writer writes frames through the response's own buffer and flushes once per batch: a
// report that changes many layers costs each client one flush, and no client holds a
// batch buffer of its own.
type writer struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

// begin gives the next batch WriteTimeout to go out: a socket that accepts nothing for
// that long ends the stream.
func (wr *writer) begin() { _ = wr.rc.SetWriteDeadline(time.Now().Add(wr.timeout)) }

func (wr *writer) add(p []byte) bool {
	_, err := wr.w.Write(p)
	return err == nil
}

func (wr *writer) flush() bool { return wr.rc.Flush() == nil }

// sendSnapshot writes the current state matching f and returns the position it stands at.
func (b *Broker) sendSnapshot(ctx context.Context, f api.Filter, write func([]byte) bool) (uint64, bool) {
	for {
		s, err := b.snapshot(ctx, f)
		if err != nil {
			return 0, false
		}
		// A shared snapshot may be older than the newest event; it is good as long as the
		// events after it are still in the window (they then follow it).
		if !b.resumable(s.seq) {
			b.snaps.drop(f, s)
			continue
		}
		return s.seq, write(s.frame)
	}
}

// batch is how many events a client copies out of the window at a time.
const batch = 256

func (b *Broker) pump(ctx context.Context, f api.Filter, seq uint64, wr *writer, write func([]byte) bool) {
	tick := time.NewTicker(b.cfg.Heartbeat)
	defer tick.Stop()
	var recs []record
	var last time.Time
	later := map[string]bool{}
	for {
		// Pace: one write per interval however fast reports arrive.
		if wait := b.interval() - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		var wake <-chan struct{}
		var err error
		recs, wake, err = b.since(seq, recs[:0], batch)
		if errors.Is(err, errLagged) {
			// Fell behind: the current state replaces what was missed.
			var ok bool
			if seq, ok = b.sendSnapshot(ctx, f, write); !ok {
				return
			}
			last = time.Now()
			continue
		}
		if wake != nil {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if !write([]byte(": ping\n\n")) {
					return
				}
			case <-wake:
			}
			continue
		}
		// Everything ready goes out with one flush. A follower that is behind (a full
		// batch waits) gets the current state: progress that a later event of the batch
		// supersedes is left out, as that event carries the newer state. Lifecycle events
		// (started, completed, failed, removed) are never left out.
		clear(later)
		behind := len(recs) == batch
		for i := len(recs) - 1; i >= 0; i-- {
			r := &recs[i]
			if !f.Match(r.match) {
				r.frame = nil
				continue
			}
			if !behind {
				continue
			}
			id := r.match.ID
			switch {
			case (r.typ == api.EventPullProgress || r.typ == api.EventLayerProgress) && later["p"+id]:
				r.frame = nil
			case r.typ == api.EventLayerProgress && later["l"+id+"|"+r.layer]:
				r.frame = nil
			case r.typ.IsLayer():
				later["l"+id+"|"+r.layer] = true
			default:
				later["p"+id] = true // pull.* events carry the whole pull
			}
		}
		wrote := false
		wr.begin()
		for i := range recs {
			if recs[i].frame != nil {
				if !wr.add(recs[i].frame) {
					return
				}
				wrote = true
			}
			seq = recs[i].seq
		}
		clear(recs) // frames are not kept alive by this client once written
		if wrote {
			if !wr.flush() {
				return
			}
			last = time.Now()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// interval is the pacing of each follower's writes.
func (b *Broker) interval() time.Duration {
	if b.cfg.MinInterval > 0 {
		return b.cfg.MinInterval
	}
	return min(max(20*time.Millisecond, time.Duration(b.clients.Load())*125*time.Microsecond), 100*time.Millisecond)
}

// lastEventID reads the resume point from the header browsers send, or from a query
// parameter for clients that cannot set headers on reconnect. An id of another epoch, or
// one that does not parse, is no resume point: the client gets a snapshot.
func (b *Broker) lastEventID(r *http.Request) (uint64, bool) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("lastEventId")
	}
	id, ok := api.ParseEventID(v)
	if !ok || id.Epoch != b.cfg.Epoch {
		return 0, false
	}
	return id.Seq, true
}
