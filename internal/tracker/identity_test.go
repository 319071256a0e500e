package tracker

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/d44b/pulltrace/pkg/api"
)

// gc removes blobs the way containerd's garbage collector does after `crictl rmi` or image
// GC under disk pressure.
func (e *env) gc(bs ...blob) {
	e.t.Helper()
	for _, b := range bs {
		if err := e.store.Delete(e.ctx, b.desc.Digest); err != nil && !errdefs.IsNotFound(err) {
			e.t.Fatal(err)
		}
	}
}

// refetch commits the manifest again, as a new pull of the same image does first.
func (e *env) refetch(m blob) { e.commit(m, e.labels[m.desc.Digest]) }

func (e *env) removeImage(name string) {
	e.imgs.mu.Lock()
	delete(e.imgs.imgs, name)
	e.imgs.mu.Unlock()
}

func pullsOf(ps []api.Pull, m blob) []api.Pull {
	var out []api.Pull
	for _, p := range ps {
		if p.ManifestDigest == m.desc.Digest.String() {
			out = append(out, p)
		}
	}
	return out
}

func byID(t *testing.T, ps []api.Pull, id string) api.Pull {
	t.Helper()
	for _, p := range ps {
		if p.ID == id {
			return p
		}
	}
	t.Fatalf("no pull %s among %d", id, len(ps))
	return api.Pull{}
}

// completePull downloads every layer of m and creates its image record.
func (e *env) completePull(name string, m blob, layers ...blob) api.Pull {
	e.t.Helper()
	for _, l := range layers {
		e.open(l)
	}
	e.write(layers[0], 1000)
	e.poll(time.Second)
	for _, l := range layers {
		e.finish(l)
		e.tr.Notify(eventCommit(l))
	}
	e.createImage(name, m)
	e.tr.Notify(eventImage(name))
	p := find(e.t, e.poll(time.Second), m)
	if p.State != api.PullCompleted {
		e.t.Fatalf("first pull: state %s", p.State)
	}
	return p
}

// The demo's rounds and image GC under disk pressure: the image is removed, its blobs are
// collected, and it is pulled again seconds later. The manifest comes back under the same
// digest; the second download is its own pull and the first stays as it finished.
func TestRepullAfterGCIsANewPull(t *testing.T) {
	e := newEnv(t)
	l0, l1 := randomLayer(t, 100_000), randomLayer(t, 50_000)
	m := e.manifest("again", l0, l1)
	first := e.completePull("registry.local/team/again:v1", m, l0, l1)

	e.removeImage("registry.local/team/again:v1")
	e.gc(l0, l1, m)
	e.poll(2 * time.Second)
	e.refetch(m)
	e.open(l0)
	e.open(l1)
	e.write(l0, 7000)
	snap := e.poll(time.Second)
	ps := pullsOf(snap, m)
	if len(ps) != 2 {
		t.Fatalf("want the finished pull and the new one, got %d pulls", len(ps))
	}
	old := byID(t, snap, first.ID)
	if old.State != api.PullCompleted || old.DownloadedBytes != 150_000 || old.CompletedAt == nil {
		t.Fatalf("first pull changed: state=%s bytes=%d", old.State, old.DownloadedBytes)
	}
	var cur api.Pull
	for _, p := range ps {
		if p.ID != first.ID {
			cur = p
		}
	}
	if cur.State != api.PullActive || cur.DownloadedBytes != 7000 || cur.LayersDone != 0 {
		t.Fatalf("second pull starts at its own bytes: state=%s bytes=%d done=%d", cur.State, cur.DownloadedBytes, cur.LayersDone)
	}
	if !cur.StartedAt.After(old.StartedAt) {
		t.Fatalf("second pull starts %s, not after the first (%s)", cur.StartedAt, old.StartedAt)
	}
	e.finish(l0)
	e.finish(l1)
	e.createImage("registry.local/team/again:v1", m)
	e.tr.Notify(eventImage("registry.local/team/again:v1"))
	snap = e.poll(time.Second)
	if p := byID(t, snap, cur.ID); p.State != api.PullCompleted || p.DownloadedBytes != 150_000 {
		t.Fatalf("second pull: state=%s bytes=%d", p.State, p.DownloadedBytes)
	}
	if p := byID(t, snap, first.ID); p.State != api.PullCompleted {
		t.Fatalf("first pull: %s", p.State)
	}
}

// The kubelet's retry after a cut-off download, seconds later: containerd dropped the
// ingests, the manifest is still in the store from the first attempt.
func TestRetryAfterFailureIsANewPull(t *testing.T) {
	e := newEnv(t)
	l0, l1 := randomLayer(t, 200_000), randomLayer(t, 100_000)
	m := e.manifest("retry", l0, l1)
	e.open(l0)
	e.open(l1)
	e.write(l0, 80_000)
	first := find(t, e.poll(time.Second), m)
	e.abort(l0)
	e.abort(l1)
	e.poll(time.Second)
	if p := find(t, e.poll(3*time.Second), m); p.State != api.PullFailed {
		t.Fatalf("cut pull: %s", p.State)
	}
	e.clock = e.clock.Add(10 * time.Second) // the kubelet's first back-off
	e.open(l0)
	e.open(l1)
	e.write(l0, 5000)
	snap := e.poll(time.Second)
	if n := len(pullsOf(snap, m)); n != 2 {
		t.Fatalf("want the failed pull and the retry, got %d", n)
	}
	if p := byID(t, snap, first.ID); p.State != api.PullFailed || p.DownloadedBytes != 80_000 {
		t.Fatalf("failed pull changed: %s %d", p.State, p.DownloadedBytes)
	}
	for _, p := range pullsOf(snap, m) {
		if p.ID != first.ID && (p.State != api.PullActive || p.DownloadedBytes != 5000) {
			t.Fatalf("retry: state=%s bytes=%d", p.State, p.DownloadedBytes)
		}
	}
}

// A download dropped and started again between two polls (a retry faster than the agent
// looks): the old pull fails, the new one is its own pull.
func TestRestartBetweenPollsIsANewPull(t *testing.T) {
	e := newEnv(t)
	l0 := randomLayer(t, 200_000)
	m := e.manifest("quick", l0)
	e.open(l0)
	e.write(l0, 90_000)
	first := find(t, e.poll(time.Second), m)
	e.abort(l0)
	time.Sleep(2 * time.Millisecond) // the new ingest's StartedAt must differ
	e.open(l0)
	e.write(l0, 1000)
	snap := e.poll(time.Second)
	if p := byID(t, snap, first.ID); p.State != api.PullFailed || p.DownloadedBytes != 90_000 {
		t.Fatalf("replaced pull: state=%s bytes=%d", p.State, p.DownloadedBytes)
	}
	snap = e.poll(time.Second)
	ps := pullsOf(snap, m)
	if len(ps) != 2 {
		t.Fatalf("want 2 pulls, got %d", len(ps))
	}
	for _, p := range ps {
		if p.ID != first.ID && (p.State != api.PullActive || p.DownloadedBytes != 1000) {
			t.Fatalf("new download: state=%s bytes=%d", p.State, p.DownloadedBytes)
		}
	}
}

// Two tags of one manifest pulled together are one download: one pull, both names seen;
// a tag pulled later needs no download and is a cached pull of its own.
func TestTwoTagsOneManifest(t *testing.T) {
	e := newEnv(t)
	l0 := randomLayer(t, 30_000)
	m := e.manifest("tags", l0)
	e.open(l0)
	e.write(l0, 1000)
	e.poll(time.Second)
	e.finish(l0)
	e.createImage("registry.local/team/tags:a", m)
	e.createImage("registry.local/team/tags:b", m)
	e.tr.Notify(eventImage("registry.local/team/tags:a"))
	e.tr.Notify(eventImage("registry.local/team/tags:b"))
	snap := e.poll(time.Second)
	if n := len(pullsOf(snap, m)); n != 1 {
		t.Fatalf("two tags of one download made %d pulls", n)
	}
	e.createImage("registry.local/team/tags:c", m)
	e.tr.Notify(eventImage("registry.local/team/tags:c"))
	snap = e.poll(10 * time.Second)
	ps := pullsOf(snap, m)
	if len(ps) != 2 || ps[0].ID == ps[1].ID {
		t.Fatalf("a later tag: %d pulls %v", len(ps), ps)
	}
	if ps[0].State != api.PullCached || ps[0].ImageRef != "registry.local/team/tags:c" {
		t.Fatalf("later tag: state=%s ref=%s", ps[0].State, ps[0].ImageRef)
	}
}

// An agent restarted mid-pull finds the ingests on disk and reports the same download
// under the same id, from the bytes already there.
func TestAgentRestartKeepsTheID(t *testing.T) {
	e := newEnv(t)
	l0, l1 := randomLayer(t, 100_000), randomLayer(t, 100_000)
	m := e.manifest("agent", l0, l1)
	e.open(l0)
	e.open(l1)
	e.write(l0, 60_000)
	before := find(t, e.poll(time.Second), m)
	e.tr = New(e.tr.cfg, e.store, e.imgs)
	after := find(t, e.poll(time.Second), m)
	if after.ID != before.ID || after.DownloadedBytes != 60_000 || after.State != api.PullActive {
		t.Fatalf("after agent restart: id %s (was %s) bytes %d state %s", after.ID, before.ID, after.DownloadedBytes, after.State)
	}
}

// containerd answers ListStatuses but not Info for a while: the pull is not failed for
// it, the error is logged once a minute, and the pull completes once Info answers.
func TestTransientInfoErrorNeverFails(t *testing.T) {
	e := newEnv(t)
	var logs bytes.Buffer
	e.tr = New(Config{NodeName: "node-a", FailGrace: 3 * time.Second, Now: func() time.Time { return e.clock },
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}, e.store, e.imgs)
	l0 := randomLayer(t, 50_000)
	m := e.manifest("flaky", l0)
	e.open(l0)
	e.write(l0, 10_000)
	e.poll(time.Second)
	e.finish(l0)
	e.store.infoErr = fmt.Errorf("rpc error: %w", errors.New("transport is closing"))
	for range 20 {
		if p := find(t, e.poll(time.Second), m); p.State.Finished() {
			t.Fatalf("declared %s while containerd could not say", p.State)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Fatalf("want one warning in 20 s of errors, got %d:\n%s", n, logs.String())
	}
	e.poll(45 * time.Second)
	if n := strings.Count(logs.String(), "level=WARN"); n != 2 || !strings.Contains(logs.String(), "suppressed=") {
		t.Fatalf("want a second warning counting the suppressed ones after a minute:\n%s", logs.String())
	}
	e.store.infoErr = nil
	e.createImage("registry.local/team/flaky:v1", m)
	e.tr.Notify(eventImage("registry.local/team/flaky:v1"))
	if p := find(t, e.poll(time.Second), m); p.State != api.PullCompleted || p.DownloadedBytes != 50_000 {
		t.Fatalf("after containerd answered: state=%s bytes=%d", p.State, p.DownloadedBytes)
	}
}

// Notify, Snapshot, Version and Len do not wait for a poll blocked inside containerd.
func TestReadersDoNotWaitForContainerd(t *testing.T) {
	e := newEnv(t)
	l0 := randomLayer(t, 50_000)
	e.manifest("slow", l0)
	e.open(l0)
	e.write(l0, 100)
	e.poll(time.Second)
	e.finish(l0)
	gate := make(chan struct{})
	e.store.infoGate, e.store.infoEntered = gate, make(chan struct{}, 1)
	polled := make(chan error, 1)
	go func() { polled <- e.tr.Poll(e.ctx) }()
	<-e.store.infoEntered // the poll is inside containerd now
	readers := make(chan struct{})
	go func() {
		e.tr.Notify(eventCommit(l0))
		_ = e.tr.Snapshot()
		_ = e.tr.Version()
		_ = e.tr.Len()
		close(readers)
	}()
	select {
	case <-readers:
	case <-time.After(10 * time.Second):
		t.Fatal("readers blocked behind a poll waiting for containerd")
	}
	if err := e.tr.Poll(e.ctx); !errors.Is(err, ErrConcurrentPoll) {
		t.Fatalf("a second Poll while one runs: %v", err)
	}
	close(gate)
	if err := <-polled; err != nil {
		t.Fatal(err)
	}
}

// Property: whatever containerd does (downloads, cuts, retries, restarts between polls,
// GC and re-pulls, tags, cached pulls), no snapshot holds two pulls with one id, a pull's
// bytes never go backwards, and a finished pull never changes state or bytes.
func TestSnapshotsNeverDuplicateIDs(t *testing.T) {
	for seed := range uint64(16) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runIdentityProperty(t, seed) })
	}
}

func runIdentityProperty(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	e := newEnv(t)
	type img struct {
		m      blob
		layers []blob
		name   string
	}
	var imgs []img
	for i := range 3 {
		var ls []blob
		for range 1 + rng.IntN(3) {
			ls = append(ls, randomLayer(t, 4000+rng.IntN(20_000)))
		}
		name := fmt.Sprintf("prop%d", i)
		imgs = append(imgs, img{m: e.manifest(name, ls...), layers: ls, name: "registry.local/team/" + name + ":v1"})
	}
	exists := func(b blob) bool { _, err := e.store.Store.Info(e.ctx, b.desc.Digest); return err == nil }
	seen := map[string]api.Pull{}
	for step := range 100 {
		im := imgs[rng.IntN(len(imgs))]
		l := im.layers[rng.IntN(len(im.layers))]
		switch op := rng.IntN(9); op {
		case 0, 1: // open or write
			if exists(l) {
				break
			}
			if e.writer[l.desc.Digest] == nil {
				if !exists(im.m) {
					e.refetch(im.m)
				}
				e.open(l)
			}
			w := e.writer[l.desc.Digest]
			st, _ := w.Status()
			e.write(l, int(st.Offset)+rng.IntN(len(l.data)-int(st.Offset)+1))
		case 2: // commit
			if e.writer[l.desc.Digest] != nil {
				e.finish(l)
				if rng.IntN(2) == 0 {
					e.tr.Notify(eventCommit(l))
				}
			}
		case 3: // cut
			if e.writer[l.desc.Digest] != nil {
				e.abort(l)
			}
		case 4: // image record
			if !exists(im.m) {
				break
			}
			all := true
			for _, x := range im.layers {
				all = all && exists(x)
			}
			if all {
				e.createImage(im.name, im.m)
				e.tr.Notify(eventImage(im.name))
			}
		case 5: // rmi and GC
			for _, x := range im.layers {
				if e.writer[x.desc.Digest] != nil {
					e.abort(x)
				}
			}
			e.removeImage(im.name)
			e.gc(append([]blob{im.m}, im.layers...)...)
		case 6: // agent restart
			e.tr = New(e.tr.cfg, e.store, e.imgs)
			seen = map[string]api.Pull{}
		default:
		}
		advance := []time.Duration{10 * time.Millisecond, time.Second, 4 * time.Second, 30 * time.Second}[rng.IntN(4)]
		snap := e.poll(advance)
		ids := map[string]bool{}
		for _, p := range snap {
			if ids[p.ID] {
				t.Fatalf("step %d: duplicate id %s in one snapshot", step, p.ID)
			}
			ids[p.ID] = true
			if old, ok := seen[p.ID]; ok {
				if p.DownloadedBytes < old.DownloadedBytes {
					t.Fatalf("step %d: pull %s went from %d to %d bytes", step, p.ID, old.DownloadedBytes, p.DownloadedBytes)
				}
				if old.State.Finished() && (p.State != old.State || p.DownloadedBytes != old.DownloadedBytes) {
					t.Fatalf("step %d: finished pull %s changed from %s %d to %s %d", step, p.ID, old.State, old.DownloadedBytes, p.State, p.DownloadedBytes)
				}
			}
			seen[p.ID] = p
		}
		if err := (&api.AgentReport{SchemaVersion: api.SchemaVersion, NodeName: "node-a", AgentID: "a", Sequence: 1, Timestamp: e.clock, Pulls: snap}).Validate(); err != nil {
			t.Fatalf("step %d: the server would refuse this snapshot: %v", step, err)
		}
	}
}

// A foreign (non-distributable) layer that is never downloaded neither holds the pull
// open nor breaks its totals; a cached image with one is still a cached pull.
func TestForeignLayerNeverDownloaded(t *testing.T) {
	e := newEnv(t)
	foreign := randomLayer(t, 40_000)
	foreign.desc.MediaType = ocispec.MediaTypeImageLayerNonDistributableGzip //nolint:staticcheck // the case under test
	l1 := randomLayer(t, 60_000)
	m := e.manifest("windows", foreign, l1)
	e.open(l1)
	e.write(l1, 1000)
	p := find(t, e.poll(time.Second), m)
	if p.TotalBytes != 100_000 || p.State != api.PullActive {
		t.Fatalf("while downloading: total=%d state=%s", p.TotalBytes, p.State)
	}
	e.finish(l1)
	e.createImage("registry.local/team/windows:v1", m)
	e.tr.Notify(eventImage("registry.local/team/windows:v1"))
	p = find(t, e.poll(time.Second), m)
	if p.State != api.PullCompleted || p.DownloadedBytes != p.TotalBytes || p.Percent != 100 || layerStates(p) != "exists,done" {
		t.Fatalf("finished: state=%s %d/%d layers=%s", p.State, p.DownloadedBytes, p.TotalBytes, layerStates(p))
	}
	e.createImage("registry.local/team/windows:v2", m)
	e.tr.Notify(eventImage("registry.local/team/windows:v2"))
	if ps := pullsOf(e.poll(10*time.Second), m); len(ps) != 2 || ps[0].State != api.PullCached {
		t.Fatalf("cached pull of an image with a foreign layer: %+v", ps)
	}
}
