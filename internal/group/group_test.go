package group

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

func pull(id, node string, state api.PullState, got, total int64, rate float64, eta *float64) api.Pull {
	p := api.Pull{ID: id, NodeName: node, ImageRef: "docker.io/library/nginx:1.27", State: state, DownloadedBytes: got,
		TotalBytes: total, TotalKnown: true, BytesPerSec: rate, ETASeconds: eta, StartedAt: t0,
		Pods: []api.PodRef{{Namespace: "web", PodName: "ds-" + node, Container: "nginx", OwnerKind: "DaemonSet", OwnerName: "ds"}}}
	p.Percent = api.Percent(got, total, state)
	if state.Finished() {
		done := t0.Add(time.Duration(len(id)) * time.Second)
		p.CompletedAt = &done
	}
	return p
}

// fixture: six nodes, one per state, plus a second failure with the same reason.
func fixture() []api.Pull {
	ps := []api.Pull{
		pull("a", "n1", api.PullActive, 50, 100, 10, ptr(5.0)),
		pull("b", "n2", api.PullActive, 20, 100, 40, ptr(2.0)),
		pull("c", "n3", api.PullStalled, 70, 100, 0, nil),
		pull("d", "n4", api.PullQueued, 0, 0, 0, nil),
		pull("e", "n5", api.PullCompleted, 100, 100, 0, nil),
		pull("f", "n6", api.PullCached, 0, 0, 0, nil),
		pull("g", "n7", api.PullFailed, 30, 100, 0, nil),
		pull("h", "n8", api.PullFailed, 10, 100, 0, nil),
	}
	ps[6].Error = `rpc error: code = NotFound desc = failed to pull and unpack image "docker.io/library/nginx:1.27": not found`
	ps[7].Error = ps[6].Error
	ps[3].StartedAt = t0.Add(-time.Minute)
	return ps
}

func ptrs(ps []api.Pull) []*api.Pull {
	out := make([]*api.Pull, len(ps))
	for i := range ps {
		out[i] = &ps[i]
	}
	return out
}

func TestSummarizeFixedInputs(t *testing.T) {
	q := api.GroupQuery{By: api.GroupByImage, Slowest: 3}
	g, ok := Summarize("docker.io/library/nginx:1.27", api.GroupByImage, ptrs(fixture()), &q)
	if !ok {
		t.Fatal("no group")
	}
	want := api.GroupCounts{Active: 2, Queued: 1, Stalled: 1, Failed: 2, Completed: 1, Cached: 1}
	if g.Counts != want {
		t.Errorf("counts %+v, want %+v", g.Counts, want)
	}
	if g.Nodes != 8 || g.Counts.Total() != 8 || g.Counts.Done() != 2 {
		t.Errorf("nodes %d total %d done %d", g.Nodes, g.Counts.Total(), g.Counts.Done())
	}
	if g.DownloadedBytes != 50+20+70+100+30+10 || g.TotalBytes != 600 {
		t.Errorf("bytes %d of %d", g.DownloadedBytes, g.TotalBytes)
	}
	if g.BytesPerSec != 50 {
		t.Errorf("throughput %v, want 50 (active nodes only)", g.BytesPerSec)
	}
	if g.ETASeconds == nil || *g.ETASeconds != 5 {
		t.Errorf("eta %v, want 5 (the slowest active node)", g.ETASeconds)
	}
	if g.Percent != 46.66 {
		t.Errorf("percent %v", g.Percent)
	}
	nodes := func(ns []api.GroupNode) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.NodeName)
		}
		return out
	}
	if got := nodes(g.SlowestByPercent); !slices.Equal(got, []string{"n4", "n2", "n1"}) {
		t.Errorf("slowest by percent %v", got)
	}
	if got := nodes(g.SlowestByRate); !slices.Equal(got, []string{"n3", "n4", "n1"}) {
		t.Errorf("slowest by rate %v", got)
	}
	if len(g.Failures) != 1 || g.Failures[0].Count != 2 || !slices.Equal(g.Failures[0].Nodes, []string{"n7", "n8"}) ||
		!strings.Contains(g.Failures[0].Reason, "not found") {
		t.Errorf("failures %+v", g.Failures)
	}
	if !g.StartedAt.Equal(t0.Add(-time.Minute)) || g.FinishedAt != nil {
		t.Errorf("started %v finished %v", g.StartedAt, g.FinishedAt)
	}
}

func TestSummarizeFinishedAndFiltered(t *testing.T) {
	ps := []api.Pull{pull("a", "n1", api.PullCompleted, 100, 100, 0, nil), pull("bbb", "n2", api.PullFailed, 3, 100, 0, nil)}
	ps[1].Error = "boom"
	q := api.GroupQuery{By: api.GroupByWorkload, Slowest: 10}
	g, ok := Summarize("web/DaemonSet/ds", api.GroupByWorkload, ptrs(ps), &q)
	if !ok || g.FinishedAt == nil || !g.FinishedAt.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("finished %v", g.FinishedAt)
	}
	if g.Workload == nil || g.Workload.Name != "ds" || g.Workload.Kind != "DaemonSet" || g.ETASeconds != nil {
		t.Errorf("workload %+v eta %v", g.Workload, g.ETASeconds)
	}
	q.Filter = api.Filter{Node: "n2"}
	g, _ = Summarize("web/DaemonSet/ds", api.GroupByWorkload, ptrs(ps), &q)
	if g.Nodes != 1 || g.Counts.Failed != 1 || g.Counts.Completed != 0 {
		t.Errorf("filtered %+v", g.Counts)
	}
	q.Filter = api.Filter{Node: "nowhere"}
	if _, ok := Summarize("web/DaemonSet/ds", api.GroupByWorkload, ptrs(ps), &q); ok {
		t.Error("a filter that rejects every pull leaves a group")
	}
}

func events(typ api.EventType, ps ...api.Pull) []api.PullEvent {
	var out []api.PullEvent
	for _, p := range ps {
		out = append(out, api.PullEvent{SchemaVersion: api.SchemaVersion, Type: typ, NodeName: p.NodeName, Pull: p})
	}
	return out
}

// Incremental filing: a pull that changes image moves between groups, a removed pull
// leaves, and an empty group goes.
func TestIndexIncremental(t *testing.T) {
	ix := New(Config{})
	ix.Observe(events(api.EventPullStarted, fixture()...))
	gs := ix.List(api.GroupQuery{By: api.GroupByImage, Slowest: 10})
	if len(gs) != 1 || gs[0].Counts.Total() != 8 {
		t.Fatalf("by image %+v", gs)
	}
	ws := ix.List(api.GroupQuery{By: api.GroupByWorkload, Slowest: 10})
	if len(ws) != 1 || ws[0].Key != "web/DaemonSet/ds" || ws[0].Nodes != 8 {
		t.Fatalf("by workload %+v", ws)
	}
	moved := fixture()[0]
	moved.ImageRef = "docker.io/library/redis:7"
	moved.Pods = nil
	ix.Observe(events(api.EventPullProgress, moved))
	gs = ix.List(api.GroupQuery{By: api.GroupByImage, Slowest: 10})
	if len(gs) != 2 || gs[0].Counts.Total() != 7 || gs[1].Key != "docker.io/library/redis:7" {
		t.Fatalf("after move %+v", gs)
	}
	if ws := ix.List(api.GroupQuery{By: api.GroupByWorkload, Slowest: 10}); ws[0].Nodes != 7 {
		t.Errorf("workload kept a pull that lost its pods: %d", ws[0].Nodes)
	}
	ix.Observe(events(api.EventPullRemoved, moved))
	if gs := ix.List(api.GroupQuery{By: api.GroupByImage, Key: "docker.io/library/redis:7", Slowest: 10}); len(gs) != 0 {
		t.Errorf("empty group kept: %+v", gs)
	}
}

// A follower gets one summary per group per flush, however many pull events arrived, and
// a removal when the group empties.
func TestStreamCoalesces(t *testing.T) {
	ix := New(Config{Interval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := api.ParseGroupQuery(r.URL.Query())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ix.Serve(w, r, q, StreamConfig{})
	}))
	defer srv.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"?by=workload&key=web/DaemonSet/ds", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	next := func() (event string, data []byte) {
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = []byte(strings.TrimPrefix(line, "data: "))
			case line == "" && data != nil:
				return event, data
			}
		}
		t.Fatalf("stream ended: %v", sc.Err())
		return
	}
	ev, data := next()
	var snap api.GroupList
	if err := json.Unmarshal(data, &snap); ev != "snapshot" || err != nil || len(snap.Groups) != 0 {
		t.Fatalf("first message %q %s %v", ev, data, err)
	}
	for ix.Followers() == 0 {
		time.Sleep(time.Millisecond)
	}
	for i := range 50 {
		p := fixture()[0]
		p.DownloadedBytes = int64(i)
		ix.Observe(events(api.EventPullProgress, p))
	}
	other := fixture()[1]
	other.Pods[0].OwnerName = "other"
	ix.Observe(events(api.EventPullStarted, other))
	ix.Flush()
	_, data = next()
	var ge api.GroupEvent
	if err := json.Unmarshal(data, &ge); err != nil || ge.Type != api.EventGroupUpdated || ge.Group.Key != "web/DaemonSet/ds" ||
		ge.Group.DownloadedBytes != 49 {
		t.Fatalf("event %s %v", data, err)
	}
	ix.Observe(events(api.EventPullRemoved, fixture()[0]))
	ix.Flush()
	_, data = next()
	if err := json.Unmarshal(data, &ge); err != nil || ge.Type != api.EventGroupRemoved {
		t.Fatalf("want removal, got %s %v", data, err)
	}
}
