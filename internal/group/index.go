package group

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// Config tunes the index. Zero values take the defaults.
type Config struct {
	// Interval is how often a stream follower gets the groups that changed: a group's
	// summary goes out at most once per interval, however many of its pulls moved.
	Interval time.Duration
	// ClientBuffer is how many batches may wait for one follower before it is resynced.
	ClientBuffer int
	// MaxFollowers caps concurrent group streams; more get 503.
	MaxFollowers int
	Now          func() time.Time
}

func (c *Config) defaults() {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.ClientBuffer <= 0 {
		c.ClientBuffer = 8
	}
	if c.MaxFollowers <= 0 {
		c.MaxFollowers = 1000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// member is one pull as the groups see it: its summary (no layers) and the keys it is
// filed under, so a change moves it between groups without a search.
type member struct {
	pull api.Pull
	keys [2][]string
}

type groupSet struct {
	groups map[string]map[string]*member // key -> pull id -> member
	dirty  map[string]struct{}
}

// Index is the grouped view. Observe feeds it; List and the stream read it.
type Index struct {
	cfg Config

	mu      sync.Mutex
	members map[string]*member
	sets    [2]groupSet
	subs    map[*sub]struct{}
	// followers counts streams being served, for the cap.
	followers atomic.Int64
}

type sub struct {
	q        api.GroupQuery
	ch       chan []byte
	overflow bool
}

// New returns an empty index.
func New(cfg Config) *Index {
	cfg.defaults()
	ix := &Index{cfg: cfg, members: map[string]*member{}, subs: map[*sub]struct{}{}}
	for i := range ix.sets {
		ix.sets[i] = groupSet{groups: map[string]map[string]*member{}, dirty: map[string]struct{}{}}
	}
	return ix
}

func setOf(by api.GroupBy) int {
	if by == api.GroupByWorkload {
		return 1
	}
	return 0
}

// Observe files the pulls of a batch of lifecycle events. It is called under the store's
// lock and does no I/O: a map update per event.
func (ix *Index) Observe(events []api.PullEvent) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for i := range events {
		ev := &events[i]
		if ev.Type == api.EventPullRemoved {
			ix.remove(ev.Pull.ID)
			continue
		}
		ix.upsert(&ev.Pull)
	}
}

func (ix *Index) upsert(p *api.Pull) {
	m := ix.members[p.ID]
	if m == nil {
		m = &member{}
		ix.members[p.ID] = m
	}
	// Layers are not summarised; pods are copied because the store's slices are not ours.
	m.pull = *p
	m.pull.Layers = nil
	m.pull.Pods = slices.Clone(p.Pods)
	for si, by := range api.GroupBys {
		keys := m.pull.GroupKeys(by)
		set := &ix.sets[si]
		for _, k := range m.keys[si] {
			if !slices.Contains(keys, k) {
				set.leave(k, p.ID)
			}
		}
		for _, k := range keys {
			g := set.groups[k]
			if g == nil {
				g = map[string]*member{}
				set.groups[k] = g
			}
			g[p.ID] = m
			set.dirty[k] = struct{}{}
		}
		m.keys[si] = keys
	}
}

func (ix *Index) remove(id string) {
	m := ix.members[id]
	if m == nil {
		return
	}
	delete(ix.members, id)
	for si := range ix.sets {
		for _, k := range m.keys[si] {
			ix.sets[si].leave(k, id)
		}
	}
}

func (s *groupSet) leave(key, id string) {
	g := s.groups[key]
	delete(g, id)
	if len(g) == 0 {
		delete(s.groups, key)
	}
	s.dirty[key] = struct{}{}
}

// List returns the groups q selects, biggest first (ties by key).
func (ix *Index) List(q api.GroupQuery) []api.Group {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.listLocked(&q)
}

func (ix *Index) listLocked(q *api.GroupQuery) []api.Group {
	set := &ix.sets[setOf(q.By)]
	out := []api.Group{}
	if q.Key != "" {
		if g, ok := summarize(q.Key, set.groups[q.Key], q); ok {
			out = append(out, g)
		}
		return out
	}
	for k, ms := range set.groups {
		if g, ok := summarize(k, ms, q); ok {
			out = append(out, g)
		}
	}
	SortGroups(out)
	return out
}

// SortGroups orders groups biggest first, ties by key, so lists are stable.
func SortGroups(gs []api.Group) {
	slices.SortFunc(gs, func(a, b api.Group) int {
		return cmp.Or(cmp.Compare(b.Counts.Total(), a.Counts.Total()), cmp.Compare(a.Key, b.Key))
	})
}

func summarize(key string, ms map[string]*member, q *api.GroupQuery) (api.Group, bool) {
	if len(ms) == 0 {
		return api.Group{}, false
	}
	pulls := make([]*api.Pull, 0, len(ms))
	for _, m := range ms {
		pulls = append(pulls, &m.pull)
	}
	return Summarize(key, q.By, pulls, q)
}

// Run sends the changed groups to followers every interval until ctx ends.
func (ix *Index) Run(ctx context.Context) {
	t := time.NewTicker(ix.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ix.Flush()
		}
	}
}

// Flush sends every follower the groups that changed since the last flush, one summary
// per group, and forgets the changes. Followers asking the same question share one
// summary and one encoding.
func (ix *Index) Flush() {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	now := ix.cfg.Now().UTC()
	type answer struct{ data []byte }
	cache := map[string]answer{}
	for s := range ix.subs {
		if s.overflow {
			continue
		}
		set := &ix.sets[setOf(s.q.By)]
		if len(set.dirty) == 0 {
			continue
		}
		ck := string(s.q.By) + "?" + s.q.Query().Encode()
		a, ok := cache[ck]
		if !ok {
			a.data = ix.changedLocked(set, &s.q, now)
			cache[ck] = a
		}
		if a.data == nil {
			continue
		}
		select {
		case s.ch <- a.data:
		default:
			s.overflow = true
			close(s.ch)
		}
	}
	for i := range ix.sets {
		clear(ix.sets[i].dirty)
	}
}

// changedLocked encodes the events of q's changed groups as SSE messages; nil if none.
func (ix *Index) changedLocked(set *groupSet, q *api.GroupQuery, now time.Time) []byte {
	keys := make([]string, 0, len(set.dirty))
	for k := range set.dirty {
		if q.Key == "" || q.Key == k {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var buf []byte
	for _, k := range keys {
		ev := api.GroupEvent{SchemaVersion: api.SchemaVersion, Timestamp: now, Type: api.EventGroupUpdated}
		g, ok := summarize(k, set.groups[k], q)
		if !ok {
			ev.Type, g = api.EventGroupRemoved, api.Group{Key: k, By: q.By, Images: []string{},
				SlowestByPercent: []api.GroupNode{}, SlowestByRate: []api.GroupNode{}, Failures: []api.GroupFailure{}}
		}
		ev.Group = g
		data, err := json.Marshal(ev)
		if err != nil {
			continue
		}
		buf = append(buf, "data: "...)
		buf = append(buf, data...)
		buf = append(buf, "\n\n"...)
	}
	return buf
}

// subscribe registers a follower and returns the snapshot it starts from, taken under the
// same lock so no change falls between the two.
func (ix *Index) subscribe(q api.GroupQuery) (*sub, []api.Group) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	s := &sub{q: q, ch: make(chan []byte, ix.cfg.ClientBuffer)}
	ix.subs[s] = struct{}{}
	return s, ix.listLocked(&q)
}

func (ix *Index) unsubscribe(s *sub) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if _, ok := ix.subs[s]; ok {
		delete(ix.subs, s)
		if !s.overflow {
			close(s.ch)
		}
	}
}

// Followers is the number of connected group stream clients.
func (ix *Index) Followers() int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return len(ix.subs)
}
