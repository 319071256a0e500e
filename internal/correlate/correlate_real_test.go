package correlate_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/internal/correlate"
	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/pkg/api"
)

type rig struct {
	t     *testing.T
	c     *cluster.Cluster
	cs    kubernetes.Interface
	store *aggregate.Store
	mu    sync.Mutex
	evs   []api.PullEvent
	seq   uint64
}

func (r *rig) events() []api.PullEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]api.PullEvent(nil), r.evs...)
}

// The real apiserver, real informers, the real aggregate: only the agent is replaced by
// reports written here, so each correlation case is exact and quick.
func startRig(t *testing.T) *rig {
	if testing.Short() {
		t.Skip("real apiserver test; skipped with -short")
	}
	c := cluster.StartT(t, cluster.Options{Kube: true})
	cs, err := c.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, c: c, cs: cs}
	var corr *correlate.Correlator
	corr, err = correlate.New(correlate.Config{Client: cs, OnChange: func(nodes []string, touches func(*api.Pull) bool) { r.store.Recorrelate(nodes, touches) }})
	if err != nil {
		t.Fatal(err)
	}
	r.store = aggregate.New(aggregate.Config{}, corr, func(evs []api.PullEvent) {
		r.mu.Lock()
		r.evs = append(r.evs, evs...)
		r.mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	corr.Start(ctx)
	if !corr.WaitForSync(ctx) {
		t.Fatal("informers did not sync")
	}
	return r
}

func (r *rig) report(node string, pulls ...api.Pull) {
	r.seq++
	rep := &api.AgentReport{SchemaVersion: "v1", NodeName: node, AgentID: "agent-" + node, Sequence: r.seq, Timestamp: time.Now(), ContainerdConnected: true, Pulls: pulls}
	if err := rep.Validate(); err != nil {
		r.t.Fatal(err)
	}
	r.store.Apply(rep)
}

func activePull(id, node, ref, manifest string, got int64) api.Pull {
	p := api.Pull{ID: id, NodeName: node, ImageRef: ref, Repository: ref, ManifestDigest: manifest, State: api.PullActive, TotalKnown: true,
		StartedAt: time.Now().Add(-time.Second), UpdatedAt: time.Now(), Pods: []api.PodRef{},
		Layers: []api.Layer{{Digest: "sha256:" + strings.Repeat("1", 64), TotalBytes: 1000, DownloadedBytes: got, State: api.LayerDownloading}}}
	p.Summarize()
	return p
}

func (r *rig) pull(id string) api.Pull {
	for _, p := range r.store.Pulls(api.Filter{}) {
		if p.ID == id {
			return p
		}
	}
	return api.Pull{}
}

func (r *rig) eventually(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("not within 10s: %s; pulls now: %+v", what, r.store.Pulls(api.Filter{}))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func podNames(p api.Pull) string {
	var s []string
	for _, pod := range p.Pods {
		s = append(s, pod.Namespace+"/"+pod.PodName+"/"+pod.Container)
	}
	return strings.Join(s, ",")
}

func (r *rig) waiting(pod *corev1.Pod, container, reason, msg string) *corev1.Pod {
	r.t.Helper()
	p, err := r.c.SetPodWaiting(context.Background(), pod, container, reason, msg)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

func TestRealCorrelation(t *testing.T) {
	r := startRig(t)
	ctx := context.Background()
	const node = "node-1"
	if _, err := r.c.Node(ctx, node); err != nil {
		t.Fatal(err)
	}
	manifest := "sha256:" + strings.Repeat("a", 64)

	t.Run("queued then served, two pods on one pull, exact ref from the kubelet", func(t *testing.T) {
		// The pods exist before any byte moves: they are queued.
		web1, err := r.c.CreatePod(ctx, "shop", "web-1", node, "registry.example:5000/shop/web:1.2")
		if err != nil {
			t.Fatal(err)
		}
		web2, err := r.c.CreatePod(ctx, "shop", "web-2", node, "registry.example:5000/shop/web:1.2")
		if err != nil {
			t.Fatal(err)
		}
		other, err := r.c.CreatePod(ctx, "shop", "other-node", "node-2", "registry.example:5000/shop/web:1.2")
		if err != nil {
			t.Fatal(err)
		}
		r.waiting(web1, "c0", "ContainerCreating", "")
		r.waiting(web2, "c0", "ContainerCreating", "")
		r.waiting(other, "c0", "ContainerCreating", "")
		var queuedID string
		r.eventually("pods queued", func() bool {
			for _, p := range r.store.Pulls(api.Filter{Node: node, States: []api.PullState{api.PullQueued}}) {
				if p.ImageRef == "registry.example:5000/shop/web:1.2" && podNames(p) == "shop/web-1/c0,shop/web-2/c0" {
					queuedID = p.ID
					return true
				}
			}
			return false
		})
		// The kubelet starts the pull: containerd knows only "host without port/repo" so far.
		if _, err := r.c.KubeletContainerEvent(ctx, web1, "c0", "Pulling", `Pulling image "registry.example:5000/shop/web:1.2"`); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		r.report(node, activePull("p-web", node, "registry.example/shop/web", manifest, 100))
		r.eventually("pull carries both pods and the exact ref", func() bool {
			p := r.pull("p-web")
			return podNames(p) == "shop/web-1/c0,shop/web-2/c0" && p.ImageRef == "registry.example:5000/shop/web:1.2"
		})
		if q := r.pull(queuedID); q.ID != "" {
			t.Fatalf("queued entry still there once the pull started: %+v", q)
		}
		removed := false
		for _, ev := range r.events() {
			if ev.Type == api.EventPullRemoved && ev.Pull.ID == queuedID {
				removed = true
			}
		}
		if !removed {
			t.Fatal("no pull.removed for the queued entry")
		}
		// The pod on another node never attaches to this node's pull.
		if strings.Contains(podNames(r.pull("p-web")), "other-node") {
			t.Fatal("a pod of node-2 was attached to node-1's pull")
		}

		// A pod deleted mid-pull leaves the pull, live.
		if err := r.c.DeletePod(ctx, web2); err != nil {
			t.Fatal(err)
		}
		r.eventually("deleted pod detached", func() bool { return podNames(r.pull("p-web")) == "shop/web-1/c0" })
		last := r.events()
		ev := last[len(last)-1]
		for i := len(last) - 1; i >= 0; i-- {
			if last[i].Pull.ID == "p-web" {
				ev = last[i]
				break
			}
		}
		if ev.Type != api.EventPullProgress || podNames(ev.Pull) != "shop/web-1/c0" {
			t.Fatalf("pod change not announced: %s %s", ev.Type, podNames(ev.Pull))
		}
	})

	t.Run("init container and digest reference", func(t *testing.T) {
		cs := r.cs
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "migrate", Namespace: "shop"},
			Spec: corev1.PodSpec{NodeName: node,
				InitContainers: []corev1.Container{{Name: "init-db", Image: "registry.example/tools/migrate@" + manifest}},
				Containers:     []corev1.Container{{Name: "app", Image: "registry.example/shop/app:2"}}},
		}
		created, err := cs.CoreV1().Pods("shop").Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Status.Phase = corev1.PodPending
		created.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: "init-db", Image: pod.Spec.InitContainers[0].Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}}
		if _, err := cs.CoreV1().Pods("shop").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		r.report(node, activePull("p-web", node, "registry.example/shop/web", manifest, 200),
			activePull("p-migrate", node, "registry.example/tools/migrate", manifest, 50))
		r.eventually("init container attached by digest", func() bool {
			return strings.Contains(podNames(r.pull("p-migrate")), "shop/migrate/init-db")
		})
	})

	t.Run("ErrImagePull attaches the kubelet's error", func(t *testing.T) {
		bad, err := r.c.CreatePod(ctx, "shop", "typo", node, "registry.example/shop/wbe:1.0")
		if err != nil {
			t.Fatal(err)
		}
		msg := `failed to pull and unpack image "registry.example/shop/wbe:1.0": failed to resolve reference: registry.example/shop/wbe:1.0: not found`
		r.waiting(bad, "c0", "ErrImagePull", msg)
		if _, err := r.c.KubeletContainerEvent(ctx, bad, "c0", "Failed", "Failed to pull image \"registry.example/shop/wbe:1.0\": "+msg); err != nil {
			t.Fatal(err)
		}
		r.eventually("no-byte failure reported as pull.failed with the error", func() bool {
			for _, ev := range r.events() {
				if ev.Type == api.EventPullFailed && ev.Pull.ImageRef == "registry.example/shop/wbe:1.0" && ev.Pull.Error == msg && podNames(ev.Pull) == "shop/typo/c0" {
					return true
				}
			}
			return false
		})

		// A pull that did start and then died: the agent says aborted, the kubelet says why.
		cut, err := r.c.CreatePod(ctx, "shop", "cut", node, "registry.example/shop/big:3")
		if err != nil {
			t.Fatal(err)
		}
		r.waiting(cut, "c0", "ContainerCreating", "")
		big := activePull("p-big", node, "registry.example/shop/big", "sha256:"+strings.Repeat("b", 64), 300)
		r.report(node, r.pull("p-web"), r.pull("p-migrate"), big)
		r.eventually("big pull attached", func() bool { return podNames(r.pull("p-big")) == "shop/cut/c0" })
		reason := "failed to copy: httpReadSeeker: failed open: unexpected EOF"
		r.waiting(cut, "c0", "ErrImagePull", reason)
		time.Sleep(300 * time.Millisecond)
		failed := big
		failed.State, failed.Error = api.PullFailed, "aborted: the download stopped"
		now := time.Now().UTC()
		failed.CompletedAt = &now
		r.report(node, r.pull("p-web"), r.pull("p-migrate"), failed)
		p := r.pull("p-big")
		if p.State != api.PullFailed || p.Error != reason {
			t.Fatalf("failed pull: state=%s error=%q, want the kubelet's %q", p.State, p.Error, reason)
		}
	})
	t.Run("a second download of an image gets the pods created after the first finished", func(t *testing.T) {
		const ref = "registry.example/shop/rounds:1"
		m := "sha256:" + strings.Repeat("c", 64)
		r1, err := r.c.CreatePod(ctx, "shop", "round-1", node, ref)
		if err != nil {
			t.Fatal(err)
		}
		r.waiting(r1, "c0", "ContainerCreating", "")
		first := activePull("p-round-1", node, ref, m, 400)
		r.report(node, first)
		r.eventually("round 1 pod on round 1 pull", func() bool { return podNames(r.pull("p-round-1")) == "shop/round-1/c0" })
		done := first
		done.State, done.Layers = api.PullCompleted, []api.Layer{{Digest: first.Layers[0].Digest, TotalBytes: 1000, DownloadedBytes: 1000, State: api.LayerDone}}
		done.Summarize()
		fin := time.Now().UTC()
		done.CompletedAt = &fin
		r.report(node, done)
		if _, err := r.c.SetContainerRunning(ctx, r1, "c0", m); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // creation timestamps have one-second resolution
		// The image is removed and the next round's pod asks for it again.
		r2, err := r.c.CreatePod(ctx, "shop", "round-2", node, ref)
		if err != nil {
			t.Fatal(err)
		}
		r.waiting(r2, "c0", "ContainerCreating", "")
		second := activePull("p-round-2", node, ref, m, 100)
		second.StartedAt = time.Now()
		r.report(node, done, second)
		r.eventually("round 2 pod on round 2 pull", func() bool { return podNames(r.pull("p-round-2")) == "shop/round-2/c0" })
		time.Sleep(300 * time.Millisecond) // let re-correlation run
		if got := podNames(r.pull("p-round-1")); got != "shop/round-1/c0" {
			t.Fatalf("the finished first pull has pods %q; the second round's pod belongs to the second download", got)
		}
	})
	if t.Failed() {
		for _, ev := range r.events() {
			fmt.Println(ev.Type, ev.Pull.ID, ev.Pull.State, podNames(ev.Pull), ev.Pull.Error)
		}
	}
}

// --watch-namespaces: pods outside the listed namespaces are neither attached nor queued.
func TestRealWatchNamespaces(t *testing.T) {
	if testing.Short() {
		t.Skip("real apiserver test; skipped with -short")
	}
	c := cluster.StartT(t, cluster.Options{Kube: true})
	cs, err := c.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	corr, err := correlate.New(correlate.Config{Client: cs, Namespaces: []string{"team-a"}})
	if err != nil {
		t.Fatal(err)
	}
	corr.Start(ctx)
	for _, ns := range []string{"team-a", "team-b"} {
		if _, err := c.CreatePod(ctx, ns, "app", "node-1", "registry.example/app:1"); err != nil {
			t.Fatal(err)
		}
	}
	if !corr.WaitForSync(ctx) {
		t.Fatal("no sync")
	}
	p := api.Pull{ID: "p", NodeName: "node-1", ImageRef: "registry.example/app:1", State: api.PullActive, StartedAt: time.Now()}
	deadline := time.Now().Add(10 * time.Second)
	for {
		corr.Enrich(&p)
		if len(p.Pods) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if podNames(p) != "team-a/app/c0" {
		t.Fatalf("pods %q, want only team-a's", podNames(p))
	}
	q := corr.Queued("", nil)
	if len(q) != 1 || podNames(q[0]) != "team-a/app/c0" {
		t.Fatalf("queued %+v", q)
	}
}
