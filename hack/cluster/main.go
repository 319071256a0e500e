// Command cluster runs the real local cluster of internal/harness/cluster in the foreground, for the
// demo and for poking at Pulltrace by hand.
//
//	go run ./hack/cluster up   [--dir D] [--rate BYTES_PER_SEC] [--no-build] [--no-demo-image]
//	go run ./hack/cluster down [--dir D]
//	go run ./hack/cluster env  [--dir D]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/d44b/pulltrace/internal/harness/cluster"
)

const usage = `usage: go run ./hack/cluster up|down|env [flags]

  up     build missing components, start containerd + registry + throttle proxy +
         etcd + kube-apiserver, write <dir>/env and <dir>/pid, stay in the foreground
         until Ctrl-C, then tear everything down
  down   stop what a previous up left (its process, children, mounts, namespaces)
  env    print <dir>/env (KEY=VALUE lines)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	home, _ := os.UserHomeDir()
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	dir := fs.String("dir", filepath.Join(home, ".cache", "pulltrace", "run"), "cluster folder")
	rate := fs.Int64("rate", 0, "up: initial pull rate through the proxy in bytes/s (0: unthrottled)")
	noBuild := fs.Bool("no-build", false, "up: do not run hack/components.sh for missing components")
	noDemo := fs.Bool("no-demo-image", false, "up: do not push the demo image")
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage); fs.PrintDefaults() }
	_ = fs.Parse(args)

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch cmd {
	case "up":
		err = up(ctx, log, *dir, *rate, !*noBuild, !*noDemo)
	case "down":
		err = down(ctx, log, *dir)
	case "env":
		err = printEnv(*dir)
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func up(ctx context.Context, log *slog.Logger, dir string, rate int64, build, demo bool) error {
	if pid, alive := cluster.Owner(dir); alive {
		return fmt.Errorf("a cluster is already up in %s (pid %d); run `go run ./hack/cluster down` first", dir, pid)
	}
	script, err := cluster.FindComponents()
	if err != nil {
		return err
	}
	if build {
		cmd := exec.CommandContext(ctx, "bash", script, "containerd", "crictl", "registry", "kube", "kubectl")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build components: %w", err)
		}
	}
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{
		Containerd: true, Kube: true, Dir: dir, PullRate: rate, Components: script,
	})
	if err != nil {
		return err
	}
	defer c.Stop()

	var demoRef string
	if demo {
		img, err := c.PushImage(ctx, cluster.ImageSpec{Repo: "pulltrace/demo", Tag: "v1", LayerSizes: []int64{24 << 20, 16 << 20, 8 << 20}})
		if err != nil {
			return err
		}
		demoRef = img.Ref
	}

	env := c.Env()
	out, err := exec.CommandContext(ctx, "bash", script, "path", "kubectl").Output()
	if err == nil {
		env["PULLTRACE_KUBECTL"] = filepath.Join(strings.TrimSpace(string(out)), "kubectl")
	}
	envPath := filepath.Join(dir, "env")
	if err := os.WriteFile(envPath, []byte(formatEnv(env)), 0o644); err != nil {
		return fmt.Errorf("write env file: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pid"), fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}

	fmt.Printf(`
Pulltrace local cluster is up (%s). Everything lives in %s; logs in %s/logs.

  containerd socket   %s   (namespace %s)
  registry (direct)   %s
  registry (throttle) %s   <- pull through this one
  apiserver           %s
  kubeconfig          %s   (admin)   %s (unprivileged)
`, time.Since(start).Round(100*time.Millisecond), dir, dir, c.ContainerdSocket, cluster.Namespace,
		c.RegistryAddr, c.ProxyAddr, c.APIServerURL, c.Kubeconfig, c.UserKubeconfig)
	if demoRef != "" {
		fmt.Printf("  demo image          %s\n", demoRef)
	}
	fmt.Printf(`
In another shell:
  set -a; . %s; set +a          # or: eval "$(go run ./hack/cluster env | sed 's/^/export /')"
  export PATH="$PULLTRACE_BIN_PATH:$PATH"
  crictl --runtime-endpoint "$CONTAINER_RUNTIME_ENDPOINT" pull %s
  "$PULLTRACE_KUBECTL" get nodes,pods -A

Ctrl-C (or go run ./hack/cluster down) stops it.
`, envPath, orDefault(demoRef, c.ProxyAddr+"/<repo>:<tag>"))

	<-ctx.Done()
	log.Info("shutting down")
	if err := c.Close(); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	return nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// formatEnv writes KEY=VALUE lines, sorted, single-quoted when a value needs it, so the
// file works with `set -a; . file` as well as with env-file readers for simple values.
func formatEnv(env map[string]string) string {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		v := env[k]
		if strings.ContainsAny(v, " \t'\"$`\\") {
			v = "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
		}
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	return b.String()
}

func down(ctx context.Context, log *slog.Logger, dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		log.Info("nothing to stop", "dir", dir)
		return nil
	}
	if pid, alive := cluster.Owner(dir); alive {
		log.Info("stopping the cluster process", "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if _, alive = cluster.Owner(dir); !alive {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, alive = cluster.Owner(dir); alive {
			log.Warn("cluster process did not stop; killing it", "pid", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			time.Sleep(500 * time.Millisecond)
		}
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		log.Info("stopped", "dir", dir)
		return nil
	}
	// The up process died without cleaning up (or was killed): its children, mounts and
	// namespaces are recorded in the folder.
	if err := cluster.Teardown(ctx, dir, log); err != nil {
		return err
	}
	log.Info("cleaned up", "dir", dir)
	return nil
}

func printEnv(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		return fmt.Errorf("no running cluster in %s (run `go run ./hack/cluster up`): %w", dir, err)
	}
	_, err = os.Stdout.Write(b)
	return err
}
