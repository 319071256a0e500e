package httpapi

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/pkg/api"
)

// FuzzIntake runs report bodies through decode, validation and apply on a real store. No
// body may panic, get an answer that grows with it, or leave the store unable to list.
// make test runs it briefly (-fuzztime); the seeds are in code and testdata/fuzz.
func FuzzIntake(f *testing.F) {
	now := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	good := api.AgentReport{SchemaVersion: api.SchemaVersion, NodeName: "node-1", AgentID: "a1", Sequence: 1, Timestamp: now,
		ContainerdConnected: true, Pulls: []api.Pull{{ID: "p1", NodeName: "node-1", ImageRef: "r/x:1", State: api.PullActive, TotalKnown: true,
			TotalBytes: 10, DownloadedBytes: 5, StartedAt: now, Layers: []api.Layer{{Digest: "sha256:aa", TotalBytes: 10, DownloadedBytes: 5, State: api.LayerDownloading}}}}}
	seed := func(mut func(r *api.AgentReport)) {
		r := good
		r.Pulls = append([]api.Pull(nil), good.Pulls...)
		mut(&r)
		b, _ := json.Marshal(r)
		f.Add(b)
	}
	seed(func(*api.AgentReport) {})
	seed(func(r *api.AgentReport) { r.Heartbeat, r.Pulls = true, nil })
	seed(func(r *api.AgentReport) { r.Pulls = append(r.Pulls, r.Pulls[0]) })
	seed(func(r *api.AgentReport) { r.Pulls[0].NodeName = "other" })
	seed(func(r *api.AgentReport) { r.Pulls[0].State = api.PullCompleted })
	seed(func(r *api.AgentReport) { r.Timestamp = now.Add(100 * 365 * 24 * time.Hour) })
	seed(func(r *api.AgentReport) { r.NodeName = "Bad\nName" })
	f.Add([]byte(`{"schemaVersion":"v1","nodeName":"n","agentId":"a","sequence":2,"timestamp":"2026-01-01T10:00:00Z","pulls":[{"id":"x","state":"active","startedAt":"2026-01-01T10:00:00Z","layers":[{"digest":"d","state":"done","totalBytes":-1}]}]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"pulls":[null]}`))

	f.Fuzz(func(t *testing.T, body []byte) {
		store := aggregate.New(aggregate.Config{Now: func() time.Time { return now }}, nil, nil)
		for range 2 { // the second time as a resend of the same body
			out := Intake(store, body)
			switch out.Code {
			case http.StatusOK, http.StatusBadRequest:
			default:
				t.Fatalf("status %d", out.Code)
			}
			resp, err := json.Marshal(out.Response)
			if err != nil {
				t.Fatalf("answer does not encode: %v", err)
			}
			if len(out.Error) > 4096 || len(resp) > 16<<10 || len(out.Response.Rejected) > api.MaxReportErrors {
				t.Fatalf("answer grows with the input: error %d bytes, response %d bytes, %d rejections", len(out.Error), len(resp), len(out.Response.Rejected))
			}
		}
		page, _ := store.List(api.Filter{}, 10, nil)
		for i := range page {
			p := &page[i]
			if !api.ValidNodeName(p.NodeName) || p.ID == "" || len(p.Layers) > api.MaxLayersPerPull {
				t.Fatalf("store holds a pull validation should have kept out: %+v", p)
			}
		}
	})
}
