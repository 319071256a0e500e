package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/report"
	"github.com/d44b/pulltrace/pkg/api"
)

// A server refusing every report (one every few hundred ms) shows in the agent's log
// once a minute with the server's reason and how many were left out, and every refusal
// is counted.
func TestRefusalsLoggedOnceAMinuteAndCounted(t *testing.T) {
	var logs bytes.Buffer
	sender, err := report.New(report.Config{Servers: []string{"http://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{NodeName: "n", Sender: sender, PollInterval: time.Second, ReportInterval: time.Second, HeartbeatInterval: time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	refused := report.Outcome{Endpoint: "http://10.0.0.1:8080", Err: &report.RefusedError{Endpoint: "10.0.0.1:8080", Status: 400, Reason: `invalid report: pulls[6].id: duplicate id "438cea3b1b930e5c"`}}
	now := time.Now()
	for i := range 200 { // 60 s at one refusal every 300 ms
		a.outcome(context.Background(), refused, now.Add(time.Duration(i)*300*time.Millisecond))
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Fatalf("want one log line in the first minute, got %d:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `duplicate id`) || !strings.Contains(logs.String(), "status=400") {
		t.Fatalf("the log does not carry the reason:\n%s", logs.String())
	}
	a.outcome(context.Background(), refused, now.Add(61*time.Second))
	if n := strings.Count(logs.String(), "level=WARN"); n != 2 || !strings.Contains(logs.String(), "sinceLastLog=199") {
		t.Fatalf("the next minute's line must count the ones left out:\n%s", logs.String())
	}
	// Another kind of failure on the same endpoint has its own line.
	a.outcome(context.Background(), report.Outcome{Endpoint: refused.Endpoint, Err: errors.New("connection refused")}, now.Add(62*time.Second))
	if !strings.Contains(logs.String(), "report failed") {
		t.Fatalf("outage not logged:\n%s", logs.String())
	}
	if got := reportsCounted(t, a, "refused"); got != 201 {
		t.Fatalf("refused reports counted %v, want 201", got)
	}
	if got := reportsCounted(t, a, "error"); got != 1 {
		t.Fatalf("failed reports counted %v, want 1", got)
	}
}

func reportsCounted(t *testing.T, a *Agent, result string) float64 {
	t.Helper()
	mfs, err := a.cfg.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pulltrace_agent_reports_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no pulltrace_agent_reports_total{result=%q}", result)
	return 0
}

// Pulls the server left out of an applied report are logged once a minute with the
// first ones named, and counted one by one.
func TestRejectedPullsLoggedAndCounted(t *testing.T) {
	var logs bytes.Buffer
	sender, err := report.New(report.Config{Servers: []string{"http://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{NodeName: "n", Sender: sender, PollInterval: time.Second, ReportInterval: time.Second, HeartbeatInterval: time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	o := report.Outcome{Endpoint: "http://10.0.0.1:8080", RejectedCount: 2,
		Rejected: []api.PullRejection{{Index: 6, ID: "438cea3b1b930e5c", Error: `pulls[6].id: duplicate id "438cea3b1b930e5c"`}}}
	now := time.Now()
	for i := range 10 {
		a.outcome(context.Background(), o, now.Add(time.Duration(i)*time.Second))
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), "438cea3b1b930e5c") {
		t.Fatalf("want one line naming the pull:\n%s", logs.String())
	}
	mfs, err := a.cfg.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "pulltrace_agent_pulls_rejected_total" {
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v != 20 {
				t.Fatalf("rejected pulls counted %v, want 20", v)
			}
			return
		}
	}
	t.Fatal("no pulltrace_agent_pulls_rejected_total")
}
