package ociimage

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64"}
	meta  = Meta{Version: "1.2.3", Revision: "abc123", Created: time.Unix(1700000000, 0)}
)

func mustImage(t *testing.T, c Component, plat v1.Platform, binary string) v1.Image {
	t.Helper()
	base, err := BaseLayer()
	if err != nil {
		t.Fatal(err)
	}
	img, err := NewImage(c, plat, []byte(binary), base, meta)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digest(t *testing.T, d interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// files reads a layer's tar into name -> header (and content for regular files).
func files(t *testing.T, l v1.Layer) (map[string]*tar.Header, map[string]string, []string) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	hdrs, data := map[string]*tar.Header{}, map[string]string{}
	var order []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name], data[h.Name] = h, string(b)
		order = append(order, h.Name)
	}
	return hdrs, data, order
}

// Rebuilding from the same binary must give the same digests (the promise of `make images`
// being reproducible); a changed binary changes only its own layer.
func TestImageIsReproducible(t *testing.T) {
	a := mustImage(t, Server, amd64, "binary v1")
	b := mustImage(t, Server, amd64, "binary v1")
	if da, db := digest(t, a), digest(t, b); da != db {
		t.Fatalf("same inputs, different manifests: %s vs %s", da, db)
	}
	c := mustImage(t, Server, amd64, "binary v2")
	la, _ := a.Layers()
	lc, _ := c.Layers()
	if len(la) != 2 || len(lc) != 2 {
		t.Fatalf("want 2 layers, got %d and %d", len(la), len(lc))
	}
	if digest(t, la[0]) != digest(t, lc[0]) {
		t.Error("base layer changed with the binary")
	}
	if digest(t, la[1]) == digest(t, lc[1]) {
		t.Error("binary layer did not change with the binary")
	}
	// The base layer is shared by both components on every platform.
	agent := mustImage(t, Agent, arm64, "other")
	lg, _ := agent.Layers()
	if digest(t, lg[0]) != digest(t, la[0]) {
		t.Error("agent/arm64 and server/amd64 base layers differ")
	}
}

func TestImageConfig(t *testing.T) {
	for _, tc := range []struct {
		c    Component
		plat v1.Platform
		user string
	}{{Server, amd64, "65532:65532"}, {Agent, arm64, "0:0"}} {
		img := mustImage(t, tc.c, tc.plat, "bin")
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS != "linux" || cf.Architecture != tc.plat.Architecture {
			t.Errorf("%s: platform %s/%s", tc.c.Name, cf.OS, cf.Architecture)
		}
		if cf.Config.User != tc.user {
			t.Errorf("%s: user %q, want %q", tc.c.Name, cf.Config.User, tc.user)
		}
		if want := []string{"/usr/local/bin/" + tc.c.Name}; !slices.Equal(cf.Config.Entrypoint, want) {
			t.Errorf("%s: entrypoint %q, want %q", tc.c.Name, cf.Config.Entrypoint, want)
		}
		if len(cf.Config.Cmd) != 0 {
			t.Errorf("%s: cmd %q; the chart passes args only", tc.c.Name, cf.Config.Cmd)
		}
		want := map[string]string{
			LabelTitle: tc.c.Name, LabelVersion: "1.2.3", LabelRevision: "abc123",
			LabelSource: "https://github.com/d44b/pulltrace", LabelLicenses: "Apache-2.0",
		}
		for k, v := range want {
			if cf.Config.Labels[k] != v {
				t.Errorf("%s: label %s = %q, want %q", tc.c.Name, k, cf.Config.Labels[k], v)
			}
		}
		if !cf.Created.Equal(meta.Created) {
			t.Errorf("%s: created %s", tc.c.Name, cf.Created)
		}
		if len(cf.History) != 2 || len(cf.RootFS.DiffIDs) != 2 {
			t.Errorf("%s: %d history entries, %d diff ids", tc.c.Name, len(cf.History), len(cf.RootFS.DiffIDs))
		}
		mt, _ := img.MediaType()
		if mt != "application/vnd.oci.image.manifest.v1+json" {
			t.Errorf("%s: manifest media type %s", tc.c.Name, mt)
		}
	}
	// No revision (a tree without git) leaves the label out instead of writing "".
	if _, ok := (Meta{Version: "x"}).Labels(Server)[LabelRevision]; ok {
		t.Error("empty revision still labelled")
	}
}

func TestLayerFiles(t *testing.T) {
	img := mustImage(t, Server, amd64, "#!ELF pretend")
	layers, _ := img.Layers()

	hdrs, data, order := files(t, layers[0])
	if !slices.IsSorted(order) {
		t.Errorf("base layer entries not in a fixed (sorted) order: %q", order)
	}
	if !strings.Contains(data["etc/passwd"], "nonroot:x:65532:65532:") || !strings.HasPrefix(data["etc/passwd"], "root:x:0:0:") {
		t.Errorf("passwd:\n%s", data["etc/passwd"])
	}
	if !strings.Contains(data["etc/group"], "nonroot:x:65532:") {
		t.Errorf("group:\n%s", data["etc/group"])
	}
	tmp := hdrs["tmp/"]
	if tmp == nil || tmp.Typeflag != tar.TypeDir || tmp.Mode != 0o1777 {
		t.Errorf("tmp/: %+v", tmp)
	}
	if h := hdrs["home/nonroot/"]; h == nil || h.Uid != NonRootUID || h.Gid != NonRootUID {
		t.Errorf("home/nonroot/: %+v", h)
	}

	hdrs, data, _ = files(t, layers[1])
	bin := hdrs["usr/local/bin/pulltrace-server"]
	if bin == nil || bin.Mode != 0o755 || bin.Uid != 0 || bin.Gid != 0 || data["usr/local/bin/pulltrace-server"] != "#!ELF pretend" {
		t.Errorf("binary entry: %+v", bin)
	}
	for _, h := range hdrs {
		if !h.ModTime.Equal(time.Unix(0, 0)) || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: mtime %s, owner %q/%q: build-dependent metadata in a layer", h.Name, h.ModTime, h.Uname, h.Gname)
		}
	}
}

func TestIndex(t *testing.T) {
	plats := []v1.Platform{amd64, arm64}
	imgs := []v1.Image{mustImage(t, Agent, amd64, "a"), mustImage(t, Agent, arm64, "b")}
	idx, err := NewIndex(Agent, meta, plats, imgs)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != "application/vnd.oci.image.index.v1+json" || len(m.Manifests) != 2 {
		t.Fatalf("index %s with %d manifests", m.MediaType, len(m.Manifests))
	}
	for i, d := range m.Manifests {
		if d.Platform == nil || !d.Platform.Equals(plats[i]) {
			t.Errorf("manifest %d platform %v, want %v", i, d.Platform, plats[i])
		}
		if d.Digest.String() != digest(t, imgs[i]) {
			t.Errorf("manifest %d digest %s", i, d.Digest)
		}
	}
	if m.Annotations[LabelVersion] != "1.2.3" || m.Annotations[LabelSource] != Source {
		t.Errorf("index annotations %v", m.Annotations)
	}
	if _, err := NewIndex(Agent, meta, plats, imgs[:1]); err == nil {
		t.Error("mismatched platforms and images accepted")
	}
}

func TestIsLoopback(t *testing.T) {
	for reg, want := range map[string]bool{
		"127.0.0.1:5000": true, "127.0.0.1": true, "127.1.2.3:80": true, "localhost:5000": true,
		"localhost": true, "[::1]:5000": true, "ghcr.io": false, "ghcr.io:443": false,
		"10.0.0.1:5000": false, "localhost.example.com:5000": false, "docker.io": false,
	} {
		if got := IsLoopback(reg); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", reg, got, want)
		}
	}
	r, err := ParseRef("127.0.0.1:5000/pulltrace/pulltrace-agent:1.0")
	if err != nil || r.Context().Scheme() != "http" {
		t.Errorf("loopback ref: %v, scheme %v", err, r)
	}
	r, err = ParseRef("ghcr.io/d44b/pulltrace-agent:1.0")
	if err != nil || r.Context().Scheme() != "https" {
		t.Errorf("ghcr ref: %v, %v", err, r)
	}
	if _, err := ParseRef("ghcr.io/d44b/pulltrace-agent:1.0+build"); err == nil {
		t.Error("tag with + accepted")
	}
}

// Writing into one layout twice replaces the named index and drops the old blobs; a folder
// that is not a layout is refused rather than filled.
func TestWriteLayout(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "images")
	idx1, err := NewIndex(Server, meta, []v1.Platform{amd64}, []v1.Image{mustImage(t, Server, amd64, "one")})
	if err != nil {
		t.Fatal(err)
	}
	idx2, err := NewIndex(Server, meta, []v1.Platform{amd64}, []v1.Image{mustImage(t, Server, amd64, "two")})
	if err != nil {
		t.Fatal(err)
	}
	agent, err := NewIndex(Agent, meta, []v1.Platform{amd64}, []v1.Image{mustImage(t, Agent, amd64, "agent")})
	if err != nil {
		t.Fatal(err)
	}
	const srv, agt = "r.example/pulltrace-server:1.2.3", "r.example/pulltrace-agent:1.2.3"
	for _, w := range []struct {
		ref string
		idx v1.ImageIndex
	}{{srv, idx1}, {agt, agent}, {srv, idx2}} {
		if err := WriteLayout(ctx, dir, w.ref, w.idx); err != nil {
			t.Fatal(err)
		}
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	root, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := root.IndexManifest()
	got := map[string]string{}
	for _, d := range m.Manifests {
		got[d.Annotations[AnnotationRefName]] = d.Digest.String()
	}
	if len(m.Manifests) != 2 || got[srv] != digest(t, idx2) || got[agt] != digest(t, agent) {
		t.Fatalf("index.json names %v", got)
	}
	// Blobs: two indexes, two manifests, two configs, the shared base layer and two
	// binary layers; idx1's manifest, config and binary layer are gone.
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if len(blobs) != 9 {
		t.Errorf("%d blobs left, want 9", len(blobs))
	}
	if _, err := os.Stat(filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(digest(t, idx1), "sha256:"))); !os.IsNotExist(err) {
		t.Errorf("replaced index blob still there: %v", err)
	}
	// The layout reads back as the index that was written.
	back, err := root.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := back.RawManifest()
	var parsed v1.IndexManifest
	if err := json.Unmarshal(raw, &parsed); err != nil || len(parsed.Manifests) != 1 {
		t.Errorf("index read back: %v, %d manifests", err, len(parsed.Manifests))
	}

	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(ctx, other, srv, idx1); err == nil {
		t.Error("wrote a layout into a folder holding other files")
	}
}
