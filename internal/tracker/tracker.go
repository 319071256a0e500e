// Package tracker turns containerd's view of a node (ingests, committed blobs, image
// records) into pulls: one per image being pulled, with every layer of its manifest. The
// poll is authoritative; events only make commits and image names show up sooner, so a
// missed event (containerd restarting, a dropped stream) costs latency, never correctness.
package tracker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/d44b/pulltrace/internal/ingest"
	"github.com/d44b/pulltrace/pkg/api"
)

// Images is the read side of containerd's image store.
type Images interface {
	Get(ctx context.Context, name string) (images.Image, error)
	List(ctx context.Context, filters ...string) ([]images.Image, error)
}

// Config tunes the tracker. Zero values take the defaults.
type Config struct {
	NodeName string
	// StallTimeout: an active pull with no new bytes for this long is stalled.
	StallTimeout time.Duration
	// FailGrace: how long a pull may have no live ingest and missing layers before it is
	// declared failed. It bridges the instant between one layer's commit and the next
	// layer's ingest opening.
	FailGrace time.Duration
	// CompleteGrace: how long all layers may be in with no image record before the pull is
	// completed anyway (a fetch that creates no image, e.g. `ctr content fetch`). The CRI
	// unpacks before creating the record, so this must cover the unpack of a large image.
	CompleteGrace time.Duration
	// Retention: how long finished pulls stay in snapshots, so every server sees the end.
	Retention time.Duration
	// MaxFinished bounds the finished pulls kept, oldest dropped first.
	MaxFinished int
	// AliasWindow: image records of a just-finished pull's image that arrive within this
	// window are more names for that pull (the CRI writes tag, repo@digest and image id
	// records in one go); later ones are a new pull that needed no download.
	AliasWindow time.Duration
	// Logger receives the tracker's warnings (containerd errors other than "not found"),
	// each kind at most once a minute; nil discards them.
	Logger *slog.Logger
	Now    func() time.Time
}

func (c *Config) defaults() {
	if c.StallTimeout <= 0 {
		c.StallTimeout = 30 * time.Second
	}
	if c.FailGrace <= 0 {
		c.FailGrace = 3 * time.Second
	}
	if c.CompleteGrace <= 0 {
		c.CompleteGrace = 2 * time.Minute
	}
	if c.Retention <= 0 {
		c.Retention = 5 * time.Minute
	}
	if c.AliasWindow <= 0 {
		c.AliasWindow = 3 * time.Second
	}
	if c.MaxFinished <= 0 {
		c.MaxFinished = 200
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// A layer's ingest may start this long before its manifest was committed (clock skew
// between the ingest file's timestamps and the metadata store) and still belong to it; a
// manifest committed this long before the ingest started is an old image, not this pull.
const (
	ownerSlack  = time.Minute
	ownerMaxAge = 30 * time.Minute
	// refreshEvery bounds content-store walks while an ingest nobody claims stays open.
	refreshEvery = 10 * time.Second
	// warnEvery spaces repeated warnings of one kind.
	warnEvery = time.Minute
	// nameRetries bounds how often an image name is looked up again after a transient error.
	nameRetries = 5
)

// ErrConcurrentPoll is returned by a Poll that overlaps another: the poll state belongs to
// one caller at a time, which is what lets Poll talk to containerd without holding a lock.
var ErrConcurrentPoll = errors.New("tracker: Poll called while another Poll runs")

type layerTrack struct {
	digest     digest.Digest
	mediaType  string
	size       int64
	state      api.LayerState
	offset     int64
	seenIngest bool
	// ingestStarted is the StartedAt of the ingest this pull followed. containerd resumes an
	// ingest under its old StartedAt; another StartedAt is a new download of the layer.
	ingestStarted time.Time
	// settled layers are done or exists and never change again.
	settled bool
}

type pullTrack struct {
	pull      api.Pull
	manifest  *ingest.Manifest
	layers    []*layerTrack
	lastBytes int64
	// lastProgress is when DownloadedBytes last grew.
	lastProgress time.Time
	// allInSince: every layer settled; noIngestSince: nothing downloading while layers miss.
	allInSince    time.Time
	noIngestSince time.Time
	imageName     string
	finishedAt    time.Time
}

// Tracker holds the pulls of one node. Notify, Version, Len and Snapshot may be called from
// any goroutine and never wait for containerd: Poll does its reads with no lock held and
// publishes the result under mu. Poll itself has one caller at a time.
type Tracker struct {
	cfg    Config
	store  ingest.Store
	images Images

	// Owned by the running Poll (polling guards against a second one).
	polling     atomic.Bool
	res         *ingest.Resolver
	active      map[digest.Digest]*pullTrack // by manifest digest
	finished    []*pullTrack
	commits     map[digest.Digest]bool // commits of this poll
	names       []pendingName          // image names to resolve in this poll
	lastRefresh time.Time
	orphans     string
	warned      map[string]warnState

	mu sync.Mutex
	// inCommits and inNames arrive from the event stream between polls.
	inCommits map[digest.Digest]bool
	inNames   []pendingName
	// published is the last poll's result, newest first; its pulls are never modified.
	published []api.Pull
	version   uint64
}

type pendingName struct {
	name  string
	tries int
}

type warnState struct {
	last       time.Time
	suppressed int
}

// New returns a tracker reading store and images.
func New(cfg Config, store ingest.Store, imgs Images) *Tracker {
	cfg.defaults()
	return &Tracker{
		cfg:       cfg,
		store:     store,
		images:    imgs,
		res:       ingest.NewResolver(store),
		active:    map[digest.Digest]*pullTrack{},
		commits:   map[digest.Digest]bool{},
		warned:    map[string]warnState{},
		inCommits: map[digest.Digest]bool{},
	}
}

// Notify records an event for the next poll.
func (t *Tracker) Notify(ev ingest.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ev.Commit != "" {
		t.inCommits[ev.Commit] = true
	}
	if ev.Image != "" && len(t.inNames) < 1000 {
		t.inNames = append(t.inNames, pendingName{name: ev.Image})
	}
}

// Version increases whenever a poll changed any pull, so a reporter can tell an unchanged
// snapshot from a changed one without comparing them.
func (t *Tracker) Version() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.version
}

// Len is how many pulls Snapshot would return, without copying them.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.published)
}

// Snapshot returns all active and recently finished pulls, newest first. The pulls are
// shared with other callers and must not be modified.
func (t *Tracker) Snapshot() []api.Pull {
	ps, _ := t.SnapshotVersion()
	return ps
}

// SnapshotVersion returns Snapshot and the Version it belongs to, read together.
func (t *Tracker) SnapshotVersion() ([]api.Pull, uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.published), t.version
}

// publish copies the poll's pulls for readers; it runs only after a poll changed something.
func (t *Tracker) publish() {
	out := make([]api.Pull, 0, len(t.active)+len(t.finished))
	for _, p := range t.active {
		out = append(out, p.pull.Clone())
	}
	for _, p := range t.finished {
		out = append(out, p.pull.Clone())
	}
	api.SortNewestFirst(out)
	t.mu.Lock()
	t.published = out
	t.version++
	t.mu.Unlock()
}

// warn logs a containerd error of one kind at most once per warnEvery, saying how many
// were left out in between.
func (t *Tracker) warn(now time.Time, kind, msg string, err error, args ...any) {
	w := t.warned[kind]
	if !w.last.IsZero() && now.Sub(w.last) < warnEvery {
		w.suppressed++
		t.warned[kind] = w
		return
	}
	args = append(args, "error", err)
	if w.suppressed > 0 {
		args = append(args, "suppressed", w.suppressed)
	}
	t.cfg.Logger.Warn(msg, args...)
	t.warned[kind] = warnState{last: now}
}

// Poll reads containerd once and updates every pull. It holds no lock while it talks to
// containerd, so Notify and Snapshot never wait behind a slow daemon.
func (t *Tracker) Poll(ctx context.Context) error {
	if !t.polling.CompareAndSwap(false, true) {
		return ErrConcurrentPoll
	}
	defer t.polling.Store(false)
	statuses, err := t.store.ListStatuses(ctx)
	if err != nil {
		return fmt.Errorf("list ingests: %w", err)
	}
	t.mu.Lock()
	for d := range t.inCommits {
		t.commits[d] = true
	}
	clear(t.inCommits)
	t.names = append(t.names, t.inNames...)
	t.inNames = nil
	t.mu.Unlock()
	now := t.cfg.Now()

	ingests := make(map[digest.Digest]content.Status, len(statuses))
	for _, st := range statuses {
		if kind, d, ok := ingest.ParseRef(st.Ref); ok && kind == ingest.KindLayer {
			ingests[d] = st
		}
	}
	changed := false
	if err := t.discover(ctx, ingests, now); err != nil {
		// Commits and names stay for the next poll.
		return err
	}
	for _, p := range t.active {
		if t.update(ctx, p, ingests, now) {
			changed = true
		}
	}
	if t.resolveNames(ctx, now) {
		changed = true
	}
	for m, p := range t.active {
		if p.pull.State.Finished() {
			delete(t.active, m)
			t.finished = append(t.finished, p)
			changed = true
		}
	}
	if t.expire(now) {
		changed = true
	}
	clear(t.commits)
	if changed {
		t.publish()
	}
	return nil
}

// discover starts a pull for every manifest that names a layer being ingested and has
// no active pull yet.
func (t *Tracker) discover(ctx context.Context, ingests map[digest.Digest]content.Status, now time.Time) error {
	var orphans []string
	for d := range ingests {
		if t.claimed(d) {
			continue
		}
		if len(t.res.Owners(d)) == 0 {
			orphans = append(orphans, d.String())
		}
	}
	if len(orphans) > 0 {
		slices.Sort(orphans)
		key := strings.Join(orphans, ",")
		// Walk again only when new orphans appear, or now and then while they last (the
		// manifest may be labelled an instant after its first layer opens).
		if key != t.orphans || now.Sub(t.lastRefresh) >= refreshEvery {
			t.orphans, t.lastRefresh = key, now
			if err := t.res.Refresh(ctx); err != nil {
				return err
			}
		}
	}
	for d, st := range ingests {
		if t.claimed(d) {
			continue
		}
		for _, m := range t.res.Owners(d) {
			if t.active[m.Digest] != nil {
				continue
			}
			created, ok := t.manifestCreated(ctx, m, now)
			if !ok {
				continue
			}
			if created.After(st.StartedAt.Add(ownerSlack)) || created.Before(st.StartedAt.Add(-ownerMaxAge)) {
				continue
			}
			t.start(m, created, ingests, now)
		}
	}
	return nil
}

// manifestCreated reads when the manifest blob was committed, fresh from containerd: the
// resolver's copy is from its first sighting, and a manifest garbage collected and fetched
// again (rmi, image GC, a failed pull cleaned up) has a new commit time.
func (t *Tracker) manifestCreated(ctx context.Context, m *ingest.Manifest, now time.Time) (time.Time, bool) {
	info, err := t.store.Info(ctx, m.Digest)
	switch {
	case err == nil:
		m.CreatedAt = info.CreatedAt
		return info.CreatedAt, true
	case errdefs.IsNotFound(err):
		// Gone since the resolver cached it: this layer's ingest belongs to another
		// manifest, which the next walk finds.
		t.res.Forget(m.Digest)
		t.lastRefresh = time.Time{}
		return time.Time{}, false
	default:
		t.warn(now, "manifest-info", "reading a manifest from containerd failed; retrying next poll", err, "manifest", m.Digest.String())
		return time.Time{}, false
	}
}

func (t *Tracker) claimed(layer digest.Digest) bool {
	for _, p := range t.active {
		for _, l := range p.layers {
			if l.digest == layer {
				return true
			}
		}
	}
	return false
}

// start begins the pull of one download of m. Its id is unique among the pulls held:
// the same manifest downloaded again on this node (a kubelet retry, a re-pull after image
// GC or rmi) is a new pull, and the finished one keeps its id and figures.
func (t *Tracker) start(m *ingest.Manifest, created time.Time, ingests map[digest.Digest]content.Status, now time.Time) *pullTrack {
	started := now
	for _, l := range m.Layers {
		if st, ok := ingests[l.Digest]; ok && st.StartedAt.Before(started) {
			started = st.StartedAt
		}
	}
	prev := t.recent(m.Digest)
	// The manifest is committed an instant before the layers open: that is when the pull
	// began, unless the manifest is left from an earlier download of the same image.
	if !created.IsZero() && created.Before(started) && started.Sub(created) < ownerSlack &&
		(prev == nil || created.After(prev.finishedAt)) {
		started = created
	}
	// A download of the same image that began before the previous one ended is that
	// download resumed (containerd keeps a resumed ingest's StartedAt): this pull starts now.
	if prev != nil && !started.After(prev.finishedAt) {
		started = now
	}
	p := &pullTrack{manifest: m, lastProgress: now}
	for _, l := range m.Layers {
		p.layers = append(p.layers, &layerTrack{digest: l.Digest, mediaType: l.MediaType, size: l.Size, state: api.LayerWaiting})
	}
	p.pull = api.Pull{
		ID:             t.uniqueID(pullID(t.cfg.NodeName, m.Digest, started)),
		NodeName:       t.cfg.NodeName,
		ImageRef:       m.Ref(),
		Repository:     m.Ref(),
		ManifestDigest: m.Digest.String(),
		IndexDigest:    m.Index.String(),
		State:          api.PullActive,
		TotalKnown:     true,
		StartedAt:      started.UTC(),
		UpdatedAt:      now.UTC(),
		Pods:           []api.PodRef{},
	}
	t.active[m.Digest] = p
	return p
}

// pullID is derived from what containerd shows (node, manifest, start), so an agent that
// restarts mid-pull reports the same download under the same id.
func pullID(node string, m digest.Digest, started time.Time) string {
	h := sha256.Sum256([]byte(node + "\x00" + m.String() + "\x00" + strconv.FormatInt(started.UnixNano(), 10)))
	return hex.EncodeToString(h[:8])
}

// uniqueID returns id, or a derivation of it that no held pull has: two downloads must
// never share an id, whatever their timestamps say.
func (t *Tracker) uniqueID(id string) string {
	taken := func(c string) bool {
		for _, p := range t.active {
			if p.pull.ID == c {
				return true
			}
		}
		for _, p := range t.finished {
			if p.pull.ID == c {
				return true
			}
		}
		return false
	}
	for n, c := 1, id; ; n++ {
		if !taken(c) {
			return c
		}
		h := sha256.Sum256([]byte(id + "\x00" + strconv.Itoa(n)))
		c = hex.EncodeToString(h[:8])
	}
}

// update refreshes one active pull's layers and state; it reports whether anything a
// client would see changed.
func (t *Tracker) update(ctx context.Context, p *pullTrack, ingests map[digest.Digest]content.Status, now time.Time) bool {
	before := p.pull.Clone()
	live, missing, unsettled, unknown := 0, 0, 0, 0
	restarted := false
	var foreign []*layerTrack
	for _, l := range p.layers {
		if l.settled {
			continue
		}
		if st, ok := ingests[l.digest]; ok {
			if l.seenIngest && !st.StartedAt.Equal(l.ingestStarted) {
				// The ingest this pull followed was dropped and a new one opened between two
				// polls: a new download, which discover turns into its own pull.
				restarted = true
				live++
				continue
			}
			live++
			l.seenIngest = true
			l.ingestStarted = st.StartedAt
			if l.size == 0 && st.Total > 0 {
				l.size = st.Total
			}
			l.offset = max(l.offset, min(st.Offset, l.size))
			// The CRI opens every layer's ingest at once but downloads only a few at a time:
			// an ingest with no byte yet is queued. UpdatedAt is no help here: the store
			// takes it from the data file's mtime, which can trail StartedAt by a tick.
			if st.Offset > 0 {
				l.state = api.LayerDownloading
			} else {
				l.state = api.LayerWaiting
			}
			unsettled++
			continue
		}
		settled, err := t.settle(ctx, p, l)
		if settled {
			continue
		}
		if err == nil && !l.seenIngest && images.IsNonDistributable(l.mediaType) {
			// A foreign layer (a Windows base layer) is often never downloaded: it must
			// not hold the pull open once everything else is in.
			foreign = append(foreign, l)
			continue
		}
		unsettled++
		if err != nil {
			unknown++
			t.warn(now, "layer-info", "reading a layer's status from containerd failed; retrying next poll", err, "layer", l.digest.String())
			continue
		}
		if l.seenIngest {
			missing++
		}
	}

	if unsettled == 0 {
		for _, l := range foreign {
			l.settled, l.state, l.offset = true, api.LayerExists, l.size
		}
	}
	switch {
	case restarted:
		t.abandon(p, now)
	case unsettled == 0:
		if p.allInSince.IsZero() {
			p.allInSince = now
		}
	case unknown > 0:
		// A layer containerd could not tell us about is not evidence of a failure.
	case live == 0 && missing > 0:
		if p.noIngestSince.IsZero() {
			p.noIngestSince = now
		}
		if now.Sub(p.noIngestSince) >= t.cfg.FailGrace {
			t.fail(p, missing, now)
		}
	default:
		p.noIngestSince = time.Time{}
	}

	p.refresh(now)
	if !p.pull.State.Finished() {
		if p.pull.DownloadedBytes > p.lastBytes {
			p.lastBytes, p.lastProgress = p.pull.DownloadedBytes, now
			p.pull.UpdatedAt = now.UTC()
		}
		stalled := unsettled > 0 && now.Sub(p.lastProgress) >= t.cfg.StallTimeout
		if stalled {
			p.pull.State = api.PullStalled
		} else {
			p.pull.State = api.PullActive
		}
	}
	return !before.Equal(&p.pull)
}

// settle checks whether a layer without an ingest is in the content store. Only "not found"
// means absent; any other error is returned and the layer stays as it was.
func (t *Tracker) settle(ctx context.Context, p *pullTrack, l *layerTrack) (bool, error) {
	info, err := t.store.Info(ctx, l.digest)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	l.settled = true
	l.offset = l.size
	if l.size == 0 {
		l.size, l.offset = info.Size, info.Size
	}
	// A blob committed before this pull began was already on the node.
	if l.seenIngest || t.commits[l.digest] || !info.CreatedAt.Before(p.pull.StartedAt.Add(-time.Second)) {
		l.state = api.LayerDone
	} else {
		l.state = api.LayerExists
	}
	return true, nil
}

// abandon fails a pull whose download was replaced by a new one of the same image.
func (t *Tracker) abandon(p *pullTrack, now time.Time) {
	for _, l := range p.layers {
		if !l.settled && l.seenIngest {
			l.state = api.LayerFailed
		}
	}
	p.pull.State = api.PullFailed
	p.pull.Error = "aborted: the download stopped and a new download of the same image began (the pull was retried)"
	done := now.UTC()
	p.pull.CompletedAt = &done
	p.finishedAt = now
}

func (t *Tracker) fail(p *pullTrack, missing int, now time.Time) {
	for _, l := range p.layers {
		if !l.settled && l.seenIngest {
			l.state = api.LayerFailed
		}
	}
	p.pull.State = api.PullFailed
	p.pull.Error = fmt.Sprintf("aborted: the download stopped with %d of %d layers unfinished "+
		"(their ingests were removed without a commit: the pull was cancelled, the registry failed, or the kubelet gave up)",
		missing, len(p.layers))
	done := now.UTC()
	p.pull.CompletedAt = &done
	p.finishedAt = now
}

func (t *Tracker) complete(p *pullTrack, state api.PullState, now time.Time) {
	p.pull.State = state
	done := now.UTC()
	p.pull.CompletedAt = &done
	p.finishedAt = now
	p.refresh(now)
}

// refresh rebuilds the wire pull from the layer tracks.
func (p *pullTrack) refresh(now time.Time) {
	p.pull.Layers = p.pull.Layers[:0]
	for _, l := range p.layers {
		got := l.offset
		if l.state.Finished() {
			got = l.size
		}
		p.pull.Layers = append(p.pull.Layers, api.Layer{
			Digest: l.digest.String(), MediaType: l.mediaType, TotalBytes: l.size, DownloadedBytes: got, State: l.state,
		})
	}
	if p.imageName != "" {
		p.pull.ImageRef = p.imageName
	}
	p.pull.Summarize()
	if p.pull.State.Finished() {
		p.pull.BytesPerSec, p.pull.ETASeconds = 0, nil
	}
}

// resolveNames completes pulls whose image record exists and turns image records of
// images that needed no download into cached pulls.
func (t *Tracker) resolveNames(ctx context.Context, now time.Time) bool {
	changed := false
	names := t.names
	t.names = nil
	// retry keeps a name whose lookup failed for a reason other than "not found".
	retry := func(n pendingName, kind string, err error) {
		t.warn(now, kind, "looking up an image record in containerd failed; retrying next poll", err, "image", n.name)
		if n.tries+1 < nameRetries {
			t.names = append(t.names, pendingName{name: n.name, tries: n.tries + 1})
		}
	}
	for _, n := range names {
		name := n.name
		if strings.HasPrefix(name, "sha256:") {
			continue // the CRI's image-id alias: no name a person would use
		}
		img, err := t.images.Get(ctx, name)
		if err != nil {
			if !errdefs.IsNotFound(err) {
				retry(n, "image-get", err)
			}
			continue
		}
		m, err := t.res.ImageManifest(ctx, img.Target)
		if err != nil {
			if !errdefs.IsNotFound(err) {
				retry(n, "image-manifest", err)
			}
			continue
		}
		if p := t.active[m.Digest]; p != nil {
			p.imageName = betterName(p.imageName, name)
			continue
		}
		// The CRI writes several records for one pull (tag, repo@digest, image id) within
		// an instant; later records of the same image are a new, cached pull.
		if p := t.recent(m.Digest); p != nil && now.Sub(p.finishedAt) < t.cfg.AliasWindow {
			if n := betterName(p.imageName, name); n != p.imageName {
				p.imageName = n
				p.refresh(now)
				changed = true
			}
			continue
		}
		ok, err := t.cached(ctx, m, name, now)
		switch {
		case err != nil:
			retry(n, "cached-info", err)
		case ok:
			changed = true
		}
	}
	for _, p := range t.active {
		if p.pull.State.Finished() || p.allInSince.IsZero() {
			continue
		}
		if p.imageName == "" {
			p.imageName = t.lookupName(ctx, p.manifest)
		}
		switch {
		case p.imageName != "":
			t.complete(p, api.PullCompleted, now)
			changed = true
		case now.Sub(p.allInSince) >= t.cfg.CompleteGrace:
			t.complete(p, api.PullCompleted, now)
			changed = true
		}
	}
	return changed
}

// lookupName finds an image record that targets the manifest or its index; it covers
// image events missed while the event stream was down.
func (t *Tracker) lookupName(ctx context.Context, m *ingest.Manifest) string {
	filters := []string{"target.digest==" + m.Digest.String()}
	if m.Index != "" {
		filters = append(filters, "target.digest=="+m.Index.String())
	}
	imgs, err := t.images.List(ctx, filters...)
	if err != nil {
		t.warn(t.cfg.Now(), "image-list", "listing image records in containerd failed; retrying next poll", err, "manifest", m.Digest.String())
		return ""
	}
	name := ""
	for _, img := range imgs {
		if !strings.HasPrefix(img.Name, "sha256:") {
			name = betterName(name, img.Name)
		}
	}
	return name
}

// betterName prefers a tagged name to a digest name: people recognise tags.
func betterName(cur, cand string) string {
	switch {
	case cur == "":
		return cand
	case strings.Contains(cur, "@") && !strings.Contains(cand, "@"):
		return cand
	}
	return cur
}

func (t *Tracker) recent(m digest.Digest) *pullTrack {
	for i := len(t.finished) - 1; i >= 0; i-- {
		if t.finished[i].manifest.Digest == m {
			return t.finished[i]
		}
	}
	return nil
}

// cached records a pull that needed no download: every layer was already present. An
// error other than "not found" is returned so the name is tried again.
func (t *Tracker) cached(ctx context.Context, m *ingest.Manifest, name string, now time.Time) (bool, error) {
	p := &pullTrack{manifest: m, imageName: name, lastProgress: now}
	for _, l := range m.Layers {
		info, err := t.store.Info(ctx, l.Digest)
		switch {
		case err == nil:
		case errdefs.IsNotFound(err) && images.IsNonDistributable(l.MediaType):
			// Foreign layers are not fetched with the image.
		case errdefs.IsNotFound(err):
			// An image record whose layers are missing is not a finished pull of ours.
			return false, nil
		default:
			return false, err
		}
		size := l.Size
		if size == 0 {
			size = info.Size
		}
		p.layers = append(p.layers, &layerTrack{digest: l.Digest, mediaType: l.MediaType, size: size, offset: size, state: api.LayerExists, settled: true})
	}
	p.pull = api.Pull{
		ID:             t.uniqueID(pullID(t.cfg.NodeName, m.Digest, now)),
		NodeName:       t.cfg.NodeName,
		ImageRef:       name,
		Repository:     m.Ref(),
		ManifestDigest: m.Digest.String(),
		IndexDigest:    m.Index.String(),
		TotalKnown:     true,
		StartedAt:      now.UTC(),
		UpdatedAt:      now.UTC(),
		Pods:           []api.PodRef{},
	}
	t.complete(p, api.PullCached, now)
	t.finished = append(t.finished, p)
	return true, nil
}

func (t *Tracker) expire(now time.Time) bool {
	n := 0
	for _, p := range t.finished {
		if now.Sub(p.finishedAt) < t.cfg.Retention {
			t.finished[n] = p
			n++
		}
	}
	dropped := n != len(t.finished)
	clear(t.finished[n:])
	t.finished = t.finished[:n]
	if over := len(t.finished) - t.cfg.MaxFinished; over > 0 {
		t.finished = slices.Delete(t.finished, 0, over)
		dropped = true
	}
	return dropped
}
