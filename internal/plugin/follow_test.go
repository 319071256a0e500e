package plugin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/url"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/d44b/pulltrace/internal/plugin"
	"github.com/d44b/pulltrace/pkg/api"
)

func raw(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// A dropped stream is resumed with Last-Event-ID; -o json prints exactly the data lines
// of PullEvents (no snapshot, no unknown types) and ends with exit 0 after pull.completed,
// not at the layer event before it that already carries the final state.
func TestFollowJSONResumesAndCompletes(t *testing.T) {
	f := newFakeAPI(t)
	f.addPod("default", "web", "node-1", "", "registry.local/shop/web:v1")
	q := pull("queued-1", api.PullQueued, 0, 0, webPod)
	started := raw(event(api.EventPullStarted, pull("p1", api.PullActive, 0, 12<<20, webPod)))
	prog1 := raw(event(api.EventPullProgress, pull("p1", api.PullActive, 4<<20, 12<<20, webPod)))
	prog2 := raw(event(api.EventPullProgress, pull("p1", api.PullActive, 8<<20, 12<<20, webPod)))
	layerDone := event(api.EventLayerCompleted, pull("p1", api.PullCompleted, 12<<20, 12<<20, webPod))
	layerDone.Layer = &api.Layer{Digest: "sha256:" + strings.Repeat("1", 64), TotalBytes: 4 << 20, DownloadedBytes: 4 << 20, State: api.LayerDone}
	completed := raw(event(api.EventPullCompleted, pull("p1", api.PullCompleted, 12<<20, 12<<20, webPod)))
	f.streams = []func(io.Writer, func()) bool{
		func(w io.Writer, flush func()) bool {
			sse(w, "5", "snapshot", api.PullList{Pulls: []api.Pull{q}})
			sse(w, "6", "pull.started", started)
			sse(w, "7", "pull.exotic", `{"schemaVersion":"v1","type":"pull.exotic","pull":{"id":"p1"}}`)
			sse(w, "7", "digest", `{"from":"a newer server"}`)
			sse(w, "8", "pull.progress", prog1)
			flush()
			return true
		},
		func(w io.Writer, flush func()) bool {
			_, _ = io.WriteString(w, ": ping\n\n")
			sse(w, "9", "pull.progress", prog2)
			sse(w, "10", "layer.completed", raw(layerDone))
			flush()
			time.Sleep(50 * time.Millisecond)
			sse(w, "11", "pull.completed", completed)
			flush()
			return false
		},
	}
	code, stdout, stderr := f.exec(t, false, "follow", "pod/web", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	want := strings.Join([]string{started, prog1, prog2, raw(layerDone), completed}, "\n") + "\n"
	if stdout != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", stdout, want)
	}
	for _, s := range []string{
		"queued: waiting for the kubelet to start pulling registry.local/shop/web:v1 on node-1",
		"stream dropped (the server closed the stream); resuming after event 8",
		"done: every image of pod default/web is present",
	} {
		if !strings.Contains(stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, stderr)
		}
	}
	if len(f.lastIDs) != 2 || f.lastIDs[0] != "" || f.lastIDs[1] != "8" {
		t.Fatalf("Last-Event-ID per connection: %q", f.lastIDs)
	}
	q0, _ := url.ParseQuery(f.queries[0])
	if q0.Get("pod") != "web" || q0.Get("namespace") != "default" {
		t.Fatalf("stream query %v", q0)
	}
	q1, _ := url.ParseQuery(f.queries[1])
	if q1.Get("lastEventId") != "8" {
		t.Fatalf("resume query %v", q1)
	}
}

func TestFollowFailedPull(t *testing.T) {
	f := newFakeAPI(t)
	f.addPod("default", "web", "node-1", "", "registry.local/shop/web:v1")
	failed := pull("p1", api.PullFailed, 1<<20, 12<<20, webPod)
	failed.Error = "failed to pull: manifest unknown"
	f.streams = []func(io.Writer, func()) bool{func(w io.Writer, flush func()) bool {
		sse(w, "1", "snapshot", api.PullList{Pulls: []api.Pull{}})
		sse(w, "2", "pull.started", event(api.EventPullStarted, pull("p1", api.PullActive, 0, 12<<20, webPod)))
		sse(w, "3", "pull.failed", event(api.EventPullFailed, failed))
		flush()
		return false
	}}
	code, stdout, stderr := f.exec(t, false, "follow", "web")
	if code != plugin.ExitPullFailed {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "error: pull of registry.local/shop/web:v1 for container c0 of pod default/web on node-1 failed: failed to pull: manifest unknown") {
		t.Fatalf("stderr:\n%s", stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "pull.started") || !strings.Contains(lines[1], `pull.failed     registry.local/shop/web:v1 on node-1 failed 1.0MiB/12.0MiB 8%`) {
		t.Fatalf("plain lines:\n%s", stdout)
	}
}

func TestFollowCached(t *testing.T) {
	f := newFakeAPI(t)
	f.addPod("default", "ready", "node-1", "sha256:"+strings.Repeat("c", 64), "registry.local/shop/web:v1")
	code, stdout, stderr := f.exec(t, false, "follow", "pod/ready")
	if code != 0 || stdout != "cached: registry.local/shop/web:v1 already present on node-1\n" || f.conns != 0 {
		t.Fatalf("exit %d conns %d\n%q\n%s", code, f.conns, stdout, stderr)
	}

	// The server reports the pull as cached (the image was there when the kubelet asked).
	f.addPod("default", "web", "node-1", "", "registry.local/shop/web:v1")
	f.streams = []func(io.Writer, func()) bool{func(w io.Writer, flush func()) bool {
		sse(w, "1", "snapshot", api.PullList{Pulls: []api.Pull{pull("p9", api.PullCached, 12<<20, 12<<20, webPod)}})
		flush()
		return false
	}}
	code, stdout, stderr = f.exec(t, false, "follow", "pod/web")
	if code != 0 || !strings.Contains(stdout, "cached: registry.local/shop/web:v1 already present on node-1") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
}

func TestFollowTTYRedrawsInPlace(t *testing.T) {
	f := newFakeAPI(t)
	f.addPod("default", "web", "node-1", "", "registry.local/shop/web:v1")
	f.streams = []func(io.Writer, func()) bool{func(w io.Writer, flush func()) bool {
		sse(w, "1", "snapshot", api.PullList{Pulls: []api.Pull{}})
		for i, got := range []int64{0, 3 << 20, 6 << 20, 9 << 20} {
			typ := api.EventPullProgress
			if i == 0 {
				typ = api.EventPullStarted
			}
			sse(w, "", string(typ), event(typ, pull("p1", api.PullActive, got, 12<<20, webPod)))
			flush()
			time.Sleep(150 * time.Millisecond)
		}
		sse(w, "", "pull.completed", event(api.EventPullCompleted, pull("p1", api.PullCompleted, 12<<20, 12<<20, webPod)))
		flush()
		return false
	}}
	code, stdout, stderr := f.exec(t, true, "follow", "pod/web")
	if code != 0 {
		t.Fatalf("exit %d\n%q\n%s", code, stdout, stderr)
	}
	if strings.Count(stdout, "\r\x1b[1A\x1b[2K") < 2 {
		t.Fatalf("no in-place redraws:\n%q", stdout)
	}
	for _, bad := range []string{"\x1b[2J", "\x1b[H"} {
		if strings.Contains(stdout, bad) {
			t.Fatalf("screen clear %q:\n%q", bad, stdout)
		}
	}
	for _, want := range []string{"[=========>          ] 50%  6.0MiB/12.0MiB", "registry.local/shop/web:v1 on node-1: pull complete, 12.0MiB in 1m00s", "done: every image of pod default/web is present"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("terminal output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("%q", stdout)
	}
}

func TestFollowNode(t *testing.T) {
	f := newFakeAPI(t)
	f.nodes["node-1"] = true
	f.streams = []func(io.Writer, func()) bool{func(w io.Writer, flush func()) bool {
		// History (a pull that failed before the follow began) does not fail the follow.
		sse(w, "1", "snapshot", api.PullList{Pulls: []api.Pull{pull("old", api.PullCompleted, 1, 1), pull("oldfail", api.PullFailed, 0, 1)}})
		sse(w, "2", "pull.started", event(api.EventPullStarted, pull("p1", api.PullActive, 0, 10)))
		sse(w, "3", "pull.completed", event(api.EventPullCompleted, pull("p1", api.PullCompleted, 10, 10)))
		flush()
		return false
	}}
	code, stdout, stderr := f.exec(t, false, "follow", "node/node-1")
	if code != 0 || !strings.Contains(stdout, "done: no pull in progress on node node-1") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if q, _ := url.ParseQuery(f.queries[0]); q.Get("node") != "node-1" || q.Has("namespace") {
		t.Fatalf("node query %v", q)
	}
	code, _, stderr = f.exec(t, false, "follow", "node/nope")
	if code != plugin.ExitNotFound || !strings.Contains(stderr, `node "nope" not found`) {
		t.Fatalf("missing node: %d %s", code, stderr)
	}
}

func TestFollowErrors(t *testing.T) {
	f := newFakeAPI(t)
	f.addPod("default", "web", "node-1", "", "registry.local/shop/web:v1")
	cases := []struct {
		name  string
		setup func()
		args  []string
		code  int
		want  string
	}{
		{"pod not found", nil, []string{"follow", "pod/nope"}, plugin.ExitNotFound, `error: pod "nope" not found in namespace default`},
		{"bad kind", nil, []string{"follow", "svc/web"}, plugin.ExitUsage, `cannot follow "svc/web"`},
		{"two targets", nil, []string{"follow", "pod/a", "pod/b"}, plugin.ExitUsage, "exactly one target"},
		{"bad output", nil, []string{"follow", "pod/web", "-o", "yaml"}, plugin.ExitUsage, "unknown output format"},
		{"not installed", nil, []string{"follow", "pod/web", "--server-namespace", "nowhere"}, plugin.ExitNotFound, "Pulltrace is not installed: service nowhere/pulltrace-server not found"},
		{"forbidden", func() { f.forbidProxy = true }, []string{"follow", "pod/web"}, plugin.ExitForbidden, "you need permission to get services/proxy in namespace pulltrace"},
		{"no ready pods", func() { f.forbidProxy, f.unready = false, true }, []string{"follow", "pod/web"}, plugin.ExitUnreachable,
			`the Pulltrace server behind service pulltrace/pulltrace-server is not reachable: its pods are not ready or not running (no endpoints available for service "pulltrace-server")`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.setup != nil {
				f.mu.Lock()
				c.setup()
				f.mu.Unlock()
			}
			code, _, stderr := f.exec(t, false, c.args...)
			if code != c.code || !strings.Contains(stderr, c.want) || strings.Contains(stderr, "goroutine") {
				t.Fatalf("exit %d (want %d)\n%s", code, c.code, stderr)
			}
		})
	}
}

func TestFollowDeployment(t *testing.T) {
	f := newFakeAPI(t)
	f.replicaSets["web-1"] = 1
	f.addRSPod("web-1", "default", "web-a", "node-1", "", "registry.local/shop/web:v1")
	f.addRSPod("web-1", "default", "web-b", "node-2", "", "registry.local/shop/web:v1")
	a := api.PodRef{Namespace: "default", PodName: "web-a", Container: "c0"}
	b := api.PodRef{Namespace: "default", PodName: "web-b", Container: "c0"}
	onB := pull("p2", api.PullActive, 0, 12<<20, b)
	onB.NodeName = "node-2"
	f.streams = []func(io.Writer, func()) bool{func(w io.Writer, flush func()) bool {
		sse(w, "1", "snapshot", api.PullList{Pulls: []api.Pull{pull("p1", api.PullCompleted, 12<<20, 12<<20, a), onB,
			pull("elsewhere", api.PullFailed, 0, 1, api.PodRef{Namespace: "default", PodName: "other", Container: "c0"})}})
		flush()
		time.Sleep(100 * time.Millisecond)
		onB.State, onB.DownloadedBytes = api.PullCompleted, 12<<20
		sse(w, "2", "pull.completed", event(api.EventPullCompleted, onB))
		flush()
		return false
	}}
	code, stdout, stderr := f.exec(t, false, "follow", "deploy/web")
	if code != 0 || !strings.Contains(stdout, "done: every image of the 2 pods of deployment/web is present") || strings.Contains(stdout, "elsewhere") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if q, _ := url.ParseQuery(f.queries[0]); q.Get("namespace") != "default" || q.Has("pod") {
		t.Fatalf("stream query %v", q)
	}
	if len(f.podSelectors) == 0 || f.podSelectors[0] != "app=web" {
		t.Fatalf("pod selectors %q", f.podSelectors)
	}
}

// Right after `kubectl apply` the deployment controller has not seen the new spec and the
// new ReplicaSet has no pods: follow waits for them, ignores the old ReplicaSet's pods (their
// images are present), takes a pull that was reported before its pod was known, and exits 0
// only when the new ReplicaSet's pod has its image.
func TestFollowDeploymentRollout(t *testing.T) {
	f := newFakeAPI(t)
	f.deployGen, f.deployRepl = 2, 1
	f.replicaSets["web-1"] = 1
	f.addRSPod("web-1", "default", "web-old", "node-1", "sha256:old", "registry.local/shop/web:v1")
	newPod := api.PodRef{Namespace: "default", PodName: "web-new", Container: "c0"}
	p := pull("p-new", api.PullActive, 1<<20, 12<<20, newPod)
	p.ImageRef = "registry.local/shop/web:v2"
	f.streams = []func(io.Writer, func()) bool{func(w io.Writer, flush func()) bool {
		sse(w, "1", "snapshot", api.PullList{Pulls: []api.Pull{}})
		flush()
		time.Sleep(300 * time.Millisecond)
		// The pull starts before the follow can know its pod.
		sse(w, "2", "pull.started", event(api.EventPullStarted, p))
		flush()
		f.mu.Lock()
		f.deploy.ObservedGeneration = 2
		f.replicaSets["web-2"] = 2
		f.mu.Unlock()
		f.addRSPod("web-2", "default", "web-new", "node-2", "", "registry.local/shop/web:v2")
		time.Sleep(2500 * time.Millisecond)
		p.State, p.DownloadedBytes = api.PullCompleted, 12<<20
		sse(w, "3", "pull.completed", event(api.EventPullCompleted, p))
		flush()
		return false
	}}
	code, stdout, stderr := f.exec(t, false, "follow", "deploy/web")
	if code != 0 || !strings.Contains(stdout, "done: every image of the 1 pods of deployment/web is present") {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "pull.completed  registry.local/shop/web:v2") {
		t.Fatalf("follow ended before the new pod's pull completed:\n%s", stdout)
	}
	if strings.Contains(stdout, "web-old") || strings.Contains(stdout, "web:v1") {
		t.Fatalf("follow reported the old ReplicaSet's pod:\n%s", stdout)
	}
}

func TestFollowInterrupted(t *testing.T) {
	f := newFakeAPI(t)
	f.addPod("default", "web", "node-1", "", "registry.local/shop/web:v1")
	var out, errOut syncBuffer
	o := plugin.NewOptions(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, "v")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	code := plugin.Execute(ctx, o, []string{"--kubeconfig", f.kubeconfig(), "follow", "pod/web", "--watch"})
	if code != plugin.ExitInterrupted || errOut.String() != "interrupted\n" {
		t.Fatalf("exit %d: %q", code, errOut.String())
	}
}
