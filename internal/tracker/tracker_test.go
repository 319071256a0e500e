package tracker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/d44b/pulltrace/pkg/api"
)

// labelStore keeps labels in memory; the content store around it is containerd's real
// local store, so ingests, commits and walks behave as on a node.
type labelStore struct {
	mu sync.Mutex
	m  map[digest.Digest]map[string]string
}

func (l *labelStore) Get(d digest.Digest) (map[string]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]string{}
	for k, v := range l.m[d] {
		out[k] = v
	}
	return out, nil
}

func (l *labelStore) Set(d digest.Digest, labels map[string]string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.m[d] = labels
	return nil
}

func (l *labelStore) Update(d digest.Digest, labels map[string]string) (map[string]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m[d] == nil {
		l.m[d] = map[string]string{}
	}
	for k, v := range labels {
		if v == "" {
			delete(l.m[d], k)
		} else {
			l.m[d][k] = v
		}
	}
	return l.m[d], nil
}

// imageStore stands in for containerd's bolt-backed image store: Get by name and List by
// target digest are all the tracker asks of it.
type imageStore struct {
	mu   sync.Mutex
	imgs map[string]images.Image
}

func (s *imageStore) Get(_ context.Context, name string) (images.Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img, ok := s.imgs[name]
	if !ok {
		return images.Image{}, fmt.Errorf("image %q: %w", name, errdefs.ErrNotFound)
	}
	return img, nil
}

func (s *imageStore) List(_ context.Context, filters ...string) ([]images.Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []images.Image
	for _, img := range s.imgs {
		for _, f := range filters {
			if f == "target.digest=="+img.Target.Digest.String() {
				out = append(out, img)
				break
			}
		}
	}
	return out, nil
}

// flakyStore fails ListStatuses while down, like a restarting containerd, and Info with
// infoErr while that is set (a daemon that answers some calls and not others).
type flakyStore struct {
	content.Store
	down    bool
	infoErr error
	// infoGate, when set, makes Info say so on infoEntered and wait for it: a containerd
	// that is slow to answer.
	infoGate    chan struct{}
	infoEntered chan struct{}
}

func (f *flakyStore) Info(ctx context.Context, d digest.Digest) (content.Info, error) {
	if f.infoGate != nil {
		select {
		case f.infoEntered <- struct{}{}:
		default:
		}
		<-f.infoGate
	}
	if f.infoErr != nil {
		return content.Info{}, f.infoErr
	}
	return f.Store.Info(ctx, d)
}

func (f *flakyStore) ListStatuses(ctx context.Context, fs ...string) ([]content.Status, error) {
	if f.down {
		return nil, errors.New("connection refused")
	}
	return f.Store.ListStatuses(ctx, fs...)
}

type env struct {
	t      *testing.T
	ctx    context.Context
	root   string
	store  *flakyStore
	imgs   *imageStore
	clock  time.Time
	tr     *Tracker
	writer map[digest.Digest]content.Writer
	labels map[digest.Digest]map[string]string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	root := t.TempDir()
	cs, err := local.NewLabeledStore(root, &labelStore{m: map[digest.Digest]map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: context.Background(), root: root, store: &flakyStore{Store: cs},
		imgs: &imageStore{imgs: map[string]images.Image{}}, clock: time.Now(), writer: map[digest.Digest]content.Writer{},
		labels: map[digest.Digest]map[string]string{}}
	e.tr = New(Config{NodeName: "node-a", StallTimeout: 20 * time.Second, FailGrace: 3 * time.Second, Now: func() time.Time { return e.clock }}, e.store, e.imgs)
	return e
}

type blob struct {
	desc ocispec.Descriptor
	data []byte
}

func randomLayer(t *testing.T, size int) blob {
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return blob{desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(b), Size: int64(size)}, data: b}
}

// commit writes a whole blob with labels, as the CRI's fetch handlers do for manifests.
func (e *env) commit(b blob, labels map[string]string) {
	e.t.Helper()
	if err := content.WriteBlob(e.ctx, e.store, "commit-"+b.desc.Digest.String(), bytes.NewReader(b.data), b.desc, content.WithLabels(labels)); err != nil {
		e.t.Fatal(err)
	}
}

// manifest commits config and manifest for layers, labelled like a CRI pull from
// registry.local/team/<repo>, and returns the manifest blob.
func (e *env) manifest(repo string, layers ...blob) blob {
	e.t.Helper()
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"},"x":%q}`, repo+time.Now().String()))
	cfgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	e.commit(blob{desc: cfgDesc, data: cfg}, nil)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfgDesc}
	m.SchemaVersion = 2
	labels := map[string]string{
		"containerd.io/gc.ref.content.config":              cfgDesc.Digest.String(),
		"containerd.io/distribution.source.registry.local": "team/" + repo,
	}
	for i, l := range layers {
		m.Layers = append(m.Layers, l.desc)
		labels[fmt.Sprintf("containerd.io/gc.ref.content.l.%d", i)] = l.desc.Digest.String()
	}
	mb, _ := json.Marshal(m)
	out := blob{desc: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb))}, data: mb}
	e.commit(out, labels)
	e.labels[out.desc.Digest] = labels
	return out
}

// open starts a layer ingest with its ref, as the remote fetcher does.
func (e *env) open(l blob) {
	e.t.Helper()
	w, err := content.OpenWriter(e.ctx, e.store, content.WithRef("layer-"+l.desc.Digest.String()), content.WithDescriptor(l.desc))
	if err != nil {
		e.t.Fatal(err)
	}
	e.writer[l.desc.Digest] = w
}

func (e *env) write(l blob, upto int) {
	e.t.Helper()
	w := e.writer[l.desc.Digest]
	st, err := w.Status()
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := w.Write(l.data[st.Offset:upto]); err != nil {
		e.t.Fatal(err)
	}
	// Status reads the ingest from disk: make sure the bytes are there.
	if s, ok := w.(interface{ Sync() error }); ok {
		_ = s.Sync()
	}
}

func (e *env) finish(l blob) {
	e.t.Helper()
	e.write(l, len(l.data))
	if err := e.writer[l.desc.Digest].Commit(e.ctx, l.desc.Size, l.desc.Digest); err != nil {
		e.t.Fatal(err)
	}
	delete(e.writer, l.desc.Digest)
}

func (e *env) abort(l blob) {
	e.t.Helper()
	e.writer[l.desc.Digest].Close()
	delete(e.writer, l.desc.Digest)
	if err := e.store.Abort(e.ctx, "layer-"+l.desc.Digest.String()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) createImage(name string, target blob) {
	e.imgs.mu.Lock()
	e.imgs.imgs[name] = images.Image{Name: name, Target: target.desc}
	e.imgs.mu.Unlock()
}

// age moves a committed blob's creation time into the past, as if it had been pulled long ago.
func (e *env) age(b blob, d time.Duration) {
	p := filepath.Join(e.root, "blobs", b.desc.Digest.Algorithm().String(), b.desc.Digest.Encoded())
	old := time.Now().Add(-d)
	if err := os.Chtimes(p, old, old); err != nil {
		e.t.Fatal(err)
	}
}

// poll advances the clock and polls; it also checks the invariants every snapshot must keep.
func (e *env) poll(advance time.Duration) []api.Pull {
	e.t.Helper()
	e.clock = e.clock.Add(advance)
	if err := e.tr.Poll(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	snap := e.tr.Snapshot()
	for _, p := range snap {
		if p.TotalKnown && p.DownloadedBytes > p.TotalBytes {
			e.t.Fatalf("pull %s: downloaded %d > total %d", p.ImageRef, p.DownloadedBytes, p.TotalBytes)
		}
	}
	return snap
}

func find(t *testing.T, pulls []api.Pull, manifest blob) api.Pull {
	t.Helper()
	for _, p := range pulls {
		if p.ManifestDigest == manifest.desc.Digest.String() {
			return p
		}
	}
	t.Fatalf("no pull for manifest %s in %d pulls", manifest.desc.Digest, len(pulls))
	return api.Pull{}
}

func layerStates(p api.Pull) string {
	var s []string
	for _, l := range p.Layers {
		s = append(s, string(l.State))
	}
	return strings.Join(s, ",")
}

func TestQueuedLayersThenCompletion(t *testing.T) {
	e := newEnv(t)
	l0, l1, l2 := randomLayer(t, 300_000), randomLayer(t, 200_000), randomLayer(t, 100_000)
	m := e.manifest("app", l0, l1, l2)
	// The CRI opens every ingest at once and downloads a few at a time.
	e.open(l0)
	e.open(l1)
	e.open(l2)
	e.write(l0, 50_000)
	p := find(t, e.poll(time.Second), m)
	if !p.TotalKnown || p.TotalBytes != 600_000 || p.LayerCount != 3 {
		t.Fatalf("totals from the manifest: known=%v total=%d layers=%d", p.TotalKnown, p.TotalBytes, p.LayerCount)
	}
	if got := layerStates(p); got != "downloading,waiting,waiting" {
		t.Fatalf("layer states %s", got)
	}
	if p.ImageRef != "registry.local/team/app" || p.State != api.PullActive || p.DownloadedBytes != 50_000 {
		t.Fatalf("pull before tag: ref=%q state=%s downloaded=%d", p.ImageRef, p.State, p.DownloadedBytes)
	}
	id := p.ID

	e.finish(l0)
	e.tr.Notify(eventCommit(l0))
	e.write(l1, 10_000)
	p = find(t, e.poll(time.Second), m)
	if got := layerStates(p); got != "done,downloading,waiting" || p.DownloadedBytes != 310_000 || p.LayersDone != 1 {
		t.Fatalf("after first commit: %s downloaded=%d done=%d", got, p.DownloadedBytes, p.LayersDone)
	}
	e.finish(l1)
	e.finish(l2)
	p = find(t, e.poll(time.Second), m)
	if p.State != api.PullActive || p.LayersDone != 3 {
		t.Fatalf("all layers in but no image record yet: state=%s done=%d", p.State, p.LayersDone)
	}
	e.createImage("registry.local:5000/team/app:v1", m)
	e.tr.Notify(eventImage("registry.local:5000/team/app:v1"))
	p = find(t, e.poll(time.Second), m)
	if p.State != api.PullCompleted || p.ImageRef != "registry.local:5000/team/app:v1" || p.Percent != 100 || p.CompletedAt == nil {
		t.Fatalf("completion: state=%s ref=%q pct=%v", p.State, p.ImageRef, p.Percent)
	}
	if p.ID != id || p.DownloadedBytes != 600_000 {
		t.Fatalf("id changed (%s -> %s) or wrong bytes %d", id, p.ID, p.DownloadedBytes)
	}
}

func TestTwoImagesSharingABaseLayer(t *testing.T) {
	e := newEnv(t)
	base, a1, b1 := randomLayer(t, 400_000), randomLayer(t, 100_000), randomLayer(t, 150_000)
	ma := e.manifest("a", base, a1)
	mb := e.manifest("b", base, b1)
	e.open(base)
	e.open(a1)
	e.open(b1)
	e.write(base, 100_000)
	e.write(b1, 20_000)
	snap := e.poll(time.Second)
	if len(snap) != 2 {
		t.Fatalf("want one pull per image, got %d", len(snap))
	}
	pa, pb := find(t, snap, ma), find(t, snap, mb)
	if pa.TotalBytes != 500_000 || pb.TotalBytes != 550_000 {
		t.Fatalf("totals a=%d b=%d", pa.TotalBytes, pb.TotalBytes)
	}
	if pa.DownloadedBytes != 100_000 || pb.DownloadedBytes != 120_000 {
		t.Fatalf("each pull counts the shared layer once: a=%d b=%d", pa.DownloadedBytes, pb.DownloadedBytes)
	}
	if pa.ID == pb.ID {
		t.Fatal("two pulls share an id")
	}
}

func TestCancelledPullFails(t *testing.T) {
	e := newEnv(t)
	l0, l1 := randomLayer(t, 200_000), randomLayer(t, 200_000)
	m := e.manifest("cancel", l0, l1)
	e.open(l0)
	e.open(l1)
	e.write(l0, 120_000)
	e.poll(time.Second)
	e.abort(l0)
	e.abort(l1)
	p := find(t, e.poll(time.Second), m)
	if p.State == api.PullFailed || p.State == api.PullCompleted {
		t.Fatalf("declared %s before the grace period", p.State)
	}
	p = find(t, e.poll(3*time.Second), m)
	if p.State != api.PullFailed || !strings.Contains(p.Error, "aborted") {
		t.Fatalf("state=%s error=%q", p.State, p.Error)
	}
	if got := layerStates(p); got != "failed,failed" {
		t.Fatalf("layer states %s", got)
	}
	if p.DownloadedBytes != 120_000 {
		t.Fatalf("downloaded went from 120000 to %d", p.DownloadedBytes)
	}
}

func TestCachedPull(t *testing.T) {
	e := newEnv(t)
	l0, l1 := randomLayer(t, 10_000), randomLayer(t, 20_000)
	e.commit(l0, nil)
	e.commit(l1, nil)
	m := e.manifest("cached", l0, l1)
	e.createImage("registry.local/team/cached:v2", m)
	e.tr.Notify(eventImage("registry.local/team/cached:v2"))
	e.tr.Notify(eventImage("sha256:" + strings.Repeat("0", 64)))
	p := find(t, e.poll(time.Second), m)
	if p.State != api.PullCached || p.Percent != 100 || layerStates(p) != "exists,exists" || p.TotalBytes != 30_000 {
		t.Fatalf("cached pull: state=%s pct=%v layers=%s total=%d", p.State, p.Percent, layerStates(p), p.TotalBytes)
	}
	// CRI also records repo@digest for the same pull: still one pull.
	e.createImage("registry.local/team/cached@"+m.desc.Digest.String(), m)
	e.tr.Notify(eventImage("registry.local/team/cached@" + m.desc.Digest.String()))
	if n := len(e.poll(time.Second)); n != 1 {
		t.Fatalf("alias record made %d pulls", n)
	}
}

func TestLayerPresentBeforePullIsExists(t *testing.T) {
	e := newEnv(t)
	base, top := randomLayer(t, 50_000), randomLayer(t, 80_000)
	e.commit(base, nil)
	e.age(base, time.Hour)
	m := e.manifest("partial", base, top)
	e.open(top)
	e.write(top, 1000)
	p := find(t, e.poll(time.Second), m)
	if got := layerStates(p); got != "exists,downloading" {
		t.Fatalf("layer states %s", got)
	}
	if p.DownloadedBytes != 51_000 || p.LayersDone != 1 {
		t.Fatalf("downloaded=%d done=%d", p.DownloadedBytes, p.LayersDone)
	}
}

func TestStalledAndRecovered(t *testing.T) {
	e := newEnv(t)
	l0 := randomLayer(t, 100_000)
	m := e.manifest("slow", l0)
	e.open(l0)
	e.write(l0, 10_000)
	e.poll(time.Second)
	if p := find(t, e.poll(21*time.Second), m); p.State != api.PullStalled {
		t.Fatalf("no progress for 21s: state %s", p.State)
	}
	e.write(l0, 20_000)
	if p := find(t, e.poll(time.Second), m); p.State != api.PullActive {
		t.Fatalf("progress resumed: state %s", p.State)
	}
}

// A containerd restart: polls fail for a while, nothing is lost or declared, and the pull
// finishes at the manifest's size once containerd is back.
func TestContainerdRestartKeepsPull(t *testing.T) {
	e := newEnv(t)
	l0, l1 := randomLayer(t, 100_000), randomLayer(t, 100_000)
	m := e.manifest("restart", l0, l1)
	e.open(l0)
	e.open(l1)
	e.write(l0, 40_000)
	before := find(t, e.poll(time.Second), m)
	e.store.down = true
	for range 5 {
		e.clock = e.clock.Add(time.Second)
		if err := e.tr.Poll(e.ctx); err == nil {
			t.Fatal("poll succeeded while containerd was down")
		}
	}
	if p := find(t, e.tr.Snapshot(), m); p.State.Finished() || p.ID != before.ID {
		t.Fatalf("pull changed while containerd was down: %+v", p)
	}
	e.store.down = false
	e.finish(l0)
	e.finish(l1)
	e.createImage("registry.local/team/restart:v1", m)
	// The image event was lost with the stream: the poll must find the record by itself.
	p := find(t, e.poll(time.Second), m)
	if p.State != api.PullCompleted || p.TotalBytes != 200_000 || p.DownloadedBytes != 200_000 || p.ID != before.ID {
		t.Fatalf("after restart: state=%s total=%d downloaded=%d", p.State, p.TotalBytes, p.DownloadedBytes)
	}
	if p.ImageRef != "registry.local/team/restart:v1" {
		t.Fatalf("name %q", p.ImageRef)
	}
}

func TestFinishedPullsExpire(t *testing.T) {
	e := newEnv(t)
	l0 := randomLayer(t, 1000)
	m := e.manifest("expire", l0)
	e.open(l0)
	e.poll(time.Second)
	e.finish(l0)
	e.createImage("registry.local/team/expire:v1", m)
	if p := find(t, e.poll(time.Second), m); p.State != api.PullCompleted {
		t.Fatalf("state %s", p.State)
	}
	if n := len(e.poll(6 * time.Minute)); n != 0 {
		t.Fatalf("%d pulls left after retention", n)
	}
}

func eventCommit(b blob) ingestEvent     { return ingestEvent{Commit: b.desc.Digest, Size: b.desc.Size} }
func eventImage(name string) ingestEvent { return ingestEvent{Image: name} }
