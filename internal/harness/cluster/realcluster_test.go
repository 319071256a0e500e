package cluster_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/d44b/pulltrace/internal/harness/cluster"
)

// TestRealCluster checks the real-node cluster itself: two kubelets that run a Deployment
// spread over both, pods that get a service account token, resolve a Service by name and
// reach it through its ClusterIP from the other node, the apiserver's service proxy reaching
// pod IPs, and a Stop that leaves no process, cgroup, bridge, mount or folder behind.
func TestRealCluster(t *testing.T) {
	c := cluster.StartT(t, cluster.Options{Nodes: cluster.NodeList(2)})
	ctx := t.Context()
	cs, err := c.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	netw := c.Network()
	_, podNet, _ := net.ParseCIDR(netw.Pods)

	t.Run("Nodes", func(t *testing.T) {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes.Items) != 2 {
			t.Fatalf("%d nodes registered, want 2", len(nodes.Items))
		}
		for _, n := range nodes.Items {
			if n.Status.NodeInfo.KubeletVersion != "v1.37.2" {
				t.Errorf("node %s kubelet %q", n.Name, n.Status.NodeInfo.KubeletVersion)
			}
			if !strings.HasPrefix(n.Status.NodeInfo.ContainerRuntimeVersion, "containerd://2.") {
				t.Errorf("node %s runtime %q", n.Name, n.Status.NodeInfo.ContainerRuntimeVersion)
			}
			for _, a := range n.Status.Addresses {
				if a.Type == corev1.NodeInternalIP && a.Address != netw.Gateway {
					t.Errorf("node %s InternalIP %s, want the bridge gateway %s", n.Name, a.Address, netw.Gateway)
				}
			}
		}
	})

	ns := "realcluster"
	if err := c.EnsureNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	t.Run("DeploymentServiceDNS", func(t *testing.T) { testWebAcrossNodes(ctx, t, c, cs, ns, podNet) })
	t.Run("StopLeavesNothing", func(t *testing.T) { testRealStop(t, c) })
}

func testWebAcrossNodes(ctx context.Context, t *testing.T, c *cluster.Cluster, cs kubernetes.Interface, ns string, podNet *net.IPNet) {
	labels := map[string]string{"app": "web"}
	replicas := int32(2)
	_, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels}, TopologyKey: "kubernetes.io/hostname",
						}},
					}},
					TerminationGracePeriodSeconds: new(int64(1)),
					Containers: []corev1.Container{{
						Name: "web", Image: c.BusyboxImage,
						Command: []string{"sh", "-c", `mkdir -p /tmp/www && echo "hello from $(hostname)" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www`},
						Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
							TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("http")},
						}, PeriodSeconds: 1},
					}},
				},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{
			Name: "http", Port: 80, TargetPort: intstr.FromString("http"),
		}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && d.Status.ReadyReplicas == 2, nil
	})
	if err != nil {
		dumpPods(t, cs, ns)
		t.Fatalf("deployment web not ready: %v", err)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]bool{}
	for _, p := range pods.Items {
		nodes[p.Spec.NodeName] = true
		if !podNet.Contains(net.ParseIP(p.Status.PodIP)) {
			t.Errorf("pod %s IP %q outside the pod network %s", p.Name, p.Status.PodIP, podNet)
		}
	}
	if len(nodes) != 2 {
		t.Errorf("web pods on nodes %v, want both", nodes)
	}

	// From a pod: the Service by name (cluster DNS) and by ClusterIP (the service proxy),
	// and a mounted service account token (the token controller and SA admission).
	_, err = cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client"},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "client", Image: c.BusyboxImage,
				Command: []string{"sh", "-c", `set -ex
wget -q -T 5 -O - http://web/ | grep -q "hello from web-"
wget -q -T 5 -O - http://web.` + ns + `.svc.cluster.local/ | grep -q "hello from web-"
test -s /var/run/secrets/kubernetes.io/serviceaccount/token
echo client-ok`},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var phase corev1.PodPhase
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "client", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		phase = p.Status.Phase
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed, nil
	})
	if err != nil || phase != corev1.PodSucceeded {
		dumpPods(t, cs, ns)
		logs, _ := filepath.Glob(filepath.Join(c.Dir, "nodes", "*", "pod-logs", ns+"_client_*", "*", "*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			t.Logf("%s:\n%s", l, b)
		}
		t.Fatalf("client pod: phase %s (%v)", phase, err)
	}

	// From the apiserver: its service proxy dials the pod IPs on the bridge.
	body, err := cs.CoreV1().Services(ns).ProxyGet("http", "web", "http", "/", nil).DoRaw(ctx)
	if err != nil || !strings.Contains(string(body), "hello from web-") {
		t.Fatalf("service proxy: %q, %v", body, err)
	}
	// Each node pulled the image itself.
	for _, n := range c.RealNodes() {
		out, err := n.Crictl(ctx, "images", "-q")
		if err != nil || len(strings.TrimSpace(string(out))) == 0 {
			t.Errorf("node %s images: %q %v", n.Name, out, err)
		}
	}
}

func dumpPods(t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, _ := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	for _, p := range pods.Items {
		t.Logf("pod %s node=%s phase=%s ip=%s statuses=%+v", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP, p.Status.ContainerStatuses)
	}
	evs, _ := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	for _, e := range evs.Items {
		t.Logf("event %s %s %s: %s", e.InvolvedObject.Name, e.Type, e.Reason, e.Message)
	}
}

func testRealStop(t *testing.T, c *cluster.Cluster) {
	dir, cg, br := c.Dir, c.Cgroup(), c.Network().Bridge
	pids := c.Pids()
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("child %d still alive after Stop", pid)
		}
	}
	hs, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, cg)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s/%s left (%v)", h, cg, err)
		}
	}
	if _, err := net.InterfaceByName(br); err == nil {
		t.Errorf("bridge %s left", br)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), dir) {
			t.Errorf("process %s still refers to the cluster folder: %q", p, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	if mountedUnder(t, dir) {
		t.Errorf("mounts left under %s", dir)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cluster folder %s still exists (%v)", dir, err)
	}
}

// ownRealCluster starts a one-node real cluster with a running pod, reports it, and waits
// to be killed without stopping anything.
func ownRealCluster() {
	ctx := context.Background()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "own-real-cluster:", err)
		os.Exit(1)
	}
	c, err := cluster.Start(ctx, cluster.Options{Nodes: cluster.NodeList(1)})
	if err != nil {
		fail(err)
	}
	cs, err := c.AdminClient()
	if err != nil {
		fail(err)
	}
	_, err = cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "orphan"},
		Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{
			Name: "sleep", Image: c.BusyboxImage, Command: []string{"sleep", "100000"},
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		fail(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "orphan", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		fail(err)
	}
	fmt.Printf("DIR %s\nCGROUP %s\nBRIDGE %s\n", c.Dir, c.Cgroup(), c.Network().Bridge)
	select {}
}

// TestKilledOwnerOfRealNodes kills the owner of a real cluster with a running pod: the
// pod's processes and the shim are not its children and survive it, until the next start
// sweeps the folder: then no process in the cluster's cgroup, no cgroup, no bridge and no
// folder remain.
func TestKilledOwnerOfRealNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("real cluster: skipped in -short mode")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=own-real-cluster")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	got := map[string]string{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), " "); ok && (k == "DIR" || k == "CGROUP" || k == "BRIDGE") {
				got[k] = v
				if len(got) == 3 {
					return
				}
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("owner did not report its cluster:\n%s", stderr.String())
	}
	if len(got) != 3 {
		t.Fatalf("owner ended early: %v\n%s", got, stderr.String())
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	pidsDir := filepath.Join("/sys/fs/cgroup/pids", got["CGROUP"])
	if n := countCgroupProcs(pidsDir); n == 0 {
		t.Errorf("no process left in %s after the owner died: nothing for the sweep to do", pidsDir)
	}

	c := cluster.StartT(t, cluster.Options{Registry: true})
	c.Stop()
	if n := countCgroupProcs(pidsDir); n != 0 {
		t.Errorf("%d processes survived the sweep in %s", n, pidsDir)
	}
	hs, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, got["CGROUP"])); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s/%s survived the sweep", h, got["CGROUP"])
		}
	}
	if _, err := net.InterfaceByName(got["BRIDGE"]); err == nil {
		t.Errorf("bridge %s survived the sweep", got["BRIDGE"])
	}
	if _, err := os.Stat(got["DIR"]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("folder %s survived the sweep (%v)", got["DIR"], err)
	}
}

// countCgroupProcs counts the processes in a cgroup folder and below.
func countCgroupProcs(dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			n += len(strings.Fields(string(b)))
		}
		return nil
	})
	return n
}
