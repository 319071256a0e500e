// Package ociimage builds Pulltrace's container images without Docker: static Go binaries on
// an empty (scratch) base, assembled with go-containerregistry into one OCI image per
// platform and a multi-platform OCI index per component, then pushed to a registry or written
// to an OCI image layout directory.
//
// Each image has two layers: a base layer shared by every Pulltrace image of every platform
// (/etc/passwd and /etc/group naming root and nonroot (65532), /tmp, the home folders), so a
// registry or node stores it once, and a layer holding the binary alone. Files in both carry
// a fixed mtime and owner and are written in a fixed order, so the same binary always gives
// the same layer digest, and the same inputs (binary, version, revision, created time) give
// the same image and index digests with a given Go toolchain (gzip output is stable within a
// Go release, not promised across releases).
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// OCI annotation and label keys (image-spec annotations.md). Labels in the config are what
// `crictl inspecti`, `docker inspect` and registries show; the same keys go on the index as
// annotations, which is where registries such as GHCR look for a multi-arch image.
const (
	LabelTitle       = "org.opencontainers.image.title"
	LabelDescription = "org.opencontainers.image.description"
	LabelVersion     = "org.opencontainers.image.version"
	LabelRevision    = "org.opencontainers.image.revision"
	LabelSource      = "org.opencontainers.image.source"
	LabelLicenses    = "org.opencontainers.image.licenses"
	// AnnotationRefName names an image in an OCI layout's index.json.
	AnnotationRefName = "org.opencontainers.image.ref.name"
)

const (
	// Source is the repository the images are built from.
	Source = "https://github.com/d44b/pulltrace"
	// Licenses is the SPDX expression of the project's license (LICENSE).
	Licenses = "Apache-2.0"
	// NonRootUID is the uid (and gid) of the "nonroot" user in the image's /etc/passwd, the
	// uid the chart runs the server as.
	NonRootUID = 65532
	// BinDir is where each image's binary lives.
	BinDir = "/usr/local/bin"
)

// Component is one Pulltrace program shipped as an image.
type Component struct {
	// Name is the image repository's last element and the binary's name in the image.
	Name string
	// Package is the Go main package, relative to the module root.
	Package string
	// User is the config's User, "uid:gid". Numeric, so that the kubelet's runAsNonRoot check
	// can verify it without reading /etc/passwd from the image.
	User        string
	Description string
}

// Agent is the node agent. It runs as root because it reads the node's containerd socket,
// which containerd creates owned by root:root with mode 0660; the chart sets uid 0 too and
// drops every capability.
var Agent = Component{
	Name:        "pulltrace-agent",
	Package:     "./cmd/agent",
	User:        "0:0",
	Description: "Pulltrace node agent: reads image pull progress from containerd",
}

// Server is the API/SSE/UI server. It needs no privilege, so it runs as the nonroot user,
// matching the chart's runAsUser 65532 and runAsNonRoot.
var Server = Component{
	Name:        "pulltrace-server",
	Package:     "./cmd/server",
	User:        fmt.Sprintf("%d:%d", NonRootUID, NonRootUID),
	Description: "Pulltrace server: merges agent reports and serves the API, SSE stream and web UI",
}

// Components are the images `make images` builds.
func Components() []Component { return []Component{Agent, Server} }

// Entrypoint is the component's entrypoint: its binary, so the chart's `args` are its flags.
func (c Component) Entrypoint() []string { return []string{path.Join(BinDir, c.Name)} }

// Meta is what an image says about its build.
type Meta struct {
	Version  string // goes into the binary (main.version), the label and usually the tag
	Revision string // git commit; the label is left out when empty
	// Created is the config's created time. The zero value means the Unix epoch, the usual
	// choice for reproducible images; callers pass SOURCE_DATE_EPOCH or the commit time.
	Created time.Time
}

// Labels are the OCI labels of c's image.
func (m Meta) Labels(c Component) map[string]string {
	l := map[string]string{
		LabelTitle:       c.Name,
		LabelDescription: c.Description,
		LabelVersion:     m.Version,
		LabelSource:      Source,
		LabelLicenses:    Licenses,
	}
	if m.Revision != "" {
		l[LabelRevision] = m.Revision
	}
	return l
}

func (m Meta) created() time.Time {
	if m.Created.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return m.Created.UTC()
}

// layerMtime is the mtime of every file in every layer. It is not the build time: a layer's
// digest then depends only on its content, so the shared base layer keeps one digest across
// releases and an unchanged binary keeps its layer.
var layerMtime = time.Unix(0, 0)

// BuildOptions say how to compile the binaries.
type BuildOptions struct {
	// Go is the go command; empty means "go".
	Go string
	// ModuleDir is the module root the packages are relative to; empty means the working dir.
	ModuleDir string
	// OutDir receives the binaries, one folder per platform; it must exist.
	OutDir  string
	Version string
	Log     *slog.Logger
}

// BuildBinaries compiles every component for plat in one `go build` (the package graph is
// loaded and compiled once for both) as static binaries: CGO off, so the scratch base needs
// no libc; -trimpath, so the binary does not depend on where the tree is checked out; -s -w,
// since symbols and DWARF are only size in an image. It returns each component's binary path.
func BuildBinaries(ctx context.Context, opts BuildOptions, plat v1.Platform, comps []Component) (map[string]string, error) {
	if plat.OS != "linux" {
		return nil, fmt.Errorf("build for %s: only linux images are supported", plat.String())
	}
	goCmd := opts.Go
	if goCmd == "" {
		goCmd = "go"
	}
	dir := filepath.Join(opts.OutDir, plat.OS+"-"+plat.Architecture+plat.Variant)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("binary folder: %w", err)
	}
	args := []string{"build", "-trimpath", "-ldflags", "-s -w -X main.version=" + opts.Version,
		// A trailing separator makes -o a folder, which `go build` needs for several mains.
		"-o", dir + string(filepath.Separator)}
	out := map[string]string{}
	seen := map[string]bool{}
	for _, c := range comps {
		// go build names each binary after its package folder; two components sharing a
		// folder name would overwrite each other.
		base := path.Base(c.Package)
		if seen[base] {
			return nil, fmt.Errorf("build: two components build from a folder named %q", base)
		}
		seen[base] = true
		args = append(args, c.Package)
		out[c.Name] = filepath.Join(dir, base)
	}
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS="+plat.OS, "GOARCH="+plat.Architecture)
	switch {
	case plat.Architecture == "arm" && plat.Variant != "":
		env = append(env, "GOARM="+strings.TrimPrefix(plat.Variant, "v"))
	case plat.Architecture == "amd64" && plat.Variant != "":
		env = append(env, "GOAMD64="+plat.Variant)
	}
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = opts.ModuleDir
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build for %s: %w\n%s", plat.String(), err, strings.TrimSpace(stderr.String()))
	}
	logger(opts.Log).Info("built binaries", "platform", plat.String(), "took", time.Since(start).Round(time.Millisecond))
	return out, nil
}

func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// tarEntry is one file or folder of a layer.
type tarEntry struct {
	name     string // relative, no leading slash; folders end in "/"
	mode     int64
	uid, gid int
	data     []byte
}

// writeTar writes entries, in the given order, with fixed times and no user or group
// names, so the archive's bytes depend on the entries alone.
func writeTar(entries []tarEntry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			ModTime: layerMtime, Format: tar.FormatUSTAR,
		}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	return buf.Bytes(), nil
}

// layerFromTar makes a gzip'd OCI layer of an in-memory tar. The compressed bytes are cached
// because the digest, the push and the layout write would each gzip the tar again.
func layerFromTar(tarBytes []byte) (v1.Layer, error) {
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.DefaultCompression),
		tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return l, nil
}

// The base layer's users. Only the numeric ids matter to the runtime (the config's User is
// numeric); the names let tools such as ps and id show something readable.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\nnonroot:x:65532:\n"
)

// BaseLayer is the layer below every binary: users, groups, a world-writable sticky /tmp
// (os.TempDir works when the root filesystem is writable; the chart mounts its own) and the
// two home folders. No CA certificates: agent and server only speak plain http inside the
// cluster and reach the apiserver with the service account's CA.
func BaseLayer() (v1.Layer, error) {
	tb, err := writeTar([]tarEntry{
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: NonRootUID, gid: NonRootUID},
		{name: "root/", mode: 0o700},
		{name: "tmp/", mode: 0o1777},
	})
	if err != nil {
		return nil, err
	}
	return layerFromTar(tb)
}

// binaryLayer holds the binary at BinDir/file, owned by root and not writable by nonroot.
func binaryLayer(file string, binary []byte) (v1.Layer, error) {
	tb, err := writeTar([]tarEntry{
		{name: "usr/", mode: 0o755},
		{name: "usr/local/", mode: 0o755},
		{name: "usr/local/bin/", mode: 0o755},
		{name: strings.TrimPrefix(path.Join(BinDir, file), "/"), mode: 0o755, data: binary},
	})
	if err != nil {
		return nil, err
	}
	return layerFromTar(tb)
}

// NewImage assembles c's image for plat around binary (the bytes of a static executable
// for plat). base is BaseLayer(), passed in so that every image shares one instance.
func NewImage(c Component, plat v1.Platform, binary []byte, base v1.Layer, meta Meta) (v1.Image, error) {
	bin, err := binaryLayer(c.Name, binary)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: meta.created()}
	cfg := &v1.ConfigFile{
		Architecture: plat.Architecture,
		OS:           plat.OS,
		Variant:      plat.Variant,
		Created:      created,
		Config: v1.Config{
			User:       c.User,
			Entrypoint: c.Entrypoint(),
			// A scratch image has no environment; PATH is the one variable tools (and
			// `kubectl exec` with a bare program name) expect.
			Env:        []string{"PATH=" + BinDir + ":/usr/bin:/bin"},
			WorkingDir: "/",
			Labels:     meta.Labels(c),
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return nil, fmt.Errorf("%s config: %w", c.Name, err)
	}
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, MediaType: types.OCILayer, History: v1.History{
			Created: created, CreatedBy: "pulltrace ociimage: base files (passwd, group, tmp)",
		}},
		mutate.Addendum{Layer: bin, MediaType: types.OCILayer, History: v1.History{
			Created: created, CreatedBy: "pulltrace ociimage: " + c.Package + " built for " + plat.String(),
		}},
	)
	if err != nil {
		return nil, fmt.Errorf("%s layers: %w", c.Name, err)
	}
	return img, nil
}

// NewIndex makes the multi-platform OCI index of imgs (one per platform, in plats' order),
// annotated with c's labels.
func NewIndex(c Component, meta Meta, plats []v1.Platform, imgs []v1.Image) (v1.ImageIndex, error) {
	if len(plats) != len(imgs) || len(imgs) == 0 {
		return nil, fmt.Errorf("%s index: %d platforms for %d images", c.Name, len(plats), len(imgs))
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for i, img := range imgs {
		p := plats[i]
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	annotated, ok := mutate.Annotations(idx, meta.Labels(c)).(v1.ImageIndex)
	if !ok {
		return nil, fmt.Errorf("%s index: annotating did not return an index", c.Name)
	}
	return annotated, nil
}

// Options describe a whole build: every component for every platform.
type Options struct {
	BuildOptions
	Meta       Meta
	Platforms  []v1.Platform
	Components []Component
}

// Built is one component's result.
type Built struct {
	Component Component
	Index     v1.ImageIndex
	// Binaries maps each platform ("linux/arm64") to the binary compiled for it.
	Binaries map[string]string
}

// Build compiles and assembles every component's index. Nothing leaves the machine.
func Build(ctx context.Context, o Options) ([]Built, error) {
	if len(o.Platforms) == 0 || len(o.Components) == 0 {
		return nil, errors.New("build images: no platforms or no components")
	}
	o.Version = o.Meta.Version
	base, err := BaseLayer()
	if err != nil {
		return nil, err
	}
	out := make([]Built, len(o.Components))
	imgs := make([][]v1.Image, len(o.Components))
	for i, c := range o.Components {
		out[i] = Built{Component: c, Binaries: map[string]string{}}
	}
	for _, plat := range o.Platforms {
		bins, err := BuildBinaries(ctx, o.BuildOptions, plat, o.Components)
		if err != nil {
			return nil, err
		}
		for i, c := range o.Components {
			data, err := os.ReadFile(bins[c.Name])
			if err != nil {
				return nil, fmt.Errorf("read binary: %w", err)
			}
			img, err := NewImage(c, plat, data, base, o.Meta)
			if err != nil {
				return nil, err
			}
			imgs[i] = append(imgs[i], img)
			out[i].Binaries[plat.String()] = bins[c.Name]
		}
	}
	for i, c := range o.Components {
		idx, err := NewIndex(c, o.Meta, o.Platforms, imgs[i])
		if err != nil {
			return nil, err
		}
		out[i].Index = idx
	}
	return out, nil
}

// IsLoopback reports whether a registry host ("host", "host:port", "[::1]:port") is this
// machine: "localhost" or a loopback IP. Only those are spoken to over plain http.
func IsLoopback(registry string) bool {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParseRef parses an image reference, allowing plain http only for a loopback registry.
func ParseRef(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref, name.StrictValidation)
	if err != nil {
		return nil, fmt.Errorf("image ref %q: %w", ref, err)
	}
	if IsLoopback(r.Context().RegistryStr()) {
		if r, err = name.ParseReference(ref, name.StrictValidation, name.Insecure); err != nil {
			return nil, fmt.Errorf("image ref %q: %w", ref, err)
		}
	}
	return r, nil
}

// Push uploads idx, its manifests and blobs, and tags it as ref. A loopback registry is
// spoken to anonymously over http; any other uses the docker config's credentials.
func Push(ctx context.Context, ref string, idx v1.ImageIndex) error {
	r, err := ParseRef(ref)
	if err != nil {
		return err
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithJobs(4)}
	if IsLoopback(r.Context().RegistryStr()) {
		opts = append(opts, remote.WithAuth(authn.Anonymous))
	} else {
		opts = append(opts, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	}
	if err := remote.WriteIndex(r, idx, opts...); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

// WriteLayout stores idx in the OCI image layout at dir under the name ref (the
// org.opencontainers.image.ref.name annotation), replacing an earlier index of that name.
// The folder is created when missing; an existing folder must already be an OCI layout,
// so that a wrong path never gets blobs sprayed into it.
func WriteLayout(ctx context.Context, dir, ref string, idx v1.ImageIndex) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		entries, rerr := os.ReadDir(dir)
		if rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("layout %s: %w", dir, rerr)
		}
		if len(entries) > 0 {
			return fmt.Errorf("layout %s: folder is not empty and not an OCI layout: %w", dir, err)
		}
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return fmt.Errorf("layout %s: %w", dir, err)
		}
	}
	if err := p.ReplaceIndex(idx, match.Annotation(AnnotationRefName, ref),
		layout.WithAnnotations(map[string]string{AnnotationRefName: ref})); err != nil {
		return fmt.Errorf("layout %s: write %s: %w", dir, ref, err)
	}
	return pruneLayout(p)
}

// pruneLayout removes the blobs no longer reachable from index.json, the previous build's
// binaries mostly, so that repeated builds into one folder do not pile up.
func pruneLayout(p layout.Path) error {
	root, err := p.ImageIndex()
	if err != nil {
		return fmt.Errorf("layout %s: %w", p, err)
	}
	keep := map[string]bool{}
	if err := reachable(root, keep); err != nil {
		return fmt.Errorf("layout %s: %w", p, err)
	}
	blobs := filepath.Join(string(p), "blobs")
	return filepath.WalkDir(blobs, func(file string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(blobs, file)
		if err != nil {
			return err
		}
		// blobs/<algorithm>/<hex> is the digest <algorithm>:<hex>.
		if alg, hex, ok := strings.Cut(filepath.ToSlash(rel), "/"); ok && !keep[alg+":"+hex] {
			if err := os.Remove(file); err != nil {
				return fmt.Errorf("prune %s: %w", file, err)
			}
		}
		return nil
	})
}

// reachable adds to keep the digest of every manifest, config and layer below idx (idx
// itself is index.json when it is the layout's root, so its own digest is added by callers
// only for nested indexes).
func reachable(idx v1.ImageIndex, keep map[string]bool) error {
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range m.Manifests {
		keep[d.Digest.String()] = true
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return err
			}
			if err := reachable(child, keep); err != nil {
				return err
			}
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				return err
			}
			cfg, err := img.ConfigName()
			if err != nil {
				return err
			}
			keep[cfg.String()] = true
			layers, err := img.Layers()
			if err != nil {
				return err
			}
			for _, l := range layers {
				ld, err := l.Digest()
				if err != nil {
					return err
				}
				keep[ld.String()] = true
			}
		}
	}
	return nil
}
