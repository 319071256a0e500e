package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/internal/stream"
	"github.com/d44b/pulltrace/pkg/api"
)

// The server's whole report path in one process: HTTP, JSON, validation, aggregation,
// events, the v1 log line and the SSE fan-out (no followers).
func BenchmarkReportHTTP(b *testing.B) {
	srv, err := New(Config{Version: "bench", Aggregate: aggregate.Config{}, Stream: stream.Config{}, EventLog: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	const agents = 5000
	seqs := make([]uint64, agents)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		i := n % agents
		n++
		seqs[i]++
		node := fmt.Sprintf("node-%d", i)
		r := api.AgentReport{SchemaVersion: "v1", NodeName: node, AgentID: "a", Sequence: seqs[i], Timestamp: time.Unix(1700000000+int64(seqs[i]), 0)}
		for p := range i % 4 {
			pl := api.Pull{ID: fmt.Sprintf("p%d", p), NodeName: node, ImageRef: "r/a:v1", State: api.PullActive, TotalKnown: true, StartedAt: time.Unix(1700000000, 0), Pods: []api.PodRef{}}
			for l := range 10 {
				st := api.LayerWaiting
				var got int64
				if l < 3 {
					st, got = api.LayerDownloading, int64(seqs[i])*4096
				}
				pl.Layers = append(pl.Layers, api.Layer{Digest: fmt.Sprintf("sha256:%064d", l), TotalBytes: 64 << 20, DownloadedBytes: got, State: st})
			}
			pl.Summarize()
			r.Pulls = append(r.Pulls, pl)
		}
		body, _ := json.Marshal(&r)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/v1/report", bytes.NewReader(body)))
		if rec.Code != 200 {
			b.Fatal(rec.Body.String())
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reports/s")
}
