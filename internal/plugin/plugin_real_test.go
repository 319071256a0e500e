package plugin_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/d44b/pulltrace/internal/agent"
	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/internal/plugin"
	"github.com/d44b/pulltrace/internal/plugin/uiproxy"
	"github.com/d44b/pulltrace/internal/report"
	"github.com/d44b/pulltrace/internal/server"
	"github.com/d44b/pulltrace/internal/tracker"
	"github.com/d44b/pulltrace/pkg/api"
)

// syncBuffer is a bytes.Buffer safe to read while the plugin writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// run is one in-process plugin invocation.
type run struct {
	stdout, stderr *syncBuffer
	code           int
	done           chan struct{}
	cancel         context.CancelFunc
}

func (r *run) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(within):
		r.cancel()
		<-r.done
		t.Fatalf("plugin still running after %s\nstdout:\n%s\nstderr:\n%s", within, r.stdout, r.stderr)
	}
	return -1
}

// startPlugin runs the root command with args against kubeconfig; out, when set, is the
// command's stdout (a pty), else a buffer.
func startPlugin(ctx context.Context, kubeconfig string, out io.Writer, args ...string) *run {
	ctx, cancel := context.WithCancel(ctx)
	r := &run{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{}), cancel: cancel}
	if out == nil {
		out = r.stdout
	}
	o := plugin.NewOptions(genericiooptions.IOStreams{In: strings.NewReader(""), Out: out, ErrOut: r.stderr}, "v0.0.0-test")
	o.OpenBrowser = func(context.Context, string) error { return errors.New("no browser in tests") }
	go func() {
		defer close(r.done)
		defer cancel()
		r.code = plugin.Execute(ctx, o, append([]string{"--kubeconfig", kubeconfig}, args...))
	}()
	return r
}

func runPlugin(t *testing.T, ctx context.Context, kubeconfig string, args ...string) *run {
	t.Helper()
	r := startPlugin(ctx, kubeconfig, nil, args...)
	r.wait(t, 60*time.Second)
	t.Logf("kubectl pulltrace %s -> exit %d\n--- stdout:\n%.3000s--- stderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type rig struct {
	c   *cluster.Cluster
	cs  kubernetes.Interface
	srv *server.Server
}

// startRig runs the real parts: containerd and the apiserver, the real server in this
// process exposed as pulltrace/pulltrace-server through the apiserver's service proxy,
// and the real agent for node-1 reporting to it.
func startRig(t *testing.T, ctx context.Context) *rig {
	c := cluster.StartT(t, cluster.Options{Containerd: true, Kube: true, PullRate: 2 << 20})
	cs, err := c.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(server.Config{Version: "test-server", Kube: cs, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	// Run brings the informers and expiry; its own listeners stay unused on loopback.
	go func() { _ = srv.Run(ctx, listen(t), listen(t)) }()
	exposed, err := c.ExposeService(ctx, plugin.DefaultServerNamespace, plugin.DefaultServerService, 8080, srv.Handler())
	if err != nil {
		t.Fatal(err)
	}
	sender, err := report.New(report.Config{Servers: []string{exposed.URL()}})
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agent.New(agent.Config{Socket: c.ContainerdSocket, Namespace: cluster.Namespace, NodeName: "node-1", Version: "test",
		PollInterval: 150 * time.Millisecond, ReportInterval: 250 * time.Millisecond, HeartbeatInterval: 2 * time.Second,
		Tracker: tracker.Config{FailGrace: 2 * time.Second},
		Sender:  sender, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ag.Run(ctx) }()
	if _, err := c.Node(ctx, "node-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "server informers", func() bool { ok, _ := srv.Ready(); return ok })
	return &rig{c: c, cs: cs, srv: srv}
}

func listen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// waitingPod creates pod default/name on node-1 for img, waiting for its image.
func (r *rig) waitingPod(t *testing.T, ctx context.Context, name, img string) *corev1.Pod {
	t.Helper()
	pod, err := r.c.CreatePod(ctx, "default", name, "node-1", img)
	if err != nil {
		t.Fatal(err)
	}
	if pod, err = r.c.SetPodWaiting(ctx, pod, "c0", "ContainerCreating", ""); err != nil {
		t.Fatal(err)
	}
	return pod
}

func (r *rig) push(t *testing.T, ctx context.Context, repo string, layers ...int64) *cluster.Image {
	t.Helper()
	im, err := r.c.PushImage(ctx, cluster.ImageSpec{Repo: repo, Tag: "v1", LayerSizes: layers})
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func jsonEvents(t *testing.T, out string) []api.PullEvent {
	t.Helper()
	var evs []api.PullEvent
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev api.PullEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("stdout line is not a PullEvent: %v: %q", err, sc.Text())
		}
		if ev.SchemaVersion != api.SchemaVersion {
			t.Fatalf("event without schemaVersion v1: %q", sc.Text())
		}
		evs = append(evs, ev)
	}
	return evs
}

func hasPod(p *api.Pull, ns, name string) bool {
	for _, r := range p.Pods {
		if r.Namespace == ns && r.PodName == name {
			return true
		}
	}
	return false
}

// The plugin against the real server, agent, containerd and apiserver, all through the
// apiserver's service proxy.
func TestRealPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("real cluster; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := startRig(t, ctx)
	admin := r.c.Kubeconfig

	// Three layers of 4 MiB at 2 MiB/s: containerd moves ingest offsets in 1 MiB steps, so
	// this gives a few distinct progress figures in about six seconds.
	im := r.push(t, ctx, "shop/web", 4<<20, 4<<20, 4<<20)
	r.waitingPod(t, ctx, "web", im.Ref)

	t.Run("follow json", func(t *testing.T) {
		f := startPlugin(ctx, admin, nil, "follow", "pod/web", "-o", "json")
		// The queued line proves the stream is up and the snapshot read: only then does
		// the pull start, so its pull.started event reaches the follower.
		waitFor(t, 20*time.Second, "the queued line", func() bool {
			select {
			case <-f.done:
				t.Fatalf("follow ended early: %d\n%s", f.code, f.stderr)
			default:
			}
			return strings.Contains(f.stderr.String(), "queued: waiting for the kubelet to start pulling "+im.Ref+" on node-1")
		})
		go func() {
			if err := r.c.CRIPull(ctx, im.Ref); err != nil {
				t.Errorf("pull: %v", err)
			}
		}()
		if code := f.wait(t, 60*time.Second); code != 0 {
			t.Fatalf("follow exit %d\nstdout:\n%s\nstderr:\n%s", code, f.stdout, f.stderr)
		}
		evs := jsonEvents(t, f.stdout.String())
		var started, completed bool
		var progress int
		var last int64 = -1
		for _, ev := range evs {
			if ev.Pull.State == api.PullQueued || ev.Type == api.EventPullRemoved {
				continue
			}
			switch ev.Type {
			case api.EventPullStarted:
				started = hasPod(&ev.Pull, "default", "web")
			case api.EventPullProgress:
				if ev.Pull.DownloadedBytes < last {
					t.Fatalf("downloadedBytes went backwards: %d after %d", ev.Pull.DownloadedBytes, last)
				}
				if ev.Pull.DownloadedBytes > last {
					progress++
				}
				last = ev.Pull.DownloadedBytes
			case api.EventPullCompleted:
				completed = ev.Pull.ImageRef == im.Ref && ev.Pull.TotalBytes == im.TotalSize() && hasPod(&ev.Pull, "default", "web")
			}
		}
		if !started || progress < 2 || !completed {
			t.Fatalf("started with pod=%v progress steps=%d completed=%v\n%s", started, progress, completed, f.stdout)
		}
		if !strings.Contains(f.stderr.String(), "done: every image of pod default/web is present") {
			t.Fatalf("no done line on stderr:\n%s", f.stderr)
		}
	})

	t.Run("get", func(t *testing.T) {
		g := runPlugin(t, ctx, admin, "get", "-o", "json")
		if g.code != 0 {
			t.Fatalf("get -o json: %d %s", g.code, g.stderr)
		}
		var l plugin.PullObjectList
		if err := json.Unmarshal([]byte(g.stdout.String()), &l); err != nil || l.Kind != plugin.KindPullList {
			t.Fatalf("get -o json output: %v\n%s", err, g.stdout)
		}
		found := false
		for _, it := range l.Items {
			p := it.Pull
			if p.ImageRef == im.Ref && p.State == api.PullCompleted && hasPod(&p, "default", "web") {
				found = true
			}
		}
		if !found {
			t.Fatalf("no completed pull of %s for default/web in %s", im.Ref, g.stdout)
		}
		tab := runPlugin(t, ctx, admin, "get")
		out := tab.stdout.String()
		if tab.code != 0 || !strings.HasPrefix(out, "IMAGE") || !strings.Contains(out, im.Ref) || !strings.Contains(out, "completed") || !strings.Contains(out, "default/web") {
			t.Fatalf("get table (%d):\n%s\n%s", tab.code, out, tab.stderr)
		}
		wide := runPlugin(t, ctx, admin, "get", "pulls", "web", "-o", "wide")
		if wide.code != 0 || !strings.Contains(wide.stdout.String(), "3/3") || !strings.Contains(wide.stdout.String(), im.ManifestDigests[im.Platform]) {
			t.Fatalf("get -o wide (%d):\n%s\n%s", wide.code, wide.stdout, wide.stderr)
		}
		none := runPlugin(t, ctx, admin, "get", "-n", "kube-system")
		if none.code != 0 || none.stdout.String() != "" || !strings.Contains(none.stderr.String(), "No pulls found in kube-system namespace") {
			t.Fatalf("get -n kube-system (%d): %q %q", none.code, none.stdout, none.stderr)
		}
	})

	t.Run("follow plain", func(t *testing.T) {
		// Not a terminal, no -o: readable lines; the pull already completed, so the
		// snapshot alone ends the follow.
		f := runPlugin(t, ctx, admin, "follow", "pod/web")
		out := f.stdout.String()
		if f.code != 0 || !strings.Contains(out, "snapshot        "+im.Ref+" on node-1 completed 12.0MiB 100% layers 3/3") ||
			!strings.Contains(out, "done: every image of pod default/web is present") || strings.Contains(out, "\x1b[") {
			t.Fatalf("follow (%d):\n%s\n%s", f.code, out, f.stderr)
		}
	})

	t.Run("cached", func(t *testing.T) {
		// A pod whose container already runs from the image: nothing to pull.
		pod, err := r.c.CreatePod(ctx, "default", "ready", "node-1", im.Ref)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.c.SetContainerRunning(ctx, pod, "c0", "sha256:"+strings.Repeat("a", 64)); err != nil {
			t.Fatal(err)
		}
		f := runPlugin(t, ctx, admin, "follow", "pod/ready")
		if f.code != 0 || !strings.Contains(f.stdout.String(), "cached: "+im.Ref+" already present on node-1") {
			t.Fatalf("follow pod/ready (%d):\n%s\n%s", f.code, f.stdout, f.stderr)
		}
	})

	t.Run("errors", func(t *testing.T) {
		u := runPlugin(t, ctx, r.c.UserKubeconfig, "get", "-A")
		if u.code != plugin.ExitForbidden || !strings.Contains(u.stderr.String(), "get services/proxy in namespace pulltrace") {
			t.Fatalf("user without RBAC: exit %d\n%s", u.code, u.stderr)
		}
		if strings.Contains(u.stderr.String(), "goroutine ") {
			t.Fatalf("stack trace in the output:\n%s", u.stderr)
		}
		uf := runPlugin(t, ctx, r.c.UserKubeconfig, "follow", "pod/web")
		if uf.code != plugin.ExitForbidden || !strings.Contains(uf.stderr.String(), "get pods in namespace default") {
			t.Fatalf("user follow: exit %d\n%s", uf.code, uf.stderr)
		}
		ni := runPlugin(t, ctx, admin, "get", "--server-namespace", "elsewhere")
		if ni.code != plugin.ExitNotFound || !strings.Contains(ni.stderr.String(), "kubectl pulltrace install") {
			t.Fatalf("not installed: exit %d\n%s", ni.code, ni.stderr)
		}
		nf := runPlugin(t, ctx, admin, "follow", "pod/nope")
		if nf.code != plugin.ExitNotFound || !strings.Contains(nf.stderr.String(), `pod "nope" not found in namespace default`) {
			t.Fatalf("pod not found: exit %d\n%s", nf.code, nf.stderr)
		}
		// A Service with no ready endpoint: what a fresh install looks like before its
		// pods start.
		_, err := r.cs.CoreV1().Services("pulltrace").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "starting"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080)}},
				Selector: map[string]string{"app": "none"}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		un := runPlugin(t, ctx, admin, "get", "--server-service", "starting")
		if un.code != plugin.ExitUnreachable || !strings.Contains(un.stderr.String(), "not reachable") {
			t.Fatalf("no endpoints: exit %d\n%s", un.code, un.stderr)
		}
		v := runPlugin(t, ctx, admin, "version", "--server-service", "starting")
		if v.code != 0 || !strings.Contains(v.stdout.String(), "server: not reachable (") {
			t.Fatalf("version without server: %d\n%s", v.code, v.stdout)
		}
	})

	t.Run("version", func(t *testing.T) {
		v := runPlugin(t, ctx, admin, "version")
		if v.code != 0 || !strings.Contains(v.stdout.String(), "kubectl-pulltrace: v0.0.0-test") || !strings.Contains(v.stdout.String(), "server: test-server") {
			t.Fatalf("version (%d):\n%s\n%s", v.code, v.stdout, v.stderr)
		}
	})

	t.Run("failed pull", func(t *testing.T) {
		bad := r.push(t, ctx, "shop/broken", 4<<20, 4<<20)
		r.waitingPod(t, ctx, "broken", bad.Ref)
		f := startPlugin(ctx, admin, nil, "follow", "pod/broken", "-o", "json")
		waitFor(t, 20*time.Second, "the queued line", func() bool { return strings.Contains(f.stderr.String(), "queued:") })
		pullCtx, stopPull := context.WithCancel(ctx)
		defer stopPull()
		go func() { _ = r.c.CRIPull(pullCtx, bad.Ref) }()
		waitFor(t, 30*time.Second, "bytes of the doomed pull", func() bool {
			for _, ev := range jsonEvents(t, f.stdout.String()) {
				if ev.Pull.DownloadedBytes >= 1<<20 {
					return true
				}
			}
			return false
		})
		stopPull() // the "kubelet" gives up half-way
		if code := f.wait(t, 30*time.Second); code != plugin.ExitPullFailed {
			t.Fatalf("follow of a failed pull: exit %d\n%s\n%s", code, f.stdout, f.stderr)
		}
		if !strings.Contains(f.stderr.String(), "error: pull of "+bad.Ref+" for container c0 of pod default/broken on node-1 failed: ") {
			t.Fatalf("no failure text:\n%s", f.stderr)
		}
	})

	t.Run("follow tty", func(t *testing.T) {
		im2 := r.push(t, ctx, "shop/tty", 2<<20, 2<<20, 2<<20)
		r.waitingPod(t, ctx, "tty", im2.Ref)
		ptmx, tty, err := pty.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer ptmx.Close()
		if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
			t.Fatal(err)
		}
		var screen syncBuffer
		copied := make(chan struct{})
		go func() { _, _ = io.Copy(&screen, ptmx); close(copied) }()
		f := startPlugin(ctx, admin, tty, "follow", "pod/tty", "--layers", "-v=2")
		waitFor(t, 20*time.Second, "the queued line", func() bool { return strings.Contains(screen.String(), "queued: waiting for the kubelet") })
		go func() {
			if err := r.c.CRIPull(ctx, im2.Ref); err != nil {
				t.Errorf("pull: %v", err)
			}
		}()
		code := f.wait(t, 60*time.Second)
		tty.Close()
		select {
		case <-copied:
		case <-time.After(5 * time.Second):
		}
		out := screen.String()
		if code != 0 {
			t.Fatalf("follow on a tty: exit %d\n%q\n%s", code, out, f.stderr)
		}
		ups := strings.Count(out, "\x1b[") - strings.Count(out, "\x1b[2K") - strings.Count(out, "\x1b[J")
		if ups < 3 || !strings.Contains(out, "A\x1b[2K") {
			t.Fatalf("no in-place redraw (cursor-up) in the terminal output:\n%q", out)
		}
		for _, bad := range []string{"\x1b[2J", "\x1b[H", "\x1bc"} {
			if strings.Contains(out, bad) {
				t.Fatalf("full-screen clear %q in the terminal output", bad)
			}
		}
		for _, want := range []string{"pull complete", "sha256:", "downloading", "eta "} {
			if !strings.Contains(out, want) {
				t.Errorf("terminal output lacks %q", want)
			}
		}
		if t.Failed() {
			t.Logf("%q", out)
		}
	})

	t.Run("ui proxy", func(t *testing.T) {
		p, err := uiproxy.New(uiproxy.Config{REST: r.c.AdminConfig(), Namespace: "pulltrace", Service: "pulltrace-server", Port: "http"})
		if err != nil {
			t.Fatal(err)
		}
		s, err := uiproxy.Start(ctx, "127.0.0.1:0", p)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		resp, err := http.Get(s.URL + "api/v1/version")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "test-server") {
			t.Fatalf("version through the ui proxy: %d %s", resp.StatusCode, body)
		}
		ui := startPlugin(ctx, admin, nil, "ui", "--port", "0", "--no-browser")
		waitFor(t, 20*time.Second, "the ui URL", func() bool {
			return strings.Contains(ui.stdout.String(), "/api/v1/namespaces/pulltrace/services/pulltrace-server:http/proxy/")
		})
		ui.cancel()
		if code := ui.wait(t, 10*time.Second); code != 0 {
			t.Fatalf("ui exit %d: %s", code, ui.stderr)
		}
	})

	t.Run("install", func(t *testing.T) {
		const ns = "pt-install"
		dry := runPlugin(t, ctx, admin, "install", "--dry-run", "-n", ns)
		if dry.code != 0 || !strings.Contains(dry.stdout.String(), "# chart pulltrace-0.1.0") || !strings.Contains(dry.stdout.String(), "kind: DaemonSet") ||
			!strings.Contains(dry.stderr.String(), "ROOT-EQUIVALENT") {
			t.Fatalf("install --dry-run (%d):\n%.2000s\n%s", dry.code, dry.stdout, dry.stderr)
		}
		if _, err := r.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("dry run touched the cluster: namespace %s: %v", ns, err)
		}
		refused := runPlugin(t, ctx, admin, "install", "-n", ns)
		if refused.code != plugin.ExitUsage || !strings.Contains(refused.stderr.String(), "--yes") {
			t.Fatalf("install without --yes off a terminal: %d\n%s", refused.code, refused.stderr)
		}
		in := runPlugin(t, ctx, admin, "install", "--yes", "--wait=false", "-n", ns)
		if in.code != 0 || !strings.Contains(in.stdout.String(), "release pulltrace installed") {
			t.Fatalf("install (%d):\n%s\n%s", in.code, in.stdout, in.stderr)
		}
		nsObj, err := r.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil || nsObj.Labels[plugin.PodSecurityLabel] != "privileged" {
			t.Fatalf("namespace %s labels %v: %v", ns, nsObj.Labels, err)
		}
		exists := func() []string {
			var have []string
			if _, err := r.cs.AppsV1().Deployments(ns).Get(ctx, "pulltrace-server", metav1.GetOptions{}); err == nil {
				have = append(have, "deployment")
			}
			if _, err := r.cs.AppsV1().DaemonSets(ns).Get(ctx, "pulltrace-agent", metav1.GetOptions{}); err == nil {
				have = append(have, "daemonset")
			}
			for _, s := range []string{"pulltrace-server", "pulltrace-server-headless"} {
				if _, err := r.cs.CoreV1().Services(ns).Get(ctx, s, metav1.GetOptions{}); err == nil {
					have = append(have, "service "+s)
				}
			}
			return have
		}
		if have := exists(); len(have) != 4 {
			t.Fatalf("after install only %v exist", have)
		}
		again := runPlugin(t, ctx, admin, "install", "--yes", "--wait=false", "-n", ns, "--set", "config.logLevel=debug")
		if again.code != 0 || !strings.Contains(again.stdout.String(), "release pulltrace upgraded (revision 2)") {
			t.Fatalf("second install (%d):\n%s\n%s", again.code, again.stdout, again.stderr)
		}
		un := runPlugin(t, ctx, admin, "uninstall", "-n", ns)
		if un.code != 0 || !strings.Contains(un.stdout.String(), "DaemonSet/pulltrace-agent") {
			t.Fatalf("uninstall (%d):\n%s\n%s", un.code, un.stdout, un.stderr)
		}
		if have := exists(); len(have) != 0 {
			t.Fatalf("after uninstall still there: %v", have)
		}
		if _, err := r.cs.RbacV1().ClusterRoles().Get(ctx, ns+"-pulltrace-server", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("cluster role left behind: %v", err)
		}
		gone := runPlugin(t, ctx, admin, "uninstall", "-n", ns)
		if gone.code != plugin.ExitNotFound {
			t.Fatalf("second uninstall: %d %s", gone.code, gone.stderr)
		}
	})
}
