// Command server is the Pulltrace server: it merges agent reports, correlates pulls with
// pods and serves the API, the SSE stream, metrics and the web UI.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/internal/envflag"
	"github.com/d44b/pulltrace/internal/server"
	"github.com/d44b/pulltrace/internal/stream"
	"github.com/d44b/pulltrace/internal/token"
	"github.com/d44b/pulltrace/web"
)

var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "pulltrace-server:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("pulltrace-server", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "address for the API, SSE stream and web UI")
	listenFD := fs.Int("listen-fd", 0, "serve the API on this inherited listening socket instead of --listen (socket activation, tests)")
	metricsAddr := fs.String("metrics-addr", ":9090", "address for Prometheus /metrics")
	tokenFile := fs.String("token-file", "", "file holding the shared agent token (else $PULLTRACE_TOKEN; none: reports are not authenticated)")
	ttl := fs.Duration("history-ttl", 30*time.Minute, "how long finished pulls stay visible")
	watchNS := fs.String("watch-namespaces", "", "comma-separated namespaces for pod correlation (default all)")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file; empty: in-cluster config, or no Kubernetes outside a cluster")
	agentTimeout := fs.Duration("agent-timeout", 30*time.Second, "an agent not heard from for this long no longer counts as connected")
	maxPerNode := fs.Int("max-pulls-per-node", 500, "pulls held per node; the oldest finished ones are dropped first")
	maxPulls := fs.Int("max-pulls", 50000, "pulls held in total")
	maxReport := fs.Int64("max-report-bytes", 1<<20, "largest accepted report body")
	budget := fs.Int64("memory-budget", server.DefaultMemoryBudget, "bytes of memory the server may use (the chart passes the container's limit): held pulls, shared snapshots, the replay window and the follower cap derive from it, and it is the Go runtime's GOMEMLIMIT unless that is set")
	maxFollowers := fs.Int("max-followers", 0, "concurrent SSE followers; one more gets 503 with Retry-After (0: derived from --memory-budget, at most 1000)")
	staleTimeout := fs.Duration("stale-timeout", 5*time.Minute, "an agent silent this long has its unfinished pulls failed (they are marked stalled after --agent-timeout)")
	common, err := envflag.Parse(fs, args, "PULLTRACE", "pulltrace-server: merges agent reports and serves image pull progress.")
	if err != nil {
		return err
	}
	if common.Version {
		fmt.Println(version)
		return nil
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: common.Level}))

	kube, err := kubeClient(*kubeconfig)
	if err != nil {
		return err
	}
	if kube == nil {
		log.Info("no kubeconfig and not in a cluster: running without Kubernetes, pods will not be correlated")
	}
	var namespaces []string
	for _, ns := range strings.Split(*watchNS, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			namespaces = append(namespaces, ns)
		}
	}
	tok := token.File(*tokenFile, os.Getenv("PULLTRACE_TOKEN"))
	have, err := tok()
	if err != nil {
		return err
	}
	// A token file that is empty would silently turn authentication off: refuse it. If it
	// empties later the server refuses reports until it holds a token again.
	required := *tokenFile != ""
	if required && have == "" {
		return fmt.Errorf("token file %s is empty: write the agent token into it, or drop --token-file to run without authentication", *tokenFile)
	}
	if have == "" {
		log.Warn("no agent token (--token-file or PULLTRACE_TOKEN): anyone who can reach the API can post reports")
	}
	ac := aggregate.Config{HistoryTTL: *ttl, MaxPerNode: *maxPerNode, MaxTotal: *maxPulls, AgentTimeout: *agentTimeout, StaleTimeout: *staleTimeout}
	sc := stream.Config{MaxClients: *maxFollowers}
	server.Budget(*budget, &ac, &sc)
	if os.Getenv("GOMEMLIMIT") == "" && *budget > 0 {
		// The GC works harder as the heap nears the budget instead of letting garbage
		// take it over the container's limit. 90%: the rest is stacks and buffers.
		debug.SetMemoryLimit(*budget / 10 * 9)
	}
	srv, err := server.New(server.Config{
		Version: version, Token: tok, TokenRequired: required, MaxReport: *maxReport, Kube: kube, Namespaces: namespaces,
		Aggregate: ac, Stream: sc,
		UI: web.Handler(), Logger: log, EventLog: os.Stdout, LogLevel: common.Level,
	})
	if err != nil {
		return err
	}
	var apiLn net.Listener
	if *listenFD > 0 {
		apiLn, err = net.FileListener(os.NewFile(uintptr(*listenFD), "listen-fd"))
	} else {
		apiLn, err = net.Listen("tcp", *listen)
	}
	if err != nil {
		return fmt.Errorf("API listener: %w", err)
	}
	metLn, err := net.Listen("tcp", *metricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Info("pulltrace server listening", "version", version, "api", apiLn.Addr().String(), "metrics", metLn.Addr().String(),
		"kubernetes", kube != nil, "watchNamespaces", namespaces, "historyTTL", ttl.String(), "uiBuilt", web.Built(),
		"memoryBudget", *budget, "maxPullBytes", ac.MaxBytes, "maxFollowers", sc.MaxClients, "authenticated", have != "")
	return srv.Run(ctx, apiLn, metLn)
}

// kubeClient returns nil without error when there is no kubeconfig and no cluster: the
// server then runs as the local default, pulls without pods.
func kubeClient(path string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	switch {
	case path != "":
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
		}
	default:
		cfg, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
	}
	cfg.UserAgent = "pulltrace-server/" + version
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}
