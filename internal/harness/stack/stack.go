// Package stack runs the whole Pulltrace path on the real local cluster, as processes:
// the server binary in its own network namespace behind a Kubernetes Service (so the
// apiserver's service proxy, and so `kubectl pulltrace`, reach it), and one agent binary
// per simulated node, each with its own containerd. `make demo` and the full-stack test
// both stand on it.
package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/internal/plugin/uiproxy"
)

// Options shape the stack.
type Options struct {
	// Nodes are the simulated node names; each gets its own containerd. Default: node-1.
	Nodes []string
	// PullRate throttles every node's registry proxy (bytes per second).
	PullRate int64
	// Token is the shared agent token; empty generates none (reports unauthenticated).
	Token string
	// Dir holds binaries, clusters and logs; empty means a temp folder.
	Dir string
	// UIAddr is where the loopback UI proxy listens; empty means 127.0.0.1:0.
	UIAddr string
	// ServerArgs are extra flags for the server.
	ServerArgs []string
	Logger     *slog.Logger
}

// Node is one simulated node: its own containerd and registry, and its agent.
type Node struct {
	Name    string
	Cluster *cluster.Cluster
	Agent   *cluster.Process
}

// Stack is a running Pulltrace on the real local cluster.
type Stack struct {
	Dir string
	// Kube is the cluster with the apiserver; it also runs the first node's containerd.
	Kube  *cluster.Cluster
	Nodes []*Node
	// Server is the server process; ServerURL its direct address (inside its network
	// namespace, reachable from this host); MetricsURL its Prometheus endpoint.
	Server     *cluster.Process
	ServerURL  string
	MetricsURL string
	Exposed    *cluster.Exposed
	// UIURL is a loopback URL that shows the UI through the apiserver's service proxy,
	// as `kubectl pulltrace ui` does.
	UIURL string
	// Bin holds pulltrace-server, pulltrace-agent, kubectl-pulltrace (when the plugin
	// exists) and kubectl: put it first on PATH to run `kubectl pulltrace`.
	Bin string

	ui  *uiproxy.Server
	log *slog.Logger
}

// Root finds the module root from the working directory.
func Root() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the pulltrace module")
	}
	return filepath.Dir(mod), nil
}

// Build compiles the binaries into dir (seconds when the build cache is warm).
func Build(ctx context.Context, dir string) error {
	root, err := Root()
	if err != nil {
		return err
	}
	cmds := map[string]string{"pulltrace-server": "./cmd/server", "pulltrace-agent": "./cmd/agent"}
	if _, err := os.Stat(filepath.Join(root, "cmd", "kubectl-pulltrace")); err == nil {
		cmds["kubectl-pulltrace"] = "./cmd/kubectl-pulltrace"
	}
	for name, pkg := range cmds {
		// The same flags as `go test` builds, so the build cache they filled is reused.
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", name, err, out)
		}
	}
	kubectl, err := exec.Command(filepath.Join(root, "hack", "components.sh"), "path", "kubectl").Output()
	if err != nil {
		return fmt.Errorf("locate kubectl: %w", err)
	}
	src := filepath.Join(strings.TrimSpace(string(kubectl)), "kubectl")
	if _, err := os.Stat(src); err == nil {
		_ = os.Remove(filepath.Join(dir, "kubectl"))
		if err := os.Symlink(src, filepath.Join(dir, "kubectl")); err != nil {
			return err
		}
	}
	return nil
}

// Start brings everything up. On error nothing is left running.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	if len(o.Nodes) == 0 {
		o.Nodes = []string{"node-1"}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "pulltrace-stack-"); err != nil {
			return nil, err
		}
	}
	s := &Stack{Dir: dir, Bin: filepath.Join(dir, "bin"), log: o.Logger}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if err := os.MkdirAll(s.Bin, 0o755); err != nil {
		return nil, err
	}
	o.Logger.Info("building pulltrace binaries", "dir", s.Bin)
	if err := Build(ctx, s.Bin); err != nil {
		return nil, err
	}
	for i, name := range o.Nodes {
		opts := cluster.Options{Containerd: true, PullRate: o.PullRate, Dir: filepath.Join(dir, "node-"+name), Logger: o.Logger}
		if i == 0 {
			opts.Kube = true
		}
		o.Logger.Info("starting node", "node", name, "apiserver", opts.Kube)
		c, err := cluster.Start(ctx, opts)
		if err != nil {
			return s, fmt.Errorf("node %s: %w", name, err)
		}
		if i == 0 {
			s.Kube = c
		}
		s.Nodes = append(s.Nodes, &Node{Name: name, Cluster: c})
		if _, err := s.Kube.Node(ctx, name); err != nil {
			return s, err
		}
	}
	if err := s.startServer(ctx, o); err != nil {
		return s, err
	}
	for _, n := range s.Nodes {
		if err := s.startAgent(ctx, n, o); err != nil {
			return s, err
		}
	}
	if err := s.startUIProxy(ctx, o.UIAddr); err != nil {
		return s, err
	}
	return s, nil
}

func (s *Stack) env(o Options) []string {
	env := os.Environ()
	if o.Token != "" {
		env = append(env, "PULLTRACE_TOKEN="+o.Token)
	}
	return env
}

func (s *Stack) startServer(ctx context.Context, o Options) error {
	exp, err := s.Kube.ExposeServiceListener(ctx, "pulltrace", "pulltrace-server", 8080)
	if err != nil {
		return err
	}
	s.Exposed = exp
	s.ServerURL = exp.URL()
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	maddr := mln.Addr().String()
	mln.Close()
	s.MetricsURL = "http://" + maddr + "/metrics"
	args := append([]string{"--listen-fd=3", "--metrics-addr=" + maddr, "--kubeconfig=" + s.Kube.Kubeconfig, "--log-level=info"}, o.ServerArgs...)
	p, err := s.Kube.StartProcess(ctx, "pulltrace-server", filepath.Join(s.Bin, "pulltrace-server"), args, s.env(o), exp.File)
	if err != nil {
		return err
	}
	s.Server = p
	return waitHTTP(ctx, s.ServerURL+"/readyz", p, 30*time.Second)
}

func (s *Stack) startAgent(ctx context.Context, n *Node, o Options) error {
	args := []string{
		"--containerd-socket=" + n.Cluster.ContainerdSocket, "--node-name=" + n.Name, "--server=" + s.ServerURL,
		"--poll-interval=250ms", "--report-interval=250ms", "--health-addr=127.0.0.1:0",
	}
	p, err := s.Kube.StartProcess(ctx, "pulltrace-agent-"+n.Name, filepath.Join(s.Bin, "pulltrace-agent"), args, s.env(o))
	if err != nil {
		return err
	}
	n.Agent = p
	return nil
}

// startUIProxy serves the UI through the apiserver's service proxy on loopback with the
// admin credentials: the same proxy `kubectl pulltrace ui` runs.
func (s *Stack) startUIProxy(ctx context.Context, addr string) error {
	p, err := uiproxy.New(uiproxy.Config{REST: s.Kube.AdminConfig(), Namespace: s.Exposed.Namespace, Service: s.Exposed.Name, Port: "http"})
	if err != nil {
		return err
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	srv, err := uiproxy.Start(ctx, addr, p)
	if err != nil {
		return fmt.Errorf("UI proxy on %s: %w", addr, err)
	}
	s.ui = srv
	s.UIURL = srv.URL
	return nil
}

// PathEnv is PATH with the stack's bin first, so `kubectl pulltrace` finds the plugin.
func (s *Stack) PathEnv() string { return "PATH=" + s.Bin + ":" + os.Getenv("PATH") }

// Stop tears everything down: processes, mounts, network namespaces, folders.
func (s *Stack) Stop() {
	if s.ui != nil {
		_ = s.ui.Close()
	}
	for i := len(s.Nodes) - 1; i >= 0; i-- {
		if s.Nodes[i].Cluster != s.Kube {
			s.Nodes[i].Cluster.Stop()
		}
	}
	if s.Kube != nil {
		s.Kube.Stop()
	}
}

func waitHTTP(ctx context.Context, u string, p *cluster.Process, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if done, err := p.Exited(); done {
			b, _ := os.ReadFile(p.LogPath)
			return fmt.Errorf("%s exited (%v):\n%s", p.Name, err, tail(string(b), 20))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready at %s: %v", p.Name, u, last)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
