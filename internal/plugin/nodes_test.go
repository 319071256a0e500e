package plugin

import (
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

func TestStaleNotice(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 3, 0, 0, time.UTC)
	last := now.Add(-3*time.Minute - 5*time.Second)
	fresh := now.Add(-2 * time.Second)
	for _, c := range []struct {
		n    api.NodeStatus
		want string
	}{
		{api.NodeStatus{Name: "n1", LastReportAt: &fresh}, ""},
		{api.NodeStatus{Name: "worker-3", Stale: true, LastReportAt: &last}, "no fresh data from node worker-3 for 3m: its agent is not reporting"},
		{api.NodeStatus{Name: "n2", Refused: true, RefusedReason: "invalid report: bad digest", LastReportAt: &fresh}, "no fresh data from node n2 for 2s: its reports are refused (invalid report: bad digest)"},
		{api.NodeStatus{Name: "n3", Stale: true}, "no data from node n3 yet: its agent is not reporting"},
	} {
		if got := StaleNotice(c.n, now); got != c.want {
			t.Errorf("%s: %q, want %q", c.n.Name, got, c.want)
		}
	}
}

// A follow hears once that its node went silent, and once that it came back.
func TestNodeWatchSaysEachChangeOnce(t *testing.T) {
	now := time.Now()
	last := now.Add(-time.Minute)
	var w nodeWatch
	stale := []api.NodeStatus{{Name: "n1", Stale: true, LastReportAt: &last}, {Name: "other", Stale: true}}
	if got := w.update(stale, nil, now); got != nil {
		t.Fatalf("no node followed yet: %q", got)
	}
	if got := w.update(stale, []string{"n1"}, now); len(got) != 1 || !strings.HasPrefix(got[0], "no fresh data from node n1 for 1m") {
		t.Fatalf("first: %q", got)
	}
	if got := w.update(stale, []string{"n1"}, now); len(got) != 0 {
		t.Fatalf("repeated: %q", got)
	}
	if got := w.update([]api.NodeStatus{{Name: "n1", LastReportAt: &now}}, []string{"n1"}, now); len(got) != 1 || got[0] != "node n1 reports again" {
		t.Fatalf("recovered: %q", got)
	}
}
