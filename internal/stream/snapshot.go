package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// snap is one encoded snapshot event: the pulls matching one filter at one position.
type snap struct {
	key   string
	seq   uint64
	built time.Time
	frame []byte
	err   error
	ready chan struct{} // closed once built
}

// snapshotCache shares snapshots between clients: one per filter, rebuilt when the store
// moved on and the cached one is older than SnapshotMaxAge. Builds run one at a time, so
// a burst of connects holds at most one snapshot under construction.
type snapshotCache struct {
	mu    sync.Mutex
	m     map[string]*snap
	order []string // least recently used first
	bytes int
	build chan struct{} // a one-slot semaphore over builds
}

// Bounds of the cache: enough for the UI's unfiltered stream and a few node or pod
// follows; other filters are built for their client and not kept.
const (
	maxCachedSnapshots = 8
)

func (c *snapshotCache) init() {
	c.m = map[string]*snap{}
	c.build = make(chan struct{}, 1)
}

func filterKey(f api.Filter) string {
	g := f
	g.States = slices.Clone(f.States)
	slices.Sort(g.States)
	return g.Query().Encode()
}

func (c *snapshotCache) touch(key string) {
	if i := slices.Index(c.order, key); i >= 0 {
		c.order = slices.Delete(c.order, i, i+1)
	}
	c.order = append(c.order, key)
}

func (c *snapshotCache) remove(key string) {
	if s, ok := c.m[key]; ok {
		delete(c.m, key)
		c.bytes -= len(s.frame)
	}
	if i := slices.Index(c.order, key); i >= 0 {
		c.order = slices.Delete(c.order, i, i+1)
	}
}

// drop forgets s if it is still the cached snapshot of f.
func (c *snapshotCache) drop(f api.Filter, s *snap) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if key := filterKey(f); c.m[key] == s {
		c.remove(key)
	}
}

// snapshot returns a snapshot of f that is current or at most SnapshotMaxAge old.
func (b *Broker) snapshot(ctx context.Context, f api.Filter) (*snap, error) {
	key := filterKey(f)
	c := &b.snaps
	for {
		c.mu.Lock()
		s := c.m[key]
		if s != nil {
			select {
			case <-s.ready:
				if s.err == nil && (s.seq == b.Seq() || time.Since(s.built) < b.cfg.SnapshotMaxAge) {
					c.touch(key)
					c.mu.Unlock()
					return s, nil
				}
				c.remove(key)
				s = nil
			default:
			}
		}
		if s != nil {
			// Someone is building it: wait for theirs rather than build another.
			c.mu.Unlock()
			select {
			case <-s.ready:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if s.err == nil {
				return s, nil
			}
			continue
		}
		s = &snap{key: key, ready: make(chan struct{})}
		c.m[key] = s
		c.touch(key)
		c.mu.Unlock()
		b.buildSnapshot(ctx, f, s)
		return s, s.err
	}
}

func (b *Broker) buildSnapshot(ctx context.Context, f api.Filter, s *snap) {
	c := &b.snaps
	defer close(s.ready)
	select {
	case c.build <- struct{}{}:
	case <-ctx.Done():
		s.err = ctx.Err()
		c.mu.Lock()
		if c.m[s.key] == s {
			c.remove(s.key)
		}
		c.mu.Unlock()
		return
	}
	b.builds.Add(1)
	// The store copies its pulls under its lock; sorting and encoding happen here.
	pulls, seq := b.store.SnapshotPulls(f, b.Seq)
	api.SortNewestFirst(pulls)
	if pulls == nil {
		pulls = []api.Pull{}
	}
	data, err := json.Marshal(api.PullList{SchemaVersion: api.SchemaVersion, Pulls: pulls})
	<-c.build
	if err != nil {
		s.err = fmt.Errorf("encode snapshot: %w", err)
	} else {
		s.seq, s.built = seq, time.Now()
		s.frame = fmt.Appendf(make([]byte, 0, len(data)+64), "id: %s-%d\nevent: snapshot\ndata: %s\n\n", b.cfg.Epoch, seq, data)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[s.key] != s {
		return
	}
	if s.err != nil {
		c.remove(s.key)
		return
	}
	c.bytes += len(s.frame)
	for len(c.order) > 0 && (len(c.m) > maxCachedSnapshots || c.bytes > b.cfg.SnapshotCacheBytes) {
		old := c.order[0]
		if old == s.key && len(c.order) == 1 {
			break
		}
		if old == s.key {
			c.touch(old)
			continue
		}
		c.remove(old)
	}
}
