package aggregate

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

func benchPull(node string, i, layers int, state api.PullState, got int64) api.Pull {
	p := api.Pull{ID: fmt.Sprintf("%s-p%d", node, i), NodeName: node, ImageRef: "registry.local/team/app:v1", State: state,
		TotalKnown: true, StartedAt: time.Unix(1700000000, 0), Pods: []api.PodRef{}}
	for l := range layers {
		st := api.LayerDownloading
		if state.Finished() {
			st = api.LayerDone
		}
		p.Layers = append(p.Layers, api.Layer{Digest: fmt.Sprintf("sha256:%064d", l), TotalBytes: 1 << 20, DownloadedBytes: min(got, 1<<20), State: st})
	}
	p.Summarize()
	if state.Finished() {
		t := time.Unix(1700000100, 0)
		p.CompletedAt = &t
	}
	return p
}

// Report intake from 5,000 agents, each with 0-3 active pulls of 10 layers whose bytes
// move between reports: the aggregate's share of POST /api/v1/report.
func BenchmarkApply5000Agents(b *testing.B) {
	const agents = 5000
	s := New(Config{}, nil, func([]api.PullEvent) {})
	reports := make([]api.AgentReport, agents)
	for i := range reports {
		node := fmt.Sprintf("node-%d", i)
		reports[i] = api.AgentReport{SchemaVersion: "v1", NodeName: node, AgentID: "a-" + node, Timestamp: time.Unix(1700000000, 0)}
		for p := range i % 4 {
			reports[i].Pulls = append(reports[i].Pulls, benchPull(node, p, 10, api.PullActive, 1000))
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		r := &reports[n%agents]
		r.Sequence++
		r.Timestamp = r.Timestamp.Add(time.Second)
		for p := range r.Pulls {
			for l := range r.Pulls[p].Layers {
				r.Pulls[p].Layers[l].DownloadedBytes = min(r.Pulls[p].Layers[l].DownloadedBytes+4096, 1<<20)
			}
			r.Pulls[p].Summarize()
		}
		// Apply owns what it is given, as a freshly decoded report would be.
		own := *r
		own.Pulls = make([]api.Pull, len(r.Pulls))
		for p := range r.Pulls {
			own.Pulls[p] = r.Pulls[p].Clone()
		}
		s.Apply(&own)
		n++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
}

// Memory held for 50,000 finished pulls of 10 layers in history (100 nodes x 500).
func BenchmarkHeap50000Pulls(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		s := New(Config{MaxPerNode: 500, MaxTotal: 50000}, nil, func([]api.PullEvent) {})
		for n := range 100 {
			node := fmt.Sprintf("node-%d", n)
			r := &api.AgentReport{SchemaVersion: "v1", NodeName: node, AgentID: "a", Sequence: 1, Timestamp: time.Unix(1700000000, 0)}
			for p := range 500 {
				r.Pulls = append(r.Pulls, benchPull(node, p, 10, api.PullCompleted, 1<<20))
			}
			s.Apply(r)
		}
		if got := len(s.Pulls(api.Filter{})); got != 50000 {
			b.Fatalf("holds %d pulls", got)
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/(1<<20), "heapMiB")
		runtime.KeepAlive(s)
	}
}
