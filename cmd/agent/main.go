// Command agent is Pulltrace's node agent: it watches containerd's ingests and reports
// every image pull on its node to the Pulltrace server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/d44b/pulltrace/internal/agent"
	"github.com/d44b/pulltrace/internal/envflag"
	"github.com/d44b/pulltrace/internal/report"
	"github.com/d44b/pulltrace/internal/token"
	"github.com/d44b/pulltrace/internal/tracker"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "pulltrace-agent:", err)
			os.Exit(1)
		}
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("pulltrace-agent", flag.ContinueOnError)
	socket := fs.String("containerd-socket", "/run/containerd/containerd.sock", "containerd v2 socket")
	ns := fs.String("containerd-namespace", "k8s.io", "containerd namespace the kubelet's CRI uses")
	node := fs.String("node-name", os.Getenv("NODE_NAME"), "node this agent reports for (default $NODE_NAME, from the downward API)")
	var servers envflag.List
	fs.Var(&servers, "server", "server base URL; repeatable or comma-separated; a host with several addresses gets every report at each (default http://pulltrace-server:8080)")
	tokenFile := fs.String("token-file", "", "file holding the shared token (else $PULLTRACE_TOKEN)")
	poll := fs.Duration("poll-interval", time.Second, "how often containerd's ingests are read (minimum 100ms)")
	reportEvery := fs.Duration("report-interval", 2*time.Second, "how often a changed snapshot is sent")
	beat := fs.Duration("heartbeat-interval", 15*time.Second, "how often an unchanged agent says it is alive")
	stall := fs.Duration("stall-timeout", 30*time.Second, "no byte progress for this long marks a pull stalled")
	health := fs.String("health-addr", ":9091", "address for /healthz, /livez and /metrics")
	common, err := envflag.Parse(fs, args, "PULLTRACE", "pulltrace-agent: reports image pull progress from containerd to the Pulltrace server.")
	if err != nil {
		return err
	}
	if common.Version {
		fmt.Println(version)
		return nil
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: common.Level}))
	if len(servers) == 0 {
		servers = envflag.List{"http://pulltrace-server:8080"}
	}
	sender, err := report.New(report.Config{
		Servers:  servers,
		Token:    token.File(*tokenFile, os.Getenv("PULLTRACE_TOKEN")),
		Resolver: net.DefaultResolver,
	})
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Config{
		Socket: *socket, Namespace: *ns, NodeName: *node, Version: version,
		PollInterval: *poll, ReportInterval: *reportEvery, HeartbeatInterval: *beat,
		Tracker: tracker.Config{StallTimeout: *stall},
		Sender:  sender, Logger: log,
	})
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *health)
	if err != nil {
		return fmt.Errorf("health listener: %w", err)
	}
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("pulltrace agent starting", "version", version, "node", *node, "servers", servers.String(),
		"socket", *socket, "pollInterval", poll.String(), "health", ln.Addr().String())
	err = a.Run(ctx)
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdown)
	log.Info("pulltrace agent stopped")
	return err
}
