package aggregate

import (
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// fakeCorr attaches a fixed pod to pulls of one image and queues pods for another.
type fakeCorr struct {
	pods   map[string][]api.PodRef // imageRef -> pods
	queued []api.Pull
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
	if got := r.types(); got != "pull.started:queued-web" {
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

func TestRateAndETA(t *testing.T) {
	// The reports' own clock drives rates: trust it however far it is from ours.
	s := New(Config{RateWindow: time.Second, MaxSkew: 1 << 62}, nil, nil)
	for i := range 10 {
		s.Apply(rep(uint64(i+1), active("p", "r/x:1", int64(i*10))))
	}
	p := s.Pulls(api.Filter{})[0]
	// 10 bytes per one-second report: the EWMA settles near 10 B/s.
	if p.BytesPerSec < 8 || p.BytesPerSec > 10 || p.ETASeconds == nil || *p.ETASeconds < 1 || *p.ETASeconds > 2 {
		t.Fatalf("rate %v eta %v", p.BytesPerSec, p.ETASeconds)
	}
	stalled := active("p", "r/x:1", 90)
	stalled.State = api.PullStalled
	s.Apply(rep(11, stalled))
	if p := s.Pulls(api.Filter{})[0]; p.BytesPerSec != 0 || p.ETASeconds != nil {
		t.Fatalf("a stalled pull has no rate: %v %v", p.BytesPerSec, p.ETASeconds)
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
