package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// unixPathMax is the kernel's limit for a socket path (sun_path minus the terminator).
const unixPathMax = 107

func (c *Cluster) containerdDir() string { return filepath.Join(c.Dir, "containerd") }

func (c *Cluster) startContainerd(ctx context.Context) error {
	d := c.containerdDir()
	sock := filepath.Join(c.Dir, "containerd.sock")
	if len(sock)+len(".ttrpc") > unixPathMax {
		return fmt.Errorf("cluster folder %s is too long for a unix socket path", c.Dir)
	}
	for _, sub := range []string{"root", "state", "tmp", "opt", "cni/bin", "cni/net.d", "image-verifier/bin"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
			return fmt.Errorf("containerd folder: %w", err)
		}
	}
	if err := c.writeHostsTOML(c.ProxyAddr); err != nil {
		return err
	}
	if err := c.writeHostsTOML(c.RegistryAddr); err != nil {
		return err
	}
	cfgVersion, err := c.containerdConfigVersion(ctx)
	if err != nil {
		return err
	}
	localPull := ""
	// 2.0 pulls with the local client only and has no such setting.
	if c.opts.LocalPull && !strings.HasPrefix(c.opts.ContainerdVersion, "v2.0.") {
		localPull = "\n    use_local_image_pull = true"
	}
	logLevel := "info"
	if c.opts.ContainerdDebug {
		logLevel = "debug"
	}
	// Every path containerd would default to a system location (/etc, /opt, /run, /var)
	// is pinned into the folder, so two clusters never share anything.
	cfg := fmt.Sprintf(`version = %[12]d
root = %[1]q
state = %[2]q
temp = %[3]q
imports = []
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.zfs', 'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.blockfile', 'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing', 'io.containerd.snapshotter.v1.erofs',
  'io.containerd.differ.v1.erofs', 'io.containerd.mount-handler.v1.erofs']

[debug]
  level = %[14]q

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = %[4]q
  [plugins.'io.containerd.server.v1.ttrpc']
    address = %[5]q
  [plugins.'io.containerd.server.v1.debug']
    address = ''
  [plugins.'io.containerd.server.v1.metrics']
    address = ''
  [plugins.'io.containerd.internal.v1.opt']
    path = %[6]q
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    max_concurrent_downloads = %[7]d%[13]s
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = %[8]q
  [plugins.'io.containerd.cri.v1.runtime']
    cdi_spec_dirs = []
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [%[9]q]
      conf_dir = %[10]q
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
  [plugins.'io.containerd.transfer.v1.local']
    config_path = %[8]q
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = %[11]q
`, filepath.Join(d, "root"), filepath.Join(d, "state"), filepath.Join(d, "tmp"), sock, sock+".ttrpc",
		filepath.Join(d, "opt"), c.opts.MaxConcurrentDownloads, filepath.Join(d, "certs.d"),
		filepath.Join(d, "cni/bin"), filepath.Join(d, "cni/net.d"), filepath.Join(d, "image-verifier/bin"),
		cfgVersion, localPull, logLevel)
	if err := os.WriteFile(filepath.Join(d, "config.toml"), []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("containerd config: %w", err)
	}
	crictlCfg := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 10\ndebug: false\n", sock, sock)
	if err := os.WriteFile(filepath.Join(d, "crictl.yaml"), []byte(crictlCfg), 0o644); err != nil {
		return fmt.Errorf("crictl config: %w", err)
	}
	c.ContainerdSocket = sock
	return c.StartContainerd(ctx)
}

// containerdConfigVersion asks the containerd binary which config version it writes:
// 2.0 knows version 3, later releases 4.
func (c *Cluster) containerdConfigVersion(ctx context.Context) (int, error) {
	out, err := exec.CommandContext(ctx, c.bin(c.opts.containerdComponent(), "containerd"), "config", "default").Output()
	if err != nil {
		return 0, fmt.Errorf("containerd config default: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "version = "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("containerd config default: version %q: %w", v, err)
			}
			return n, nil
		}
	}
	return 0, errors.New("containerd config default: no version line")
}

// writeHostsTOML makes containerd pull from a plain-http loopback registry.
func (c *Cluster) writeHostsTOML(hostPort string) error {
	dir := filepath.Join(c.containerdDir(), "certs.d", hostPort)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("certs.d: %w", err)
	}
	toml := fmt.Sprintf(`server = "http://%[1]s"
[host."http://%[1]s"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
`, hostPort)
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644); err != nil {
		return fmt.Errorf("hosts.toml: %w", err)
	}
	return nil
}

// StartContainerd starts containerd on the cluster's root and state (again, after
// KillContainerd) and waits until its CRI image service answers.
func (c *Cluster) StartContainerd(ctx context.Context) error {
	if c.ContainerdSocket == "" {
		return errors.New("cluster runs without containerd")
	}
	c.mu.Lock()
	if c.containerd != nil {
		if done, _ := c.containerd.Exited(); !done {
			c.mu.Unlock()
			return errors.New("containerd is already running")
		}
	}
	c.mu.Unlock()
	d := c.containerdDir()
	env := append(os.Environ(),
		// containerd's temporary mounts follow TMPDIR when no temp is configured; pinning
		// it keeps every mount under the folder Stop unmounts.
		"TMPDIR="+filepath.Join(d, "tmp"),
		// The tracing exporters stay off even if a plugin slips through the disable list.
		"OTEL_SDK_DISABLED=true", "OTEL_TRACES_EXPORTER=none")
	p, err := c.startChild("containerd", c.bin(c.opts.containerdComponent(), "containerd"), []string{
		"--config", filepath.Join(d, "config.toml"),
		"--root", filepath.Join(d, "root"),
		"--state", filepath.Join(d, "state"),
		"--address", c.ContainerdSocket,
	}, env, nil)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.containerd = p
	c.mu.Unlock()
	return waitReady(ctx, p, 60*time.Second, func(ctx context.Context) error {
		conn, err := net.DialTimeout("unix", c.ContainerdSocket, time.Second)
		if err != nil {
			return err
		}
		conn.Close()
		// The socket answers before every plugin is loaded; the CRI image service is the
		// one the tests and the kubelet need.
		_, err = c.Crictl(ctx, "images")
		return err
	})
}

// KillContainerd kills containerd with SIGKILL, the way a crashed node runtime disappears.
func (c *Cluster) KillContainerd() {
	c.mu.Lock()
	p := c.containerd
	c.mu.Unlock()
	if p != nil {
		p.Kill()
		c.log.Info("containerd killed", "pid", p.Pid())
	}
}

// RestartContainerd kills containerd with SIGKILL and starts it again on the same root
// and state, as after a runtime crash.
func (c *Cluster) RestartContainerd(ctx context.Context) error {
	c.KillContainerd()
	return c.StartContainerd(ctx)
}

// ContainerdPid returns containerd's pid, 0 when it is not running.
func (c *Cluster) ContainerdPid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.containerd == nil {
		return 0
	}
	if done, _ := c.containerd.Exited(); done {
		return 0
	}
	return c.containerd.Pid()
}

// Crictl runs crictl against the cluster's containerd and returns its stdout. Cancelling
// ctx kills crictl, which closes its gRPC stream and so cancels the request in containerd.
func (c *Cluster) Crictl(ctx context.Context, args ...string) ([]byte, error) {
	if c.ContainerdSocket == "" {
		return nil, errors.New("cluster runs without containerd")
	}
	return c.runTool(ctx, c.bin("crictl", "crictl"),
		append([]string{"--config", filepath.Join(c.containerdDir(), "crictl.yaml")}, args...))
}

// Ctr runs ctr against the cluster's containerd in the k8s.io namespace.
func (c *Cluster) Ctr(ctx context.Context, args ...string) ([]byte, error) {
	if c.ContainerdSocket == "" {
		return nil, errors.New("cluster runs without containerd")
	}
	return c.runTool(ctx, c.bin(c.opts.containerdComponent(), "ctr"),
		append([]string{"-a", c.ContainerdSocket, "-n", Namespace}, args...))
}

// CRIPull pulls ref through the CRI, as the kubelet does. It returns when the image is
// pulled and unpacked; cancelling ctx cancels the pull inside containerd.
func (c *Cluster) CRIPull(ctx context.Context, ref string) error {
	start := time.Now()
	_, err := c.Crictl(ctx, "pull", ref)
	c.log.Info("cri pull", "ref", ref, "took", time.Since(start), "err", err)
	return err
}

// CtrPull pulls ref with ctr (the transfer service) over plain http.
func (c *Cluster) CtrPull(ctx context.Context, ref string) error {
	start := time.Now()
	_, err := c.Ctr(ctx, "images", "pull", "--plain-http", ref)
	c.log.Info("ctr pull", "ref", ref, "took", time.Since(start), "err", err)
	return err
}

func (c *Cluster) runTool(ctx context.Context, bin string, args []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "OTEL_SDK_DISABLED=true")
	cmd.Cancel = func() error {
		// The tool runs in its own process group; kill all of it.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	if err := c.sp.start(cmd); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(bin), err)
	}
	if err := cmd.Wait(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return stdout.Bytes(), fmt.Errorf("%s %s: %w", filepath.Base(bin), strings.Join(args, " "), ctxErr)
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
