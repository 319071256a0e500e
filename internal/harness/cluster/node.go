package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeOptions configure one real node (containerd + kubelet).
type NodeOptions struct {
	// Name is the Node's name; empty means node-<i> (from 1).
	Name string
	// ParallelImagePulls is the kubelet's pull concurrency: 0 keeps the kubelet default,
	// serializeImagePulls: true (one pull at a time, the rest queued); N > 0 sets
	// serializeImagePulls: false with maxParallelImagePulls: N.
	ParallelImagePulls int32
	// MaxConcurrentDownloads is the CRI's per-pull layer concurrency; 0 means 3.
	MaxConcurrentDownloads int
}

// NodeList is n nodes with default options.
func NodeList(n int) []NodeOptions { return make([]NodeOptions, n) }

// NodeSocketPath is where each node's containerd socket appears to that node's pods (and
// kubelet): the containerd default and the chart's agent.containerd.socketPath default.
const NodeSocketPath = "/run/containerd/containerd.sock"

// Node is a real node: its own containerd (CRI, runc, shim) and kubelet, cgroupRoot, ports
// and folder.
//
// All nodes share this machine's filesystem, yet a DaemonSet has one hostPath for every
// node. So each node runs in a mount namespace of its own in which /run/containerd is a bind
// of the node's folder: containerd, its shims and runc (which resolves hostPath volumes) and
// the kubelet (which checks hostPath types) all see that node's socket at
// /run/containerd/containerd.sock, as on a real machine, and the chart's default socket path
// works unchanged on every node. From the host the same socket is ContainerdSocket.
type Node struct {
	Name string
	// Dir is the node's folder inside the cluster folder.
	Dir string
	// ContainerdSocket is the node's containerd socket as the host (the harness, tests) sees it.
	ContainerdSocket string
	// CgroupRoot is the kubelet's cgroupRoot.
	CgroupRoot string

	c     *Cluster
	index int
	opts  NodeOptions

	mu         sync.Mutex
	holder     *Process // owns the node's mount namespace
	containerd *Process
	kubelet    *Process
}

func (n *Node) path(p ...string) string { return filepath.Join(append([]string{n.Dir}, p...)...) }

func (n *Node) mountNS() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return fmt.Sprintf("/proc/%d/ns/mnt", n.holder.Pid())
}

func (c *Cluster) newNode(i int, o NodeOptions) *Node {
	if o.Name == "" {
		o.Name = fmt.Sprintf("node-%d", i+1)
	}
	if o.MaxConcurrentDownloads == 0 {
		o.MaxConcurrentDownloads = 3
	}
	d := filepath.Join(c.Dir, "nodes", o.Name)
	return &Node{
		Name: o.Name, Dir: d, ContainerdSocket: filepath.Join(d, "run", "containerd.sock"),
		CgroupRoot: "/" + c.cgroup + "/" + o.Name,
		c:          c, index: i, opts: o,
	}
}

func (n *Node) start(ctx context.Context, pause string) error {
	for _, sub := range []string{"run", "containerd/root", "containerd/state", "containerd/tmp", "containerd/opt",
		"containerd/runc", "containerd/image-verifier/bin", "cni/net.d", "cni/ipam", "kubelet", "pod-logs"} {
		if err := os.MkdirAll(n.path(sub), 0o755); err != nil {
			return fmt.Errorf("node %s folder: %w", n.Name, err)
		}
	}
	if len(n.ContainerdSocket)+len(".ttrpc") > unixPathMax {
		return fmt.Errorf("node folder %s is too long for a unix socket path", n.Dir)
	}
	if err := makeCgroup(n.CgroupRoot); err != nil {
		return err
	}
	// The mount point must exist on the host; its content there is never used by a node.
	if err := os.MkdirAll(filepath.Dir(NodeSocketPath), 0o755); err != nil {
		return fmt.Errorf("mount point: %w", err)
	}
	for _, h := range []string{n.c.ProxyAddr, n.c.RegistryAddr} {
		if err := writeHostsTOMLIn(n.path("containerd", "certs.d"), h); err != nil {
			return err
		}
	}
	if err := os.WriteFile(n.path("cni", "net.d", "10-pulltrace.conflist"),
		[]byte(n.c.podNet.cniConfig(n.index, len(n.c.nodes), n.path("cni", "ipam"))), 0o644); err != nil {
		return fmt.Errorf("cni config: %w", err)
	}
	if err := os.WriteFile(n.path("containerd", "config.toml"), []byte(n.containerdConfig(pause)), 0o644); err != nil {
		return fmt.Errorf("containerd config: %w", err)
	}
	crictlCfg := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 20\ndebug: false\n", n.ContainerdSocket, n.ContainerdSocket)
	if err := os.WriteFile(n.path("crictl.yaml"), []byte(crictlCfg), 0o644); err != nil {
		return fmt.Errorf("crictl config: %w", err)
	}
	// Pods with dnsPolicy Default get this instead of the host's resolv.conf, so nothing
	// in a pod ever asks a nameserver off this machine.
	if err := os.WriteFile(n.path("resolv.conf"), fmt.Appendf(nil, "nameserver %s\n", n.c.podNet.gateway()), 0o644); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}

	holder, err := n.c.startChild(n.Name+"-mountns", "unshare", []string{
		"--mount", "--propagation", "slave", "--", "sh", "-c",
		`mount --bind "$0" /run/containerd && echo mount-namespace-ready && exec sleep infinity`, n.path("run"),
	}, os.Environ(), nil)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.holder = holder
	n.mu.Unlock()
	if err := joinCgroup(n.runtimeCgroup(), holder.Pid()); err != nil {
		return err
	}
	if err := waitReady(ctx, holder, 10*time.Second, func(context.Context) error {
		if !strings.Contains(logTail(holder.LogPath, 5), "mount-namespace-ready") {
			return errors.New("mount namespace not set up yet")
		}
		return nil
	}); err != nil {
		return err
	}
	if err := n.StartContainerd(ctx); err != nil {
		return err
	}
	return n.startKubelet(ctx)
}

func (n *Node) runtimeCgroup() string { return n.c.cgroup + "/" + n.Name + "-runtime" }

// inNode runs bin in the node's mount namespace; nsenter execs it, so the pid, the
// parent-death signal and the process group are the program's own.
func (n *Node) inNode(name, bin string, args, env []string) (*Process, error) {
	p, err := n.c.startChild(name, "nsenter", append([]string{"--mount=" + n.mountNS(), "--", bin}, args...), env, nil)
	if err != nil {
		return nil, err
	}
	if err := joinCgroup(n.runtimeCgroup(), p.Pid()); err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

func writeHostsTOMLIn(certsD, hostPort string) error {
	dir := filepath.Join(certsD, hostPort)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("certs.d: %w", err)
	}
	toml := fmt.Sprintf("server = \"http://%[1]s\"\n[host.\"http://%[1]s\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  skip_verify = true\n", hostPort)
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644); err != nil {
		return fmt.Errorf("hosts.toml: %w", err)
	}
	return nil
}

// containerdConfig is the bare-process harness's containerd config (every default path
// pinned into the folder) plus what a kubelet needs: runc with its own root, the CNI network
// and the local pause image. restrict_oom_score_adj is required on this kind of VM: without
// CAP_SYS_RESOURCE every sandbox fails ("can't get final child's PID from pipe").
func (n *Node) containerdConfig(pause string) string {
	d := n.path("containerd")
	return fmt.Sprintf(`version = 3
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
  level = 'info'

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
    max_concurrent_downloads = %[7]d
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = %[12]q
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = %[8]q
  [plugins.'io.containerd.cri.v1.runtime']
    cdi_spec_dirs = []
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [%[9]q]
      conf_dir = %[10]q
      max_conf_num = 1
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = %[13]q
          Root = %[14]q
          SystemdCgroup = false
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
  [plugins.'io.containerd.transfer.v1.local']
    config_path = %[8]q
  [plugins.'io.containerd.image-verifier.v1.bindir']
    bin_dir = %[11]q
`, filepath.Join(d, "root"), filepath.Join(d, "state"), filepath.Join(d, "tmp"), n.ContainerdSocket, n.ContainerdSocket+".ttrpc",
		filepath.Join(d, "opt"), n.opts.MaxConcurrentDownloads, filepath.Join(d, "certs.d"),
		n.c.bins["cni"], n.path("cni", "net.d"), filepath.Join(d, "image-verifier/bin"),
		pause, n.c.bin("runc", "runc"), filepath.Join(d, "runc"))
}

// StartContainerd starts the node's containerd (again, after KillContainerd) in the node's
// mount namespace and waits until its CRI image service answers.
func (n *Node) StartContainerd(ctx context.Context) error {
	n.mu.Lock()
	if n.containerd != nil {
		if done, _ := n.containerd.Exited(); !done {
			n.mu.Unlock()
			return errors.New("containerd is already running")
		}
	}
	n.mu.Unlock()
	d := n.path("containerd")
	// containerd finds containerd-shim-runc-v2 on its PATH.
	env := append(os.Environ(), "TMPDIR="+filepath.Join(d, "tmp"),
		"PATH="+n.c.bins["containerd"]+":"+os.Getenv("PATH"),
		"OTEL_SDK_DISABLED=true", "OTEL_TRACES_EXPORTER=none")
	p, err := n.inNode(n.Name+"-containerd", n.c.bin("containerd", "containerd"), []string{
		"--config", filepath.Join(d, "config.toml"), "--address", n.ContainerdSocket,
	}, env)
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.containerd = p
	n.mu.Unlock()
	return waitReady(ctx, p, 60*time.Second, func(ctx context.Context) error {
		_, err := n.Crictl(ctx, "images")
		return err
	})
}

// KillContainerd kills the node's containerd with SIGKILL, as a crashed runtime goes away.
// The kubelet and the pods' shims keep running.
func (n *Node) KillContainerd() {
	n.mu.Lock()
	p := n.containerd
	n.mu.Unlock()
	if p != nil {
		p.Kill()
		n.c.log.Info("containerd killed", "node", n.Name, "pid", p.Pid())
	}
}

// RestartContainerd kills containerd and starts it again on the same root and state,
// under the running kubelet.
func (n *Node) RestartContainerd(ctx context.Context) error {
	n.KillContainerd()
	return n.StartContainerd(ctx)
}

// ContainerdPid is the node's containerd pid, 0 when it is not running.
func (n *Node) ContainerdPid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.containerd == nil {
		return 0
	}
	if done, _ := n.containerd.Exited(); done {
		return 0
	}
	return n.containerd.Pid()
}

// Crictl runs crictl against the node's containerd.
func (n *Node) Crictl(ctx context.Context, args ...string) ([]byte, error) {
	return n.c.runTool(ctx, n.c.bin("crictl", "crictl"), append([]string{"--config", n.path("crictl.yaml")}, args...))
}

// Ctr runs ctr against the node's containerd in the k8s.io namespace.
func (n *Node) Ctr(ctx context.Context, args ...string) ([]byte, error) {
	return n.c.runTool(ctx, n.c.bin("containerd", "ctr"), append([]string{"-a", n.ContainerdSocket, "-n", Namespace}, args...))
}

// RemoveImage deletes an image from the node (as `crictl rmi`), so the next pod pulls it
// again; an image that is not there is no error.
func (n *Node) RemoveImage(ctx context.Context, ref string) error {
	_, err := n.Crictl(ctx, "rmi", ref)
	if err != nil && strings.Contains(err.Error(), "not found") {
		return nil
	}
	return err
}

func (n *Node) startKubelet(ctx context.Context) error {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		hport, err := freePort()
		if err != nil {
			return err
		}
		if err := os.WriteFile(n.path("kubelet.yaml"), []byte(n.kubeletConfig(port, hport)), 0o644); err != nil {
			return fmt.Errorf("kubelet config: %w", err)
		}
		p, err := n.inNode(n.Name+"-kubelet", n.c.bin("kube", "kubelet"), []string{
			"--config", n.path("kubelet.yaml"),
			"--kubeconfig", n.c.Kubeconfig,
			"--root-dir", n.path("kubelet"),
			"--cert-dir", n.path("kubelet", "pki"),
			"--hostname-override", n.Name,
			// The node's address is the host's end of the pod bridge: loopback is refused,
			// and the machine's own interface is none of the tests' business.
			"--node-ip", n.c.podNet.gateway().String(),
			"--v=2",
		}, os.Environ())
		if err != nil {
			return err
		}
		n.mu.Lock()
		n.kubelet = p
		n.mu.Unlock()
		lastErr = waitReady(ctx, p, 90*time.Second, func(ctx context.Context) error { return n.ready(ctx) })
		if lastErr == nil {
			n.c.log.Info("node ready", "node", n.Name)
			return nil
		}
		p.Kill()
		if !addrInUse(p) {
			return lastErr
		}
	}
	return lastErr
}

func (n *Node) ready(ctx context.Context) error {
	cl, err := n.c.client()
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	node, err := cl.CoreV1().Nodes().Get(rctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("node %s not ready: %s", n.Name, c.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition yet", n.Name)
}

func (n *Node) kubeletConfig(port, healthzPort int) string {
	pulls := "serializeImagePulls: true\n"
	if n.opts.ParallelImagePulls > 0 {
		pulls = fmt.Sprintf("serializeImagePulls: false\nmaxParallelImagePulls: %d\n", n.opts.ParallelImagePulls)
	}
	sock := "unix://" + n.ContainerdSocket
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
%saddress: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: %s
imageServiceEndpoint: %s
podLogsDir: %s
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
cgroupRoot: %s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
nodeStatusUpdateFrequency: 10s
clusterDNS: [%s]
clusterDomain: %s
resolvConf: %s
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
rotateCertificates: false
serverTLSBootstrap: false
`, pulls, n.c.podNet.gateway(), port, healthzPort, sock, sock, n.path("pod-logs"), n.CgroupRoot,
		n.c.podNet.gateway(), clusterDomain, n.path("resolv.conf"))
}

// stop tears the node down in the order that leaves nothing behind: the kubelet first (so
// it starts nothing new), then every pod sandbox through the CRI (CNI DEL, netns, shims),
// then containerd and the mount namespace; whatever survived is killed with the cgroup.
func (n *Node) stop(ctx context.Context) error {
	n.mu.Lock()
	kubelet, ctrd, holder := n.kubelet, n.containerd, n.holder
	n.mu.Unlock()
	kubelet.Stop(10 * time.Second)
	if n.ContainerdPid() != 0 {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if _, err := n.Crictl(rctx, "rmp", "-a", "-f"); err != nil {
			n.c.log.Warn("remove pods", "node", n.Name, "err", err)
		}
		cancel()
	}
	ctrd.Stop(10 * time.Second)
	holder.Stop(5 * time.Second)
	var errs []error
	if err := removeCgroup(ctx, n.runtimeCgroup()); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroup(ctx, strings.TrimPrefix(n.CgroupRoot, "/")); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (n *Node) processes() []*Process {
	n.mu.Lock()
	defer n.mu.Unlock()
	var ps []*Process
	for _, p := range []*Process{n.holder, n.containerd, n.kubelet} {
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps
}
