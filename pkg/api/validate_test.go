package api

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validReport() AgentReport {
	now := time.Now()
	return AgentReport{
		SchemaVersion: SchemaVersion, NodeName: "n1", AgentID: "a", Sequence: 1, Timestamp: now,
		Pulls: []Pull{{ID: "p1", NodeName: "n1", State: PullActive, TotalKnown: true, TotalBytes: 10, DownloadedBytes: 5, StartedAt: now,
			Layers: []Layer{{Digest: "sha256:aa", TotalBytes: 10, DownloadedBytes: 5, State: LayerDownloading}}}},
	}
}

func TestValidateNamesTheField(t *testing.T) {
	cases := map[string]struct {
		mutate func(r *AgentReport)
		field  string
	}{
		"schema":          {func(r *AgentReport) { r.SchemaVersion = "v0" }, "schemaVersion"},
		"node":            {func(r *AgentReport) { r.NodeName = "" }, "nodeName"},
		"timestamp":       {func(r *AgentReport) { r.Timestamp = time.Time{} }, "timestamp"},
		"negative":        {func(r *AgentReport) { r.Pulls[0].DownloadedBytes = -1 }, "pulls[0].downloadedBytes"},
		"over total":      {func(r *AgentReport) { r.Pulls[0].DownloadedBytes = 11 }, "pulls[0].downloadedBytes"},
		"layer over":      {func(r *AgentReport) { r.Pulls[0].Layers[0].DownloadedBytes = 11 }, "pulls[0].layers[0].downloadedBytes"},
		"layer state":     {func(r *AgentReport) { r.Pulls[0].Layers[0].State = "gone" }, "pulls[0].layers[0].state"},
		"pull state":      {func(r *AgentReport) { r.Pulls[0].State = "" }, "pulls[0].state"},
		"missing id":      {func(r *AgentReport) { r.Pulls[0].ID = "" }, "pulls[0].id"},
		"other node":      {func(r *AgentReport) { r.Pulls[0].NodeName = "n2" }, "pulls[0].nodeName"},
		"heartbeat pulls": {func(r *AgentReport) { r.Heartbeat = true }, "pulls"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			r := validReport()
			c.mutate(&r)
			err := r.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("want a FieldError, got %v", err)
			}
			if !strings.HasPrefix(err.Error(), c.field+":") {
				t.Fatalf("error %q does not name %s", err, c.field)
			}
		})
	}
	r := validReport()
	if err := r.Validate(); err != nil {
		t.Fatalf("valid report rejected: %v", err)
	}
}

func TestSummarizeNeverGoesBackwards(t *testing.T) {
	p := Pull{State: PullActive, TotalKnown: true, Layers: []Layer{
		{Digest: "a", TotalBytes: 100, DownloadedBytes: 60, State: LayerDownloading},
		{Digest: "b", TotalBytes: 50, State: LayerExists},
	}}
	p.Summarize()
	if p.DownloadedBytes != 110 || p.LayersDone != 1 || p.LayerCount != 2 || p.TotalBytes != 150 {
		t.Fatalf("summary wrong: %+v", p)
	}
	p.Layers[0].DownloadedBytes = 0 // a restarted ingest
	p.Summarize()
	if p.DownloadedBytes != 110 {
		t.Fatalf("downloadedBytes went backwards to %d", p.DownloadedBytes)
	}
	p.State = PullCompleted
	p.Summarize()
	if p.Percent != 100 {
		t.Fatalf("completed pull percent %v", p.Percent)
	}
}
