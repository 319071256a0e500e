// Command demo runs Pulltrace on the real local cluster with moving pulls: `make demo`.
// It starts two simulated nodes (each its own containerd and throttled registry, so their
// pulls are independent as on real nodes), the apiserver, the server and one agent per
// node as processes, then plays kubelet: it creates a Deployment's worth of pods, pulls
// their images through the CRI one at a time per node, marks them running, and starts
// over. Ctrl-C tears everything down.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/internal/harness/stack"
)

func main() {
	if err := run(); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

type app struct {
	name     string
	replicas int
	layers   []int64
	images   map[string]*cluster.Image // by node
}

func run() error {
	rate := flag.Int64("rate", 4<<20, "registry bandwidth per node, bytes per second")
	uiAddr := flag.String("ui", "127.0.0.1:8080", "loopback address for the UI proxy")
	rounds := flag.Int("rounds", 0, "stop after this many rollouts (0: until Ctrl-C)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	home, _ := os.UserHomeDir()
	dir := filepath.Join(home, ".cache", "pulltrace", "demo")
	_ = os.RemoveAll(dir)
	logFile, err := os.Create(filepath.Join(os.TempDir(), "pulltrace-demo.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(io.MultiWriter(logFile), nil))
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }

	say("Starting Pulltrace on the real local cluster (harness log: %s)...", logFile.Name())
	start := time.Now()
	if ln, err := net.Listen("tcp", *uiAddr); err != nil {
		say("%s is taken; the UI gets a free port instead", *uiAddr)
		*uiAddr = "127.0.0.1:0"
	} else {
		ln.Close()
	}
	s, err := stack.Start(ctx, stack.Options{Nodes: []string{"demo-node-1", "demo-node-2"}, PullRate: *rate, Dir: dir, UIAddr: *uiAddr, Logger: log})
	if err != nil {
		return err
	}
	defer s.Stop()

	apps := []*app{
		{name: "web", replicas: 3, layers: []int64{12 << 20, 8 << 20, 6 << 20, 2 << 20, 1 << 20}},
		{name: "api", replicas: 2, layers: []int64{20 << 20, 5 << 20, 3 << 20}},
		{name: "worker", replicas: 1, layers: []int64{1 << 20, 1 << 20, 2 << 20, 1 << 20, 3 << 20, 1 << 20, 2 << 20, 1 << 20}},
		{name: "model", replicas: 1, layers: []int64{48 << 20, 24 << 20}},
	}
	for _, a := range apps {
		a.images = map[string]*cluster.Image{}
		for _, n := range s.Nodes {
			im, err := n.Cluster.PushImage(ctx, cluster.ImageSpec{Repo: "shop/" + a.name, Tag: "v1", LayerSizes: a.layers})
			if err != nil {
				return err
			}
			a.images[n.Name] = im
		}
	}
	say("")
	say("Pulltrace is up (%s). Open the UI (through the apiserver's service proxy):", time.Since(start).Round(time.Second))
	say("  %s", s.UIURL)
	say("")
	say("In another terminal:")
	say("  export KUBECONFIG=%s", s.Kube.Kubeconfig)
	say("  export PATH=%s:$PATH", s.Bin)
	say("  kubectl pulltrace get -A")
	say("  kubectl pulltrace follow pod/web-1-0 -n shop")
	say("  kubectl pulltrace follow node/demo-node-2")
	say("Server: %s   metrics: %s   logs: %s", s.ServerURL, s.MetricsURL, filepath.Join(s.Kube.Dir, "logs"))
	say("Ctrl-C stops everything.")
	say("")

	for round := 1; *rounds == 0 || round <= *rounds; round++ {
		say("rollout %d: creating pods", round)
		if err := rollout(ctx, s, apps, round, say); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(15 * time.Second):
		}
	}
	return nil
}

// rollout plays the kubelet for one round: pods appear waiting, each node pulls its images
// one at a time (the kubelet's default), pods start, then everything is cleared for the
// next round.
func rollout(ctx context.Context, s *stack.Stack, apps []*app, round int, say func(string, ...any)) error {
	type podAt struct {
		pod *corev1.Pod
		app *app
	}
	byNode := map[string][]podAt{}
	i := 0
	for _, a := range apps {
		for r := range a.replicas {
			n := s.Nodes[i%len(s.Nodes)]
			i++
			name := fmt.Sprintf("%s-%d-%d", a.name, round, r)
			pod, err := s.Kube.CreatePod(ctx, "shop", name, n.Name, a.images[n.Name].Ref)
			if err != nil {
				return err
			}
			if pod, err = s.Kube.SetPodWaiting(ctx, pod, "c0", "ContainerCreating", ""); err != nil {
				return err
			}
			byNode[n.Name] = append(byNode[n.Name], podAt{pod, a})
		}
	}
	errc := make(chan error, len(s.Nodes))
	for _, n := range s.Nodes {
		go func() {
			pulled := map[string]bool{}
			for _, p := range byNode[n.Name] {
				ref := p.app.images[n.Name].Ref
				if !pulled[ref] {
					_, _ = s.Kube.KubeletEvent(ctx, p.pod, "Pulling", fmt.Sprintf("Pulling image %q", ref))
					begin := time.Now()
					if err := n.Cluster.CRIPull(ctx, ref); err != nil {
						errc <- err
						return
					}
					pulled[ref] = true
					// The real kubelet's words (v1.37): the demo's stand-in must say what it says.
					took := time.Since(begin).Round(time.Millisecond)
					_, _ = s.Kube.KubeletEvent(ctx, p.pod, "Pulled", fmt.Sprintf("Successfully pulled image %q in %s (%s including waiting). Image size: %d bytes.", ref, took, took, p.app.images[n.Name].TotalSize()))
					say("  %s pulled %s in %s", n.Name, ref, time.Since(begin).Round(100*time.Millisecond))
				} else {
					_, _ = s.Kube.KubeletEvent(ctx, p.pod, "Pulled", fmt.Sprintf("Container image %q already present on machine and can be accessed by the pod", ref))
				}
				if _, err := s.Kube.SetContainerRunning(ctx, p.pod, "c0", p.app.images[n.Name].Digest); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range s.Nodes {
		if err := <-errc; err != nil {
			return err
		}
	}
	// Clear the stage: pods go, images leave the nodes so the next round downloads again.
	for _, pods := range byNode {
		for _, p := range pods {
			_ = s.Kube.DeletePod(ctx, p.pod)
		}
	}
	for _, n := range s.Nodes {
		for _, a := range apps {
			_, _ = n.Cluster.Crictl(ctx, "rmi", a.images[n.Name].Ref)
		}
	}
	return nil
}
