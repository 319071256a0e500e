// Command images builds the Pulltrace container images, pulltrace-agent and pulltrace-server,
// as multi-platform OCI indexes (linux/amd64 and linux/arm64) without Docker: static Go
// binaries on an empty (scratch) base, assembled with go-containerregistry (hack/images/ociimage).
// `make images` runs it after `make web`, so the server binary embeds the real UI.
//
// Where the images go:
//
//   - By default NOTHING IS PUSHED. Both indexes are written to the OCI image layout
//     dist/images (-out), named <registry>/<image>:<version> in its index.json; tools such as
//     crane, skopeo or oras read it (e.g. `skopeo copy --all oci:dist/images:<name> docker://...`).
//   - -registry R (`make images REGISTRY=R`) pushes R/pulltrace-agent:<version> and
//     R/pulltrace-server:<version>. A loopback registry (127.0.0.0/8, ::1, localhost) is
//     spoken to anonymously over plain http: `make images REGISTRY=127.0.0.1:5000/pulltrace`.
//   - -push (`make images PUSH=1`) pushes to the default registry, ghcr.io/d44b, with the
//     docker config's credentials. That is a release step only: tests and CI never push to a
//     registry that is not on loopback (and have no internet anyway).
//
// The defaults match the chart: images ghcr.io/d44b/pulltrace-{agent,server} tagged with the
// chart's appVersion (charts/pulltrace/Chart.yaml), which is also what `main.version` and the
// org.opencontainers.image.version label say. -version (`make images VERSION=...`) overrides.
//
// Rebuilding an unchanged tree gives the same digests: layers have fixed mtimes and owners,
// and the config's created time is SOURCE_DATE_EPOCH when set, else the HEAD commit's time.
//
//	go run ./hack/images [-registry R] [-push] [-version V] [-platforms linux/amd64,linux/arm64] [-out dist/images]
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/d44b/pulltrace/hack/images/ociimage"
)

// DefaultRegistry is where the chart's default image repositories live (values.yaml).
const DefaultRegistry = "ghcr.io/d44b"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "images:", err)
		}
		os.Exit(1)
	}
}

// config is the parsed command line.
type config struct {
	registry  string
	push      bool
	version   string
	revision  string
	created   time.Time
	platforms []v1.Platform
	out       string
	moduleDir string
	goCmd     string
	binDir    string
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	fs.SetOutput(stderr)
	registry := fs.String("registry", DefaultRegistry, "registry and path prefix of the images; setting it explicitly pushes there")
	push := fs.Bool("push", false, "push to -registry even when it is the default (a release step)")
	version := fs.String("version", "", "image tag, label and main.version (default: the chart's appVersion)")
	revision := fs.String("revision", "", "org.opencontainers.image.revision (default: git HEAD, if any)")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated platforms of each index")
	out := fs.String("out", filepath.Join("dist", "images"), "OCI layout folder written when not pushing")
	moduleDir := fs.String("C", ".", "module root (the folder holding go.mod and charts/)")
	goCmd := fs.String("go", "go", "go command used to compile the binaries")
	binDir := fs.String("bin-dir", "", "keep the compiled binaries in this folder (default: a temp folder, removed)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	cfg := &config{registry: strings.TrimSuffix(*registry, "/"), push: *push, version: *version,
		revision: *revision, out: *out, moduleDir: *moduleDir, goCmd: *goCmd, binDir: *binDir}
	// Pushing is opt-in: naming a registry is the opt-in, so the default registry is only
	// ever pushed to with -push.
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "registry" {
			cfg.push = true
		}
	})
	if cfg.registry == "" {
		return nil, errors.New("-registry is empty")
	}
	for _, p := range strings.Split(*platforms, ",") {
		plat, err := v1.ParsePlatform(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("platform %q: %w", p, err)
		}
		if plat.OS == "" || plat.Architecture == "" {
			return nil, fmt.Errorf("platform %q: want os/arch[/variant]", p)
		}
		cfg.platforms = append(cfg.platforms, *plat)
	}
	return cfg, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := cfg.fillDefaults(ctx); err != nil {
		return err
	}
	// A bad tag (say a version with "+") fails now, not after minutes of compiling.
	for _, c := range ociimage.Components() {
		if _, err := ociimage.ParseRef(cfg.ref(c)); err != nil {
			return err
		}
	}
	binDir := cfg.binDir
	if binDir == "" {
		if binDir, err = os.MkdirTemp("", "pulltrace-images-"); err != nil {
			return fmt.Errorf("binary folder: %w", err)
		}
		defer os.RemoveAll(binDir)
	} else if err := os.MkdirAll(binDir, 0o755); err != nil {
		return fmt.Errorf("binary folder: %w", err)
	}

	start := time.Now()
	built, err := ociimage.Build(ctx, ociimage.Options{
		BuildOptions: ociimage.BuildOptions{Go: cfg.goCmd, ModuleDir: cfg.moduleDir, OutDir: binDir, Log: log},
		Meta:         ociimage.Meta{Version: cfg.version, Revision: cfg.revision, Created: cfg.created},
		Platforms:    cfg.platforms,
		Components:   ociimage.Components(),
	})
	if err != nil {
		return err
	}
	for _, b := range built {
		ref := cfg.ref(b.Component)
		d, err := b.Index.Digest()
		if err != nil {
			return fmt.Errorf("%s digest: %w", ref, err)
		}
		if cfg.push {
			if err := ociimage.Push(ctx, ref, b.Index); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "pushed %s@%s\n", ref, d)
		} else {
			if err := ociimage.WriteLayout(ctx, cfg.out, ref, b.Index); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s@%s to OCI layout %s (not pushed)\n", ref, d, cfg.out)
		}
	}
	log.Info("images done", "version", cfg.version, "revision", cfg.revision, "platforms", len(cfg.platforms),
		"pushed", cfg.push, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// ref is the tagged reference of c's index.
func (c *config) ref(comp ociimage.Component) string {
	return c.registry + "/" + comp.Name + ":" + c.version
}

// fillDefaults derives what was not given on the command line from the chart and git.
func (c *config) fillDefaults(ctx context.Context) error {
	if c.version == "" {
		v, err := chartAppVersion(filepath.Join(c.moduleDir, "charts", "pulltrace", "Chart.yaml"))
		if err != nil {
			return err
		}
		c.version = v
	}
	if c.revision == "" {
		// No git or no commit (a source tarball) leaves the label out rather than failing.
		c.revision, _ = gitOutput(ctx, c.moduleDir, "rev-parse", "HEAD")
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		c.created = time.Unix(sec, 0)
	} else if s, err := gitOutput(ctx, c.moduleDir, "log", "-1", "--format=%ct"); err == nil {
		if sec, err := strconv.ParseInt(s, 10, 64); err == nil {
			c.created = time.Unix(sec, 0)
		}
	}
	return nil
}

func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

// chartAppVersion reads appVersion from Chart.yaml. A line scan is enough for the one
// top-level scalar, and keeps a YAML library out of this tool.
func chartAppVersion(chartYAML string) (string, error) {
	f, err := os.Open(chartYAML)
	if err != nil {
		return "", fmt.Errorf("chart appVersion: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "appVersion:")
		if !ok {
			continue
		}
		if i := strings.Index(v, " #"); i >= 0 {
			v = v[:i]
		}
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		if v == "" {
			break
		}
		return v, nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("chart appVersion: %w", err)
	}
	return "", fmt.Errorf("chart appVersion: no appVersion in %s", chartYAML)
}
