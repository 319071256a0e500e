// Package aggregate is the server's memory: it merges node snapshots from agents into one
// set of pulls, computes rates and ETAs, attaches pods, and turns every change into the
// lifecycle events that SSE clients, logs and metrics consume.
package aggregate

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// Correlator attaches Kubernetes knowledge to a pull. The zero answer (no pods, no
// error, no better ref) is always valid: the server runs without Kubernetes too. Its
// methods read in-memory caches and must be safe to call concurrently: Recorrelate calls
// them without the store's lock.
type Correlator interface {
	// Enrich sets pods, and the exact image ref and kubelet error when known.
	Enrich(p *api.Pull)
	// Queued lists pods on node ("" = every node) waiting for an image that none of pulls
	// (active or finished) serves.
	Queued(node string, pulls []api.Pull) []api.Pull
}

// Sink receives events in order. It is called with the store's lock held so the order
// clients see is the order of changes; it must not block.
type Sink func(events []api.PullEvent)

// Config bounds the store. Zero values take the defaults.
type Config struct {
	HistoryTTL   time.Duration
	MaxPerNode   int
	MaxTotal     int
	AgentTimeout time.Duration
	// RateWindow is the EWMA time constant: about how far back the rate looks.
	RateWindow time.Duration
	Now        func() time.Time
}

func (c *Config) defaults() {
	if c.HistoryTTL <= 0 {
		c.HistoryTTL = 30 * time.Minute
	}
	if c.MaxPerNode <= 0 {
		c.MaxPerNode = 500
	}
	if c.MaxTotal <= 0 {
		c.MaxTotal = 50000
	}
	if c.AgentTimeout <= 0 {
		c.AgentTimeout = 30 * time.Second
	}
	if c.RateWindow <= 0 {
		c.RateWindow = 5 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Stats are what metrics read after each change.
type Stats struct {
	Active     int
	Agents     int
	Dropped    uint64
	Completed  []Finished // pulls finished since the last call
	BytesAdded map[string]int64
}

// Finished is one completed or failed pull, for duration and error metrics.
type Finished struct {
	Node     string
	State    api.PullState
	Duration time.Duration
}

type entry struct {
	pull       api.Pull
	rate       float64
	lastBytes  int64
	lastAt     time.Time
	finishedAt time.Time
}

type node struct {
	// gen counts changes to this node's pulls, so work done outside the lock can tell
	// whether intake moved on meanwhile.
	gen       uint64
	agentID   string
	seq       uint64
	ts        time.Time
	lastSeen  time.Time
	connected bool
	pulls     map[string]*entry
}

// Store holds every pull the server knows.
type Store struct {
	cfg  Config
	corr Correlator
	sink Sink

	mu       sync.Mutex
	nodes    map[string]*node
	queued   map[string]*entry
	dropped  uint64
	finished []Finished
	bytes    map[string]int64
	total    int
}

// New returns an empty store. corr may be nil.
func New(cfg Config, corr Correlator, sink Sink) *Store {
	cfg.defaults()
	if sink == nil {
		sink = func([]api.PullEvent) {}
	}
	return &Store{cfg: cfg, corr: corr, sink: sink, nodes: map[string]*node{}, queued: map[string]*entry{}, bytes: map[string]int64{}}
}

// Apply merges one validated report and takes ownership of it: the caller must not touch
// r afterwards (the HTTP handler decodes a fresh one per request). It returns resync=true when the report was a
// heartbeat the store cannot use (it lacks that agent's state) and the agent should send
// a full snapshot.
func (s *Store) Apply(r *api.AgentReport) (resync bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	n := s.nodes[r.NodeName]
	if n == nil {
		n = &node{pulls: map[string]*entry{}}
		s.nodes[r.NodeName] = n
	}
	sameAgent := n.agentID == r.AgentID
	if r.Heartbeat {
		if !sameAgent || r.Sequence != n.seq {
			return true
		}
		n.lastSeen, n.connected = now, r.ContainerdConnected
		return false
	}
	// Snapshots replace each other, so only the newest matters: a duplicate or an older
	// one that arrives late is ignored rather than rolling the node back.
	if sameAgent && r.Sequence <= n.seq {
		n.lastSeen = now
		return false
	}
	if !sameAgent && n.agentID != "" && r.Timestamp.Before(n.ts) {
		return false
	}
	n.agentID, n.seq, n.ts, n.lastSeen, n.connected = r.AgentID, r.Sequence, r.Timestamp, now, r.ContainerdConnected
	n.gen++

	var events []api.PullEvent
	seen := make(map[string]bool, len(r.Pulls))
	for i := range r.Pulls {
		// The decoded report belongs to this call alone: its pulls are taken, not copied.
		in := r.Pulls[i]
		in.NodeName = r.NodeName
		seen[in.ID] = true
		events = s.upsert(events, n, in, r.Timestamp, now)
	}
	for id, e := range n.pulls {
		if seen[id] || e.pull.State.Finished() {
			continue
		}
		// The agent dropped a pull it never finished: it restarted, or the pull vanished
		// with containerd. Either way it did not complete.
		p := e.pull.Clone()
		p.State = api.PullFailed
		p.Error = "the agent stopped reporting this pull before it finished (agent or containerd restarted)"
		events = s.transition(events, e, p, now)
	}
	events = s.requeue(events, now, r.NodeName)
	events = s.bound(events, n, now)
	s.sink(events)
	return false
}

func (s *Store) upsert(events []api.PullEvent, n *node, in api.Pull, reportAt, now time.Time) []api.PullEvent {
	e := n.pulls[in.ID]
	if e == nil {
		e = &entry{lastBytes: in.DownloadedBytes, lastAt: reportAt}
		n.pulls[in.ID] = e
		s.total++
		s.bytes[in.NodeName] += in.DownloadedBytes
		s.enrich(&in)
		s.derive(e, &in)
		started := in.Clone()
		if in.State.Finished() {
			// Seen for the first time already finished (a cached image, or a pull shorter
			// than a report interval): it still starts before it ends.
			started.State, started.CompletedAt = api.PullActive, nil
		}
		events = append(events, s.event(api.EventPullStarted, &started, nil, now))
		for i := range in.Layers {
			if in.Layers[i].State == api.LayerDownloading {
				events = append(events, s.event(api.EventLayerStarted, &in, &in.Layers[i], now))
			}
		}
		if in.State.Finished() {
			e.finishedAt = now
			events = s.finishEvents(events, &started, &in, now)
		}
		e.pull = in
		return events
	}
	if e.pull.State.Finished() {
		return events // finished is final; later copies from the agent add nothing
	}
	// Bytes never go backwards within a pull, whatever a restarted agent reports.
	in.DownloadedBytes = max(in.DownloadedBytes, e.pull.DownloadedBytes)
	if in.TotalKnown && in.TotalBytes > 0 {
		in.DownloadedBytes = min(in.DownloadedBytes, in.TotalBytes)
	}
	if dt := reportAt.Sub(e.lastAt).Seconds(); dt > 0 {
		inst := float64(in.DownloadedBytes-e.lastBytes) / dt
		alpha := 1 - math.Exp(-dt/s.cfg.RateWindow.Seconds())
		e.rate += alpha * (inst - e.rate)
		s.bytes[in.NodeName] += in.DownloadedBytes - e.lastBytes
		e.lastBytes, e.lastAt = in.DownloadedBytes, reportAt
	}
	return s.transition(events, e, in, now)
}

// transition replaces an entry's pull and emits what changed.
func (s *Store) transition(events []api.PullEvent, e *entry, in api.Pull, now time.Time) []api.PullEvent {
	old := e.pull
	s.enrich(&in)
	s.derive(e, &in)
	if in.State.Finished() {
		e.finishedAt = now
		events = s.finishEvents(events, &old, &in, now)
		e.pull = in
		return events
	}
	e.pull = in
	events = s.layerEvents(events, &old, &in, now)
	if !old.Equal(&in) {
		events = append(events, s.event(api.EventPullProgress, &in, nil, now))
	}
	return events
}

func (s *Store) finishEvents(events []api.PullEvent, old, in *api.Pull, now time.Time) []api.PullEvent {
	events = s.layerEvents(events, old, in, now)
	if in.CompletedAt == nil {
		t := now.UTC()
		in.CompletedAt = &t
	}
	if in.State == api.PullFailed && in.Error == "" {
		in.Error = "the pull failed for an unknown reason"
	}
	typ := api.EventPullCompleted
	if in.State == api.PullFailed {
		typ = api.EventPullFailed
	}
	s.finished = append(s.finished, Finished{Node: in.NodeName, State: in.State, Duration: in.CompletedAt.Sub(in.StartedAt)})
	return append(events, s.event(typ, in, nil, now))
}

func (s *Store) layerEvents(events []api.PullEvent, old, in *api.Pull, now time.Time) []api.PullEvent {
	// Layers keep their manifest order from report to report, so the previous state of a
	// layer is almost always at the same index; a map is built only when it is not.
	var prev map[string]api.Layer
	lookup := func(i int, digest string) (api.Layer, bool) {
		if old == nil {
			return api.Layer{}, false
		}
		if i < len(old.Layers) && old.Layers[i].Digest == digest {
			return old.Layers[i], true
		}
		if prev == nil {
			prev = make(map[string]api.Layer, len(old.Layers))
			for _, l := range old.Layers {
				prev[l.Digest] = l
			}
		}
		l, ok := prev[digest]
		return l, ok
	}
	for i := range in.Layers {
		l := &in.Layers[i]
		p, had := lookup(i, l.Digest)
		switch {
		case l.State == api.LayerDone && (!had || p.State != api.LayerDone):
			if !had || p.State == api.LayerWaiting {
				events = append(events, s.event(api.EventLayerStarted, in, l, now))
			}
			events = append(events, s.event(api.EventLayerCompleted, in, l, now))
		case l.State == api.LayerDownloading && (!had || p.State == api.LayerWaiting):
			events = append(events, s.event(api.EventLayerStarted, in, l, now))
		case l.State == api.LayerDownloading && l.DownloadedBytes != p.DownloadedBytes:
			events = append(events, s.event(api.EventLayerProgress, in, l, now))
		}
	}
	return events
}

// derive fills the figures the server owns: rate, ETA and percent.
func (s *Store) derive(e *entry, p *api.Pull) {
	p.Percent = api.Percent(p.DownloadedBytes, p.TotalBytes, p.State)
	p.BytesPerSec, p.ETASeconds = 0, nil
	if p.State == api.PullActive || p.State == api.PullStalled {
		if e.rate > 0 {
			p.BytesPerSec = math.Round(e.rate)
		}
		if p.State == api.PullStalled {
			p.BytesPerSec = 0
		}
		if p.BytesPerSec > 0 && p.TotalKnown {
			eta := math.Round(float64(p.TotalBytes-p.DownloadedBytes)/p.BytesPerSec*10) / 10
			p.ETASeconds = &eta
		}
	}
	if p.Pods == nil {
		p.Pods = []api.PodRef{}
	}
	if p.Layers == nil {
		p.Layers = []api.Layer{}
	}
}

func (s *Store) enrich(p *api.Pull) {
	if s.corr != nil {
		s.corr.Enrich(p)
	}
}

// event shares p's slices (a shallow copy): a stored pull is replaced, never edited in
// place, so the events of one change share one pull, which the encoder then marshals once.
func (s *Store) event(t api.EventType, p *api.Pull, l *api.Layer, now time.Time) api.PullEvent {
	ev := api.PullEvent{SchemaVersion: api.SchemaVersion, Timestamp: now.UTC(), Type: t, NodeName: p.NodeName, Pull: *p}
	if l != nil {
		lc := *l
		ev.Layer = &lc
	}
	return ev
}

// Recorrelate re-enriches pulls after Kubernetes changed (a pod appeared, started or was
// deleted; a kubelet event arrived) and emits progress for pulls whose pods changed. Only
// the pulls of nodes (nil: every node) that touches accepts (nil: all) are looked at, and
// the queued entries of those nodes rebuilt. The correlator is asked without the store's
// lock, so intake does not wait for it; a pull or node that intake changed meanwhile keeps
// intake's answer, which it computed later.
func (s *Store) Recorrelate(nodes []string, touches func(p *api.Pull) bool) {
	if s.corr == nil {
		return
	}
	w := s.recorrelation(nodes, touches)
	for i := range w.pulls {
		c := &w.pulls[i]
		c.in = c.was.Clone()
		c.in.Pods = nil
		s.corr.Enrich(&c.in)
	}
	for i := range w.nodes {
		wn := &w.nodes[i]
		wn.want = s.corr.Queued(wn.name, wn.held)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	var events []api.PullEvent
	for i := range w.pulls {
		c := &w.pulls[i]
		if c.n.pulls[c.was.ID] != c.e || !c.e.pull.Identical(&c.was) {
			continue // intake replaced it, enriching it afresh
		}
		in := c.in
		if in.State.Finished() {
			// A finished pull served its pods: deleting them later (a rollout moving on)
			// must not erase that from history.
			in.Pods = mergePods(c.e.pull.Pods, in.Pods)
		}
		s.derive(c.e, &in)
		if !c.e.pull.Equal(&in) {
			c.e.pull = in
			events = append(events, s.event(api.EventPullProgress, &in, nil, now))
		}
	}
	for i := range w.nodes {
		wn := &w.nodes[i]
		// A node whose pulls a report changed since keeps what intake requeued with them.
		fresh := func(node string) bool { return s.gen(node) == wn.gens[node] }
		events = s.applyQueued(events, now, wn.name, wn.want, fresh)
	}
	s.sink(events)
}

// recorrelation is what Recorrelate asks the correlator about, copied under the lock.
type recorrelation struct {
	pulls []recorrelated
	nodes []requeued
}

type recorrelated struct {
	n   *node
	e   *entry
	was api.Pull // the entry's pull when copied (shallow: stored pulls are replaced, never edited)
	in  api.Pull // was, enriched afresh
}

type requeued struct {
	name string // "" = every node
	gens map[string]uint64
	held []api.Pull
	want []api.Pull
}

func (s *Store) recorrelation(nodes []string, touches func(p *api.Pull) bool) recorrelation {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	var w recorrelation
	visit := func(n *node) {
		for _, e := range n.pulls {
			if e.pull.State.Finished() && now.Sub(e.finishedAt) > time.Minute {
				continue // history keeps the pods it had when it finished
			}
			if touches == nil || touches(&e.pull) {
				w.pulls = append(w.pulls, recorrelated{n: n, e: e, was: e.pull})
			}
		}
	}
	if nodes == nil {
		w.pulls = make([]recorrelated, 0, s.total)
		all := requeued{gens: make(map[string]uint64, len(s.nodes)), held: s.heldLocked("")}
		for name, n := range s.nodes {
			visit(n)
			all.gens[name] = n.gen
		}
		w.nodes = []requeued{all}
		return w
	}
	for _, name := range nodes {
		if n := s.nodes[name]; n != nil {
			visit(n)
		}
		w.nodes = append(w.nodes, requeued{name: name, gens: map[string]uint64{name: s.gen(name)}, held: s.heldLocked(name)})
	}
	return w
}

// gen is a node's generation; a node the store does not hold has 0.
func (s *Store) gen(name string) uint64 {
	if n := s.nodes[name]; n != nil {
		return n.gen
	}
	return 0
}

func mergePods(kept, found []api.PodRef) []api.PodRef {
	out := append([]api.PodRef(nil), kept...)
	for _, p := range found {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// requeue rebuilds the queued entries of one node ("" = all): pods waiting for an image no
// pull serves yet. A report changes only its own node's, so intake never walks the cluster.
func (s *Store) requeue(events []api.PullEvent, now time.Time, node string) []api.PullEvent {
	if s.corr == nil {
		return events
	}
	return s.applyQueued(events, now, node, s.corr.Queued(node, s.heldLocked(node)), nil)
}

// heldLocked is every pull of one node ("" = all). Finished pulls count as serving their
// image too: a completed pull's pods are about to start, a failed one already carries its
// pods and the error.
func (s *Store) heldLocked(node string) []api.Pull {
	size := s.total
	if n := s.nodes[node]; n != nil {
		size = len(n.pulls)
	}
	held := make([]api.Pull, 0, size)
	for name, n := range s.nodes {
		if node != "" && name != node {
			continue
		}
		for _, e := range n.pulls {
			held = append(held, e.pull)
		}
	}
	return held
}

// applyQueued makes the queued entries of one node ("" = all) those of queued, leaving
// alone the nodes that keep (nil: every node) refuses.
func (s *Store) applyQueued(events []api.PullEvent, now time.Time, node string, queued []api.Pull, keep func(node string) bool) []api.PullEvent {
	mine := func(n string) bool { return (node == "" || n == node) && (keep == nil || keep(n)) }
	want := map[string]api.Pull{}
	for _, q := range queued {
		if mine(q.NodeName) {
			want[q.ID] = q
		}
	}
	for id, e := range s.queued {
		if !mine(e.pull.NodeName) {
			continue
		}
		if _, ok := want[id]; !ok {
			delete(s.queued, id)
			events = append(events, s.event(api.EventPullRemoved, &e.pull, nil, now))
		}
	}
	for id, q := range want {
		e := s.queued[id]
		isNew := e == nil
		if isNew {
			e = &entry{}
			s.queued[id] = e
		}
		s.derive(e, &q)
		if !isNew && e.pull.Equal(&q) {
			continue
		}
		wasFailed := !isNew && e.pull.State == api.PullFailed
		e.pull = q
		switch {
		case isNew:
			events = append(events, s.event(api.EventPullStarted, &q, nil, now))
			if q.State == api.PullFailed {
				events = append(events, s.event(api.EventPullFailed, &q, nil, now))
			}
		case q.State == api.PullFailed && !wasFailed:
			// The kubelet gave up before any byte moved (unknown tag, auth): the
			// pod's error is the pull's real reason.
			events = append(events, s.event(api.EventPullFailed, &q, nil, now))
		default:
			events = append(events, s.event(api.EventPullProgress, &q, nil, now))
		}
	}
	return events
}

// Expire drops history older than the TTL and forgets silent agents; call it now and then.
func (s *Store) Expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	var events []api.PullEvent
	for name, n := range s.nodes {
		for id, e := range n.pulls {
			if e.pull.State.Finished() && now.Sub(e.finishedAt) > s.cfg.HistoryTTL {
				delete(n.pulls, id)
				n.gen++
				s.total--
				events = append(events, s.event(api.EventPullRemoved, &e.pull, nil, now))
			}
		}
		if len(n.pulls) == 0 && now.Sub(n.lastSeen) > s.cfg.HistoryTTL {
			delete(s.nodes, name)
			delete(s.bytes, name)
		}
	}
	s.sink(events)
}

// bound enforces the per-node and total caps, dropping the oldest finished pulls first
// and active ones only when history alone cannot make room.
func (s *Store) bound(events []api.PullEvent, n *node, now time.Time) []api.PullEvent {
	drop := func(nd *node, over int) {
		if over <= 0 {
			return
		}
		es := make([]*entry, 0, len(nd.pulls))
		for _, e := range nd.pulls {
			es = append(es, e)
		}
		slices.SortFunc(es, func(a, b *entry) int {
			af, bf := a.pull.State.Finished(), b.pull.State.Finished()
			if af != bf {
				if af {
					return -1
				}
				return 1
			}
			return a.pull.StartedAt.Compare(b.pull.StartedAt)
		})
		for _, e := range es[:min(over, len(es))] {
			delete(nd.pulls, e.pull.ID)
			nd.gen++
			s.total--
			s.dropped++
			events = append(events, s.event(api.EventPullRemoved, &e.pull, nil, now))
		}
	}
	drop(n, len(n.pulls)-s.cfg.MaxPerNode)
	if over := s.total - s.cfg.MaxTotal; over > 0 {
		// Take from the node with the most pulls: it is the one flooding the store.
		var big *node
		for _, nd := range s.nodes {
			if big == nil || len(nd.pulls) > len(big.pulls) {
				big = nd
			}
		}
		drop(big, over)
	}
	return events
}

// Pulls returns the matching pulls, newest first.
func (s *Store) Pulls(f api.Filter) []api.Pull {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pullsLocked(f)
}

func (s *Store) pullsLocked(f api.Filter) []api.Pull {
	var out []api.Pull
	add := func(e *entry) {
		if f.Match(&e.pull) {
			out = append(out, e.pull.Clone())
		}
	}
	for _, n := range s.nodes {
		for _, e := range n.pulls {
			add(e)
		}
	}
	for _, e := range s.queued {
		add(e)
	}
	api.SortNewestFirst(out)
	return out
}

// Snapshot runs fn with the current pulls while holding the lock, so a new SSE client
// can register between the snapshot and the next event without missing or repeating one.
func (s *Store) Snapshot(f api.Filter, fn func(pulls []api.Pull)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s.pullsLocked(f))
}

// TakeStats returns gauges and the finished pulls and bytes since the last call.
func (s *Store) TakeStats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	st := Stats{Dropped: s.dropped, Completed: s.finished, BytesAdded: s.bytes}
	s.finished, s.bytes = nil, map[string]int64{}
	for _, n := range s.nodes {
		if now.Sub(n.lastSeen) <= s.cfg.AgentTimeout {
			st.Agents++
		}
		for _, e := range n.pulls {
			if !e.pull.State.Finished() {
				st.Active++
			}
		}
	}
	return st
}
