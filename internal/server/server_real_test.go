package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/agent"
	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/internal/report"
	"github.com/d44b/pulltrace/internal/server"
	"github.com/d44b/pulltrace/internal/token"
	"github.com/d44b/pulltrace/pkg/api"
	"github.com/d44b/pulltrace/pkg/sseclient"
)

// The whole server path on real parts: a throttled CRI pull in real containerd, the real
// agent reporting over HTTP with a token, the server correlating the pod from the real
// apiserver, and a follower's SSE stream seeing started, progress and completed in order.
func TestRealAgentServerSSE(t *testing.T) {
	if testing.Short() {
		t.Skip("real components; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := cluster.StartT(t, cluster.Options{Containerd: true, Kube: true, PullRate: 2 << 20})
	cs, err := c.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	const secret = "t0ken"
	srv, err := server.New(server.Config{Version: "test", Kube: cs, Token: func() (string, error) { return secret, nil },
		Aggregate: aggregate.Config{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	// Run's background work (informers, expiry) without its listeners.
	go func() {
		_ = srv.Run(ctx, mustListen(t), mustListen(t))
	}()

	sender, err := report.New(report.Config{Servers: []string{hs.URL}, Token: token.File("", secret)})
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agent.New(agent.Config{Socket: c.ContainerdSocket, Namespace: cluster.Namespace, NodeName: "node-1", Version: "test",
		PollInterval: 200 * time.Millisecond, ReportInterval: 300 * time.Millisecond, HeartbeatInterval: 2 * time.Second,
		Sender: sender, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ag.Run(ctx) }()

	im, err := c.PushImage(ctx, cluster.ImageSpec{Repo: "shop/api", Tag: "7", LayerSizes: []int64{4 << 20, 4 << 20, 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Node(ctx, "node-1"); err != nil {
		t.Fatal(err)
	}
	pod, err := c.CreatePod(ctx, "shop", "api-0", "node-1", im.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetPodWaiting(ctx, pod, "c0", "ContainerCreating", ""); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for ok, _ := srv.Ready(); !ok; ok, _ = srv.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("server never ready")
		}
		time.Sleep(50 * time.Millisecond)
	}

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+"/api/v1/events?namespace=shop&pod=api-0", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := sseclient.NewReader(resp.Body)
	first, err := rd.Next()
	if err != nil || first.Type != "snapshot" {
		t.Fatalf("first event %+v %v", first, err)
	}
	go func() {
		if err := c.CRIPull(ctx, im.Ref); err != nil {
			t.Errorf("pull: %v", err)
		}
	}()
	var seq []api.PullEvent
	for {
		ev, err := rd.Next()
		if err != nil {
			t.Fatalf("stream ended after %d events: %v", len(seq), err)
		}
		var pe api.PullEvent
		if err := json.Unmarshal([]byte(ev.Data), &pe); err != nil {
			t.Fatal(err)
		}
		if pe.Pull.State == api.PullQueued {
			continue // the pod waited before the first byte moved
		}
		if pe.Type == api.EventPullRemoved {
			continue
		}
		seq = append(seq, pe)
		if pe.Type == api.EventPullCompleted || pe.Type == api.EventPullFailed {
			break
		}
	}
	if seq[0].Type != api.EventPullStarted || len(seq[0].Pull.Pods) != 1 || seq[0].Pull.Pods[0].PodName != "api-0" {
		t.Fatalf("first pull event %s with pods %+v", seq[0].Type, seq[0].Pull.Pods)
	}
	var last int64 = -1
	progress := 0
	for _, ev := range seq {
		if ev.Type != api.EventPullProgress {
			continue
		}
		if ev.Pull.DownloadedBytes < last {
			t.Fatalf("progress went backwards: %d after %d", ev.Pull.DownloadedBytes, last)
		}
		if ev.Pull.DownloadedBytes > last {
			progress++
		}
		last = ev.Pull.DownloadedBytes
	}
	if progress < 3 {
		for _, ev := range seq {
			t.Logf("%s %s %d/%d pods=%d", ev.Type, ev.Pull.State, ev.Pull.DownloadedBytes, ev.Pull.TotalBytes, len(ev.Pull.Pods))
		}
		t.Fatalf("want at least 3 progress steps, got %d", progress)
	}
	end := seq[len(seq)-1]
	if end.Type != api.EventPullCompleted || end.Pull.TotalBytes != im.TotalSize() || end.Pull.ImageRef != im.Ref || len(end.Pull.Pods) != 1 {
		t.Fatalf("end: %s total=%d (want %d) ref=%q pods=%v", end.Type, end.Pull.TotalBytes, im.TotalSize(), end.Pull.ImageRef, end.Pull.Pods)
	}
	st := srv.Store.TakeStats()
	if st.Agents != 1 {
		t.Fatalf("agents connected %d", st.Agents)
	}
}
