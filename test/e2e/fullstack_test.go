package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/internal/harness/stack"
	"github.com/d44b/pulltrace/pkg/api"
)

// kubectlCmd runs `kubectl pulltrace ...` through the real kubectl: kubectl finds the plugin
// on PATH, as it would on a user's machine.
func kubectlCmd(ctx context.Context, s *stack.Stack, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"pulltrace"}, args...)...)
	cmd.Env = append(os.Environ(), s.PathEnv(), "KUBECONFIG="+s.Kube.Kubeconfig)
	// exec.LookPath reads this process's PATH, not cmd.Env's.
	cmd.Path = s.Bin + "/kubectl"
	return cmd
}

type followed struct {
	events []api.PullEvent
	code   int
	stderr string
}

// follow starts `kubectl pulltrace follow pod/<pod> -o json`, returning a channel with its
// parsed output once it exits, and a channel closed once it has printed its first line.
func follow(ctx context.Context, t *testing.T, s *stack.Stack, ns, pod string) (<-chan followed, <-chan struct{}) {
	t.Helper()
	cmd := kubectlCmd(ctx, s, "follow", "pod/"+pod, "-n", ns, "-o", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	res := make(chan followed, 1)
	first := make(chan struct{})
	go func() {
		var f followed
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		once := false
		for sc.Scan() {
			if !once {
				close(first)
				once = true
			}
			var ev api.PullEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Errorf("follow -o json printed a line that is not a PullEvent: %q", sc.Text())
				continue
			}
			f.events = append(f.events, ev)
		}
		if !once {
			close(first)
		}
		err := cmd.Wait()
		f.code = cmd.ProcessState.ExitCode()
		f.stderr = stderr.String()
		if err != nil && f.code == 0 {
			f.code = -1
		}
		res <- f
	}()
	return res, first
}

// The whole path on real parts, as a user meets it: the agent and server binaries as
// processes, a throttled CRI pull, and `kubectl pulltrace` through a real kubectl and the
// real apiserver's service proxy. Then the failure path.
func TestFullStack(t *testing.T) {
	if testing.Short() {
		t.Skip("full stack; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s, err := stack.Start(ctx, stack.Options{Nodes: []string{"node-1"}, PullRate: 2 << 20, Token: "full-stack-token"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if _, err := os.Stat(s.Bin + "/kubectl-pulltrace"); err != nil {
		t.Fatalf("plugin binary missing: %v", err)
	}
	node := s.Nodes[0].Cluster
	im, err := node.PushImage(ctx, cluster.ImageSpec{Repo: "shop/web", Tag: "1.0", LayerSizes: []int64{4 << 20, 4 << 20, 4 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	pod, err := s.Kube.CreatePod(ctx, "shop", "web-0", "node-1", im.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if pod, err = s.Kube.SetPodWaiting(ctx, pod, "c0", "ContainerCreating", ""); err != nil {
		t.Fatal(err)
	}

	res, _ := follow(ctx, t, s, "shop", "web-0")
	waitFollowers(t, s, 1)
	if _, err := s.Kube.KubeletEvent(ctx, pod, "Pulling", fmt.Sprintf("Pulling image %q", im.Ref)); err != nil {
		t.Fatal(err)
	}
	if err := node.CRIPull(ctx, im.Ref); err != nil {
		t.Fatal(err)
	}
	var f followed
	select {
	case f = <-res:
	case <-time.After(60 * time.Second):
		t.Fatal("follow did not exit after the pull completed")
	}
	if f.code != 0 {
		t.Fatalf("follow exited %d: %s", f.code, f.stderr)
	}
	var seq []api.PullEvent
	for _, ev := range f.events {
		if strings.HasPrefix(ev.Pull.ID, "queued-") || strings.HasPrefix(string(ev.Type), "layer.") || ev.Type == api.EventPullRemoved {
			continue
		}
		seq = append(seq, ev)
	}
	if len(seq) < 5 || seq[0].Type != api.EventPullStarted || seq[len(seq)-1].Type != api.EventPullCompleted {
		t.Fatalf("event order: %v", typesOf(seq))
	}
	if len(seq[0].Pull.Pods) != 1 || seq[0].Pull.Pods[0].PodName != "web-0" {
		t.Fatalf("pull.started without the pod: %+v", seq[0].Pull.Pods)
	}
	var last int64 = -1
	steps := 0
	for _, ev := range seq[1 : len(seq)-1] {
		if ev.Type != api.EventPullProgress {
			t.Fatalf("unexpected %s between start and end: %v", ev.Type, typesOf(seq))
		}
		if ev.Pull.DownloadedBytes > last {
			steps++
		} else if ev.Pull.DownloadedBytes < last {
			t.Fatalf("downloadedBytes went back from %d to %d", last, ev.Pull.DownloadedBytes)
		}
		last = ev.Pull.DownloadedBytes
	}
	if steps < 3 {
		t.Fatalf("want >= 3 progress events with increasing bytes, got %d: %v", steps, typesOf(seq))
	}
	done := seq[len(seq)-1].Pull
	if done.TotalBytes != im.TotalSize() || done.DownloadedBytes != im.TotalSize() || done.ImageRef != im.Ref {
		t.Fatalf("completed: total %d downloaded %d ref %q; manifest layers sum to %d", done.TotalBytes, done.DownloadedBytes, done.ImageRef, im.TotalSize())
	}

	// get -o json lists it completed.
	out, err := kubectlCmd(ctx, s, "get", "-n", "shop", "-o", "json").Output()
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if !strings.Contains(string(out), `"state": "completed"`) && !strings.Contains(string(out), `"state":"completed"`) {
		t.Fatalf("get -o json does not list the completed pull:\n%s", out)
	}
	if !strings.Contains(string(out), done.ID) {
		t.Fatalf("get -o json lacks pull %s", done.ID)
	}

	// The server counted it (metrics are folded in once a second).
	for _, want := range []string{`pulltrace_pulls_total{node="node-1",state="completed"} 1`, "pulltrace_agents_connected 1", "pulltrace_pull_duration_seconds_count 1"} {
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(httpGet(t, s.MetricsURL), want) {
			if time.Now().After(deadline) {
				t.Errorf("metrics lack %q", want)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Its JSON log has the lifecycle lines in the v1 format.
	logged := map[api.EventType]bool{}
	b, _ := os.ReadFile(s.Server.LogPath)
	for _, line := range strings.Split(string(b), "\n") {
		var ev api.PullEvent
		if json.Unmarshal([]byte(line), &ev) == nil && ev.SchemaVersion == "v1" && ev.Pull.ID == done.ID {
			logged[ev.Type] = true
		}
	}
	for _, typ := range []api.EventType{api.EventPullStarted, api.EventPullProgress, api.EventLayerStarted, api.EventLayerCompleted, api.EventPullCompleted} {
		if !logged[typ] {
			t.Errorf("server log has no v1 %s line for the pull", typ)
		}
	}

	// The failure path: the registry goes away mid-pull.
	im2, err := node.PushImage(ctx, cluster.ImageSpec{Repo: "shop/api", Tag: "2.0", LayerSizes: []int64{8 << 20, 8 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	pod2, err := s.Kube.CreatePod(ctx, "shop", "api-0", "node-1", im2.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if pod2, err = s.Kube.SetPodWaiting(ctx, pod2, "c0", "ContainerCreating", ""); err != nil {
		t.Fatal(err)
	}
	res2, _ := follow(ctx, t, s, "shop", "api-0")
	waitFollowers(t, s, 1)
	pullErr := make(chan error, 1)
	go func() { pullErr <- node.CRIPull(ctx, im2.Ref) }()
	time.Sleep(3 * time.Second) // some bytes arrive at 2 MiB/s
	node.StopProxy()
	perr := <-pullErr
	if perr == nil {
		t.Fatal("the pull succeeded although the registry went away")
	}
	// The kubelet reports what containerd told it.
	reason := "failed to pull and unpack image: " + lastLine(perr.Error())
	if _, err := s.Kube.SetPodWaiting(ctx, pod2, "c0", "ErrImagePull", reason); err != nil {
		t.Fatal(err)
	}
	var f2 followed
	select {
	case f2 = <-res2:
	case <-time.After(60 * time.Second):
		t.Fatal("follow did not exit after the pull failed")
	}
	if f2.code == 0 {
		t.Fatalf("follow exited 0 for a failed pull; stderr: %s", f2.stderr)
	}
	var failed *api.PullEvent
	for i := range f2.events {
		if f2.events[i].Type == api.EventPullFailed {
			failed = &f2.events[i]
		}
	}
	if failed == nil || failed.Pull.Error == "" || failed.Pull.DownloadedBytes == 0 {
		t.Fatalf("no pull.failed with a reason and some bytes: %v / stderr %s", failed, f2.stderr)
	}
	t.Logf("failed pull reported: %s (follow exit %d, stderr %q)", failed.Pull.Error, f2.code, strings.TrimSpace(f2.stderr))
}

// waitFollowers waits until the server counts n SSE clients: follow is connected and has
// its snapshot, so no event of the pull can be missed.
func waitFollowers(t *testing.T, s *stack.Stack, n int) {
	t.Helper()
	want := fmt.Sprintf("pulltrace_sse_clients %d\n", n)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(httpGet(t, s.MetricsURL), want) {
		if time.Now().After(deadline) {
			t.Fatalf("follow never connected to the server (metrics lack %q)", strings.TrimSpace(want))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func typesOf(evs []api.PullEvent) []string {
	var s []string
	for _, e := range evs {
		s = append(s, fmt.Sprintf("%s(%d)", e.Type, e.Pull.DownloadedBytes))
	}
	return s
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
