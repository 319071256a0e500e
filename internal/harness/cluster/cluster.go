// Package cluster runs the real parts Pulltrace is tested against, on this machine: containerd
// v2 with the CRI plugin, a distribution registry behind a throttling proxy, etcd with
// kube-apiserver, and (Options.Nodes) a real cluster: kube-controller-manager, kube-scheduler
// and real nodes, each a kubelet with its own containerd, runc and shim, on a pod bridge with
// cluster DNS and Service addresses (see Node and serviceNet).
//
// Without real nodes the package can stand in for a kubelet (Node objects, kubelet events,
// pod waiting states) for fast tests, and it exposes in-process HTTP servers as Kubernetes
// Services reachable through the apiserver's service proxy.
//
// Everything lives in one folder, every port is picked at run time, and all children die
// with the test process; what a dead test left (pods, shims, mounts, cgroups, bridges,
// namespaces) is swept by the next Start, so several test packages can each run a cluster.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Namespace is the containerd namespace the CRI plugin (and so the kubelet) uses.
const Namespace = "k8s.io"

// Options choose which parts run.
type Options struct {
	// Containerd runs containerd with the CRI plugin; it implies Registry.
	Containerd bool
	// Registry runs the distribution registry and the throttling proxy in front of it.
	Registry bool
	// Kube runs etcd and kube-apiserver.
	Kube bool
	// Nodes runs a real cluster: kube-controller-manager, kube-scheduler and one real node
	// (containerd + kubelet) per entry, on a pod bridge with cluster DNS and Service
	// addresses. It implies Registry and Kube; Containerd stays the separate bare containerd.
	Nodes []NodeOptions

	// Dir is the cluster folder; empty means a new temp folder. A given folder must be
	// empty, absent, or left by a dead owner (it is torn down first).
	Dir string
	// PullRate is the proxy's initial rate in bytes per second; 0 means unthrottled.
	PullRate int64
	// MaxConcurrentDownloads is the CRI's per-pull layer concurrency; 0 means 3, the
	// kubelet default the Pulltrace tests are written against.
	MaxConcurrentDownloads int
	// ContainerdVersion picks the containerd build: "" is hack/components.sh's default,
	// "v2.0.14" the component containerd-v2.0.14 (`hack/components.sh matrix` builds them).
	ContainerdVersion string
	// LocalPull makes the CRI pull with containerd's local client instead of the transfer
	// service (use_local_image_pull, containerd 2.1 and later). 2.0 has only the local path.
	LocalPull bool
	// ContainerdDebug runs containerd at debug log level; among much else, the CRI then
	// logs which pull path each pull takes.
	ContainerdDebug bool
	// Components is hack/components.sh; empty means search upwards from the working dir.
	Components string
	// Logger receives the harness's own log; nil means a file in the cluster folder.
	Logger *slog.Logger
}

// Cluster is a running set of real components. Its methods are safe for concurrent use.
type Cluster struct {
	// Dir holds all state: configs, data, sockets and logs (Dir/logs).
	Dir string
	// ContainerdSocket is the absolute path of containerd's gRPC socket.
	ContainerdSocket string
	// RegistryAddr is the registry's own host:port (unthrottled; pushes go here).
	RegistryAddr string
	// ProxyAddr is the throttling proxy's host:port; image refs use it.
	ProxyAddr string
	// APIServerURL is the apiserver's https URL.
	APIServerURL string
	// Kubeconfig is an admin (system:masters) kubeconfig file.
	Kubeconfig string
	// UserKubeconfig is a kubeconfig for an authenticated user with no RBAC bindings.
	UserKubeconfig string
	// UserName is the user of UserKubeconfig.
	UserName string
	// PauseImage and BusyboxImage are the sandbox image and a busybox (sh, wget, ...) for
	// test pods, pushed to the registry directly (unthrottled); set with Nodes.
	PauseImage, BusyboxImage string

	opts       Options
	components string // hack/components.sh
	log        *slog.Logger
	logFile    *os.File
	sp         *spawner
	bins       map[string]string // component name -> bin folder

	mu         sync.Mutex
	containerd *Process
	registry   *Process
	etcd       *Process
	apiserver  *Process
	extra      []*Process
	proxy      *throttleProxy
	kube       *kubeState
	exposed    []*Exposed
	netns      *netnsAlloc
	podNet     *podNetwork
	svcNet     *serviceNet
	cgroup     string // the cluster's top cgroup (real nodes), without the leading /
	nodes      []*Node

	controllerManager *Process
	scheduler         *Process

	binOnce sync.Once
	binDir  string
	binErr  error
	bbOnce  sync.Once
	bbLayer v1.Layer
	bbErr   error

	closed   bool
	closeErr error
}

// componentBins lists the binaries checked for each hack/components.sh component.
func componentBins(name string) []string {
	switch {
	case name == "containerd":
		return []string{"containerd", "ctr", "containerd-shim-runc-v2"}
	case strings.HasPrefix(name, "containerd-"):
		// The matrix builds run pulls only, no containers: no shim.
		return []string{"containerd", "ctr"}
	case name == "kube":
		return []string{"etcd", "kube-apiserver", "kubelet", "kube-controller-manager", "kube-scheduler"}
	case name == "cni":
		return []string{"bridge", "host-local", "loopback"}
	default:
		return []string{name}
	}
}

// containerdComponent is the hack/components.sh name of the containerd build to run.
func (o Options) containerdComponent() string {
	if o.ContainerdVersion == "" {
		return "containerd"
	}
	return "containerd-" + o.ContainerdVersion
}

func (o Options) components() []string {
	var c []string
	if o.Containerd {
		c = append(c, o.containerdComponent(), "crictl")
	}
	if o.Registry || o.Containerd {
		c = append(c, "registry")
	}
	if o.Kube {
		c = append(c, "kube")
	}
	if len(o.Nodes) > 0 {
		if !o.Containerd {
			c = append(c, "containerd", "crictl")
		}
		c = append(c, "runc", "cni")
	}
	return c
}

// FindComponents locates hack/components.sh by walking up from the working directory.
func FindComponents() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find hack/components.sh: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, "hack", "components.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("hack/components.sh not found above %s", wd)
		}
	}
}

// componentDirs asks components.sh where each component's binaries live and checks they
// are there, so a missing build is reported as such rather than as an exec failure later.
func componentDirs(ctx context.Context, script string, names []string) (map[string]string, error) {
	dirs := map[string]string{}
	var missing []string
	for _, n := range names {
		out, err := exec.CommandContext(ctx, "bash", script, "path", n).Output()
		if err != nil {
			return nil, fmt.Errorf("%s path %s: %w", script, n, err)
		}
		d := strings.TrimSpace(string(out))
		dirs[n] = d
		for _, b := range componentBins(n) {
			if fi, err := os.Stat(filepath.Join(d, b)); err != nil || fi.Mode()&0o111 == 0 {
				missing = append(missing, n)
				break
			}
		}
	}
	if len(missing) > 0 {
		return dirs, fmt.Errorf("%w: %s not built; run `%s %s` (cold builds take minutes)",
			ErrComponentsMissing, strings.Join(missing, ", "), script, strings.Join(missing, " "))
	}
	return dirs, nil
}

// ErrComponentsMissing is returned by Start when a component binary has not been built.
var ErrComponentsMissing = errors.New("real cluster components missing")

func (c *Cluster) bin(component, name string) string {
	return filepath.Join(c.bins[component], name)
}

// Start starts the parts opts asks for and waits until each is ready. On failure nothing
// is left running and the error carries the failing component's log tail.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if len(opts.Nodes) > 0 {
		opts.Registry, opts.Kube = true, true
	}
	if !opts.Containerd && !opts.Registry && !opts.Kube {
		return nil, errors.New("cluster: nothing to start (set Containerd, Registry, Kube or Nodes)")
	}
	if opts.MaxConcurrentDownloads == 0 {
		opts.MaxConcurrentDownloads = 3
	}
	script := opts.Components
	if script == "" {
		var err error
		if script, err = FindComponents(); err != nil {
			return nil, err
		}
	}
	bins, err := componentDirs(ctx, script, opts.components())
	if err != nil {
		return nil, err
	}

	bootLog := opts.Logger
	if bootLog == nil {
		bootLog = slog.New(slog.DiscardHandler)
	}
	sweepStale(ctx, bootLog)

	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", strings.TrimSuffix(tempGlob, "*")); err != nil {
			return nil, fmt.Errorf("cluster folder: %w", err)
		}
	} else {
		if dir, err = filepath.Abs(dir); err != nil {
			return nil, fmt.Errorf("cluster folder: %w", err)
		}
		if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
			// Only a folder a cluster made is ours to wipe; anything else is left alone.
			if _, err := os.Stat(filepath.Join(dir, ownerFile)); err != nil {
				return nil, fmt.Errorf("cluster folder %s is not empty and not a cluster folder", dir)
			}
			if err := Teardown(ctx, dir, bootLog); err != nil {
				return nil, fmt.Errorf("cluster folder %s in use: %w", dir, err)
			}
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("cluster folder: %w", err)
		}
	}
	// mountinfo shows resolved paths; a symlinked temp dir would hide our mounts from Stop.
	if resolved, err := filepath.EvalSymlinks(dir); err == nil {
		dir = resolved
	}
	c := &Cluster{Dir: dir, opts: opts, bins: bins, sp: newSpawner(), components: script}
	if err := writeOwner(dir); err != nil {
		c.Close()
		return nil, err
	}
	if err := os.MkdirAll(c.logDir(), 0o755); err != nil {
		c.Close()
		return nil, fmt.Errorf("log folder: %w", err)
	}
	if opts.Logger != nil {
		c.log = opts.Logger
	} else {
		lf, err := os.Create(filepath.Join(c.logDir(), "harness.log"))
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("harness log: %w", err)
		}
		c.logFile = lf
		c.log = slog.New(slog.NewTextHandler(lf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if len(opts.Nodes) > 0 {
		// The network is chosen first: the apiserver's Service range and serving
		// certificate depend on it.
		if err := c.preparePodNetwork(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	c.log.Info("starting cluster", "dir", dir, "containerd", opts.Containerd, "registry", opts.Registry || opts.Containerd, "kube", opts.Kube)

	// The two halves are independent and the apiserver dominates start-up, so they overlap.
	var wg sync.WaitGroup
	var regErr, kubeErr error
	if opts.Registry || opts.Containerd {
		wg.Go(func() {
			if regErr = c.startRegistry(ctx); regErr != nil {
				return
			}
			if opts.Containerd {
				regErr = c.startContainerd(ctx)
			}
		})
	}
	if opts.Kube {
		wg.Go(func() { kubeErr = c.startKube(ctx) })
	}
	wg.Wait()
	if err := errors.Join(regErr, kubeErr); err != nil {
		c.log.Error("start failed", "err", err)
		c.Close()
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	if len(opts.Nodes) > 0 {
		if err := c.startNodes(ctx); err != nil {
			c.log.Error("start failed", "err", err)
			c.Close()
			return nil, fmt.Errorf("start cluster: %w", err)
		}
	}
	c.log.Info("cluster ready", "containerd", c.ContainerdSocket, "proxy", c.ProxyAddr, "apiserver", c.APIServerURL)
	return c, nil
}

// StartT starts a cluster for a test and stops it in t.Cleanup. Missing components fail
// the test (the real parts are the point of these tests); only -short skips.
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("real cluster: skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout(opts))
	defer cancel()
	start := time.Now()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("real cluster did not start: %v", err)
	}
	t.Logf("real cluster up in %s: dir=%s containerd=%s proxy=%s apiserver=%s",
		time.Since(start).Round(time.Millisecond), c.Dir, c.ContainerdSocket, c.ProxyAddr, c.APIServerURL)
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range c.processes() {
				t.Logf("--- last lines of %s (%s):\n%s", p.Name, p.LogPath, logTail(p.LogPath, 25))
			}
			t.Logf("--- last lines of harness log:\n%s", logTail(filepath.Join(c.logDir(), "harness.log"), 25))
		}
		c.Stop()
	})
	return c
}

func (c *Cluster) logDir() string { return filepath.Join(c.Dir, "logs") }

// LogPath is the log file of a component ("containerd", "registry", "proxy", "etcd",
// "kube-apiserver", "harness", or a StartProcess name).
func (c *Cluster) LogPath(name string) string { return filepath.Join(c.logDir(), name+".log") }

func (c *Cluster) processes() []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*Process
	for _, p := range []*Process{c.containerd, c.registry, c.etcd, c.apiserver, c.controllerManager, c.scheduler} {
		if p != nil {
			ps = append(ps, p)
		}
	}
	for _, n := range c.nodes {
		ps = append(ps, n.processes()...)
	}
	return append(ps, c.extra...)
}

// Pids lists the process ids of every child the cluster started (running or not).
func (c *Cluster) Pids() []int {
	var out []int
	for _, p := range c.processes() {
		out = append(out, p.Pid())
	}
	return out
}

// startChild starts a long-running child and records it for Teardown.
func (c *Cluster) startChild(name, bin string, args, env []string, extra []*os.File) (*Process, error) {
	p, err := c.sp.startProcess(name, c.LogPath(name), bin, args, env, extra)
	if err != nil {
		return nil, err
	}
	if st, err := procStartTime(p.Pid()); err == nil {
		_ = appendLine(filepath.Join(c.Dir, pidsFile), fmt.Sprintf("%d %d %s", p.Pid(), st, name))
	}
	c.log.Info("started", "name", name, "pid", p.Pid())
	return p, nil
}

// StartProcess starts a program (for example a Pulltrace server or agent built by a test)
// as a child of the cluster: same process-group and parent-death rules, output in
// LogPath(name), stopped by Stop. extra become fds 3, 4, ... in the child.
func (c *Cluster) StartProcess(ctx context.Context, name, bin string, args, env []string, extra ...*os.File) (*Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, errors.New("cluster is stopped")
	}
	if env == nil {
		env = os.Environ()
	}
	p, err := c.startChild(name, bin, args, env, extra)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.extra = append(c.extra, p)
	c.mu.Unlock()
	return p, nil
}

// waitReady polls check until it succeeds, the process exits, or ctx/timeout ends; errors
// include the process's log tail because that is where the reason is.
func waitReady(ctx context.Context, p *Process, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		if done, werr := p.Exited(); done {
			return fmt.Errorf("%s exited during start-up (%v); last check: %w\n--- %s:\n%s", p.Name, werr, last, p.LogPath, logTail(p.LogPath, 30))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (%w)\n--- %s:\n%s", p.Name, last, ctx.Err(), p.LogPath, logTail(p.LogPath, 30))
		case <-tick.C:
		}
	}
}

// freePort picks a loopback port that is free now. Children that take a port number, not a
// listener, can still lose a race for it; their starters retry with a new port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// addrInUse reports whether a failed start looks like a lost port race.
func addrInUse(p *Process) bool {
	return strings.Contains(logTail(p.LogPath, 40), "address already in use")
}

// Env returns the variables the CLI and demo scripts use to reach this cluster.
func (c *Cluster) Env() map[string]string {
	env := map[string]string{}
	if c.Kubeconfig != "" {
		env["KUBECONFIG"] = c.Kubeconfig
		env["PULLTRACE_USER_KUBECONFIG"] = c.UserKubeconfig
	}
	if c.ContainerdSocket != "" {
		env["CONTAINERD_ADDRESS"] = c.ContainerdSocket
		env["CONTAINERD_NAMESPACE"] = Namespace
		env["CONTAINER_RUNTIME_ENDPOINT"] = "unix://" + c.ContainerdSocket
		env["IMAGE_SERVICE_ENDPOINT"] = "unix://" + c.ContainerdSocket
	}
	if c.ProxyAddr != "" {
		env["PULLTRACE_REGISTRY"] = c.ProxyAddr
		env["PULLTRACE_REGISTRY_DIRECT"] = c.RegistryAddr
	}
	var path []string
	for _, n := range []string{c.opts.containerdComponent(), "crictl", "registry", "kube", "runc"} {
		if d, ok := c.bins[n]; ok {
			path = append(path, d)
		}
	}
	if len(path) > 0 {
		env["PULLTRACE_BIN_PATH"] = strings.Join(path, ":")
	}
	return env
}

// Stop stops everything and removes the folder; errors are logged. Safe to call twice.
func (c *Cluster) Stop() {
	if err := c.Close(); err != nil {
		c.log.Error("stop", "err", err)
		fmt.Fprintf(os.Stderr, "pulltrace cluster stop: %v\n", err)
	}
}

// Close is Stop returning what went wrong (left mounts, namespaces that would not go).
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.closeErr
	}
	c.closed = true
	exposed := c.exposed
	c.exposed = nil
	c.mu.Unlock()
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	// Children that use others go first: users of the apiserver and containerd (they may
	// hold an exposed listener, which pins its namespace), then the apiserver before etcd,
	// containerd before the registry it pulls from.
	c.mu.Lock()
	extra := append([]*Process(nil), c.extra...)
	c.mu.Unlock()
	for i := len(extra) - 1; i >= 0; i-- {
		extra[i].Stop(5 * time.Second)
	}
	for _, e := range exposed {
		e.shutdown()
	}
	if err := c.stopNodes(ctx); err != nil {
		errs = append(errs, err)
	}
	c.controllerManager.Stop(10 * time.Second)
	c.scheduler.Stop(10 * time.Second)
	if c.svcNet != nil {
		c.svcNet.stop()
	}
	c.apiserver.Stop(10 * time.Second)
	c.etcd.Stop(10 * time.Second)
	c.containerd.Stop(10 * time.Second)
	if c.proxy != nil {
		c.proxy.stop()
		c.proxy.closeLog()
	}
	c.registry.Stop(5 * time.Second)
	c.sp.stop()
	if c.netns != nil {
		for _, ns := range c.netns.names() {
			if err := deleteNetns(ctx, ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if c.podNet != nil && c.podNet.created {
		if err := deleteBridge(ctx, c.podNet.bridge); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmountAll(c.Dir); err != nil {
		errs = append(errs, err)
	}
	c.log.Info("cluster stopped", "dir", c.Dir)
	if c.logFile != nil {
		c.logFile.Close()
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", c.Dir, err))
		}
	}
	c.closeErr = errors.Join(errs...)
	return c.closeErr
}

// AdminClient returns a clientset with admin rights.
func (c *Cluster) AdminClient() (kubernetes.Interface, error) {
	cfg := c.AdminConfig()
	if cfg == nil {
		return nil, errors.New("cluster runs without Kube")
	}
	return kubernetes.NewForConfig(cfg)
}

// AdminConfig returns a fresh admin rest.Config (nil when Kube is off); callers may mutate it.
func (c *Cluster) AdminConfig() *rest.Config {
	if c.kube == nil {
		return nil
	}
	return rest.CopyConfig(c.kube.admin)
}

// UserConfig returns a rest.Config for the unprivileged user (nil when Kube is off).
func (c *Cluster) UserConfig() *rest.Config {
	if c.kube == nil {
		return nil
	}
	return rest.CopyConfig(c.kube.user)
}

var _ io.Closer = (*Cluster)(nil)
