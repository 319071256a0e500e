package aggregate

import (
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// fakeCorr attaches a fixed pod to pulls of one image and queues pods for another.
type fakeCorr struct {
	pods    map[string][]api.PodRef // imageRef -> pods
	queued  []api.Pull
	present []api.Pull
}

func (f *fakeCorr) Present(node string) []api.Pull {
	var out []api.Pull
	for _, p := range f.present {
		if node == "" || p.NodeName == node {
			out = append(out, p.Clone())
		}
	}
	return out
}

func (f *fakeCorr) Enrich(p *api.Pull) { p.Pods = append([]api.PodRef(nil), f.pods[p.ImageRef]...) }
func (f *fakeCorr) Queued(node string, held []api.Pull) []api.Pull {
	var out []api.Pull
	for _, q := range f.queued {
		if node != "" && q.NodeName != node {
			continue
		}
		served := false
		for _, h := range held {
			if h.ImageRef == q.ImageRef && h.NodeName == q.NodeName {
				served = true
			}
		}
		if !served {
			out = append(out, q)
		}
	}
	return out
}

type recorder struct{ evs []api.PullEvent }

func (r *recorder) sink(evs []api.PullEvent) { r.evs = append(r.evs, evs...) }
func (r *recorder) types() string {
	var s []string
	for _, e := range r.evs {
		s = append(s, string(e.Type)+":"+e.Pull.ID)
	}
	r.evs = nil
	return strings.Join(s, " ")
}

func active(id, ref string, got int64) api.Pull {
	p := benchPull("n1", 0, 1, api.PullActive, got)
	p.ID, p.ImageRef = id, ref
	p.Layers[0].TotalBytes = 100
	p.Summarize()
	return p
}

func rep(seq uint64, pulls ...api.Pull) *api.AgentReport {
	return &api.AgentReport{SchemaVersion: "v1", NodeName: "n1", AgentID: "a", Sequence: seq, Timestamp: time.Unix(1700000000+int64(seq), 0), Pulls: pulls}
}

func TestQueuedEntriesComeAndGo(t *testing.T) {
	corr := &fakeCorr{pods: map[string][]api.PodRef{"r/web:1": {{Namespace: "ns", PodName: "web", Container: "c"}}},
		queued: []api.Pull{{ID: "queued-web", NodeName: "n1", ImageRef: "r/web:1", State: api.PullQueued, Pods: []api.PodRef{{Namespace: "ns", PodName: "web", Container: "c"}}}}}
	r := &recorder{}
	s := New(Config{}, corr, r.sink)
	s.Recorrelate(nil, nil)
	if got := r.types(); got != "pull.queued:queued-web" {
		t.Fatalf("queued: %s", got)
	}
	s.Apply(rep(1, active("p1", "r/web:1", 10)))
	if got := r.types(); got != "pull.started:p1 layer.started:p1 pull.removed:queued-web" {
		t.Fatalf("real pull replaces the queued entry: %s", got)
	}
	if ps := s.Pulls(api.Filter{Pod: "web", Namespace: "ns"}); len(ps) != 1 || ps[0].ID != "p1" {
		t.Fatalf("pod filter: %+v", ps)
	}
	// The pod goes away: the pull is announced without it.
	corr.pods = nil
	s.Recorrelate(nil, nil)
	if got := r.types(); got != "pull.progress:p1" {
		t.Fatalf("pod change: %s", got)
	}
}

func TestCapsDropFinishedFirst(t *testing.T) {
	r := &recorder{}
	s := New(Config{MaxPerNode: 2}, nil, r.sink)
	done := benchPull("n1", 0, 1, api.PullCompleted, 1<<20)
	done.ID = "old-done"
	s.Apply(rep(1, done, active("a1", "r/x:1", 1), active("a2", "r/y:1", 1)))
	ids := map[string]bool{}
	for _, p := range s.Pulls(api.Filter{}) {
		ids[p.ID] = true
	}
	if ids["old-done"] || !ids["a1"] || !ids["a2"] {
		t.Fatalf("kept %v: finished history must go before active pulls", ids)
	}
	if !strings.Contains(r.types(), "pull.removed:old-done") {
		t.Fatal("drop not announced")
	}
}

// clock is a settable Now for the store.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// steady reports a pull growing by perSec every report interval on the agent's clock,
// which runs delay behind the server's (network and queueing), and returns its rate.
func TestRateFollowsTheWireAndDecays(t *testing.T) {
	start := time.Unix(1700000000, 0)
	c := &clock{t: start}
	r := &recorder{}
	s := New(Config{Now: c.now}, nil, r.sink)
	const total = 100 << 20
	var got int64
	seq := uint64(0)
	report := func(at time.Time, add int64) api.Pull {
		seq++
		got += add
		p := active("p", "r/x:1", 0)
		p.Layers[0].TotalBytes, p.Layers[0].DownloadedBytes = total, got
		p.UpdatedAt = at
		p.Summarize()
		// The agent's clock is 20 s behind the server's, and the report lands 300 ms after it was made.
		agentAt := at
		c.t = at.Add(20*time.Second + 300*time.Millisecond)
		s.Apply(&api.AgentReport{SchemaVersion: "v1", NodeName: "n1", AgentID: "a", Sequence: seq, Timestamp: agentAt, Pulls: []api.Pull{p}})
		return s.Pulls(api.Filter{})[0]
	}
	agent := start.Add(-20 * time.Second)
	report(agent, 0)
	// 3 MB/s, reported every 2 s: after one interval the rate is exact, not an EWMA's 30%.
	var p api.Pull
	for i := 1; i <= 3; i++ {
		p = report(agent.Add(time.Duration(i)*2*time.Second), 6_000_000)
		if p.BytesPerSec < 2_700_000 || p.BytesPerSec > 3_300_000 {
			t.Fatalf("report %d: rate %v, want 3e6 within 10%%", i, p.BytesPerSec)
		}
	}
	if p.ETASeconds == nil || *p.ETASeconds < (total-18e6)/3e6*0.9 || *p.ETASeconds > (total-18e6)/3e6*1.1 {
		t.Fatalf("eta %v", p.ETASeconds)
	}
	// The rate drops to 1 MB/s: one window later it reads 1 MB/s.
	for i := 4; i <= 6; i++ {
		p = report(agent.Add(time.Duration(i)*2*time.Second), 2_000_000)
	}
	if p.BytesPerSec < 900_000 || p.BytesPerSec > 1_100_000 {
		t.Fatalf("after the change: rate %v, want 1e6", p.BytesPerSec)
	}
	// No bytes and no reports (an unchanged agent only sends heartbeats): the server's
	// ticks bring the rate to 0 and the ETA goes absent, announced as progress.
	last := c.t
	r.types()
	for i := 1; i <= 8; i++ {
		c.t = last.Add(time.Duration(i) * time.Second)
		s.Tick()
	}
	p = s.Pulls(api.Filter{})[0]
	if p.BytesPerSec != 0 || p.ETASeconds != nil {
		t.Fatalf("8 s without bytes: rate %v eta %v, want 0 and absent", p.BytesPerSec, p.ETASeconds)
	}
	if ev := r.evs; len(ev) == 0 || ev[len(ev)-1].Type != api.EventPullProgress || ev[len(ev)-1].Pull.ETASeconds != nil {
		t.Fatalf("decay not announced: %s", r.types())
	}
	stalled := active("p", "r/x:1", got)
	stalled.State = api.PullStalled
	seq++
	s.Apply(&api.AgentReport{SchemaVersion: "v1", NodeName: "n1", AgentID: "a", Sequence: seq, Timestamp: agent.Add(20 * time.Second), Pulls: []api.Pull{stalled}})
	if p := s.Pulls(api.Filter{})[0]; p.BytesPerSec != 0 || p.ETASeconds != nil {
		t.Fatalf("a stalled pull has no rate: %v %v", p.BytesPerSec, p.ETASeconds)
	}
}

// Every state change is one event that names it; changes within a state are progress.
func TestTransitionEvents(t *testing.T) {
	r := &recorder{}
	s := New(Config{}, nil, r.sink)
	p := active("p", "r/x:1", 10)
	s.Apply(rep(1, p.Clone()))
	p.Layers[0].DownloadedBytes = 20
	p.Summarize()
	s.Apply(rep(2, p.Clone()))
	p.State = api.PullStalled
	s.Apply(rep(3, p.Clone()))
	p.State = api.PullActive
	p.Layers[0].DownloadedBytes = 30
	p.Summarize()
	s.Apply(rep(4, p.Clone()))
	p.State, p.Layers[0].State = api.PullCompleted, api.LayerDone
	p.Summarize()
	s.Apply(rep(5, p.Clone()))
	c := benchPull("n1", 1, 1, api.PullCached, 0)
	c.ID = "c"
	s.Apply(rep(6, p.Clone(), c))
	want := "pull.started:p layer.started:p layer.progress:p pull.progress:p pull.stalled:p layer.progress:p pull.resumed:p layer.completed:p pull.completed:p pull.cached:c"
	if got := r.types(); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
}

// A queued entry the kubelet fails (unknown tag) is queued once and failed once, however
// often its pod's message alternates between ErrImagePull and ImagePullBackOff; the failure
// keeps its first completedAt.
func TestBackOffIsOneFailure(t *testing.T) {
	c := &clock{t: time.Unix(1700000000, 0)}
	pod := []api.PodRef{{Namespace: "ns", PodName: "typo", Container: "c"}}
	q := api.Pull{ID: "queued-typo", NodeName: "n1", ImageRef: "r/x:nope", State: api.PullQueued, Pods: pod}
	corr := &fakeCorr{queued: []api.Pull{q}}
	r := &recorder{}
	s := New(Config{Now: c.now}, corr, r.sink)
	s.Recorrelate(nil, nil)
	failed := q
	failed.State, failed.Error, failed.BackOff = api.PullFailed, "rpc error: not found", true
	var first *time.Time
	for i := range 6 {
		c.t = c.t.Add(10 * time.Second)
		corr.queued = []api.Pull{failed}
		if i%2 == 1 {
			corr.queued = []api.Pull{q} // the pod's status between two attempts
		}
		s.Recorrelate(nil, nil)
		got := s.Pulls(api.Filter{})[0]
		if got.State != api.PullFailed || got.Error != "rpc error: not found" || got.CompletedAt == nil {
			t.Fatalf("round %d: %+v", i, got)
		}
		if first == nil {
			first = got.CompletedAt
		} else if !got.CompletedAt.Equal(*first) {
			t.Fatalf("completedAt moved: %v then %v", *first, *got.CompletedAt)
		}
	}
	if got := r.types(); got != "pull.queued:queued-typo pull.failed:queued-typo" {
		t.Fatalf("events: %s", got)
	}
}

// A container started from an image already on the node is one cached pull for its pod.
func TestAlreadyPresentIsCached(t *testing.T) {
	at := time.Unix(1700000000, 0).UTC()
	corr := &fakeCorr{present: []api.Pull{{ID: "present-1", NodeName: "n1", ImageRef: "r:5000/x:1", State: api.PullCached,
		StartedAt: at, CompletedAt: &at, Pods: []api.PodRef{{Namespace: "ns", PodName: "web", Container: "c"}}}}}
	r := &recorder{}
	s := New(Config{}, corr, r.sink)
	s.Recorrelate(nil, nil)
	s.Recorrelate(nil, nil)
	s.Apply(rep(1))
	if got := r.types(); got != "pull.cached:present-1" {
		t.Fatalf("events: %s", got)
	}
	ps := s.Pulls(api.Filter{Namespace: "ns", Pod: "web"})
	if len(ps) != 1 || ps[0].State != api.PullCached || ps[0].Percent != 100 || ps[0].Repository != "r:5000/x" {
		t.Fatalf("pulls: %+v", ps)
	}
}

func TestNodeFreshness(t *testing.T) {
	c := &clock{t: time.Unix(1700000000, 0)}
	s := New(Config{Now: c.now, AgentTimeout: 30 * time.Second}, nil, nil)
	s.Apply(rep(1))
	if ns := s.Nodes(); len(ns) != 1 || ns[0].Stale || ns[0].Refused || ns[0].LastReportAt == nil {
		t.Fatalf("fresh: %+v", ns)
	}
	c.t = c.t.Add(10 * time.Second)
	s.Refused("n1", "invalid report: pull 0: bad digest")
	if ns := s.Nodes(); !ns[0].Refused || ns[0].RefusedReason == "" || ns[0].Stale {
		t.Fatalf("refused: %+v", ns)
	}
	c.t = c.t.Add(25 * time.Second)
	if ns := s.Nodes(); !ns[0].Stale || !ns[0].Refused {
		t.Fatalf("stale: %+v", ns)
	}
	s.Apply(rep(2))
	if ns := s.Nodes(); ns[0].Stale || ns[0].Refused {
		t.Fatalf("recovered: %+v", ns)
	}
}

// A completed pull keeps the pods it served after they are deleted.
func TestFinishedPullKeepsItsPods(t *testing.T) {
	corr := &fakeCorr{pods: map[string][]api.PodRef{"r/web:1": {{Namespace: "ns", PodName: "web", Container: "c"}}}}
	s := New(Config{}, corr, nil)
	s.Apply(rep(1, active("p1", "r/web:1", 10)))
	done := active("p1", "r/web:1", 100)
	done.State = api.PullCompleted
	done.Layers[0].State = api.LayerDone
	s.Apply(rep(2, done))
	corr.pods = nil // the rollout moved on and deleted the pod
	s.Recorrelate(nil, nil)
	if p := s.Pulls(api.Filter{})[0]; len(p.Pods) != 1 || p.Pods[0].PodName != "web" {
		t.Fatalf("completed pull lost its pods: %+v", p.Pods)
	}
}
