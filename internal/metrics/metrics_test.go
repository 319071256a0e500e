package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/pkg/api"
)

func TestSeriesExistFromTheStart(t *testing.T) {
	m := NewServer("test")
	for _, r := range ReportResults {
		if v := testutil.ToFloat64(m.reports.WithLabelValues(r)); v != 0 {
			t.Errorf("reports{result=%s} = %v", r, v)
		}
	}
	if n := testutil.CollectAndCount(m.reports); n != len(ReportResults) {
		t.Errorf("%d report series at start, want %d", n, len(ReportResults))
	}
	// A node's counters start at 0 when it is first seen, so the first failure is an increase.
	m.Observe(aggregate.Stats{Nodes: map[string]aggregate.NodeStats{"n1": {LastReport: time.Unix(1700000000, 0)}}}, 0, 0)
	if n := testutil.CollectAndCount(m.pullsTotal); n != 3 {
		t.Errorf("%d pulls_total series for a new node, want one per final state", n)
	}
	for name, c := range map[string]int{"errors": testutil.CollectAndCount(m.pullErrors), "bytes": testutil.CollectAndCount(m.pullBytes)} {
		if c != 1 {
			t.Errorf("%s: %d series for a new node", name, c)
		}
	}
	if v := testutil.ToFloat64(m.lastReport.WithLabelValues("n1")); v != 1700000000 {
		t.Errorf("last report %v", v)
	}
}

func TestNodeGaugesAndExpiry(t *testing.T) {
	m := NewServer("test")
	m.Observe(aggregate.Stats{Nodes: map[string]aggregate.NodeStats{
		"n1": {Active: 3, Stalled: 1, LongestStall: 400 * time.Second, LongestETA: 45 * time.Minute, LongestActive: time.Hour, LastReport: time.Unix(1700000000, 0)},
		"n2": {LastReport: time.Unix(1700000001, 0)},
	}, Completed: []aggregate.Finished{{Node: "n1", State: api.PullFailed}, {Node: "n1", State: api.PullCompleted, Duration: 50 * time.Minute}},
		BytesAdded: map[string]int64{"n1": 1 << 30}}, 0, 0)
	for name, tc := range map[string]struct{ got, want float64 }{
		"active":         {testutil.ToFloat64(m.pullsActive.WithLabelValues("n1")), 3},
		"stalled":        {testutil.ToFloat64(m.pullsStalled.WithLabelValues("n1")), 1},
		"longest stall":  {testutil.ToFloat64(m.longestStall.WithLabelValues("n1")), 400},
		"longest eta":    {testutil.ToFloat64(m.longestETA.WithLabelValues("n1")), 2700},
		"longest active": {testutil.ToFloat64(m.longestActive.WithLabelValues("n1")), 3600},
		"errors":         {testutil.ToFloat64(m.pullErrors.WithLabelValues("n1")), 1},
		"bytes":          {testutil.ToFloat64(m.pullBytes.WithLabelValues("n1")), 1 << 30},
		"n2 active":      {testutil.ToFloat64(m.pullsActive.WithLabelValues("n2")), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", name, tc.got, tc.want)
		}
	}
	// A 50-minute pull lands in a bucket below an hour, not in +Inf.
	want := `
# HELP pulltrace_pull_duration_seconds Duration of completed image pulls, from the first byte requested to the image record.
# TYPE pulltrace_pull_duration_seconds histogram
`
	var b strings.Builder
	b.WriteString(want)
	for _, le := range []string{"1", "2.5", "5", "10", "20", "30", "60", "120", "180", "300", "450", "600", "900", "1200", "1800", "2700"} {
		b.WriteString(`pulltrace_pull_duration_seconds_bucket{le="` + le + `"} 0` + "\n")
	}
	b.WriteString("pulltrace_pull_duration_seconds_bucket{le=\"3600\"} 1\npulltrace_pull_duration_seconds_bucket{le=\"+Inf\"} 1\npulltrace_pull_duration_seconds_sum 3000\npulltrace_pull_duration_seconds_count 1\n")
	if err := testutil.CollectAndCompare(m.pullDuration, strings.NewReader(b.String())); err != nil {
		t.Error(err)
	}

	// n1 expires from the store: every one of its series goes, n2's stay.
	m.Observe(aggregate.Stats{Nodes: map[string]aggregate.NodeStats{"n2": {LastReport: time.Unix(1700000002, 0)}}}, 0, 0)
	for name, c := range map[string]int{
		"active": testutil.CollectAndCount(m.pullsActive), "stalled": testutil.CollectAndCount(m.pullsStalled),
		"stall": testutil.CollectAndCount(m.longestStall), "eta": testutil.CollectAndCount(m.longestETA),
		"age": testutil.CollectAndCount(m.longestActive), "last report": testutil.CollectAndCount(m.lastReport),
		"errors": testutil.CollectAndCount(m.pullErrors), "bytes": testutil.CollectAndCount(m.pullBytes),
	} {
		if c != 1 {
			t.Errorf("%s: %d series after n1 expired, want only n2's", name, c)
		}
	}
	if n := testutil.CollectAndCount(m.pullsTotal); n != 3 {
		t.Errorf("%d pulls_total series after n1 expired", n)
	}
}
