// Package realcluster runs Pulltrace as a user does, on a real cluster: two kubelet nodes
// with their own containerd, the controllers and the scheduler, the chart installed by
// `kubectl pulltrace install` from images built like `make images`, and workloads rolled
// out with kubectl. No Pulltrace process is started by hand: the agents and the server are
// the chart's pods. One cluster serves the whole package.
package realcluster

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/internal/plugin"
)

const (
	mib = 1 << 20
	// serverNS is where the chart goes (the plugin's default).
	serverNS = "pulltrace"
	// serialNode pulls one image at a time (the kubelet default); parallelNode two.
	serialNode   = "node-1"
	parallelNode = "node-2"
	// pullRate is the throttling proxy's rate for test workloads: slow enough that a pull of
	// a few MiB is seen part-way, fast enough to keep the package within its budget.
	pullRate = 4 * mib
)

// env is the package's cluster, shared by every test.
var env struct {
	c       *cluster.Cluster
	cs      kubernetes.Interface
	images  cluster.PulltraceImages
	kubectl string // the kubectl component binary
	helm    string
	setup   time.Duration
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("realcluster: skipped in -short mode")
		os.Exit(0)
	}
	code, err := run(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "realcluster:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func run(m *testing.M) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{
		Nodes:    []cluster.NodeOptions{{Name: serialNode}, {Name: parallelNode, ParallelImagePulls: 2}},
		PullRate: pullRate,
	})
	if err != nil {
		return 0, err
	}
	defer func() {
		t := time.Now()
		c.Stop()
		fmt.Printf("realcluster: cluster stopped in %s\n", time.Since(t).Round(time.Millisecond))
	}()
	up := time.Since(start)
	fmt.Printf("realcluster: cluster up in %s (dir %s)\n", up.Round(time.Millisecond), c.Dir)
	env.c = c
	if env.cs, err = c.AdminClient(); err != nil {
		return 0, err
	}
	script, _ := cluster.FindComponents()
	for name, dst := range map[string]*string{"kubectl": &env.kubectl, "helm": &env.helm} {
		out, err := exec.Command("bash", script, "path", name).Output()
		if err != nil {
			return 0, err
		}
		*dst = filepath.Join(strings.TrimSpace(string(out)), name)
		if _, err := os.Stat(*dst); err != nil {
			return 0, fmt.Errorf("%s not built: run hack/components.sh %s", name, name)
		}
	}
	t := time.Now()
	if env.images, err = c.PushPulltrace(ctx, "test"); err != nil {
		return 0, err
	}
	fmt.Printf("realcluster: images built and pushed in %s\n", time.Since(t).Round(time.Millisecond))
	t = time.Now()
	args := []string{"install", "--yes", "--timeout", "4m"}
	for _, v := range env.images.HelmValues() {
		args = append(args, "--set", v)
	}
	// Reports every second, so that the tests see progress while pulls are still running.
	args = append(args, "--set", "config.reportInterval=1s")
	if r := pulltrace(ctx, args...); r.code != 0 {
		return 0, fmt.Errorf("kubectl pulltrace install: exit %d\n%s\n%s\n%s", r.code, r.stdout, r.stderr, podReport(env.cs, serverNS))
	}
	fmt.Printf("realcluster: chart installed in %s\n", time.Since(t).Round(time.Millisecond))
	env.setup = time.Since(start)
	return m.Run(), nil
}

// result is one finished plugin or tool run.
type result struct {
	code           int
	stdout, stderr string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// pulltrace runs `kubectl pulltrace ARGS` in-process, as the admin.
func pulltrace(ctx context.Context, args ...string) result {
	r := startPulltrace(ctx, args...)
	return r.wait()
}

type running struct {
	out, errOut *syncBuffer
	done        chan int
}

func startPulltrace(ctx context.Context, args ...string) *running {
	r := &running{out: &syncBuffer{}, errOut: &syncBuffer{}, done: make(chan int, 1)}
	o := plugin.NewOptions(genericiooptions.IOStreams{In: strings.NewReader(""), Out: r.out, ErrOut: r.errOut}, "test")
	go func() { r.done <- plugin.Execute(ctx, o, append([]string{"--kubeconfig", env.c.Kubeconfig}, args...)) }()
	return r
}

func (r *running) wait() result {
	code := <-r.done
	return result{code: code, stdout: r.out.String(), stderr: r.errOut.String()}
}

// kubectl runs the kubectl component binary against the cluster.
func kubectl(ctx context.Context, stdin string, args ...string) result {
	return tool(ctx, env.kubectl, stdin, append([]string{"--kubeconfig", env.c.Kubeconfig}, args...)...)
}

func tool(ctx context.Context, bin, stdin string, args ...string) result {
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errOut
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

func mustKubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := kubectl(t.Context(), stdin, args...)
	if r.code != 0 {
		t.Fatalf("kubectl %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// testNamespace creates a namespace for one test and deletes it afterwards.
func testNamespace(t *testing.T, name string) string {
	t.Helper()
	if err := env.c.EnsureNamespace(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	// ServiceAccount admission rejects pods until the controller made "default".
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := env.cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("namespace %s has no default service account: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(podReport(env.cs, name))
			t.Log(podReport(env.cs, serverNS))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = env.cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
	})
	return name
}

// podReport describes pods and events of a namespace, for failures.
func podReport(cs kubernetes.Interface, ns string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	pods, _ := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s/%s node=%s phase=%s ip=%s\n", ns, p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP)
		for _, s := range p.Status.ContainerStatuses {
			st := "running"
			if s.State.Waiting != nil {
				st = "waiting " + s.State.Waiting.Reason + ": " + s.State.Waiting.Message
			} else if s.State.Terminated != nil {
				st = "terminated " + s.State.Terminated.Reason
			}
			fmt.Fprintf(&b, "  %s %s ready=%v restarts=%d %s\n", s.Name, s.Image, s.Ready, s.RestartCount, st)
		}
	}
	evs, _ := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	for _, e := range evs.Items {
		fmt.Fprintf(&b, "event %s %s %s x%d: %s\n", e.InvolvedObject.Name, e.Type, e.Reason, e.Count, e.Message)
	}
	return b.String()
}

// podsByNode lists the pods of a namespace by node.
func podsByNode(t *testing.T, ns, selector string) map[string][]corev1.Pod {
	t.Helper()
	pods, err := env.cs.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]corev1.Pod{}
	for _, p := range pods.Items {
		out[p.Spec.NodeName] = append(out[p.Spec.NodeName], p)
	}
	return out
}

// podLogs reads a pod's container logs from the nodes' log folders (works after the
// containers exited and without the kubelet's log endpoint).
func podLogs(ns, pod string) string {
	files, _ := filepath.Glob(filepath.Join(env.c.Dir, "nodes", "*", "pod-logs", ns+"_"+pod+"_*", "*", "*.log"))
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "--- %s\n%s", f, data)
	}
	return b.String()
}

var _ = io.Discard
