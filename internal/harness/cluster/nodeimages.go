package cluster

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Images the real nodes need and that no registry here has: the sandbox ("pause") image,
// and a busybox for shell-script pods such as the chart's `helm test` pod.
const (
	PauseRepo   = "pulltrace/pause"
	BusyboxRepo = "pulltrace/busybox"
	// busyboxBinary is Debian's busybox-static (.ci/run installs it).
	busyboxBinary = "/bin/busybox"
)

type fileEntry struct {
	name     string
	mode     int64
	data     []byte
	linkname string // a symlink when set
}

// fileImage packs files into a one-layer image for the host's linux platform.
func fileImage(files []fileEntry, entrypoint []string) (v1.Image, error) {
	layer, err := fileLayer(files)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint = entrypoint
	cf.Config.Env = []string{"PATH=/bin"}
	return mutate.ConfigFile(img, cf)
}

// busyboxFiles make a small shell image: dash as /bin/sh (with the glibc it links, taken from
// this machine), busybox applets for the rest, and the harness's own wget. Debian's static
// busybox crashes in its wget, and its sh runs its own applets before anything on PATH.
func (c *Cluster) busyboxFiles(ctx context.Context) ([]fileEntry, error) {
	wget, err := c.harnessBinary(ctx, "wget")
	if err != nil {
		return nil, err
	}
	bb, err := os.ReadFile(busyboxBinary)
	if err != nil {
		return nil, fmt.Errorf("busybox for test pods (apt-get install busybox-static): %w", err)
	}
	files := []fileEntry{{name: "bin/busybox", mode: 0o755, data: bb}, {name: "bin/wget", mode: 0o755, data: wget}}
	for _, f := range []struct{ host, image string }{
		{"/bin/dash", "bin/sh"},
		{"/lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libc.so.6"},
		{"/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"},
	} {
		b, err := os.ReadFile(f.host)
		if err != nil {
			return nil, fmt.Errorf("shell for test pods: %w", err)
		}
		files = append(files, fileEntry{name: f.image, mode: 0o755, data: b})
	}
	for _, applet := range []string{"grep", "cut", "tail", "head", "echo", "sleep", "cat", "ls", "true", "false", "env", "nslookup", "httpd", "test", "nc", "date", "mkdir", "hostname"} {
		files = append(files, fileEntry{name: "bin/" + applet, mode: 0o777, linkname: "busybox"})
	}
	return files, nil
}

// busyboxLayer is the busybox files as one layer, made once per cluster so that every
// runnable test image shares it, as images built FROM one base do.
func (c *Cluster) busyboxLayer(ctx context.Context) (v1.Layer, error) {
	c.bbOnce.Do(func() {
		files, err := c.busyboxFiles(ctx)
		if err != nil {
			c.bbErr = err
			return
		}
		c.bbLayer, c.bbErr = fileLayer(files)
	})
	return c.bbLayer, c.bbErr
}

func fileLayer(files []fileEntry) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		if d := filepath.Dir(f.name); d != "." && !dirs[d] {
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
				return nil, err
			}
		}
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: time.Unix(0, 0)}
		if f.linkname != "" {
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.linkname
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if f.linkname == "" {
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	tarBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarBytes)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return layer, nil
}

func (c *Cluster) pushDirect(ctx context.Context, repoTag string, img v1.Image) (string, error) {
	ref := c.RegistryAddr + "/" + repoTag
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return ref, nil
}

// harnessBinary returns one of the static programs of the harness (internal/harness/cluster/
// pause and wget), built once per cluster in one go build.
func (c *Cluster) harnessBinary(ctx context.Context, file string) ([]byte, error) {
	c.binOnce.Do(func() {
		root := filepath.Dir(filepath.Dir(c.components))
		c.binDir = filepath.Join(c.Dir, "harness-bin")
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", c.binDir+string(filepath.Separator),
			"./internal/harness/cluster/pause", "./internal/harness/cluster/wget")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
		if b, err := cmd.CombinedOutput(); err != nil {
			c.binErr = fmt.Errorf("build harness programs: %w: %s", err, strings.TrimSpace(string(b)))
		}
	})
	if c.binErr != nil {
		return nil, c.binErr
	}
	return os.ReadFile(filepath.Join(c.binDir, file))
}

// pushNodeImages pushes the pause and busybox images; it returns the pause reference.
func (c *Cluster) pushNodeImages(ctx context.Context) (string, error) {
	bin, err := c.harnessBinary(ctx, "pause")
	if err != nil {
		return "", err
	}
	img, err := fileImage([]fileEntry{{name: "pause", mode: 0o755, data: bin}}, []string{"/pause"})
	if err != nil {
		return "", fmt.Errorf("pause image: %w", err)
	}
	pause, err := c.pushDirect(ctx, PauseRepo+":1", img)
	if err != nil {
		return "", err
	}
	files, err := c.busyboxFiles(ctx)
	if err != nil {
		return "", err
	}
	if img, err = fileImage(files, []string{"/bin/sh"}); err != nil {
		return "", fmt.Errorf("busybox image: %w", err)
	}
	if c.BusyboxImage, err = c.pushDirect(ctx, BusyboxRepo+":1", img); err != nil {
		return "", err
	}
	return pause, nil
}
