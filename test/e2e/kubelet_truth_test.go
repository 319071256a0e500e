package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/internal/harness/stack"
	"github.com/d44b/pulltrace/pkg/api"
	"github.com/d44b/pulltrace/pkg/sseclient"
)

// kubeletRig is Pulltrace on a real kubelet node: the real kubelet (serialized image pulls,
// its own back-off and messages), its containerd pulling through the throttling proxy, and
// the agent and server binaries, the server read directly on loopback.
type kubeletRig struct {
	t      *testing.T
	c      *cluster.Cluster
	cs     kubernetes.Interface
	node   *cluster.Node
	agent  *cluster.Process
	bin    string
	server string
	ns     string

	mu  sync.Mutex
	evs []api.PullEvent
}

func startKubeletRig(t *testing.T) *kubeletRig {
	if testing.Short() {
		t.Skip("real kubelet; skipped with -short")
	}
	c := cluster.StartT(t, cluster.Options{Nodes: cluster.NodeList(1), PullRate: 2 << 20})
	cs, err := c.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	r := &kubeletRig{t: t, c: c, cs: cs, node: c.RealNodes()[0], bin: filepath.Join(t.TempDir(), "bin"), ns: "truth"}
	ctx := t.Context()
	if err := os.MkdirAll(r.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := stack.Build(ctx, r.bin); err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureNamespace(ctx, r.ns); err != nil {
		t.Fatal(err)
	}
	addr, maddr := freeLoopback(t), freeLoopback(t)
	// A short agent timeout, so a stopped agent shows quickly.
	srv, err := c.StartProcess(ctx, "pulltrace-server", filepath.Join(r.bin, "pulltrace-server"),
		[]string{"--listen=" + addr, "--metrics-addr=" + maddr, "--kubeconfig=" + c.Kubeconfig, "--agent-timeout=10s"}, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop(5 * time.Second) })
	r.server = "http://" + addr
	r.eventually(t, 30*time.Second, "server ready", func() bool {
		resp, err := http.Get(r.server + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	r.startAgent()
	go r.collect(ctx)
	return r
}

func (r *kubeletRig) startAgent() {
	a, err := r.c.StartProcess(r.t.Context(), "pulltrace-agent", filepath.Join(r.bin, "pulltrace-agent"), []string{
		"--containerd-socket=" + r.node.ContainerdSocket, "--node-name=" + r.node.Name, "--server=" + r.server,
		"--poll-interval=250ms", "--report-interval=250ms", "--health-addr=127.0.0.1:0",
	}, os.Environ())
	if err != nil {
		r.t.Fatal(err)
	}
	r.agent = a
	r.t.Cleanup(func() { a.Stop(5 * time.Second) })
}

func freeLoopback(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// collect keeps every event of the SSE stream, as a client sees them.
func (r *kubeletRig) collect(ctx context.Context) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.server+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	rd := sseclient.NewReader(bufio.NewReader(resp.Body))
	for {
		ev, err := rd.Next()
		if err != nil {
			return
		}
		var pe api.PullEvent
		if ev.Type != "" || json.Unmarshal([]byte(ev.Data), &pe) != nil || pe.Type == "" {
			continue // the snapshot, or not an event
		}
		r.mu.Lock()
		r.evs = append(r.evs, pe)
		r.mu.Unlock()
	}
}

func (r *kubeletRig) events() []api.PullEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]api.PullEvent(nil), r.evs...)
}

func (r *kubeletRig) eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s\npulls: %s", within, what, r.dump())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (r *kubeletRig) getJSON(path string, out any) {
	r.t.Helper()
	resp, err := http.Get(r.server + path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		r.t.Fatal(err)
	}
}

func (r *kubeletRig) pulls(query string) []api.Pull {
	var l api.PullList
	r.getJSON("/api/v1/pulls?"+query, &l)
	return l.Pulls
}

func (r *kubeletRig) dump() string {
	var b strings.Builder
	for _, p := range r.pulls("") {
		fmt.Fprintf(&b, "\n  %s %s %s %d/%d pods=%v err=%q", p.ID, p.ImageRef, p.State, p.DownloadedBytes, p.TotalBytes, p.Pods, p.Error)
	}
	return b.String()
}

func (r *kubeletRig) push(repo string, sizes ...int64) *cluster.Image {
	r.t.Helper()
	im, err := r.c.PushImage(r.t.Context(), cluster.ImageSpec{Repo: repo, Tag: "v1", LayerSizes: sizes})
	if err != nil {
		r.t.Fatal(err)
	}
	return im
}

// pod creates a pod bound to the node; its containers never start (the synthetic images
// hold no program), so the kubelet reports RunContainerError / CrashLoopBackOff after the
// pull: exactly the container errors a pull's error must never borrow.
func (r *kubeletRig) pod(name string, policy corev1.PullPolicy, images ...string) {
	r.t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.ns}, Spec: corev1.PodSpec{
		NodeName: r.node.Name, RestartPolicy: corev1.RestartPolicyAlways,
		Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
	}}
	for i, im := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: im, ImagePullPolicy: policy, Command: []string{"/bin/true"}})
	}
	if _, err := r.cs.CoreV1().Pods(r.ns).Create(r.t.Context(), p, metav1.CreateOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

// podPulls are the pulls that served the pod, newest first.
func (r *kubeletRig) podPulls(pod string) []api.Pull {
	return r.pulls("namespace=" + r.ns + "&pod=" + pod)
}

// No pull's error may be a container's: start errors, RunContainerError, CrashLoopBackOff,
// or the kubelet's "Error: ..." repeats of a status.
func checkPullErrors(t *testing.T, pulls []api.Pull) {
	t.Helper()
	for _, p := range pulls {
		for _, bad := range []string{"Error: ", "RunContainerError", "CrashLoopBackOff", "failed to create containerd task", "stat /bin/true", "exec:"} {
			if strings.Contains(p.Error, bad) {
				t.Errorf("pull %s (%s, %s) borrowed a container error: %q", p.ID, p.ImageRef, p.State, p.Error)
			}
		}
		if p.State == api.PullCompleted && p.Error != "" {
			t.Errorf("completed pull %s has an error: %q", p.ID, p.Error)
		}
	}
}

// Pulltrace on a real kubelet: what #14 found wrong, one subtest each.
func TestRealKubeletTruth(t *testing.T) {
	r := startKubeletRig(t)

	t.Run("SerialQueueEventsAndRepositoryPort", func(t *testing.T) {
		// Three pods, one image each: the kubelet pulls one image at a time.
		var ims []*cluster.Image
		for i := range 3 {
			ims = append(ims, r.push(fmt.Sprintf("truth/q%d", i), 2<<20, 2<<20))
		}
		for i, im := range ims {
			r.pod(fmt.Sprintf("q%d", i), corev1.PullAlways, im.Ref)
		}
		r.eventually(t, 3*time.Minute, "three pulls completed", func() bool {
			n := 0
			for _, p := range r.pulls("state=completed") {
				if strings.Contains(p.ImageRef, "/truth/q") {
					n++
				}
			}
			return n == 3
		})
		time.Sleep(time.Second) // events of the last report
		for _, im := range ims {
			count := map[api.EventType]int{}
			var seq []string
			for _, ev := range r.events() {
				if ev.Pull.ImageRef != im.Ref || strings.HasPrefix(string(ev.Type), "layer.") {
					continue
				}
				queued := strings.HasPrefix(ev.Pull.ID, "queued-")
				seq = append(seq, fmt.Sprintf("%s:%v", ev.Type, queued))
				switch {
				case queued && ev.Type != api.EventPullQueued && ev.Type != api.EventPullRemoved && ev.Type != api.EventPullProgress:
					t.Errorf("%s: queued entry emitted %s", im.Ref, ev.Type)
				case !queued:
					count[ev.Type]++
				}
				if queued && ev.Type == api.EventPullQueued {
					count["queued"]++
				}
			}
			if count[api.EventPullStarted] != 1 || count[api.EventPullCompleted] != 1 || count["queued"] > 1 || count[api.EventPullFailed] != 0 {
				t.Errorf("%s: want one queued at most, then one started and one completed; got %v", im.Ref, seq)
			}
			t.Logf("%s: %v", im.Ref, seq)
			ps := r.pulls("image=" + im.Repo + "&state=completed")
			if len(ps) != 1 || ps[0].Repository != r.c.ProxyAddr+"/"+im.Repo {
				t.Errorf("%s: repository %+v, want %s/%s (with the port)", im.Ref, ps, r.c.ProxyAddr, im.Repo)
			}
		}
		// By now the containers failed to start, again and again.
		r.eventually(t, time.Minute, "a container start error reached the pod", func() bool {
			p, err := r.cs.CoreV1().Pods(r.ns).Get(t.Context(), "q0", metav1.GetOptions{})
			if err != nil || len(p.Status.ContainerStatuses) == 0 {
				return false
			}
			st := p.Status.ContainerStatuses[0]
			return st.RestartCount > 0 || st.State.Waiting != nil && st.State.Waiting.Reason != "ContainerCreating"
		})
		checkPullErrors(t, r.pulls(""))
	})

	t.Run("IfNotPresentShowsCached", func(t *testing.T) {
		im := r.push("truth/present", 1<<20)
		r.pod("first", corev1.PullIfNotPresent, im.Ref)
		r.eventually(t, time.Minute, "first pull completed", func() bool {
			ps := r.pulls("image=truth/present&state=completed")
			return len(ps) == 1
		})
		r.pod("second", corev1.PullIfNotPresent, im.Ref)
		r.eventually(t, time.Minute, "second pod shows cached", func() bool {
			for _, p := range r.podPulls("second") {
				if p.State == api.PullCached && p.ImageRef == im.Ref && p.Repository == r.c.ProxyAddr+"/truth/present" {
					return true
				}
			}
			return false
		})
		n := 0
		for _, ev := range r.events() {
			if ev.Type == api.EventPullCached && ev.Pull.ImageRef == im.Ref {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d pull.cached events for the second pod, want 1", n)
		}
	})

	t.Run("CutAndRetryEndsCompleted", func(t *testing.T) {
		r.c.SetPullRate(1 << 20)
		defer r.c.SetPullRate(2 << 20)
		im := r.push("truth/cut", 4<<20, 4<<20)
		r.pod("cut", corev1.PullIfNotPresent, im.Ref)
		r.eventually(t, time.Minute, "the pull is a third in", func() bool {
			ps := r.podPulls("cut")
			return len(ps) > 0 && ps[0].State == api.PullActive && ps[0].Percent >= 30
		})
		r.c.StopProxy()
		r.eventually(t, time.Minute, "the cut pull failed with the kubelet's reason", func() bool {
			for _, p := range r.podPulls("cut") {
				// The kubelet's reason: its retry while the registry is away may replace the
				// cut's "short read" with "connection refused"; either is a pull's error.
				if p.State == api.PullFailed && strings.Contains(strings.ToLower(p.Error), "failed to pull") {
					return true
				}
			}
			return false
		})
		if err := r.c.StartProxy(); err != nil {
			t.Fatal(err)
		}
		// The kubelet retries after its back-off (10 s, then 20 s) and resumes.
		r.eventually(t, 2*time.Minute, "the pod's newest pull completed", func() bool {
			ps := r.podPulls("cut")
			return len(ps) > 0 && ps[0].State == api.PullCompleted
		})
		ps := r.podPulls("cut")
		t.Logf("pulls of pod cut: %s", r.dump())
		for _, p := range ps[1:] {
			if p.State != api.PullFailed && p.State != api.PullCompleted {
				t.Errorf("an older attempt is left %s: %+v", p.State, p)
			}
		}
		checkPullErrors(t, ps)
	})

	t.Run("StoppedAgentIsStale", func(t *testing.T) {
		var l api.NodeList
		r.getJSON("/api/v1/nodes", &l)
		if len(l.Nodes) != 1 || l.Nodes[0].Name != r.node.Name || l.Nodes[0].Stale || l.Nodes[0].LastReportAt == nil {
			t.Fatalf("nodes before: %+v", l.Nodes)
		}
		stopped := time.Now()
		r.agent.Stop(5 * time.Second)
		// The server's --agent-timeout is 10 s; its check runs every few seconds.
		r.eventually(t, 20*time.Second, "the node is flagged stale", func() bool {
			var l api.NodeList
			r.getJSON("/api/v1/nodes", &l)
			return len(l.Nodes) == 1 && l.Nodes[0].Stale
		})
		t.Logf("stale %.1f s after the agent stopped", time.Since(stopped).Seconds())
		r.startAgent()
		r.eventually(t, 20*time.Second, "fresh again", func() bool {
			var l api.NodeList
			r.getJSON("/api/v1/nodes", &l)
			return len(l.Nodes) == 1 && !l.Nodes[0].Stale
		})
	})
}
