package aggregate

import (
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// A server that starts while pulls run has not seen their bytes move: counting what they had
// downloaded before would put minutes of traffic into one scrape interval of rate().
func TestBytesCountOnlyWhatMovedWhileListening(t *testing.T) {
	now := time.Unix(1700000000, 0)
	s := New(Config{Now: func() time.Time { return now }}, nil, nil)
	s.Apply(rep(1, active("old", "r/x:1", 60)))
	if b := s.TakeStats().BytesAdded["n1"]; b != 0 {
		t.Errorf("bytes of a pull downloaded before the server listened: %d", b)
	}
	s.Apply(rep(2, active("old", "r/x:1", 70), active("new", "r/y:1", 5)))
	if b := s.TakeStats().BytesAdded["n1"]; b != 15 {
		t.Errorf("bytes added %d, want 10 more of the old pull and 5 of the new one", b)
	}
}

func TestNodeStats(t *testing.T) {
	now := time.Unix(1700000100, 0)
	s := New(Config{Now: func() time.Time { return now }, RateWindow: time.Second}, nil, nil)
	started := now.Add(-90 * time.Second)
	run := active("run", "r/x:1", 10)
	run.StartedAt, run.UpdatedAt = started, now
	stuck := active("stuck", "r/y:1", 50)
	stuck.State, stuck.StartedAt, stuck.UpdatedAt = api.PullStalled, now.Add(-30*time.Second), now.Add(-20*time.Second)
	r1 := rep(1, run, stuck)
	r1.Timestamp = now
	s.Apply(r1)
	// Ten more bytes each second for a few seconds: a rate, so an ETA.
	for seq := uint64(2); seq <= 6; seq++ {
		now = now.Add(time.Second)
		run.DownloadedBytes += 10
		run.Summarize()
		r := rep(seq, run, stuck)
		r.Timestamp = now
		s.Apply(r)
	}

	st := s.TakeStats()
	ns, ok := st.Nodes["n1"]
	if !ok {
		t.Fatalf("no stats for n1: %+v", st.Nodes)
	}
	if ns.Active != 2 || ns.Stalled != 1 || st.Active != 2 {
		t.Errorf("active %d stalled %d (total %d)", ns.Active, ns.Stalled, st.Active)
	}
	if ns.LongestStall != 25*time.Second || ns.LongestActive != 95*time.Second || !ns.LastReport.Equal(now) {
		t.Errorf("longest stall %v, longest active %v, last report %v", ns.LongestStall, ns.LongestActive, ns.LastReport)
	}
}
