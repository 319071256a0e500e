package cluster_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/d44b/pulltrace/internal/harness/cluster"
)

const (
	mib = 1 << 20
	// childEnv makes the test binary act as a server on fd 3, standing in for a real
	// server process started with an exposed listener.
	childEnv = "PULLTRACE_CLUSTER_TEST_CHILD"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "serve-fd3" {
		ln, err := net.FileListener(os.NewFile(3, "listener"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "child: listener on fd 3:", err)
			os.Exit(1)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from child %d", os.Getpid())
		})
		_ = http.Serve(ln, mux)
		os.Exit(0)
	}
	if os.Getenv(childEnv) == "own-cluster" {
		ownCluster()
	}
	if os.Getenv(childEnv) == "own-real-cluster" {
		ownRealCluster()
	}
	os.Exit(m.Run())
}

// ownCluster starts a cluster with an overlay mount under its folder, reports it, and
// waits to be killed: the owner that never gets to run Stop.
func ownCluster() {
	ctx := context.Background()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "own-cluster:", err)
		os.Exit(1)
	}
	c, err := cluster.Start(ctx, cluster.Options{Containerd: true})
	if err != nil {
		fail(err)
	}
	im, err := c.PushImage(ctx, cluster.ImageSpec{Repo: "pulltrace/orphan", LayerSizes: []int64{64 * 1024}})
	if err != nil {
		fail(err)
	}
	if err := c.CtrPull(ctx, im.Ref); err != nil {
		fail(err)
	}
	mnt := filepath.Join(c.Dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		fail(err)
	}
	if _, err := c.Ctr(ctx, "images", "mount", im.Ref, mnt); err != nil {
		fail(err)
	}
	fmt.Printf("DIR %s\n", c.Dir)
	fmt.Printf("PIDS %s\n", strings.Trim(fmt.Sprint(c.Pids()), "[]"))
	select {}
}

// TestCluster runs the foundation checks against one real cluster: starting one costs
// seconds, and the last subtest checks that stopping it leaves nothing behind.
func TestCluster(t *testing.T) {
	c := cluster.StartT(t, cluster.Options{Containerd: true, Kube: true})
	ctx := t.Context()

	cc, err := containerd.New(c.ContainerdSocket, containerd.WithDefaultNamespace(cluster.Namespace))
	if err != nil {
		t.Fatalf("containerd client: %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	cs, err := c.AdminClient()
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}

	var exposed []*cluster.Exposed

	t.Run("PullProgressEveryLayer", func(t *testing.T) { testPullProgress(ctx, t, c, cc) })
	t.Run("CancelAndCutPull", func(t *testing.T) { testCancelAndCut(ctx, t, c, cc) })
	t.Run("MultiArchAndBase", func(t *testing.T) { testMultiArch(ctx, t, c, cc) })
	t.Run("PodInformer", func(t *testing.T) { testInformer(ctx, t, c, cs) })
	t.Run("ServiceProxy", func(t *testing.T) { exposed = append(exposed, testServiceProxy(ctx, t, c, cs)...) })
	t.Run("RestartContainerd", func(t *testing.T) { testRestart(ctx, t, c) })
	t.Run("StopLeavesNothing", func(t *testing.T) { testStop(t, c, exposed) })
}

// ingestPoller records, for every layer ingest seen, whether it was ever part-way.
type ingestPoller struct {
	mu      sync.Mutex
	partway map[string]bool  // layer digest -> seen with 0 < offset < total
	totals  map[string]int64 // layer digest -> Total
	maxOpen int
}

func pollIngests(ctx context.Context, t *testing.T, cc *containerd.Client) (*ingestPoller, func()) {
	p := &ingestPoller{partway: map[string]bool{}, totals: map[string]int64{}}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			sts, err := cc.ContentStore().ListStatuses(ctx)
			if err != nil && ctx.Err() == nil {
				t.Errorf("ListStatuses: %v", err)
				return
			}
			p.mu.Lock()
			open := 0
			for _, st := range sts {
				d, ok := strings.CutPrefix(st.Ref, "layer-")
				if !ok {
					continue
				}
				open++
				p.totals[d] = st.Total
				if st.Offset > 0 && st.Offset < st.Total {
					p.partway[d] = true
				}
			}
			p.maxOpen = max(p.maxOpen, open)
			p.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return p, func() { cancel(); <-done }
}

func testPullProgress(ctx context.Context, t *testing.T, c *cluster.Cluster, cc *containerd.Client) {
	three, err := c.PushImage(ctx, cluster.ImageSpec{Repo: "pulltrace/three", Tag: "v1", LayerSizes: []int64{6 * mib, 6 * mib, 6 * mib}})
	if err != nil {
		t.Fatal(err)
	}
	five, err := c.PushImage(ctx, cluster.ImageSpec{Repo: "pulltrace/five", Tag: "v1", LayerSizes: []int64{4 * mib, 4 * mib, 4 * mib, 4 * mib, 4 * mib}})
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range []*cluster.Image{three, five} {
		for _, l := range im.Layers {
			if l.MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
				t.Errorf("%s layer %s media type %s", im.Ref, l.Digest, l.MediaType)
			}
		}
	}
	if three.Layers[0].Size != 6*mib || five.Layers[4].Size != 4*mib {
		t.Errorf("layer sizes %d, %d; want exactly %d, %d", three.Layers[0].Size, five.Layers[4].Size, 6*mib, 4*mib)
	}

	c.SetPullRate(4 * mib)
	t.Cleanup(func() { c.SetPullRate(0) })
	poller, stop := pollIngests(ctx, t, cc)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, im := range []*cluster.Image{three, five} {
		wg.Go(func() { errs[i] = c.CRIPull(ctx, im.Ref) })
	}
	wg.Wait()
	stop()
	took := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("CRI pulls: %v", err)
	}
	total := three.TotalSize() + five.TotalSize()
	t.Logf("pulled %d MiB in %s (%.1f MiB/s), at most %d layer ingests open at once",
		total/mib, took.Round(time.Millisecond), float64(total)/mib/took.Seconds(), poller.maxOpen)
	// Throttled to 4 MiB/s the pulls cannot be quicker than the bytes allow.
	if minimum := time.Duration(float64(total) / (4 * mib) * 0.8 * float64(time.Second)); took < minimum {
		t.Errorf("pulls took %s, faster than the 4 MiB/s throttle allows (%s)", took, minimum)
	}
	for _, im := range []*cluster.Image{three, five} {
		for _, l := range im.Layers {
			if !poller.partway[l.Digest] {
				t.Errorf("%s layer %s never seen part-way (total seen %d)", im.Ref, l.Digest, poller.totals[l.Digest])
			}
			if got := poller.totals[l.Digest]; got != l.Size {
				t.Errorf("%s layer %s ingest total %d, want %d", im.Ref, l.Digest, got, l.Size)
			}
		}
		got, err := cc.ImageService().Get(ctx, im.Ref)
		if err != nil {
			t.Errorf("image %s not listed after pull: %v", im.Ref, err)
			continue
		}
		if got.Target.Digest.String() != im.Digest {
			t.Errorf("image %s target %s, want %s", im.Ref, got.Target.Digest, im.Digest)
		}
	}
}

// waitIngests polls until cond holds for the layer ingests of im.
func waitIngests(ctx context.Context, t *testing.T, cc *containerd.Client, im *cluster.Image, within time.Duration, what string, cond func(open, moving int) bool) {
	t.Helper()
	layers := map[string]bool{}
	for _, l := range im.Layers {
		layers[l.Digest] = true
	}
	deadline := time.Now().Add(within)
	for {
		sts, err := cc.ContentStore().ListStatuses(ctx)
		if err != nil {
			t.Fatalf("ListStatuses: %v", err)
		}
		open, moving := 0, 0
		for _, st := range sts {
			if d, ok := strings.CutPrefix(st.Ref, "layer-"); ok && layers[d] {
				open++
				if st.Offset > 0 {
					moving++
				}
			}
		}
		if cond(open, moving) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (open %d, moving %d)", what, within, open, moving)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testCancelAndCut(ctx context.Context, t *testing.T, c *cluster.Cluster, cc *containerd.Client) {
	im, err := c.PushImage(ctx, cluster.ImageSpec{Repo: "pulltrace/cut", Tag: "v1", LayerSizes: []int64{8 * mib, 8 * mib}})
	if err != nil {
		t.Fatal(err)
	}
	c.SetPullRate(2 * mib)
	t.Cleanup(func() { c.SetPullRate(0) })

	// Cancelling the CRI call (crictl killed) must cancel the pull inside containerd.
	pctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- c.CRIPull(pctx, im.Ref) }()
	waitIngests(ctx, t, cc, im, 20*time.Second, "pull under way", func(open, moving int) bool { return moving > 0 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled pull returned %v, want context.Canceled", err)
	}
	waitIngests(ctx, t, cc, im, 10*time.Second, "ingests gone after cancel", func(open, _ int) bool { return open == 0 })

	// Stopping the proxy cuts the download in flight, so the pull fails.
	go func() { errc <- c.CRIPull(ctx, im.Ref) }()
	waitIngests(ctx, t, cc, im, 20*time.Second, "second pull under way", func(open, moving int) bool { return moving > 0 })
	c.StopProxy()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("pull succeeded although the proxy was stopped mid-download")
		}
		t.Logf("pull failed as expected: %v", firstLine(err.Error()))
	case <-time.After(60 * time.Second):
		t.Fatal("pull did not fail within 60s of stopping the proxy")
	}
	if err := c.StartProxy(); err != nil {
		t.Fatal(err)
	}
	c.SetPullRate(0)
	if err := c.CRIPull(ctx, im.Ref); err != nil {
		t.Fatalf("pull after StartProxy: %v", err)
	}
	if _, err := cc.ImageService().Get(ctx, im.Ref); err != nil {
		t.Errorf("image not listed after pull: %v", err)
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func testMultiArch(ctx context.Context, t *testing.T, c *cluster.Cluster, cc *containerd.Client) {
	base, err := c.PushImage(ctx, cluster.ImageSpec{Repo: "pulltrace/base", Tag: "v1", LayerSizes: []int64{512 * 1024, 100}})
	if err != nil {
		t.Fatal(err)
	}
	if got := base.Layers[0].Size; got != 512*1024 {
		t.Errorf("layer size %d, want 524288", got)
	}
	multi, err := c.PushImage(ctx, cluster.ImageSpec{
		Repo: "pulltrace/multi", Tag: "v1", LayerSizes: []int64{256 * 1024},
		BaseFrom: base, Platforms: []string{"linux/arm64", "linux/amd64", "linux/arm/v7"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if multi.IndexDigest == "" || multi.Digest != multi.IndexDigest || len(multi.ManifestDigests) != 3 {
		t.Fatalf("index not described: %+v", multi)
	}
	if len(multi.Layers) != 3 || multi.Layers[0] != base.Layers[0] || multi.Layers[1] != base.Layers[1] {
		t.Fatalf("base layers not shared: %+v vs %+v", multi.Layers, base.Layers)
	}
	if err := c.CRIPull(ctx, multi.Ref); err != nil {
		t.Fatal(err)
	}
	img, err := cc.ImageService().Get(ctx, multi.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Target.Digest.String() != multi.IndexDigest {
		t.Errorf("pulled target %s, want index %s", img.Target.Digest, multi.IndexDigest)
	}
	if _, err := cc.ContentStore().Info(ctx, digest.Digest(multi.ManifestDigests[multi.Platform])); err != nil {
		t.Errorf("host manifest %s not in the content store: %v", multi.Platform, err)
	}
	for plat, d := range multi.ManifestDigests {
		if plat == multi.Platform {
			continue
		}
		if _, err := cc.ContentStore().Info(ctx, digest.Digest(d)); !errdefs.IsNotFound(err) {
			t.Errorf("%s manifest fetched although not the host's platform (err %v)", plat, err)
		}
	}

	// ctr's transfer-service pull of the same kind of image.
	ctrImg, err := c.PushImage(ctx, cluster.ImageSpec{Repo: "pulltrace/ctr", Tag: "v1", LayerSizes: []int64{300 * 1024}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CtrPull(ctx, ctrImg.Ref); err != nil {
		t.Fatal(err)
	}
	if _, err := cc.ImageService().Get(ctx, ctrImg.Ref); err != nil {
		t.Errorf("ctr-pulled image not listed: %v", err)
	}
}

func testInformer(ctx context.Context, t *testing.T, c *cluster.Cluster, cs kubernetes.Interface) {
	const ns = "pt-informer"
	if err := c.EnsureNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	type ev struct {
		kind string
		pod  *corev1.Pod
	}
	events := make(chan ev, 64)
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { events <- ev{"add", o.(*corev1.Pod)} },
		UpdateFunc: func(_, o any) { events <- ev{"update", o.(*corev1.Pod)} },
		DeleteFunc: func(o any) {
			if p, ok := o.(*corev1.Pod); ok {
				events <- ev{"delete", p}
			}
		},
	}); err != nil {
		t.Fatal(err)
	}
	ictx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); factory.Shutdown() }()
	factory.Start(ictx.Done())
	if !cache.WaitForCacheSync(ictx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	next := func(kind string, ok func(*corev1.Pod) bool) *corev1.Pod {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case e := <-events:
				if e.kind == kind && ok(e.pod) {
					return e.pod
				}
			case <-timeout:
				t.Fatalf("no %s event within 10s", kind)
			}
		}
	}

	node, err := c.Node(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(node.Status.Conditions) == 0 || node.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Errorf("node not ready: %+v", node.Status.Conditions)
	}
	ref := c.PullRef("pulltrace/three", "v1")
	pod, err := c.CreatePod(ctx, ns, "web", node.Name, ref)
	if err != nil {
		t.Fatal(err)
	}
	next("add", func(p *corev1.Pod) bool { return p.Name == "web" })

	if _, err := c.SetPodWaiting(ctx, pod, "c0", "ErrImagePull", "rpc error: pull failed"); err != nil {
		t.Fatal(err)
	}
	got := next("update", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
			p.Status.ContainerStatuses[0].State.Waiting.Reason == "ErrImagePull"
	})
	if cs := got.Status.ContainerStatuses[0]; cs.ImageID != "" || cs.Image != ref || got.Status.Phase != corev1.PodPending {
		t.Errorf("waiting status not kubelet-like: phase %s, %+v", got.Status.Phase, cs)
	}

	for _, r := range [][2]string{{"Pulling", fmt.Sprintf("Pulling image %q", ref)}, {"Failed", "Failed to pull image"}, {"BackOff", "Back-off pulling image"}} {
		if _, err := c.KubeletEvent(ctx, pod, r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.name": "web", "source": "kubelet"}.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) != 3 {
		t.Fatalf("%d kubelet events, want 3", len(evs.Items))
	}
	for _, e := range evs.Items {
		if e.InvolvedObject.FieldPath != "spec.containers{c0}" || e.InvolvedObject.UID != pod.UID || e.Source.Host != "node-a" {
			t.Errorf("event not kubelet-like: %+v %+v", e.InvolvedObject, e.Source)
		}
		if want := map[string]string{"Pulling": "Normal", "Failed": "Warning", "BackOff": "Warning"}[e.Reason]; e.Type != want {
			t.Errorf("event %s type %s, want %s", e.Reason, e.Type, want)
		}
	}

	if _, err := c.SetContainerRunning(ctx, pod, "c0", "sha256:0123"); err != nil {
		t.Fatal(err)
	}
	next("update", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	if err := c.DeletePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	next("delete", func(p *corev1.Pod) bool { return p.Name == "web" })

	// The unprivileged user authenticates but has no RBAC bindings.
	ucfg, err := clientcmd.BuildConfigFromFlags("", c.UserKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ucs, err := kubernetes.NewForConfig(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ucs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("unprivileged user listing pods: %v, want Forbidden", err)
	}
	acfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	acs, err := kubernetes.NewForConfig(acfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("admin kubeconfig: %v", err)
	}
}

func sseHandler(interval time.Duration, n int) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from the namespace")
	})
	mux.HandleFunc("/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		fl := w.(http.Flusher)
		fl.Flush()
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "id: %d\ndata: %d\n\n", i, time.Now().UnixNano())
			fl.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(interval):
			}
		}
	})
	return mux
}

// readSSE reads events and checks each arrives soon after it was sent (no buffering).
func readSSE(t *testing.T, body io.ReadCloser, want int) {
	t.Helper()
	defer body.Close()
	sc := bufio.NewScanner(body)
	var got int
	var lastRecv time.Time
	for sc.Scan() && got < want {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		recv := time.Now()
		sentNs, err := strconv.ParseInt(data, 10, 64)
		if err != nil {
			t.Fatalf("bad event data %q", data)
		}
		if lag := recv.Sub(time.Unix(0, sentNs)); lag > time.Second {
			t.Errorf("event %d arrived %s after it was sent (buffered?)", got, lag)
		}
		if got > 0 && recv.Sub(lastRecv) < 150*time.Millisecond {
			t.Errorf("event %d arrived %s after the previous one; events should be ~300ms apart", got, recv.Sub(lastRecv))
		}
		lastRecv = recv
		got++
	}
	if got < want {
		t.Fatalf("read %d events, want %d (err %v)", got, want, sc.Err())
	}
}

func testServiceProxy(ctx context.Context, t *testing.T, c *cluster.Cluster, cs kubernetes.Interface) []*cluster.Exposed {
	const ns = "pt-proxy"
	var out []*cluster.Exposed
	e, err := c.ExposeService(ctx, ns, "sse", 8080, sseHandler(300*time.Millisecond, 5))
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, e)

	body, err := cs.CoreV1().Services(ns).ProxyGet("http", "sse", "http", "hello", nil).DoRaw(ctx)
	if err != nil {
		t.Fatalf("ProxyGet hello: %v", err)
	}
	if string(body) != "hello from the namespace" {
		t.Errorf("ProxyGet hello: %q", body)
	}

	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	stream, err := cs.CoreV1().Services(ns).ProxyGet("http", "sse", "http", "events", nil).Stream(sctx)
	if err != nil {
		t.Fatalf("ProxyGet events stream: %v", err)
	}
	readSSE(t, stream, 4)

	raw, err := cs.CoreV1().RESTClient().Get().AbsPath(e.ProxyPath + "/events").Stream(sctx)
	if err != nil {
		t.Fatalf("raw proxy stream: %v", err)
	}
	readSSE(t, raw, 4)

	// A server in another process, given the listener as fd 3.
	e2, err := c.ExposeServiceListener(ctx, ns, "child", 8081)
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, e2)
	p, err := c.StartProcess(ctx, "child-server", os.Args[0], []string{"-test.run=^$"},
		append(os.Environ(), childEnv+"=serve-fd3"), e2.File)
	if err != nil {
		t.Fatal(err)
	}
	body, err = cs.CoreV1().Services(ns).ProxyGet("http", "child", "http", "hello", nil).DoRaw(ctx)
	if err != nil {
		t.Fatalf("ProxyGet child hello: %v\n%s", err, readFile(p.LogPath))
	}
	if want := fmt.Sprintf("hello from child %d", p.Pid()); string(body) != want {
		t.Errorf("child answered %q, want %q", body, want)
	}
	return out
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func testRestart(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	before := c.ContainerdPid()
	if err := c.RestartContainerd(ctx); err != nil {
		t.Fatal(err)
	}
	after := c.ContainerdPid()
	if after == 0 || after == before {
		t.Fatalf("containerd pid %d -> %d", before, after)
	}
	// The state survives a crash-restart: images pulled before are still there, and a
	// fresh client (the old connection died with the process) works.
	cc, err := containerd.New(c.ContainerdSocket, containerd.WithDefaultNamespace(cluster.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := cc.ImageService().Get(ctx, c.PullRef("pulltrace/three", "v1")); err != nil {
		t.Errorf("image lost across restart: %v", err)
	}
	im, err := c.PushImage(ctx, cluster.ImageSpec{Repo: "pulltrace/after-restart", Tag: "v1", LayerSizes: []int64{1 * mib}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CRIPull(ctx, im.Ref); err != nil {
		t.Fatalf("pull after restart: %v", err)
	}
	c.KillContainerd()
	if c.ContainerdPid() != 0 {
		t.Fatal("containerd still running after KillContainerd")
	}
	if err := c.StartContainerd(ctx); err != nil {
		t.Fatal(err)
	}
}

func testStop(t *testing.T, c *cluster.Cluster, exposed []*cluster.Exposed) {
	dir := c.Dir
	// An overlay mount under the folder, as a mounted snapshot would leave.
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ctr(t.Context(), "images", "mount", c.PullRef("pulltrace/three", "v1"), mnt); err != nil {
		t.Fatal(err)
	}
	if !mountedUnder(t, dir) {
		t.Fatal("no mount under the folder after ctr images mount")
	}
	pids := c.Pids()
	if len(pids) < 5 {
		t.Errorf("only %d children recorded: %v", len(pids), pids)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	t.Logf("before stop: %d children, %d mounts under the folder, %d exposed services",
		len(pids), strings.Count(string(mounts), dir+"/"), len(exposed))
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))

	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("child %d still exists after Stop (kill 0: %v)", pid, err)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), dir) {
			t.Errorf("process %s still refers to the cluster folder: %q", p, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), dir) {
		t.Errorf("mounts left under %s", dir)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster folder %s still exists (%v)", dir, err)
	}
	list, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exposed {
		if strings.Contains(string(list), e.NetNS) {
			t.Errorf("netns %s still listed", e.NetNS)
		}
		if _, err := os.Stat(filepath.Join("/run/netns", e.NetNS)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("/run/netns/%s still exists", e.NetNS)
		}
		// The host end of the veth goes when the namespace is freed, which the kernel does
		// asynchronously once the last reference (socket, process) is gone.
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := net.InterfaceByName(e.NetNS + "h")
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("veth %sh still exists", e.NetNS)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestKilledOwnerLeavesNothingRunning kills a process that owns a cluster without letting
// it stop anything: its children must die with it, and the next cluster start must remove
// the mounts and folder it left.
func TestKilledOwnerLeavesNothingRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("real cluster: skipped in -short mode")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=own-cluster")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var dir string
	var pids []int
	timeout := time.After(90 * time.Second)
	for dir == "" || pids == nil {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("owner process ended early:\n%s", stderr.String())
			}
			if d, ok := strings.CutPrefix(l, "DIR "); ok {
				dir = d
			}
			if p, ok := strings.CutPrefix(l, "PIDS "); ok {
				pids = []int{}
				for _, f := range strings.Fields(p) {
					n, _ := strconv.Atoi(f)
					pids = append(pids, n)
				}
			}
		case <-timeout:
			t.Fatalf("owner process did not report its cluster:\n%s", stderr.String())
		}
	}
	if len(pids) < 2 {
		t.Fatalf("owner reported children %v", pids)
	}
	if !mountedUnder(t, dir) {
		t.Fatalf("no mount under %s to leave behind", dir)
	}

	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("child %d outlived its killed owner", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// The next start sweeps what the dead owner left.
	c := cluster.StartT(t, cluster.Options{Registry: true})
	c.Stop()
	if mountedUnder(t, dir) {
		t.Errorf("mounts under %s survived the sweep", dir)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("folder %s survived the sweep (%v)", dir, err)
	}
}

func mountedUnder(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), dir+"/")
}

// alive reports whether pid exists and is not a zombie waiting for init to reap it.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}
