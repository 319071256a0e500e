package api

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// GroupBy is how pulls are grouped across nodes.
type GroupBy string

const (
	// GroupByImage groups the pulls of one image reference.
	GroupByImage GroupBy = "image"
	// GroupByWorkload groups the pulls whose pods belong to one workload (a pull serving
	// pods of two workloads is in both groups).
	GroupByWorkload GroupBy = "workload"
)

// GroupBys lists every grouping.
var GroupBys = []GroupBy{GroupByImage, GroupByWorkload}

// Valid reports whether g is one of GroupBys.
func (g GroupBy) Valid() bool { return slices.Contains(GroupBys, g) }

// ParseGroupBy reads a grouping; empty is by image.
func ParseGroupBy(s string) (GroupBy, error) {
	if s == "" {
		return GroupByImage, nil
	}
	if g := GroupBy(s); g.Valid() {
		return g, nil
	}
	return "", fieldErr("by", "unknown grouping %q: want one of %s", s, joinStates(GroupBys, ", "))
}

// WorkloadRef names a workload: the owner of the pods a group's pulls serve.
type WorkloadRef struct {
	Namespace string `json:"namespace"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
}

// Key is the workload's group key, "namespace/Kind/name".
func (w WorkloadRef) Key() string { return w.Namespace + "/" + w.Kind + "/" + w.Name }

// Workload is the workload a pod belongs to; ok is false for a pod without a controller.
func (r PodRef) Workload() (w WorkloadRef, ok bool) {
	if r.OwnerKind == "" || r.OwnerName == "" {
		return WorkloadRef{}, false
	}
	return WorkloadRef{Namespace: r.Namespace, Kind: r.OwnerKind, Name: r.OwnerName}, true
}

// GroupKeys are the keys of the groups p belongs to: its image reference by image, the
// distinct workloads of its pods by workload (none for a pull that serves no owned pod).
func (p *Pull) GroupKeys(by GroupBy) []string {
	if by == GroupByImage {
		if p.ImageRef == "" {
			return nil
		}
		return []string{p.ImageRef}
	}
	var keys []string
	for _, pod := range p.Pods {
		if w, ok := pod.Workload(); ok && !slices.Contains(keys, w.Key()) {
			keys = append(keys, w.Key())
		}
	}
	return keys
}

// GroupCounts counts a group's pulls (one per node and image) by state.
type GroupCounts struct {
	Active    int `json:"active"`
	Queued    int `json:"queued"`
	Stalled   int `json:"stalled"`
	Failed    int `json:"failed"`
	Completed int `json:"completed"`
	Cached    int `json:"cached"`
}

// Add counts one pull in state s (n = -1 takes it back out).
func (c *GroupCounts) Add(s PullState, n int) {
	switch s {
	case PullActive:
		c.Active += n
	case PullQueued:
		c.Queued += n
	case PullStalled:
		c.Stalled += n
	case PullFailed:
		c.Failed += n
	case PullCompleted:
		c.Completed += n
	case PullCached:
		c.Cached += n
	}
}

// Total is every pull counted.
func (c GroupCounts) Total() int {
	return c.Active + c.Queued + c.Stalled + c.Failed + c.Completed + c.Cached
}

// Done is the pulls that have the image: completed or cached.
func (c GroupCounts) Done() int { return c.Completed + c.Cached }

// GroupNode is one node's pull within a group, as the slowest lists show it.
type GroupNode struct {
	NodeName        string    `json:"nodeName"`
	PullID          string    `json:"pullId"`
	ImageRef        string    `json:"imageRef"`
	State           PullState `json:"state"`
	Percent         float64   `json:"percent"`
	BytesPerSec     float64   `json:"bytesPerSec"`
	DownloadedBytes int64     `json:"downloadedBytes"`
	TotalBytes      int64     `json:"totalBytes"`
	ETASeconds      *float64  `json:"etaSeconds,omitempty"`
	Pods            []PodRef  `json:"pods"`
}

// GroupFailure is the failed pulls of a group that share one error text (the kubelet's,
// when the correlator knows it).
type GroupFailure struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
	// Nodes lists some of the failed nodes (at most GroupFailureNodes), sorted.
	Nodes []string `json:"nodes"`
}

// GroupFailureNodes caps GroupFailure.Nodes.
const GroupFailureNodes = 10

// Group is the pulls of one image, or of one workload, across nodes.
type Group struct {
	// Key is the image reference (by image) or WorkloadRef.Key (by workload).
	Key      string       `json:"key"`
	By       GroupBy      `json:"by"`
	Workload *WorkloadRef `json:"workload,omitempty"`
	// Images lists the group's distinct image references, sorted.
	Images []string `json:"images"`
	// Nodes is how many distinct nodes the group's pulls are on.
	Nodes           int         `json:"nodes"`
	Counts          GroupCounts `json:"counts"`
	DownloadedBytes int64       `json:"downloadedBytes"`
	TotalBytes      int64       `json:"totalBytes"`
	// BytesPerSec is the sum of the moving pulls' rates.
	BytesPerSec float64 `json:"bytesPerSec"`
	Percent     float64 `json:"percent"`
	// ETASeconds is the longest ETA of the active pulls: the group is done when its slowest
	// node is. Absent when no active pull has a rate, or nothing is active.
	ETASeconds *float64 `json:"etaSeconds,omitempty"`
	// SlowestByPercent and SlowestByRate list unfinished pulls, least done and slowest first.
	SlowestByPercent []GroupNode    `json:"slowestByPercent"`
	SlowestByRate    []GroupNode    `json:"slowestByRate"`
	Failures         []GroupFailure `json:"failures"`
	StartedAt        time.Time      `json:"startedAt"`
	// FinishedAt is set once every pull of the group has finished: the latest finish.
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
}

// Finished reports whether every pull of the group has finished.
func (g *Group) Finished() bool { return g.FinishedAt != nil }

// GroupList is the body of GET /api/v1/groups and the data of the group stream's
// `snapshot` event.
type GroupList struct {
	SchemaVersion string  `json:"schemaVersion"`
	By            GroupBy `json:"by"`
	Groups        []Group `json:"groups"`
}

// GroupEventType names a group event.
type GroupEventType string

const (
	// EventGroupUpdated carries a group's new summary.
	EventGroupUpdated GroupEventType = "group.updated"
	// EventGroupRemoved says the group has no pulls (left) any more; its last summary rides
	// along.
	EventGroupRemoved GroupEventType = "group.removed"
)

// GroupEventTypes lists every group event type.
var GroupEventTypes = []GroupEventType{EventGroupUpdated, EventGroupRemoved}

// GroupEvent is one data message of GET /api/v1/groups/events: a group's summary, sent at
// most once per group per interval however many of its pulls changed.
type GroupEvent struct {
	SchemaVersion string         `json:"schemaVersion"`
	Timestamp     time.Time      `json:"timestamp"`
	Type          GroupEventType `json:"type"`
	Group         Group          `json:"group"`
}

// GroupQuery selects groups: a grouping, optionally one group by key, a filter on the
// pulls counted, and how many slowest nodes to list. Its query form is what
// GET /api/v1/groups and /api/v1/groups/events read: by, key, slowest and the filter keys.
type GroupQuery struct {
	By      GroupBy
	Key     string
	Slowest int
	Filter  Filter
}

// DefaultSlowest and MaxSlowest bound GroupQuery.Slowest.
const (
	DefaultSlowest = 10
	MaxSlowest     = 1000
)

// Query encodes the query; defaults are left out.
func (q *GroupQuery) Query() url.Values {
	v := q.Filter.Query()
	if q.By != "" && q.By != GroupByImage {
		v.Set("by", string(q.By))
	}
	if q.Key != "" {
		v.Set("key", q.Key)
	}
	if q.Slowest != 0 && q.Slowest != DefaultSlowest {
		v.Set("slowest", strconv.Itoa(q.Slowest))
	}
	return v
}

// ParseGroupQuery reads a group query, with errors that say what is wrong.
func ParseGroupQuery(v url.Values) (GroupQuery, error) {
	f, err := ParseFilter(v)
	if err != nil {
		return GroupQuery{}, err
	}
	by, err := ParseGroupBy(v.Get("by"))
	if err != nil {
		return GroupQuery{}, err
	}
	q := GroupQuery{By: by, Key: v.Get("key"), Slowest: DefaultSlowest, Filter: f}
	if s := strings.TrimSpace(v.Get("slowest")); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > MaxSlowest {
			return GroupQuery{}, fieldErr("slowest", "slowest %q: want a number from 0 to %d", s, MaxSlowest)
		}
		q.Slowest = n
	}
	return q, nil
}
