package agent_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/agent"
	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/internal/report"
	"github.com/d44b/pulltrace/internal/tracker"
	"github.com/d44b/pulltrace/pkg/api"
)

// recorder is a stand-in server that keeps every report it gets.
type recorder struct {
	mu      sync.Mutex
	reports []api.AgentReport
	refused []string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var rep api.AgentReport
	err := json.NewDecoder(req.Body).Decode(&rep)
	if err == nil {
		err = rep.Validate()
	}
	if err != nil {
		r.mu.Lock()
		r.refused = append(r.refused, err.Error())
		r.mu.Unlock()
		http.Error(w, `{"error":"bad report"}`, http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.reports = append(r.reports, rep)
	r.mu.Unlock()
	_, _ = io.WriteString(w, `{}`)
}

func (r *recorder) refusals() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.refused...)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reports)
}

// watch samples the agent's snapshot at every poll and keeps what each pull went through.
type watch struct {
	mu     sync.Mutex
	pulls  map[string]*history // by manifest digest
	byID   map[string][]api.Pull
	errors []string
}

type history struct {
	last        api.Pull
	layerStates map[string]map[api.LayerState]bool
	ids         map[string]bool
}

func (w *watch) observe(ps []api.Pull) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range ps {
		h := w.pulls[p.ManifestDigest]
		if h == nil {
			h = &history{layerStates: map[string]map[api.LayerState]bool{}, ids: map[string]bool{}}
			w.pulls[p.ManifestDigest] = h
		}
		if h.last.ID == p.ID && p.DownloadedBytes < h.last.DownloadedBytes {
			w.errors = append(w.errors, "downloadedBytes went backwards for "+p.ImageRef)
		}
		if p.TotalKnown && p.DownloadedBytes > p.TotalBytes {
			w.errors = append(w.errors, "downloadedBytes above total for "+p.ImageRef)
		}
		h.ids[p.ID] = true
		h.last = p
		if hist := w.byID[p.ID]; len(hist) > 0 {
			prev := hist[len(hist)-1]
			if p.DownloadedBytes < prev.DownloadedBytes {
				w.errors = append(w.errors, "downloadedBytes went backwards for "+p.ID)
			}
			if prev.State.Finished() && (p.State != prev.State || p.DownloadedBytes != prev.DownloadedBytes) {
				w.errors = append(w.errors, "finished pull "+p.ID+" changed from "+string(prev.State)+" to "+string(p.State))
			}
		}
		if hist := w.byID[p.ID]; len(hist) == 0 || !hist[len(hist)-1].Identical(&p) {
			w.byID[p.ID] = append(hist, p)
		}
		for _, l := range p.Layers {
			if h.layerStates[l.Digest] == nil {
				h.layerStates[l.Digest] = map[api.LayerState]bool{}
			}
			h.layerStates[l.Digest][l.State] = true
		}
	}
}

func (w *watch) get(manifest string) *history {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pulls[manifest]
}

type rig struct {
	c    *cluster.Cluster
	a    *agent.Agent
	rec  *recorder
	w    *watch
	url  string
	stop func()
}

// startAgent runs a fresh agent against the cell's containerd, reporting to a recorder,
// with the proxy at rate (0: unthrottled). Every case gets its own agent, so a case sees
// only the pulls it makes.
func startAgent(t *testing.T, c *cluster.Cluster, rate int64) *rig {
	c.SetPullRate(rate)
	rec := &recorder{}
	hs := httptest.NewServer(rec)
	t.Cleanup(hs.Close)
	r := &rig{c: c, rec: rec, w: &watch{pulls: map[string]*history{}, byID: map[string][]api.Pull{}}, url: hs.URL}
	r.a = r.runAgent(t)
	return r
}

func (r *rig) runAgent(t *testing.T) *agent.Agent {
	t.Helper()
	sender, err := report.New(report.Config{Servers: []string{r.url}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		Socket: r.c.ContainerdSocket, Namespace: cluster.Namespace, NodeName: "node-real", Version: "test",
		PollInterval: 100 * time.Millisecond, ReportInterval: 200 * time.Millisecond, HeartbeatInterval: time.Second,
		Tracker: tracker.Config{FailGrace: 2 * time.Second, StallTimeout: 30 * time.Second, AliasWindow: time.Second},
		Sender:  sender, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	go func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				r.w.observe(a.Snapshot())
			}
		}
	}()
	r.stop = func() { cancel(); <-done }
	t.Cleanup(r.stop)
	deadline := time.Now().Add(10 * time.Second)
	for ok, why := a.Health(); !ok; ok, why = a.Health() {
		if time.Now().After(deadline) {
			t.Fatalf("agent never connected: %s", why)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return a
}

func push(t *testing.T, c *cluster.Cluster, spec cluster.ImageSpec) *cluster.Image {
	t.Helper()
	im, err := c.PushImage(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func manifestOf(im *cluster.Image) string { return im.ManifestDigests[im.Platform] }

func waitPull(t *testing.T, r *rig, im *cluster.Image, within time.Duration, cond func(p api.Pull) bool) api.Pull {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if h := r.w.get(manifestOf(im)); h != nil && cond(h.last) {
			return h.last
		}
		time.Sleep(50 * time.Millisecond)
	}
	h := r.w.get(manifestOf(im))
	if h == nil {
		t.Fatalf("no pull of %s seen in %s", im.Ref, within)
	}
	t.Fatalf("pull of %s not as expected in %s; last: state=%s %d/%d layers=%v", im.Ref, within, h.last.State, h.last.DownloadedBytes, h.last.TotalBytes, h.last.Layers)
	return api.Pull{}
}

func checkNoErrors(t *testing.T, r *rig) {
	t.Helper()
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	if len(r.w.errors) > 0 {
		t.Fatalf("invariants broken: %v", r.w.errors)
	}
	if ref := r.rec.refusals(); len(ref) > 0 {
		t.Fatalf("the server refused %d reports, first: %s", len(ref), ref[0])
	}
}

// One multi-layer image through the CRI: every layer seen waiting then downloading, the
// total equal to the manifest's layer sizes from the first sighting, completion with the
// exact tagged name. Then a second pull of the same image is reported cached.
func realPullLayerByLayer(t *testing.T, r *rig) {
	im := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/layers", Tag: "v1", LayerSizes: []int64{3 << 20, 3 << 20, 3 << 20, 3 << 20, 3 << 20}})
	if err := r.c.CRIPull(context.Background(), im.Ref); err != nil {
		t.Fatal(err)
	}
	p := waitPull(t, r, im, 10*time.Second, func(p api.Pull) bool { return p.State == api.PullCompleted })
	if p.ImageRef != im.Ref {
		t.Fatalf("completed as %q, want the tagged name %q", p.ImageRef, im.Ref)
	}
	if p.TotalBytes != im.TotalSize() || p.DownloadedBytes != im.TotalSize() || p.LayerCount != len(im.Layers) || p.LayersDone != len(im.Layers) {
		t.Fatalf("final figures %d/%d bytes %d/%d layers; manifest says %d bytes in %d layers",
			p.DownloadedBytes, p.TotalBytes, p.LayersDone, p.LayerCount, im.TotalSize(), len(im.Layers))
	}
	h := r.w.get(manifestOf(im))
	if len(h.ids) != 1 {
		t.Fatalf("one pull had %d ids", len(h.ids))
	}
	waiting := 0
	for _, l := range im.Layers {
		st := h.layerStates[l.Digest]
		if !st[api.LayerDownloading] || !st[api.LayerDone] {
			t.Errorf("layer %s states seen %v: want downloading and done", l.Digest, st)
		}
		if st[api.LayerWaiting] {
			waiting++
		}
	}
	// Five layers, three downloads at a time: at least the last two queue.
	if waiting < 2 {
		t.Errorf("only %d layers were seen waiting; the CRI queues layers beyond max_concurrent_downloads", waiting)
	}
	checkNoErrors(t, r)
	if r.rec.count() == 0 {
		t.Fatal("no report reached the server")
	}

	// The same image again needs no download: ctr re-creates the image record, the agent
	// reports the pull as cached.
	if _, err := r.c.Ctr(context.Background(), "images", "rm", im.Ref); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past the alias window of the first pull's records
	if err := r.c.CRIPull(context.Background(), im.Ref); err != nil {
		t.Fatal(err)
	}
	var cp api.Pull
	deadline := time.Now().Add(10 * time.Second)
	for cp.ID == "" && time.Now().Before(deadline) {
		for _, sp := range r.a.Snapshot() {
			if sp.ManifestDigest == manifestOf(im) && sp.ID != p.ID {
				cp = sp
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if cp.State != api.PullCached || cp.Percent != 100 || cp.TotalBytes != im.TotalSize() {
		t.Fatalf("second pull: state=%s pct=%v total=%d", cp.State, cp.Percent, cp.TotalBytes)
	}
	for _, l := range cp.Layers {
		if l.State != api.LayerExists {
			t.Fatalf("cached pull layer %s is %s", l.Digest, l.State)
		}
	}
}

// Two different images at once on one node, sharing a base layer: two pulls, each with its
// own total, each counting the shared layer.
func realTwoImagesAtOnce(t *testing.T, r *rig) {
	base := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/base", Tag: "v1", LayerSizes: []int64{2 << 20}})
	a := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/a", Tag: "v1", BaseFrom: base, LayerSizes: []int64{3 << 20, 1 << 20}})
	b := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/b", Tag: "v2", BaseFrom: base, LayerSizes: []int64{4 << 20}})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, im := range []*cluster.Image{a, b} {
		wg.Go(func() { errs <- r.c.CRIPull(context.Background(), im.Ref) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, im := range []*cluster.Image{a, b} {
		p := waitPull(t, r, im, 10*time.Second, func(p api.Pull) bool { return p.State == api.PullCompleted })
		if p.ImageRef != im.Ref || p.TotalBytes != im.TotalSize() || p.LayerCount != len(im.Layers) {
			t.Fatalf("%s: ref=%q total=%d (want %d) layers=%d", im.Ref, p.ImageRef, p.TotalBytes, im.TotalSize(), p.LayerCount)
		}
		if p.Layers[0].Digest != base.Layers[0].Digest {
			t.Fatalf("%s does not list the shared base layer first", im.Ref)
		}
	}
	if n := len(r.a.Snapshot()); n != 2 {
		t.Fatalf("want exactly two pulls, got %d", n)
	}
	checkNoErrors(t, r)
}

// A pull cancelled half-way (the kubelet gives up) is failed, not completed.
func realCancelledPull(t *testing.T, r *rig) {
	im := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/cancel", Tag: "v1", LayerSizes: []int64{6 << 20, 6 << 20}})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.c.CRIPull(ctx, im.Ref) }()
	waitPull(t, r, im, 15*time.Second, func(p api.Pull) bool { return p.DownloadedBytes >= 2<<20 })
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("cancelled pull reported success")
	}
	p := waitPull(t, r, im, 15*time.Second, func(p api.Pull) bool { return p.State.Finished() })
	if p.State != api.PullFailed || !strings.Contains(p.Error, "aborted") || p.CompletedAt == nil {
		t.Fatalf("cancelled pull: state=%s error=%q", p.State, p.Error)
	}
	if p.DownloadedBytes >= p.TotalBytes {
		t.Fatalf("a failed pull cannot have all its bytes: %d/%d", p.DownloadedBytes, p.TotalBytes)
	}
	checkNoErrors(t, r)
}

// containerd killed mid-pull and restarted: the agent reconnects, and the pull (retried by
// the "kubelet") either completes at the manifest's size or is failed, never completed short.
func realContainerdRestart(t *testing.T, r *rig) {
	im := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/restart", Tag: "v1", LayerSizes: []int64{4 << 20, 4 << 20}})
	errc := make(chan error, 1)
	go func() { errc <- r.c.CRIPull(context.Background(), im.Ref) }()
	waitPull(t, r, im, 15*time.Second, func(p api.Pull) bool { return p.DownloadedBytes >= 1<<20 })
	if err := r.c.RestartContainerd(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-errc //nolint:errcheck // the first attempt dies with containerd; its error is not the point
	deadline := time.Now().Add(20 * time.Second)
	for ok, _ := r.a.Health(); !ok; ok, _ = r.a.Health() {
		if time.Now().After(deadline) {
			t.Fatal("agent did not reconnect to the restarted containerd")
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.c.SetPullRate(8 << 20)
	if err := r.c.CRIPull(context.Background(), im.Ref); err != nil {
		t.Fatalf("retried pull: %v", err)
	}
	p := waitPull(t, r, im, 15*time.Second, func(p api.Pull) bool { return p.State.Finished() })
	switch p.State {
	case api.PullCompleted:
		if p.TotalBytes != im.TotalSize() || p.DownloadedBytes != im.TotalSize() {
			t.Fatalf("completed at the wrong size: %d/%d, manifest %d", p.DownloadedBytes, p.TotalBytes, im.TotalSize())
		}
	case api.PullFailed:
		t.Logf("pull reported failed after the restart: %s", p.Error)
	default:
		t.Fatalf("state %s", p.State)
	}
	checkNoErrors(t, r)
	var healthz struct {
		OK bool `json:"ok"`
	}
	rec := httptest.NewRecorder()
	r.a.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if err := json.Unmarshal(rec.Body.Bytes(), &healthz); err != nil || !healthz.OK {
		t.Fatalf("healthz after reconnect: %s", rec.Body.String())
	}
}

// With containerd gone the agent stays up, says why on /healthz, and recovers.
func realAgentWithoutContainerd(t *testing.T, r *rig) {
	r.c.KillContainerd()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec := httptest.NewRecorder()
		r.a.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		if rec.Code == http.StatusServiceUnavailable && strings.Contains(rec.Body.String(), "containerd") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz while containerd is down: %d %s", rec.Code, rec.Body.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := r.c.StartContainerd(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for ok, why := r.a.Health(); !ok; ok, why = r.a.Health() {
		if time.Now().After(deadline) {
			t.Fatalf("agent did not recover: %s", why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
