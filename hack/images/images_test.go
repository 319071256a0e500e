package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/d44b/pulltrace/hack/images/ociimage"
	"github.com/d44b/pulltrace/internal/harness/cluster"
)

const moduleRoot = "../.."

// Pushing is opt-in: only an explicit -registry or -push pushes, so a bare `make images`
// never talks to ghcr.io.
func TestPushOnlyWhenAsked(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		push     bool
		registry string
	}{
		{nil, false, DefaultRegistry},
		{[]string{"-push"}, true, DefaultRegistry},
		{[]string{"-registry", "127.0.0.1:5000/pulltrace/"}, true, "127.0.0.1:5000/pulltrace"},
		{[]string{"-registry", DefaultRegistry}, true, DefaultRegistry},
	} {
		cfg, err := parseFlags(tc.args, io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if cfg.push != tc.push || cfg.registry != tc.registry {
			t.Errorf("%q: push=%v registry=%q, want %v %q", tc.args, cfg.push, cfg.registry, tc.push, tc.registry)
		}
		if len(cfg.platforms) != 2 || cfg.platforms[0].Architecture != "amd64" || cfg.platforms[1].Architecture != "arm64" {
			t.Errorf("%q: platforms %v", tc.args, cfg.platforms)
		}
	}
	if _, err := parseFlags([]string{"-platforms", "linux/amd64,"}, io.Discard); err == nil {
		t.Error("empty platform accepted")
	}
}

// The defaults must be what the chart deploys: <DefaultRegistry>/<name>:<appVersion>.
func TestDefaultsMatchChart(t *testing.T) {
	cfg, err := parseFlags([]string{"-C", moduleRoot}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.fillDefaults(context.Background()); err != nil {
		t.Fatal(err)
	}
	chart, err := os.ReadFile(filepath.Join(moduleRoot, "charts", "pulltrace", "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(chart), "\nappVersion: \""+cfg.version+"\"\n") {
		t.Errorf("default version %q is not the chart's appVersion:\n%s", cfg.version, chart)
	}
	values, err := os.ReadFile(filepath.Join(moduleRoot, "charts", "pulltrace", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range ociimage.Components() {
		repo, _, _ := strings.Cut(cfg.ref(c), ":")
		if !strings.Contains(string(values), "repository: "+repo+"\n") {
			t.Errorf("values.yaml has no `repository: %s`", repo)
		}
	}

	dir := t.TempDir()
	for body, want := range map[string]string{
		"name: x\nappVersion: 1.2.3 # released\n": "1.2.3",
		"appVersion: '0.4.0'\n":                   "0.4.0",
		"name: x\n":                               "",
	} {
		p := filepath.Join(dir, "Chart.yaml")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := chartAppVersion(p)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("%q: %q, %v; want %q", body, got, err, want)
		}
	}
}

// inspected is the part of `crictl inspecti -o json` this test reads: the CRI image status
// and, in containerd's verbose info, the image config as containerd resolved it.
type inspected struct {
	Status struct {
		RepoTags    []string `json:"repoTags"`
		RepoDigests []string `json:"repoDigests"`
		// crictl prints the CRI's Int64Value as {"value": "65532"}; json.Number takes
		// that and a bare number alike.
		UID *struct {
			Value json.Number `json:"value"`
		} `json:"uid"`
	} `json:"status"`
	Info struct {
		ImageSpec v1.ConfigFile `json:"imageSpec"`
	} `json:"info"`
}

// TestImagesPushedAndPulledByCRI runs what `make images REGISTRY=...` runs against the local
// cluster's registry, then pulls each image through containerd's CRI, as a kubelet would, and
// checks what containerd reports about it. Both platforms are built; the pull takes the host's.
func TestImagesPushedAndPulledByCRI(t *testing.T) {
	c := cluster.StartT(t, cluster.Options{Containerd: true})
	// This test must never push anywhere but this machine.
	if !ociimage.IsLoopback(c.RegistryAddr) {
		t.Fatalf("registry %s is not on loopback", c.RegistryAddr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	const version = "0.0.0-imagetest"
	const revision = "0123456789abcdef0123456789abcdef01234567"
	// Pinned so that the second build below, into a layout, may be compared digest for digest
	// even if a commit lands in between (the default created time is HEAD's commit time).
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	registry := c.RegistryAddr + "/pulltrace"
	binDir := t.TempDir()
	var stdout, stderr bytes.Buffer
	start := time.Now()
	err := run(ctx, []string{"-C", moduleRoot, "-registry", registry, "-version", version,
		"-revision", revision, "-bin-dir", binDir}, &stdout, &stderr)
	t.Logf("build and push took %s\n%s%s", time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	if err != nil {
		t.Fatalf("images: %v", err)
	}

	pushed := map[string]string{} // image name -> index digest
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		// "pushed <registry>/<name>:<version>@<digest>"
		refDigest, ok := strings.CutPrefix(line, "pushed "+registry+"/")
		nameTag, dig, ok2 := strings.Cut(refDigest, "@")
		imgName, _, _ := strings.Cut(nameTag, ":")
		if !ok || !ok2 {
			t.Fatalf("unexpected output line %q", line)
		}
		pushed[imgName] = dig
	}

	hostPlat := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	wantPlats := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}
	for _, comp := range ociimage.Components() {
		wantUser := map[string]string{"pulltrace-agent": "0:0", "pulltrace-server": "65532:65532"}[comp.Name]
		wantLabels := map[string]string{
			"org.opencontainers.image.version":  version,
			"org.opencontainers.image.revision": revision,
			"org.opencontainers.image.source":   "https://github.com/d44b/pulltrace",
			"org.opencontainers.image.licenses": "Apache-2.0",
			"org.opencontainers.image.title":    comp.Name,
		}
		checkConfig := func(where string, cf *v1.ConfigFile, plat v1.Platform) {
			t.Helper()
			if cf.OS != plat.OS || cf.Architecture != plat.Architecture {
				t.Errorf("%s: %s/%s, want %s", where, cf.OS, cf.Architecture, plat.String())
			}
			if cf.Config.User != wantUser {
				t.Errorf("%s: user %q, want %q", where, cf.Config.User, wantUser)
			}
			if want := []string{"/usr/local/bin/" + comp.Name}; !slices.Equal(cf.Config.Entrypoint, want) {
				t.Errorf("%s: entrypoint %q, want %q", where, cf.Config.Entrypoint, want)
			}
			for k, v := range wantLabels {
				if got := cf.Config.Labels[k]; got != v {
					t.Errorf("%s: label %s = %q, want %q", where, k, got, v)
				}
			}
		}

		// The pull side reads through the throttling proxy, the address containerd uses.
		pullRef := c.ProxyAddr + "/pulltrace/" + comp.Name + ":" + version
		ref, err := ociimage.ParseRef(pullRef)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Index(ref, remote.WithContext(ctx), remote.WithAuth(authn.Anonymous))
		if err != nil {
			t.Fatalf("%s: read index: %v", pullRef, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		idxDigest, _ := idx.Digest()
		if pushed[comp.Name] != idxDigest.String() {
			t.Errorf("%s: registry has %s, the tool reported %q", pullRef, idxDigest, pushed[comp.Name])
		}
		if im.MediaType != "application/vnd.oci.image.index.v1+json" || len(im.Manifests) != len(wantPlats) {
			t.Fatalf("%s: %s with %d manifests, want an OCI index of %d", pullRef, im.MediaType, len(im.Manifests), len(wantPlats))
		}
		for i, d := range im.Manifests {
			if d.Platform == nil || !d.Platform.Equals(wantPlats[i]) {
				t.Errorf("%s: manifest %d is for %v, want %s", pullRef, i, d.Platform, wantPlats[i].String())
				continue
			}
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			checkConfig(pullRef+" "+d.Platform.String()+" in the registry", cf, wantPlats[i])
		}

		// The kubelet's path: CRI PullImage, then ImageStatus.
		pullStart := time.Now()
		if err := c.CRIPull(ctx, pullRef); err != nil {
			t.Fatalf("CRI pull %s: %v", pullRef, err)
		}
		t.Logf("CRI pull %s took %s", pullRef, time.Since(pullStart).Round(time.Millisecond))
		out, err := c.Crictl(ctx, "inspecti", "-o", "json", pullRef)
		if err != nil {
			t.Fatalf("crictl inspecti %s: %v", pullRef, err)
		}
		var got inspected
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("crictl inspecti %s: %v\n%s", pullRef, err, out)
		}
		checkConfig(pullRef+" as containerd pulled it", &got.Info.ImageSpec, hostPlat)
		if !slices.Contains(got.Status.RepoTags, pullRef) {
			t.Errorf("%s: repo tags %q", pullRef, got.Status.RepoTags)
		}
		// The CRI names the pulled image by the index digest, the digest the tag points at.
		if want := c.ProxyAddr + "/pulltrace/" + comp.Name + "@" + idxDigest.String(); !slices.Contains(got.Status.RepoDigests, want) {
			t.Errorf("%s: repo digests %q, want %s", pullRef, got.Status.RepoDigests, want)
		}
		// The CRI derives the uid the kubelet checks runAsNonRoot against from the config's User.
		uid, _, _ := strings.Cut(wantUser, ":")
		if got.Status.UID == nil || got.Status.UID.Value.String() != uid {
			t.Errorf("%s: CRI uid %+v, want %s", pullRef, got.Status.UID, uid)
		}

		// The image's own binary (host platform) runs and carries the version it was built with.
		hostImg, err := remote.Image(ref, remote.WithContext(ctx), remote.WithAuth(authn.Anonymous), remote.WithPlatform(hostPlat))
		if err != nil {
			t.Fatal(err)
		}
		bin := extractBinary(t, hostImg, "usr/local/bin/"+comp.Name)
		vout, err := exec.CommandContext(ctx, bin, "-version").CombinedOutput()
		if err != nil || strings.TrimSpace(string(vout)) != version {
			t.Errorf("%s -version: %q, %v; want %q", comp.Name, vout, err, version)
		}
	}

	// Without -registry nothing is pushed: the same build lands in an OCI layout under the
	// chart's default names, and (same binaries, same inputs) with the same digests.
	out := filepath.Join(t.TempDir(), "images")
	binDir2 := t.TempDir()
	stdout.Reset()
	stderr.Reset()
	start = time.Now()
	err = run(ctx, []string{"-C", moduleRoot, "-version", version, "-revision", revision,
		"-bin-dir", binDir2, "-out", out}, &stdout, &stderr)
	t.Logf("build into a layout took %s\n%s%s", time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	if err != nil {
		t.Fatalf("images (layout): %v", err)
	}
	if strings.HasPrefix(stdout.String(), "pushed") || strings.Contains(stdout.String(), "\npushed") {
		t.Errorf("a build without -registry pushed:\n%s", stdout.String())
	}
	lp, err := layout.FromPath(out)
	if err != nil {
		t.Fatalf("layout: %v", err)
	}
	root, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	rm, err := root.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	inLayout := map[string]string{}
	for _, d := range rm.Manifests {
		inLayout[d.Annotations[ociimage.AnnotationRefName]] = d.Digest.String()
	}
	for _, comp := range ociimage.Components() {
		name := DefaultRegistry + "/" + comp.Name + ":" + version
		got, ok := inLayout[name]
		if !ok {
			t.Errorf("layout has no %s: %v", name, inLayout)
			continue
		}
		if got == pushed[comp.Name] {
			continue
		}
		// Different digests are a reproducibility bug only if the binaries are the same;
		// in a tree being edited while the test runs, the second build may compile new code.
		same := true
		for _, p := range wantPlats {
			sub := p.OS + "-" + p.Architecture
			b1, err1 := os.ReadFile(filepath.Join(binDir, sub, filepath.Base(comp.Package)))
			b2, err2 := os.ReadFile(filepath.Join(binDir2, sub, filepath.Base(comp.Package)))
			if err1 != nil || err2 != nil {
				t.Fatalf("binaries: %v %v", err1, err2)
			}
			same = same && bytes.Equal(b1, b2)
		}
		if same {
			t.Errorf("%s: same binaries, different index digests: layout %s, pushed %s", comp.Name, got, pushed[comp.Name])
		} else {
			t.Logf("%s: the tree changed between the two builds (binaries differ); digests not compared", comp.Name)
		}
	}
}

// extractBinary copies name out of img's layers into a temp file and returns its path.
func extractBinary(t *testing.T, img v1.Image, name string) string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Name != name {
				continue
			}
			if h.Mode&0o111 == 0 {
				t.Errorf("%s is not executable: mode %o", name, h.Mode)
			}
			p := filepath.Join(t.TempDir(), filepath.Base(name))
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			rc.Close()
			return p
		}
		rc.Close()
	}
	t.Fatalf("%s not in the image", name)
	return ""
}
