// Package group holds the server's grouped view of pulls: by image and by owning workload,
// across nodes. It follows the store's lifecycle events, so a report costs a map update per
// changed pull, and it builds a group's summary only when asked for it or when the group
// changed, at a bounded rate for stream followers.
package group

import (
	"cmp"
	"slices"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// Summarize builds the group of pulls (all of one key) as q asks: the pulls q.Filter
// rejects are left out. ok is false when no pull is left.
func Summarize(key string, by api.GroupBy, pulls []*api.Pull, q *api.GroupQuery) (g api.Group, ok bool) {
	g = api.Group{Key: key, By: by, Images: []string{}, SlowestByPercent: []api.GroupNode{}, SlowestByRate: []api.GroupNode{},
		Failures: []api.GroupFailure{}}
	if by == api.GroupByWorkload {
		g.Workload = workloadOf(key, pulls)
	}
	nodes := map[string]struct{}{}
	failures := map[string]*api.GroupFailure{}
	var unfinished []*api.Pull
	var finished time.Time
	for _, p := range pulls {
		if !q.Filter.Match(p) {
			continue
		}
		nodes[p.NodeName] = struct{}{}
		if !slices.Contains(g.Images, p.ImageRef) {
			g.Images = append(g.Images, p.ImageRef)
		}
		g.Counts.Add(p.State, 1)
		g.DownloadedBytes += p.DownloadedBytes
		g.TotalBytes += max(p.TotalBytes, p.DownloadedBytes)
		if g.StartedAt.IsZero() || p.StartedAt.Before(g.StartedAt) {
			g.StartedAt = p.StartedAt
		}
		switch {
		case p.State.Finished():
			if p.CompletedAt != nil && p.CompletedAt.After(finished) {
				finished = *p.CompletedAt
			}
			if p.State == api.PullFailed {
				f := failures[p.Error]
				if f == nil {
					f = &api.GroupFailure{Reason: p.Error}
					failures[p.Error] = f
				}
				f.Count++
				f.Nodes = append(f.Nodes, p.NodeName)
			}
		default:
			unfinished = append(unfinished, p)
			if p.State == api.PullActive {
				g.BytesPerSec += p.BytesPerSec
				if p.ETASeconds != nil && (g.ETASeconds == nil || *p.ETASeconds > *g.ETASeconds) {
					eta := *p.ETASeconds
					g.ETASeconds = &eta
				}
			}
		}
	}
	if len(nodes) == 0 {
		return g, false
	}
	g.Nodes = len(nodes)
	slices.Sort(g.Images)
	g.Percent = percentOf(g)
	if len(unfinished) == 0 {
		if finished.IsZero() {
			finished = g.StartedAt
		}
		t := finished.UTC()
		g.FinishedAt = &t
	}
	g.SlowestByPercent = slowest(unfinished, q.Slowest, func(a, b *api.Pull) int {
		return cmp.Or(cmp.Compare(a.Percent, b.Percent), cmp.Compare(a.BytesPerSec, b.BytesPerSec), cmp.Compare(a.NodeName, b.NodeName))
	})
	g.SlowestByRate = slowest(unfinished, q.Slowest, func(a, b *api.Pull) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a.BytesPerSec, b.BytesPerSec), cmp.Compare(a.Percent, b.Percent),
			cmp.Compare(a.NodeName, b.NodeName))
	})
	for _, f := range failures {
		slices.Sort(f.Nodes)
		f.Nodes = f.Nodes[:min(len(f.Nodes), api.GroupFailureNodes)]
		g.Failures = append(g.Failures, *f)
	}
	slices.SortFunc(g.Failures, func(a, b api.GroupFailure) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Reason, b.Reason))
	})
	return g, true
}

// rank puts stuck pulls before moving ones in the by-rate list: a stalled node has no
// rate at all, a queued one has not begun.
func rank(p *api.Pull) int {
	switch p.State {
	case api.PullStalled:
		return 0
	case api.PullQueued:
		return 1
	}
	return 2
}

func percentOf(g api.Group) float64 {
	if g.Counts.Total() == g.Counts.Done() {
		return 100
	}
	return api.Percent(g.DownloadedBytes, g.TotalBytes, api.PullActive)
}

// slowest keeps the n first of pulls by less with a bounded insertion: O(len·n), no copy
// of a 15,000-pull group.
func slowest(pulls []*api.Pull, n int, less func(a, b *api.Pull) int) []api.GroupNode {
	top := make([]*api.Pull, 0, n)
	for _, p := range pulls {
		if len(top) == n && (n == 0 || less(p, top[n-1]) >= 0) {
			continue
		}
		i, _ := slices.BinarySearchFunc(top, p, less)
		if len(top) < n {
			top = append(top, nil)
		}
		copy(top[i+1:], top[i:])
		top[i] = p
	}
	out := make([]api.GroupNode, len(top))
	for i, p := range top {
		out[i] = api.GroupNode{NodeName: p.NodeName, PullID: p.ID, ImageRef: p.ImageRef, State: p.State, Percent: p.Percent,
			BytesPerSec: p.BytesPerSec, DownloadedBytes: p.DownloadedBytes, TotalBytes: p.TotalBytes, Pods: p.Pods}
		if p.ETASeconds != nil {
			eta := *p.ETASeconds
			out[i].ETASeconds = &eta
		}
		if out[i].Pods == nil {
			out[i].Pods = []api.PodRef{}
		}
	}
	return out
}

func workloadOf(key string, pulls []*api.Pull) *api.WorkloadRef {
	for _, p := range pulls {
		for _, pod := range p.Pods {
			if w, ok := pod.Workload(); ok && w.Key() == key {
				return &w
			}
		}
	}
	return nil
}
