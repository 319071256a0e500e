// Package stream fans lifecycle events out to SSE clients. Publishing never blocks: each
// client has a bounded buffer, and a client that falls behind is resynced with a fresh
// snapshot instead of holding up the others. A bounded window of recent events lets a
// reconnecting client resume from Last-Event-ID.
//
// It is written here rather than on r3labs/sse: that library replays every event forever
// by default (AutoReplay), a subscriber that stops reading blocks its whole stream
// (r3labs/sse#192), and it has no per-client filter, snapshot-on-connect or comment
// heartbeat, which are the three things this stream is for.
package stream

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// Config tunes the broker. Zero values take the defaults.
type Config struct {
	// Window is how many recent events are kept for resuming clients.
	Window int
	// ClientBuffer is how many events may wait for one client before it is resynced.
	ClientBuffer int
	// Heartbeat is the interval of comment lines that keep proxies from cutting an idle
	// stream (load balancers in front of an apiserver cut after 20-60 s).
	Heartbeat time.Duration
	// WriteTimeout drops a client whose socket accepts nothing for this long.
	WriteTimeout time.Duration
	// Retry is the reconnect delay suggested to browsers.
	Retry time.Duration
	// Epoch prefixes every event id; empty takes a random one. Ids restart with every
	// process, so a Last-Event-ID from another epoch cannot pick a place in this stream.
	Epoch string
}

func (c *Config) defaults() {
	if c.Window <= 0 {
		c.Window = 4096
	}
	if c.ClientBuffer <= 0 {
		c.ClientBuffer = 512
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
	if c.Epoch == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		c.Epoch = hex.EncodeToString(b[:])
	}
}

type record struct {
	id   uint64
	ev   *api.PullEvent
	data []byte
}

type client struct {
	filter   api.Filter
	ch       chan record
	overflow bool
}

// Snapshotter is the store: it runs fn with the current pulls under the lock that also
// orders publishing, so registration sits exactly between two events.
type Snapshotter interface {
	Snapshot(f api.Filter, fn func(pulls []api.Pull))
}

// Broker is the SSE hub.
type Broker struct {
	cfg Config

	mu   sync.Mutex
	last uint64
	// ring holds the newest cfg.Window events; head is the oldest. A circular buffer, so
	// publishing is O(1) however large the window.
	ring    []record
	head    int
	clients map[*client]struct{}
}

// New returns a broker.
func New(cfg Config) *Broker {
	cfg.defaults()
	return &Broker{cfg: cfg, clients: map[*client]struct{}{}}
}

// Clients is the number of connected SSE clients.
func (b *Broker) Clients() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.clients)
}

// LastID is the id of the newest event.
func (b *Broker) LastID() api.EventID {
	b.mu.Lock()
	defer b.mu.Unlock()
	return api.EventID{Epoch: b.cfg.Epoch, Seq: b.last}
}

// Epoch is this broker's id prefix.
func (b *Broker) Epoch() string { return b.cfg.Epoch }

// Publish numbers and delivers events, already encoded (data[i] is events[i], so the
// server encodes each event once for its log and its stream). It never blocks on a client.
func (b *Broker) Publish(events []api.PullEvent, data [][]byte) {
	if len(events) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range events {
		ev := &events[i]
		data := data[i]
		if data == nil {
			continue // a Pull always marshals; nothing to deliver if it somehow does not
		}
		b.last++
		rec := record{id: b.last, ev: ev, data: data}
		if len(b.ring) < b.cfg.Window {
			b.ring = append(b.ring, rec)
		} else {
			b.ring[b.head] = rec
			b.head = (b.head + 1) % len(b.ring)
		}
		for c := range b.clients {
			if c.overflow || !c.filter.Match(&ev.Pull) {
				continue
			}
			select {
			case c.ch <- rec:
			default:
				c.overflow = true
				close(c.ch)
			}
		}
	}
}

// register adds a client. With resumeFrom > 0 and that id still in the window, the
// missed events are queued for it and ok is true; otherwise the caller sends a snapshot.
func (b *Broker) register(f api.Filter, resumeFrom uint64) (c *client, replayed bool, last uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c = &client{filter: f}
	var missed []record
	oldest := uint64(0)
	if len(b.ring) > 0 {
		oldest = b.ring[b.head].id
	}
	if resumeFrom > 0 && resumeFrom <= b.last && (len(b.ring) > 0 && resumeFrom+1 >= oldest || resumeFrom == b.last) {
		for i := range b.ring {
			r := b.ring[(b.head+i)%len(b.ring)]
			if r.id > resumeFrom && f.Match(&r.ev.Pull) {
				missed = append(missed, r)
			}
		}
		replayed = true
	}
	c.ch = make(chan record, max(b.cfg.ClientBuffer, len(missed)+b.cfg.ClientBuffer/2))
	for _, r := range missed {
		c.ch <- r
	}
	b.clients[c] = struct{}{}
	return c, replayed, b.last
}

func (b *Broker) unregister(c *client) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.clients[c]; ok {
		delete(b.clients, c)
		if !c.overflow {
			close(c.ch)
		}
	}
}

// Serve streams events matching f to one client until it goes away or ctx ends.
func (b *Broker) Serve(w http.ResponseWriter, r *http.Request, f api.Filter, store Snapshotter) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	// nginx-style proxies buffer responses unless told not to.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	resume := b.lastEventID(r)
	write := func(p []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(b.cfg.WriteTimeout))
		if _, err := w.Write(p); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(fmt.Appendf(nil, "retry: %d\n\n", b.cfg.Retry.Milliseconds())) {
		return
	}
	for {
		var (
			c        *client
			replayed bool
			last     uint64
			snap     []byte
		)
		store.Snapshot(f, func(pulls []api.Pull) {
			c, replayed, last = b.register(f, resume)
			if !replayed {
				if pulls == nil {
					pulls = []api.Pull{}
				}
				snap, _ = json.Marshal(api.PullList{SchemaVersion: api.SchemaVersion, Pulls: pulls})
			}
		})
		ok := b.pump(r, c, replayed, last, snap, write)
		b.unregister(c)
		if !ok || !c.overflow {
			return
		}
		// Fell behind: start over with a snapshot rather than a gap.
		resume = 0
	}
}

func (b *Broker) pump(r *http.Request, c *client, replayed bool, last uint64, snap []byte, write func([]byte) bool) bool {
	if !replayed {
		if !write(fmt.Appendf(nil, "id: %s-%d\nevent: snapshot\ndata: %s\n\n", b.cfg.Epoch, last, snap)) {
			return false
		}
	}
	tick := time.NewTicker(b.cfg.Heartbeat)
	defer tick.Stop()
	var buf []byte
	for {
		select {
		case <-r.Context().Done():
			return false
		case <-tick.C:
			if !write([]byte(": ping\n\n")) {
				return false
			}
		case rec, ok := <-c.ch:
			if !ok {
				return true // overflowed: the caller resyncs
			}
			// Everything already queued goes out in one write and one flush: a report
			// that changes many layers costs each client one syscall, not one per event.
			buf = b.appendEvent(buf[:0], rec)
			closed := false
		drain:
			for len(buf) < 256<<10 {
				select {
				case more, ok := <-c.ch:
					if !ok {
						closed = true
						break drain
					}
					buf = b.appendEvent(buf, more)
				default:
					break drain
				}
			}
			if !write(buf) {
				return false
			}
			if closed {
				return true
			}
		}
	}
}

// appendEvent writes a plain message: no `event:` field, so EventSource.onmessage gets it
// (the type is inside the JSON, as in the seed's stream).
func (b *Broker) appendEvent(buf []byte, rec record) []byte {
	buf = append(buf, "id: "...)
	buf = append(buf, b.cfg.Epoch...)
	buf = append(buf, '-')
	buf = strconv.AppendUint(buf, rec.id, 10)
	buf = append(buf, "\ndata: "...)
	buf = append(buf, rec.data...)
	return append(buf, "\n\n"...)
}

// lastEventID reads the resume point from the header browsers send, or from a query
// parameter for clients that cannot set headers on reconnect. An id of another epoch, or
// one that does not parse, is no resume point: the client gets a snapshot.
func (b *Broker) lastEventID(r *http.Request) uint64 {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("lastEventId")
	}
	id, ok := api.ParseEventID(v)
	if !ok || id.Epoch != b.cfg.Epoch {
		return 0
	}
	return id.Seq
}
