package aggregate

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// nodePods is a correlator with a fixed set of pods per node; Enrich walks the pods of a
// pull's node, as the real one walks its informer index, so re-correlation costs what the
// number of pulls times pods makes it cost.
type nodePods struct{ pods map[string][]api.PodRef }

func (c *nodePods) Enrich(p *api.Pull) {
	var out []api.PodRef
	for _, pod := range c.pods[p.NodeName] {
		if strings.HasSuffix(p.ImageRef, pod.Container) {
			out = append(out, pod)
		}
	}
	p.Pods = out
}

func (c *nodePods) Queued(string, []api.Pull) []api.Pull { return nil }
func (c *nodePods) Present(string) []api.Pull            { return nil }

// recorrelateStore: 1,000 nodes, each with 5 active pulls of 10 layers (images app-0 to
// app-4) and 20 pods.
func recorrelateStore(b *testing.B) (*Store, []api.AgentReport) {
	const nodes = 1000
	corr := &nodePods{pods: map[string][]api.PodRef{}}
	s := New(Config{}, corr, func([]api.PullEvent) {})
	reports := make([]api.AgentReport, nodes)
	for n := range nodes {
		node := fmt.Sprintf("node-%d", n)
		for i := range 20 {
			corr.pods[node] = append(corr.pods[node], api.PodRef{Namespace: "ns", PodName: fmt.Sprintf("pod-%d", i), Container: fmt.Sprintf("app-%d", i%5)})
		}
		r := api.AgentReport{SchemaVersion: "v1", NodeName: node, AgentID: "a-" + node, Sequence: 1, Timestamp: time.Unix(1700000000, 0)}
		for p := range 5 {
			pl := benchPull(node, p, 10, api.PullActive, 1000)
			pl.ImageRef = fmt.Sprintf("registry.local/team/app-%d", p)
			r.Pulls = append(r.Pulls, pl)
		}
		reports[n] = r
		own := r
		own.Pulls = make([]api.Pull, len(r.Pulls))
		for p := range r.Pulls {
			own.Pulls[p] = r.Pulls[p].Clone()
		}
		s.Apply(&own)
	}
	return s, reports
}

// One pod changed on one node of 1,000: what the server does about it (the pulls of that
// node and image).
func BenchmarkRecorrelateOnePodChange(b *testing.B) {
	s, _ := recorrelateStore(b)
	nodes := []string{"node-7"}
	touches := func(p *api.Pull) bool { return p.ImageRef == "registry.local/team/app-3" }
	b.ReportAllocs()
	for b.Loop() {
		s.Recorrelate(nodes, touches)
	}
}

// Everything re-correlated (informers synced, or a change the correlator cannot place).
func BenchmarkRecorrelateEverything(b *testing.B) {
	s, _ := recorrelateStore(b)
	b.ReportAllocs()
	for b.Loop() {
		s.Recorrelate(nil, nil)
	}
}

// Report intake while re-correlation of everything runs back to back beside it (the worst
// case of pod churn); reports/s is what intake keeps. B/op includes the re-correlations.
func BenchmarkApplyDuringRecorrelation(b *testing.B) {
	s, reports := recorrelateStore(b)
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			s.Recorrelate(nil, nil)
		}
	}()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		r := &reports[n%len(reports)]
		n++
		r.Sequence++
		r.Timestamp = r.Timestamp.Add(time.Second)
		own := *r
		own.Pulls = make([]api.Pull, len(r.Pulls))
		for p := range r.Pulls {
			own.Pulls[p] = r.Pulls[p].Clone()
			own.Pulls[p].Layers[0].DownloadedBytes += int64(r.Sequence)
			own.Pulls[p].Summarize()
		}
		s.Apply(&own)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
	stop.Store(true)
	<-done
}
