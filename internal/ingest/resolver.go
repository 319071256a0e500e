package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Store is the read-only part of a containerd content store the resolver needs. Both the
// daemon client's ContentStore() and the local store satisfy it.
type Store interface {
	Info(ctx context.Context, dgst digest.Digest) (content.Info, error)
	Walk(ctx context.Context, fn content.WalkFunc, filters ...string) error
	ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error)
	ListStatuses(ctx context.Context, filters ...string) ([]content.Status, error)
}

// Manifest is what a pull needs to know about one image manifest.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Layers    []ocispec.Descriptor
	// Registry and Repository come from containerd's distribution.source label, whose key
	// drops the registry port.
	Registry   string
	Repository string
	// Index is the image index that led to this manifest, when one did.
	Index digest.Digest
	// CreatedAt is when the manifest was committed on this node: the start of its first pull.
	CreatedAt time.Time
}

// Ref is the best image reference known before the tag is: registry/repository.
func (m *Manifest) Ref() string {
	switch {
	case m.Registry != "" && m.Repository != "":
		return m.Registry + "/" + m.Repository
	case m.Repository != "":
		return m.Repository
	}
	return ""
}

// Filters that select manifests and indexes cheaply: containerd labels every fetched
// manifest with its config and every fetched index with its first manifest.
const (
	manifestFilter = `labels."containerd.io/gc.ref.content.config"`
	indexFilter    = `labels."containerd.io/gc.ref.content.m.0"`
	sourcePrefix   = "containerd.io/distribution.source."
	maxBlobSize    = 4 << 20 // manifests and indexes are small; refuse anything absurd
)

// Resolver maps layer digests to the manifests being pulled. Manifest and index blobs are
// immutable, so parsed ones are cached; the set of candidates is refreshed by a label
// walk only when a layer turns up that no cached manifest names.
type Resolver struct {
	store     Store
	manifests map[digest.Digest]*Manifest
	owners    map[digest.Digest][]digest.Digest // layer -> manifests naming it
	indexes   map[digest.Digest][]digest.Digest // index -> its manifests
	// notManifest remembers blobs matched by the label filter that failed to parse, so a
	// broken blob is not re-read on every walk.
	notManifest map[digest.Digest]bool
}

// NewResolver returns a resolver over store.
func NewResolver(store Store) *Resolver {
	return &Resolver{
		store:       store,
		manifests:   map[digest.Digest]*Manifest{},
		owners:      map[digest.Digest][]digest.Digest{},
		indexes:     map[digest.Digest][]digest.Digest{},
		notManifest: map[digest.Digest]bool{},
	}
}

// Owners returns the cached manifests that list layer.
func (r *Resolver) Owners(layer digest.Digest) []*Manifest {
	var out []*Manifest
	for _, m := range r.owners[layer] {
		if mf := r.manifests[m]; mf != nil {
			out = append(out, mf)
		}
	}
	return out
}

// Refresh walks the content store's manifests and indexes and indexes any new ones.
// It is called when an ingest names a layer that no known manifest lists.
func (r *Resolver) Refresh(ctx context.Context) error {
	var found []content.Info
	if err := r.store.Walk(ctx, func(info content.Info) error {
		found = append(found, info)
		return nil
	}, manifestFilter); err != nil {
		return fmt.Errorf("walk manifests: %w", err)
	}
	present := make(map[digest.Digest]bool, len(found))
	for _, info := range found {
		present[info.Digest] = true
		if r.manifests[info.Digest] != nil || r.notManifest[info.Digest] {
			continue
		}
		m, err := r.readManifest(ctx, info)
		if err != nil {
			if errdefs.IsNotFound(err) {
				continue
			}
			r.notManifest[info.Digest] = true
			continue
		}
		r.manifests[m.Digest] = m
	}
	// Forget manifests that were garbage collected, so the cache tracks the node.
	for d := range r.manifests {
		if !present[d] {
			delete(r.manifests, d)
		}
	}
	r.rebuildOwners()
	if err := r.refreshIndexes(ctx); err != nil {
		return err
	}
	return nil
}

func (r *Resolver) rebuildOwners() {
	clear(r.owners)
	for d, m := range r.manifests {
		for _, l := range m.Layers {
			r.owners[l.Digest] = append(r.owners[l.Digest], d)
		}
	}
}

func (r *Resolver) refreshIndexes(ctx context.Context) error {
	var found []content.Info
	if err := r.store.Walk(ctx, func(info content.Info) error {
		found = append(found, info)
		return nil
	}, indexFilter); err != nil {
		return fmt.Errorf("walk indexes: %w", err)
	}
	for _, info := range found {
		if _, ok := r.indexes[info.Digest]; ok {
			continue
		}
		idx, err := readJSON[ocispec.Index](ctx, r.store, info)
		if err != nil {
			r.indexes[info.Digest] = nil
			continue
		}
		var ms []digest.Digest
		for _, m := range idx.Manifests {
			ms = append(ms, m.Digest)
		}
		r.indexes[info.Digest] = ms
	}
	for idx, ms := range r.indexes {
		for _, m := range ms {
			if mf := r.manifests[m]; mf != nil && mf.Index == "" {
				mf.Index = idx
			}
		}
	}
	return nil
}

func (r *Resolver) readManifest(ctx context.Context, info content.Info) (*Manifest, error) {
	mf, err := readJSON[ocispec.Manifest](ctx, r.store, info)
	if err != nil {
		return nil, err
	}
	if mf.Config.Digest == "" {
		return nil, errors.New("not an image manifest")
	}
	m := &Manifest{
		Digest:    info.Digest,
		MediaType: mf.MediaType,
		Layers:    mf.Layers,
		CreatedAt: info.CreatedAt,
	}
	m.Registry, m.Repository = source(info.Labels)
	return m, nil
}

// source reads containerd.io/distribution.source.<registry>=<repository>. A manifest
// pulled from several registries has several; the choice among them is arbitrary but stable.
func source(labels map[string]string) (registry, repo string) {
	for k, v := range labels {
		if reg, ok := strings.CutPrefix(k, sourcePrefix); ok {
			if registry == "" || reg < registry {
				registry, repo = reg, strings.Split(v, ",")[0]
			}
		}
	}
	return registry, repo
}

// Manifest returns a cached manifest, reading it from the store if it is new.
func (r *Resolver) Manifest(ctx context.Context, dgst digest.Digest) (*Manifest, error) {
	if m := r.manifests[dgst]; m != nil {
		return m, nil
	}
	info, err := r.store.Info(ctx, dgst)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", dgst, err)
	}
	m, err := r.readManifest(ctx, info)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", dgst, err)
	}
	r.manifests[dgst] = m
	for _, l := range m.Layers {
		r.owners[l.Digest] = append(r.owners[l.Digest], dgst)
	}
	return m, nil
}

// ImageManifest resolves an image record's target to the manifest this node uses: the
// target itself, or the index entry matching the node's platform.
func (r *Resolver) ImageManifest(ctx context.Context, target ocispec.Descriptor) (*Manifest, error) {
	if !images.IsIndexType(target.MediaType) {
		return r.Manifest(ctx, target.Digest)
	}
	info, err := r.store.Info(ctx, target.Digest)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", target.Digest, err)
	}
	idx, err := readJSON[ocispec.Index](ctx, r.store, info)
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", target.Digest, err)
	}
	match := platforms.Default()
	for _, d := range idx.Manifests {
		if d.Platform != nil && !match.Match(*d.Platform) {
			continue
		}
		if images.IsIndexType(d.MediaType) {
			continue
		}
		m, err := r.Manifest(ctx, d.Digest)
		if err != nil {
			// Only the node's platform was fetched; other entries are absent.
			continue
		}
		if m.Index == "" {
			m.Index = target.Digest
		}
		return m, nil
	}
	return nil, fmt.Errorf("index %s: no manifest for this platform in the content store: %w", target.Digest, errdefs.ErrNotFound)
}

func readJSON[T any](ctx context.Context, store Store, info content.Info) (*T, error) {
	if info.Size > maxBlobSize {
		return nil, fmt.Errorf("blob %s is %d bytes, too large for a manifest", info.Digest, info.Size)
	}
	ra, err := store.ReaderAt(ctx, ocispec.Descriptor{Digest: info.Digest, Size: info.Size})
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	b, err := io.ReadAll(content.NewReader(ra))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", info.Digest, err)
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("parse %s: %w", info.Digest, err)
	}
	return &v, nil
}

// Forget drops a cached manifest that is no longer in the content store.
func (r *Resolver) Forget(dgst digest.Digest) {
	if r.manifests[dgst] == nil {
		return
	}
	delete(r.manifests, dgst)
	r.rebuildOwners()
}
