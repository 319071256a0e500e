// Package aggregate is the server's memory: it merges node snapshots from agents into one
// set of pulls, computes rates and ETAs, attaches pods, and turns every change into the
// lifecycle events that SSE clients, logs and metrics consume.
package aggregate

import (
	"fmt"
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
	// Present lists, on node ("" = every node), one cached pull per pod container the
	// kubelet started from an image already on the node (it pulled nothing, so no agent
	// sees it). IDs are stable: the same container gives the same pull.
	Present(node string) []api.Pull
}

// Sink receives events in order. It is called with the store's lock held so the order
// clients see is the order of changes; it must not block.
type Sink func(events []api.PullEvent)

// Config bounds the store. Zero values take the defaults.
type Config struct {
	HistoryTTL time.Duration
	MaxPerNode int
	MaxTotal   int
	// MaxBytes bounds the estimated memory of the held pulls (see pullSize); the oldest
	// finished pulls go first, as for the count caps.
	MaxBytes int64
	// AgentTimeout: an agent not heard from for this long is no longer connected, and
	// its unfinished pulls are marked stalled.
	AgentTimeout time.Duration
	// StaleTimeout: an agent silent this long has its unfinished pulls failed, so they
	// finish and expire with the history instead of staying active forever.
	StaleTimeout time.Duration
	// MaxSkew is how far a report's timestamp may be from the server's clock and still be
	// trusted; beyond it the server's time is used (a far-future stamp must not lock a
	// node's later reports out).
	MaxSkew time.Duration
	// RateWindow is how far back the rate looks: a change of speed shows fully after one
	// window, and a pull that gets no bytes reads 0 one window after ReportGrace.
	RateWindow time.Duration
	// ReportGrace is how long after an agent's last word the server assumes no bytes
	// arrived since: longer than the agent's report interval plus a poll, so the rate does
	// not dip between two reports of a steady download.
	ReportGrace time.Duration
	Now         func() time.Time
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
	if c.MaxBytes <= 0 {
		c.MaxBytes = DefaultMaxBytes
	}
	if c.AgentTimeout <= 0 {
		c.AgentTimeout = 30 * time.Second
	}
	if c.StaleTimeout <= 0 {
		c.StaleTimeout = 5 * time.Minute
	}
	if c.StaleTimeout < c.AgentTimeout {
		c.StaleTimeout = c.AgentTimeout
	}
	if c.MaxSkew <= 0 {
		c.MaxSkew = 30 * time.Second
	}
	if c.RateWindow <= 0 {
		c.RateWindow = 3 * time.Second
	}
	if c.ReportGrace <= 0 {
		c.ReportGrace = 3 * time.Second
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
	// ExpiredNodes left the store since the last call: their metric series go too.
	ExpiredNodes []string
	// HeldBytes is the estimated memory of the held pulls.
	HeldBytes int64
	// Nodes holds every node the store knows (it forgets a node with its last pull, after
	// the history TTL), so a node missing here has expired.
	Nodes map[string]NodeStats
}

// NodeStats are one node's gauges at the time of TakeStats.
type NodeStats struct {
	Active  int // unfinished pulls, stalled ones included
	Stalled int
	// LongestStall is the longest time since the last byte among stalled pulls.
	LongestStall time.Duration
	// LongestETA is the largest ETA among unfinished pulls that have one.
	LongestETA time.Duration
	// LongestActive is the age of the oldest unfinished pull.
	LongestActive time.Duration
	// LastReport is when the node's agent was last heard from (report or heartbeat).
	LastReport time.Time
}

// Finished is one completed or failed pull, for duration and error metrics.
type Finished struct {
	Node     string
	State    api.PullState
	Duration time.Duration
}

type entry struct {
	pull       api.Pull
	size       int64 // pullSize(&pull), as counted in Store.held
	rate       float64
	meter      meter
	lastBytes  int64
	finishedAt time.Time
	// present entries are made from the kubelet's "already present" event, not an agent.
	present bool
	// repo is the exact repository of the image ref repoOf, with the registry port.
	repoOf, repo string
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
	// skew is the server's clock minus the agent's at the last accepted report: it maps
	// the server's now onto the agent's timeline, on which rates are measured.
	skew  time.Duration
	pulls map[string]*entry
	// The latest refused report, when its sender named this node.
	refusedAt     time.Time
	refusedReason string
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
	expired  []string
	held     int64 // sum of entry.size
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

// Result is what became of one report.
type Result struct {
	// Resync: the report was a heartbeat the store cannot use (it lacks that agent's
	// state); the agent should send a full snapshot.
	Resync bool
	// Ignored says why a valid report was not applied; empty when it was.
	Ignored string
}

// Apply merges one validated report; see ApplyReport.
func (s *Store) Apply(r *api.AgentReport) (resync bool) { return s.ApplyReport(r, nil).Resync }

// ApplyReport merges one report whose header validated and takes ownership of it: the
// caller must not touch r afterwards (the HTTP handler decodes a fresh one per request).
// The pulls named in skip (invalid ones) are left out: they are neither applied nor taken
// for pulls the agent stopped reporting, so one bad pull costs the node nothing else.
func (s *Store) ApplyReport(r *api.AgentReport, skip []api.PullRejection) Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	// The agent's clock orders its reports and times its rates, but only within MaxSkew
	// of ours: a stamp from far away (a broken clock, a hostile client) is replaced.
	ts := r.Timestamp
	if d := ts.Sub(now); d > s.cfg.MaxSkew || d < -s.cfg.MaxSkew {
		ts = now
	}
	n := s.nodes[r.NodeName]
	// Bytes a pull moved before this store heard from its node (the server just started,
	// or the node is new) were not downloaded now; counting them would spike rate().
	listening := n != nil && n.agentID != ""
	if n == nil {
		n = &node{pulls: map[string]*entry{}}
		s.nodes[r.NodeName] = n
	}
	sameAgent := n.agentID == r.AgentID
	if r.Heartbeat {
		if !sameAgent || r.Sequence != n.seq {
			return Result{Resync: true}
		}
		n.lastSeen, n.connected, n.skew = now, r.ContainerdConnected, now.Sub(ts)
		// "Nothing changed since Sequence": no pull gained a byte up to this report.
		for _, e := range n.pulls {
			if !e.pull.State.Finished() {
				e.meter.observe(ts, e.meter.lastBytes(), s.cfg.RateWindow)
			}
		}
		return Result{}
	}
	// Snapshots replace each other, so only the newest matters: a duplicate or an older
	// one that arrives late is ignored rather than rolling the node back.
	if sameAgent && r.Sequence <= n.seq {
		n.lastSeen = now
		return Result{Ignored: fmt.Sprintf("sequence %d is not newer than %d, already applied", r.Sequence, n.seq)}
	}
	// A new agent id takes over the node (the agent restarted) unless its report is older
	// than the current agent's newest while that agent still reports: then it is a late
	// report of an agent that has since been replaced.
	if !sameAgent && n.agentID != "" && ts.Before(n.ts) && now.Sub(n.lastSeen) < s.cfg.AgentTimeout {
		return Result{Ignored: fmt.Sprintf("agent %s was replaced by agent %s, whose newest report is later", r.AgentID, n.agentID)}
	}
	n.agentID, n.seq, n.ts, n.lastSeen, n.connected = r.AgentID, r.Sequence, ts, now, r.ContainerdConnected
	n.skew = now.Sub(ts)
	n.gen++

	var events []api.PullEvent
	seen := make(map[string]bool, len(r.Pulls))
	skipped := make(map[int]bool, len(skip))
	for _, rej := range skip {
		skipped[rej.Index] = true
	}
	for i := range r.Pulls {
		if id := r.Pulls[i].ID; id != "" {
			seen[id] = true
		}
		if skipped[i] {
			continue
		}
		// The decoded report belongs to this call alone: its pulls are taken, not copied.
		in := r.Pulls[i]
		in.NodeName = r.NodeName
		events = s.upsert(events, n, in, ts, now, listening)
	}
	for id, e := range n.pulls {
		if seen[id] || e.pull.State.Finished() || e.present {
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
	return Result{}
}

// DefaultMaxBytes bounds the held pulls' estimated memory; see docs/benchmarks.md for
// what the whole server then takes.
const DefaultMaxBytes = 21 << 20

// pullSize estimates the memory a held pull takes: the struct, its strings and slices.
// It errs high (a layer costs its digest and media type, which agents often share).
func pullSize(p *api.Pull) int64 {
	n := 400 + len(p.ID) + len(p.NodeName) + len(p.ImageRef) + len(p.Repository) + len(p.ManifestDigest) + len(p.IndexDigest) + len(p.Error)
	for i := range p.Layers {
		n += 64 + len(p.Layers[i].Digest) + len(p.Layers[i].MediaType)
	}
	for i := range p.Pods {
		n += 48 + len(p.Pods[i].Namespace) + len(p.Pods[i].PodName) + len(p.Pods[i].Container)
	}
	return int64(n)
}

// set replaces an entry's pull, keeping the memory estimate.
func (s *Store) set(e *entry, p api.Pull) {
	e.pull = p
	sz := pullSize(&e.pull)
	s.held += sz - e.size
	e.size = sz
}

// forget takes an entry out of the memory estimate when it leaves the store.
func (s *Store) forget(e *entry) {
	s.held -= e.size
	e.size = 0
}

func (s *Store) upsert(events []api.PullEvent, n *node, in api.Pull, reportAt, now time.Time, listening bool) []api.PullEvent {
	e := n.pulls[in.ID]
	if e == nil {
		e = &entry{lastBytes: in.DownloadedBytes}
		at := sampleTime(&in, reportAt)
		if d := at.Sub(in.StartedAt); in.State == api.PullActive && d > minSpan && d <= startSampleAge {
			// A pull first reported a report interval after it began already holds seconds
			// of bytes: its start is a sample too (only layers already present counted),
			// so the first report has a rate.
			e.meter.observe(in.StartedAt, presentBytes(&in), s.cfg.RateWindow)
		}
		e.meter.observe(at, in.DownloadedBytes, s.cfg.RateWindow)
		e.meter.observe(reportAt, in.DownloadedBytes, s.cfg.RateWindow)
		e.rate = e.meter.rate(reportAt, s.cfg.RateWindow)
		n.pulls[in.ID] = e
		s.total++
		if listening {
			s.bytes[in.NodeName] += in.DownloadedBytes
		}
		s.enrich(&in)
		s.derive(e, &in)
		if in.State == api.PullCached {
			// Nothing was downloaded: the one event is that it was there already.
			e.finishedAt = now
			events = s.finishEvents(events, nil, &in, now)
			s.set(e, in)
			return events
		}
		started := in.Clone()
		if in.State != api.PullActive {
			// Seen for the first time already stalled or finished (a pull shorter than a
			// report interval): it still started downloading first.
			started.State, started.CompletedAt, started.Error = api.PullActive, nil, ""
		}
		events = append(events, s.event(api.EventPullStarted, &started, nil, now))
		for i := range in.Layers {
			if in.Layers[i].State == api.LayerDownloading {
				events = append(events, s.event(api.EventLayerStarted, &in, &in.Layers[i], now))
			}
		}
		switch {
		case in.State.Finished():
			e.finishedAt = now
			events = s.finishEvents(events, &started, &in, now)
		case in.State != api.PullActive:
			events = append(events, s.event(api.TransitionEvent(api.PullActive, in.State), &in, nil, now))
		}
		s.set(e, in)
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
	s.bytes[in.NodeName] += in.DownloadedBytes - e.lastBytes
	e.lastBytes = in.DownloadedBytes
	e.meter.observe(sampleTime(&in, reportAt), in.DownloadedBytes, s.cfg.RateWindow)
	// The snapshot's bytes hold at least until the report was made.
	e.meter.observe(reportAt, in.DownloadedBytes, s.cfg.RateWindow)
	e.rate = e.meter.rate(reportAt, s.cfg.RateWindow)
	return s.transition(events, e, in, now)
}

// startSampleAge bounds how long before its first report a pull may have started for its
// start to count as a sample: an older start is a resumed download (bytes fetched by an
// earlier attempt), whose rate from the start would be wrong.
const startSampleAge = 10 * time.Second

// presentBytes is what a pull held when it started: the layers that were already there.
func presentBytes(p *api.Pull) int64 {
	var n int64
	for _, l := range p.Layers {
		if l.State == api.LayerExists {
			n += l.TotalBytes
		}
	}
	return n
}

// sampleTime is when the agent saw a pull's current byte count: the poll at which it last
// grew (UpdatedAt), when that is plausible, else the report's time.
func sampleTime(p *api.Pull, reportAt time.Time) time.Time {
	if p.UpdatedAt.IsZero() || p.UpdatedAt.After(reportAt) {
		return reportAt
	}
	return p.UpdatedAt
}

// transition replaces an entry's pull and emits what changed.
func (s *Store) transition(events []api.PullEvent, e *entry, in api.Pull, now time.Time) []api.PullEvent {
	old := e.pull
	s.enrich(&in)
	s.derive(e, &in)
	if in.State.Finished() {
		e.finishedAt = now
		events = s.finishEvents(events, &old, &in, now)
		s.set(e, in)
		return events
	}
	s.set(e, in)
	events = s.layerEvents(events, &old, &in, now)
	if t := api.TransitionEvent(old.State, in.State); t != "" {
		events = append(events, s.event(t, &in, nil, now))
	} else if !old.Equal(&in) {
		events = append(events, s.event(api.EventPullProgress, &in, nil, now))
	}
	return events
}

// finishEvents emits the end of a pull; old is nil for a pull first seen finished.
func (s *Store) finishEvents(events []api.PullEvent, old, in *api.Pull, now time.Time) []api.PullEvent {
	from := api.PullState("")
	if old != nil {
		events = s.layerEvents(events, old, in, now)
		from = old.State
	}
	if in.CompletedAt == nil {
		t := now.UTC()
		in.CompletedAt = &t
	}
	if in.State == api.PullFailed && in.Error == "" {
		in.Error = "the pull failed for an unknown reason"
	}
	s.finished = append(s.finished, Finished{Node: in.NodeName, State: in.State, Duration: in.CompletedAt.Sub(in.StartedAt)})
	return append(events, s.event(api.TransitionEvent(from, in.State), in, nil, now))
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
	// Parsing a reference costs more than the rest of a report's intake: once per ref.
	if p.ImageRef != e.repoOf {
		e.repoOf, e.repo = p.ImageRef, ""
		if repo, ok := api.ExactRepository(p.ImageRef); ok {
			e.repo = repo
		}
	}
	if e.repo != "" {
		p.Repository = e.repo
	}
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
		wn.present = s.corr.Present(wn.name)
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
			s.set(c.e, in)
			events = append(events, s.event(api.EventPullProgress, &in, nil, now))
		}
	}
	for i := range w.nodes {
		wn := &w.nodes[i]
		// A node whose pulls a report changed since keeps what intake requeued with them.
		fresh := func(node string) bool { return s.gen(node) == wn.gens[node] }
		events = s.addPresent(events, now, wn.present)
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
	name    string // "" = every node
	gens    map[string]uint64
	held    []api.Pull
	want    []api.Pull
	present []api.Pull
}

func (s *Store) recorrelation(nodes []string, touches func(p *api.Pull) bool) recorrelation {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	var w recorrelation
	visit := func(n *node) {
		for _, e := range n.pulls {
			if e.present || e.pull.State.Finished() && now.Sub(e.finishedAt) > time.Minute {
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
	events = s.addPresent(events, now, s.corr.Present(node))
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
			s.forget(e)
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
		if !isNew && e.pull.State == api.PullFailed {
			// The kubelet's retries alternate ErrImagePull and ImagePullBackOff: one
			// failure, which ended when it was first seen, whatever the pod says now.
			if q.State != api.PullFailed {
				q.State, q.Error, q.BackOff = api.PullFailed, e.pull.Error, e.pull.BackOff
			}
			q.CompletedAt = e.pull.CompletedAt
		}
		if q.State == api.PullFailed && q.CompletedAt == nil {
			t := now.UTC()
			q.CompletedAt = &t
		}
		s.derive(e, &q)
		if !isNew && e.pull.Equal(&q) {
			continue
		}
		old := e.pull
		s.set(e, q)
		if isNew {
			// A queued entry first seen failed (the kubelet gave up before any byte moved:
			// unknown tag, auth) was queued first.
			first := q
			first.State, first.Error, first.BackOff, first.CompletedAt = api.PullQueued, "", false, nil
			events = append(events, s.event(api.EventPullQueued, &first, nil, now))
			old.State = api.PullQueued
		}
		if t := api.TransitionEvent(old.State, q.State); t != "" {
			events = append(events, s.event(t, &q, nil, now))
		} else if !isNew {
			events = append(events, s.event(api.EventPullProgress, &q, nil, now))
		}
	}
	return events
}

// Expire drops history older than the TTL, marks the unfinished pulls of silent agents
// stalled and then failed, and forgets nodes silent for the TTL; call it now and then.
func (s *Store) Expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	var events []api.PullEvent
	for name, n := range s.nodes {
		silent := now.Sub(n.lastSeen)
		for id, e := range n.pulls {
			if e.pull.State.Finished() {
				if now.Sub(e.finishedAt) > s.cfg.HistoryTTL {
					delete(n.pulls, id)
					n.gen++
					s.forget(e)
					s.total--
					events = append(events, s.event(api.EventPullRemoved, &e.pull, nil, now))
				}
				continue
			}
			switch {
			case silent > s.cfg.StaleTimeout:
				p := e.pull.Clone()
				p.State = api.PullFailed
				p.Error = fmt.Sprintf("the node's agent stopped reporting %s ago; the pull's outcome is unknown", silent.Round(time.Second))
				events = s.transition(events, e, p, now)
			case silent > s.cfg.AgentTimeout && e.pull.State == api.PullActive:
				// Stale: no byte can be known to move while nobody reports. A report from
				// the agent makes it active again.
				p := e.pull.Clone()
				p.State = api.PullStalled
				events = s.transition(events, e, p, now)
			}
		}
		if len(n.pulls) == 0 && silent > s.cfg.HistoryTTL {
			delete(s.nodes, name)
			delete(s.bytes, name)
			s.expired = append(s.expired, name)
		}
	}
	s.sink(events)
}

// bound enforces the per-node, total and memory caps, dropping the oldest finished pulls
// first and active ones only when history alone cannot make room.
func (s *Store) bound(events []api.PullEvent, n *node, now time.Time) []api.PullEvent {
	// drop removes nd's pulls in that order while over() holds.
	drop := func(nd *node, over func() bool) {
		if nd == nil || !over() {
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
		for _, e := range es {
			if !over() {
				break
			}
			delete(nd.pulls, e.pull.ID)
			nd.gen++
			s.forget(e)
			s.total--
			s.dropped++
			events = append(events, s.event(api.EventPullRemoved, &e.pull, nil, now))
		}
	}
	drop(n, func() bool { return len(n.pulls) > s.cfg.MaxPerNode })
	// Take from the node with the most pulls: it is the one flooding the store.
	overTotal := func() bool { return s.total > s.cfg.MaxTotal || s.held > s.cfg.MaxBytes }
	for overTotal() {
		var big *node
		for _, nd := range s.nodes {
			if len(nd.pulls) > 0 && (big == nil || len(nd.pulls) > len(big.pulls)) {
				big = nd
			}
		}
		if big == nil {
			break
		}
		// One node at a time, so the next largest is chosen again.
		target := len(big.pulls) - 1
		drop(big, func() bool { return overTotal() && len(big.pulls) > target })
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

// SnapshotPulls copies the pulls matching f, unsorted, and returns at() read under the same
// lock: the SSE position the copy stands at (publishing runs under this lock too). The
// copies are shallow: a stored pull is replaced, never edited in place, so its slices are
// safe to read after the lock is gone; the caller must not modify them.
func (s *Store) SnapshotPulls(f api.Filter, at func() uint64) ([]api.Pull, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]api.Pull, 0, s.total+len(s.queued))
	s.each(func(e *entry) {
		if f.Match(&e.pull) {
			out = append(out, e.pull)
		}
	})
	return out, at()
}

func (s *Store) each(fn func(e *entry)) {
	for _, n := range s.nodes {
		for _, e := range n.pulls {
			fn(e)
		}
	}
	for _, e := range s.queued {
		fn(e)
	}
}

// List returns one page of the pulls matching f in api.ComparePulls order: at most limit
// pulls that sort after the pull after (nil: from the start), and how many more match.
// The lock is held for one pass that keeps only the best 2*limit candidates (shallow
// copies, see SnapshotPulls), so a page costs memory for its own pulls, not the store's.
func (s *Store) List(f api.Filter, limit int, after *api.Pull) (page []api.Pull, remaining int) {
	if limit <= 0 {
		limit = 1
	}
	less := func(a, b api.Pull) int { return api.ComparePulls(&a, &b) }
	buf := make([]api.Pull, 0, min(2*limit, s.size()+1))
	matched := 0
	s.mu.Lock()
	s.each(func(e *entry) {
		if !f.Match(&e.pull) || (after != nil && api.ComparePulls(&e.pull, after) <= 0) {
			return
		}
		matched++
		buf = append(buf, e.pull)
		if len(buf) == cap(buf) && len(buf) > limit {
			slices.SortFunc(buf, less)
			clear(buf[limit:])
			buf = buf[:limit]
		}
	})
	s.mu.Unlock()
	slices.SortFunc(buf, less)
	if len(buf) > limit {
		clear(buf[limit:])
		buf = buf[:limit]
	}
	return buf, matched - len(buf)
}

// size is a hint for how many pulls are held; read without the lock it may be stale.
func (s *Store) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total + len(s.queued)
}

// TakeStats returns gauges and the finished pulls and bytes since the last call.
func (s *Store) TakeStats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	st := Stats{Dropped: s.dropped, Completed: s.finished, BytesAdded: s.bytes, ExpiredNodes: s.expired, HeldBytes: s.held,
		Nodes: make(map[string]NodeStats, len(s.nodes))}
	s.finished, s.bytes, s.expired = nil, map[string]int64{}, nil
	for name, n := range s.nodes {
		if now.Sub(n.lastSeen) <= s.cfg.AgentTimeout {
			st.Agents++
		}
		ns := NodeStats{LastReport: n.lastSeen}
		for _, e := range n.pulls {
			p := &e.pull
			if p.State.Finished() {
				continue
			}
			ns.Active++
			ns.LongestActive = max(ns.LongestActive, now.Sub(p.StartedAt))
			if p.State == api.PullStalled {
				ns.Stalled++
				ns.LongestStall = max(ns.LongestStall, now.Sub(p.UpdatedAt))
			}
			if p.ETASeconds != nil {
				ns.LongestETA = max(ns.LongestETA, time.Duration(*p.ETASeconds*float64(time.Second)))
			}
		}
		st.Active += ns.Active
		st.Nodes[name] = ns
	}
	return st
}
