package agent_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/pkg/api"
)

type realCase struct {
	name string
	rate int64 // proxy bytes per second; 0 unthrottled
	fn   func(t *testing.T, r *rig)
	// representative cases also run in the cells beyond the default one.
	representative bool
}

// realCases run in order on one containerd per cell; those that kill containerd come last.
var realCases = []realCase{
	{"LayerByLayer", 4 << 20, realPullLayerByLayer, true},
	{"TwoImagesAtOnce", 6 << 20, realTwoImagesAtOnce, true},
	{"MultiArch", 8 << 20, realMultiArch, true},
	{"ByDigest", 8 << 20, realByDigest, true},
	{"ZstdAndUncompressed", 8 << 20, realZstdAndUncompressed, true},
	{"TwoTagsOneManifest", 8 << 20, realTwoTags, false},
	{"TwoPodsOneImage", 4 << 20, realTwoPodsOneImage, true},
	{"Cancelled", 2 << 20, realCancelledPull, true},
	{"CutOffThenRetried", 2 << 20, realCutOffThenRetried, true},
	{"RepullAfterRmi", 4 << 20, realRepullAfterRmi, true},
	{"AgentRestartMidPull", 2 << 20, realAgentRestartMidPull, true},
	{"ContainerdRestart", 2 << 20, realContainerdRestart, true},
	{"AgentWithoutContainerd", 0, realAgentWithoutContainerd, false},
}

// TestRealContainerd runs the agent's real cases over the containerd cells that
// PULLTRACE_CONTAINERD_CELLS selects (`make test`: the default cell, its local pull path
// and 2.0; `make test-matrix`: every cell). The default cell runs every case; the others
// run the representative ones unless PULLTRACE_CONTAINERD_ALL_CASES=1.
func TestRealContainerd(t *testing.T) {
	if testing.Short() {
		t.Skip("real containerd test; skipped with -short")
	}
	cells, err := cluster.CellsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	all := envTrue("PULLTRACE_CONTAINERD_ALL_CASES")
	for _, cell := range cells {
		t.Run(cell.String(), func(t *testing.T) {
			start := time.Now()
			c := cluster.StartT(t, cell.Options(cluster.Options{Containerd: true, ContainerdDebug: true}))
			for i, rc := range realCases {
				if !cell.Default() && !rc.representative && !all {
					continue
				}
				t.Run(rc.name, func(t *testing.T) { rc.fn(t, startAgent(t, c, rc.rate)) })
				if i == 0 {
					checkPullPath(t, c, cell)
				}
			}
			t.Logf("cell %s took %s", cell, time.Since(start).Round(time.Second))
		})
	}
}

func envTrue(name string) bool {
	v := strings.ToLower(strings.TrimSpace(os.Getenv(name)))
	return v == "1" || v == "true" || v == "yes"
}

// checkPullPath reads in containerd's debug log which path the CRI pulled with, so a cell
// cannot silently test the other one.
func checkPullPath(t *testing.T, c *cluster.Cluster, cell cluster.Cell) {
	t.Helper()
	b, err := os.ReadFile(c.LogPath("containerd"))
	if err != nil {
		t.Fatal(err)
	}
	local := strings.Contains(string(b), "using client.Pull()")
	transfer := strings.Contains(string(b), "using transfer service")
	if strings.HasPrefix(cell.Version, "v2.0.") {
		// 2.0 has one path (the local client) and does not name it.
		local = strings.Contains(string(b), "with snapshotter")
	}
	switch {
	case cell.LocalPull && (!local || transfer), !cell.LocalPull && (!transfer || local):
		t.Fatalf("cell %s: containerd's log shows local pulls %v, transfer-service pulls %v", cell, local, transfer)
	}
}

// pullsOf returns the distinct pulls (by id, last seen state) the agent showed for im.
func pullsOf(r *rig, im *cluster.Image) []api.Pull {
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	var out []api.Pull
	for _, hist := range r.w.byID {
		last := hist[len(hist)-1]
		if last.ManifestDigest == manifestOf(im) {
			out = append(out, last)
		}
	}
	return out
}

func historyOf(r *rig, id string) []api.Pull {
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	return append([]api.Pull(nil), r.w.byID[id]...)
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A multi-arch index: the pull is of this node's platform manifest, with its layers and
// total, and names the index it came through.
func realMultiArch(t *testing.T, r *rig) {
	im := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/multi", Tag: "v1", LayerSizes: []int64{2 << 20, 1 << 20},
		Platforms: []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}})
	if err := r.c.CRIPull(context.Background(), im.Ref); err != nil {
		t.Fatal(err)
	}
	p := waitPull(t, r, im, 15*time.Second, func(p api.Pull) bool { return p.State == api.PullCompleted })
	if p.IndexDigest != im.IndexDigest || p.TotalBytes != im.TotalSize() || p.LayerCount != len(im.Layers) || p.ImageRef != im.Ref {
		t.Fatalf("index pull: index=%s (want %s) total=%d (want %d) layers=%d ref=%s", p.IndexDigest, im.IndexDigest, p.TotalBytes, im.TotalSize(), p.LayerCount, p.ImageRef)
	}
	if n := len(pullsOf(r, im)); n != 1 {
		t.Fatalf("one index pull made %d pulls", n)
	}
	checkNoErrors(t, r)
}

// A pull by digest completes under the digest reference.
func realByDigest(t *testing.T, r *rig) {
	im := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/bydigest", Tag: "v1", LayerSizes: []int64{2 << 20, 2 << 20}})
	if err := r.c.CRIPull(context.Background(), im.DigestRef()); err != nil {
		t.Fatal(err)
	}
	p := waitPull(t, r, im, 15*time.Second, func(p api.Pull) bool { return p.State == api.PullCompleted })
	if p.ImageRef != im.DigestRef() || p.TotalBytes != im.TotalSize() || p.DownloadedBytes != im.TotalSize() {
		t.Fatalf("by digest: ref=%q (want %q) %d/%d", p.ImageRef, im.DigestRef(), p.DownloadedBytes, p.TotalBytes)
	}
	checkNoErrors(t, r)
}

// One manifest under two tags: the first pull downloads, the second tag needs no download
// and is a cached pull with its own id.
func realTwoTags(t *testing.T, r *rig) {
	a := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/tags", Tag: "a", LayerSizes: []int64{2 << 20}})
	b, err := r.c.TagImage(context.Background(), a, "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.c.CRIPull(context.Background(), a.Ref); err != nil {
		t.Fatal(err)
	}
	first := waitPull(t, r, a, 15*time.Second, func(p api.Pull) bool { return p.State == api.PullCompleted })
	time.Sleep(1500 * time.Millisecond) // past the alias window
	if err := r.c.CRIPull(context.Background(), b.Ref); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a cached pull of the second tag", func() bool { return len(pullsOf(r, a)) == 2 })
	for _, p := range pullsOf(r, a) {
		switch p.ID {
		case first.ID:
			if p.State != api.PullCompleted || p.ImageRef != a.Ref {
				t.Fatalf("first tag's pull: %s %s", p.State, p.ImageRef)
			}
		default:
			if p.State != api.PullCached || p.ImageRef != b.Ref || p.TotalBytes != a.TotalSize() {
				t.Fatalf("second tag's pull: %s %s total=%d", p.State, p.ImageRef, p.TotalBytes)
			}
		}
	}
	checkNoErrors(t, r)
}

// Two pods asking for one image at once (two CRI pulls of one ref): one download, one pull.
// A second image record a moment later is at most a cached pull beside it.
func realTwoPodsOneImage(t *testing.T, r *rig) {
	im := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/twopods", Tag: "v1", LayerSizes: []int64{3 << 20, 3 << 20}})
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Go(func() { errs <- r.c.CRIPull(context.Background(), im.Ref) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitPull(t, r, im, 15*time.Second, func(p api.Pull) bool { return p.State.Finished() })
	time.Sleep(500 * time.Millisecond)
	downloads := 0
	for _, p := range pullsOf(r, im) {
		switch p.State {
		case api.PullCompleted:
			downloads++
			if p.DownloadedBytes != im.TotalSize() {
				t.Fatalf("download %d/%d", p.DownloadedBytes, im.TotalSize())
			}
		case api.PullCached:
		default:
			t.Fatalf("pull %s is %s", p.ID, p.State)
		}
	}
	if downloads != 1 {
		t.Fatalf("one download seen as %d pulls: %+v", downloads, pullsOf(r, im))
	}
	checkNoErrors(t, r)
}

// The registry goes away mid-pull; the "kubelet" retries seconds later. The cut download
// is a failed pull that keeps its id and bytes; the retry is a pull of its own that rises
// from its own bytes to the manifest's total; no report is refused on the way.
func realCutOffThenRetried(t *testing.T, r *rig) {
	im := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/cut", Tag: "v1", LayerSizes: []int64{4 << 20, 4 << 20}})
	errc := make(chan error, 1)
	go func() { errc <- r.c.CRIPull(context.Background(), im.Ref) }()
	cut := waitPull(t, r, im, 15*time.Second, func(p api.Pull) bool { return p.DownloadedBytes >= 2<<20 })
	r.c.StopProxy()
	if err := <-errc; err == nil {
		t.Fatal("a pull cut off at the registry succeeded")
	}
	failed := waitPull(t, r, im, 20*time.Second, func(p api.Pull) bool { return p.State.Finished() })
	if failed.ID != cut.ID || failed.State != api.PullFailed {
		t.Fatalf("cut pull: id %s (was %s) state %s", failed.ID, cut.ID, failed.State)
	}
	if err := r.c.StartProxy(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // a retry well inside the minute the old ids collided in
	r.c.SetPullRate(8 << 20)
	if err := r.c.CRIPull(context.Background(), im.Ref); err != nil {
		t.Fatalf("retry: %v", err)
	}
	waitFor(t, 15*time.Second, "the retry completes", func() bool {
		for _, p := range pullsOf(r, im) {
			if p.ID != cut.ID && p.State == api.PullCompleted {
				return true
			}
		}
		return false
	})
	ps := pullsOf(r, im)
	if len(ps) != 2 {
		t.Fatalf("want the failed pull and the retry, got %d", len(ps))
	}
	for _, p := range ps {
		if p.ID == cut.ID {
			if p.State != api.PullFailed || p.DownloadedBytes != failed.DownloadedBytes {
				t.Fatalf("failed pull changed: %s %d (was %d)", p.State, p.DownloadedBytes, failed.DownloadedBytes)
			}
			continue
		}
		h := historyOf(r, p.ID)
		if h[0].DownloadedBytes >= im.TotalSize() && len(h) > 1 {
			t.Fatalf("retry first seen at %d of %d bytes", h[0].DownloadedBytes, im.TotalSize())
		}
		if p.TotalBytes != im.TotalSize() || p.DownloadedBytes != im.TotalSize() {
			t.Fatalf("retry completed at %d/%d", p.DownloadedBytes, p.TotalBytes)
		}
	}
	checkNoErrors(t, r)
}

// The demo's rounds: pull, crictl rmi (containerd collects the blobs), pull again. Two
// pulls with distinct ids; the first stays completed, the second rises from 0.
func realRepullAfterRmi(t *testing.T, r *rig) {
	im := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/rounds", Tag: "v1", LayerSizes: []int64{3 << 20, 3 << 20}})
	if err := r.c.CRIPull(context.Background(), im.Ref); err != nil {
		t.Fatal(err)
	}
	first := waitPull(t, r, im, 15*time.Second, func(p api.Pull) bool { return p.State == api.PullCompleted })
	if _, err := r.c.Crictl(context.Background(), "rmi", im.Ref); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "containerd collects the layers", func() bool {
		out, err := r.c.Ctr(context.Background(), "content", "ls", "-q")
		return err == nil && !strings.Contains(string(out), im.Layers[0].Digest)
	})
	if err := r.c.CRIPull(context.Background(), im.Ref); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the second pull completes", func() bool {
		for _, p := range pullsOf(r, im) {
			if p.ID != first.ID && p.State == api.PullCompleted {
				return true
			}
		}
		return false
	})
	ps := pullsOf(r, im)
	if len(ps) != 2 {
		t.Fatalf("want two pulls, got %d", len(ps))
	}
	for _, p := range ps {
		if p.ID == first.ID {
			if p.State != api.PullCompleted || p.DownloadedBytes != im.TotalSize() {
				t.Fatalf("first pull changed: %s %d", p.State, p.DownloadedBytes)
			}
			continue
		}
		h := historyOf(r, p.ID)
		if h[0].DownloadedBytes >= im.TotalSize()/2 {
			t.Fatalf("second pull first seen at %d of %d bytes: it must rise from its own start", h[0].DownloadedBytes, im.TotalSize())
		}
		if p.DownloadedBytes != im.TotalSize() || !p.StartedAt.After(first.StartedAt) {
			t.Fatalf("second pull: %d/%d started %s (first %s)", p.DownloadedBytes, im.TotalSize(), p.StartedAt, first.StartedAt)
		}
		for _, l := range p.Layers {
			if l.State != api.LayerDone {
				t.Fatalf("second pull layer %s is %s: it was downloaded again", l.Digest, l.State)
			}
		}
	}
	checkNoErrors(t, r)
}

// The agent restarts mid-pull with the ingests on disk: the new agent reports the same
// download under the same id, from the bytes already there, to the end.
func realAgentRestartMidPull(t *testing.T, r *rig) {
	im := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/agentrestart", Tag: "v1", LayerSizes: []int64{4 << 20, 4 << 20}})
	errc := make(chan error, 1)
	go func() { errc <- r.c.CRIPull(context.Background(), im.Ref) }()
	before := waitPull(t, r, im, 15*time.Second, func(p api.Pull) bool { return p.DownloadedBytes >= 1<<20 })
	r.stop()
	r.a = r.runAgent(t)
	r.c.SetPullRate(8 << 20)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	p := waitPull(t, r, im, 15*time.Second, func(p api.Pull) bool { return p.State == api.PullCompleted })
	if p.ID != before.ID || p.DownloadedBytes != im.TotalSize() {
		t.Fatalf("after the agent restarted: id %s (was %s), %d/%d", p.ID, before.ID, p.DownloadedBytes, im.TotalSize())
	}
	if n := len(pullsOf(r, im)); n != 1 {
		t.Fatalf("one download seen as %d pulls across the agent restart", n)
	}
	checkNoErrors(t, r)
}

// zstd and uncompressed layers: totals are the manifest's, and the pulls complete.
func realZstdAndUncompressed(t *testing.T, r *rig) {
	for _, comp := range []string{"zstd", "none"} {
		im := push(t, r.c, cluster.ImageSpec{Repo: "pulltrace/" + comp, Tag: "v1", LayerSizes: []int64{2 << 20, 1 << 20}, Compression: comp})
		if err := r.c.CRIPull(context.Background(), im.Ref); err != nil {
			t.Fatal(err)
		}
		p := waitPull(t, r, im, 15*time.Second, func(p api.Pull) bool { return p.State.Finished() })
		if p.State != api.PullCompleted || p.TotalBytes != im.TotalSize() || p.DownloadedBytes != im.TotalSize() || p.LayerCount != 2 {
			t.Fatalf("%s: state=%s %d/%d (manifest %d) layers=%d", comp, p.State, p.DownloadedBytes, p.TotalBytes, im.TotalSize(), p.LayerCount)
		}
		for i, l := range p.Layers {
			if l.MediaType != im.Layers[i].MediaType {
				t.Fatalf("%s: layer media type %q, pushed %q", comp, l.MediaType, im.Layers[i].MediaType)
			}
		}
	}
	checkNoErrors(t, r)
}
