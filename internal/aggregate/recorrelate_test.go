package aggregate

import (
	"testing"

	"github.com/d44b/pulltrace/pkg/api"
)

func nodeReport(node string, seq uint64, pulls ...api.Pull) *api.AgentReport {
	r := rep(seq, pulls...)
	r.NodeName, r.AgentID = node, "a-"+node
	for i := range r.Pulls {
		r.Pulls[i].NodeName = node
	}
	return r
}

// A change on one node re-correlates that node's pulls, and of those only the ones the
// change concerns.
func TestRecorrelateOnlyWhatChanged(t *testing.T) {
	corr := &fakeCorr{pods: map[string][]api.PodRef{}}
	r := &recorder{}
	s := New(Config{}, corr, r.sink)
	s.Apply(nodeReport("n1", 1, active("a", "r/web:1", 10), active("b", "r/db:1", 10)))
	s.Apply(nodeReport("n2", 1, active("c", "r/web:1", 10)))
	r.types()
	corr.pods["r/web:1"] = []api.PodRef{{Namespace: "ns", PodName: "web", Container: "c"}}
	corr.pods["r/db:1"] = []api.PodRef{{Namespace: "ns", PodName: "db", Container: "c"}}

	s.Recorrelate([]string{"n1"}, func(p *api.Pull) bool { return p.ImageRef == "r/web:1" })
	if got := r.types(); got != "pull.progress:a" {
		t.Fatalf("scoped to n1 and r/web: %q, want only pull a", got)
	}
	s.Recorrelate([]string{"n1"}, nil)
	if got := r.types(); got != "pull.progress:b" {
		t.Fatalf("all of n1: %q, want pull b (a is current already)", got)
	}
	s.Recorrelate(nil, nil)
	if got := r.types(); got != "pull.progress:c" {
		t.Fatalf("everything: %q, want pull c", got)
	}
}

// intakeDuringEnrich is a correlator whose Enrich, once armed, checks that the store's
// lock is free and applies a report itself, as intake would in the middle of a
// re-correlation.
type intakeDuringEnrich struct {
	fakeCorr
	t      *testing.T
	s      *Store
	report *api.AgentReport
}

func (c *intakeDuringEnrich) Enrich(p *api.Pull) {
	c.fakeCorr.Enrich(p)
	r := c.report
	if r == nil {
		return
	}
	c.report = nil
	if !c.s.mu.TryLock() {
		c.t.Error("Enrich runs under the store's lock: intake would wait for it")
		return
	}
	c.s.mu.Unlock()
	c.s.Apply(r)
}

func TestRecorrelateLeavesIntakeAlone(t *testing.T) {
	corr := &intakeDuringEnrich{fakeCorr: fakeCorr{pods: map[string][]api.PodRef{}}, t: t}
	rec := &recorder{}
	s := New(Config{}, corr, rec.sink)
	corr.s = s
	s.Apply(nodeReport("n1", 1, active("a", "r/web:1", 10)))
	corr.pods["r/web:1"] = []api.PodRef{{Namespace: "ns", PodName: "web", Container: "c"}}
	corr.report = nodeReport("n1", 2, active("a", "r/web:1", 60))
	rec.types()

	s.Recorrelate(nil, nil)
	// Intake's progress, with the pods it enriched; the re-correlation computed from the
	// older copy adds nothing and takes nothing back.
	if got := rec.types(); got != "layer.progress:a pull.progress:a" {
		t.Fatalf("events %q", got)
	}
	p := s.Pulls(api.Filter{})[0]
	if p.DownloadedBytes != 60 || len(p.Pods) != 1 {
		t.Fatalf("pull after both: %d bytes, pods %v; want intake's 60 and the pod", p.DownloadedBytes, p.Pods)
	}
}
