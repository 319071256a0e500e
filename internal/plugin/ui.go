package plugin

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/d44b/pulltrace/internal/plugin/uiproxy"
)

func newUICommand(o *Options) *cobra.Command {
	var (
		address   string
		port      int
		noBrowser bool
	)
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve the Pulltrace web UI on a local port and open it",
		Long: `Serve the web UI locally, like kubectl proxy: requests to a free local port (or --port) are forwarded with
your kubeconfig's credentials to the API server's service proxy of the Pulltrace server, so
nothing needs to be exposed and RBAC (get services/proxy) decides who may look. Only the
Pulltrace Service is reachable through this port, and only for reading. Ctrl-C stops it.`,
		Example: `  kubectl pulltrace ui
  kubectl pulltrace ui --port 0 --no-browser`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runUI(cmd.Context(), o, address, port, noBrowser)
		},
	}
	cmd.Flags().StringVar(&address, "address", "127.0.0.1", "Local address to listen on")
	cmd.Flags().IntVar(&port, "port", 0, "Local port to listen on; 0 (the default) picks a free one, so it never collides with kubectl proxy's 8001")
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "Only print the URL; do not open a browser")
	return cmd
}

func runUI(ctx context.Context, o *Options, address string, port int, noBrowser bool) error {
	if port < 0 || port > 65535 {
		return usageErr("--port %d is not a port", port)
	}
	cfg, err := o.restConfig()
	if err != nil {
		return err
	}
	srv, err := NewServer(cfg, o.ServerNamespace, o.ServerService, o.ServerPort)
	if err != nil {
		return err
	}
	// Failing here says why (not installed, forbidden, no ready pods) instead of leaving
	// the browser with an API server error page.
	vctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	v, err := srv.Version(vctx)
	cancel()
	if err != nil {
		return err
	}
	var hosts []string
	if ip := net.ParseIP(address); ip == nil || !ip.IsLoopback() {
		hosts = append(hosts, address)
		fmt.Fprintf(o.Streams.ErrOut, "warning: --address %s is not loopback: anyone who can reach it uses the UI with your credentials\n", address)
	}
	p, err := uiproxy.New(uiproxy.Config{REST: cfg, Namespace: o.ServerNamespace, Service: o.ServerService, Port: o.ServerPort, AllowedHosts: hosts})
	if err != nil {
		return err
	}
	s, err := uiproxy.Start(ctx, net.JoinHostPort(address, strconv.Itoa(port)), p)
	if err != nil {
		return exitErr(ExitOther, err, "cannot serve the UI: %v (choose another --port)", err)
	}
	defer s.Close()
	fmt.Fprintf(o.Streams.Out, "Pulltrace UI (server %s) at %s\n", v.Version, s.URL)
	fmt.Fprintln(o.Streams.Out, "Serving through the API server's service proxy; press Ctrl-C to stop.")
	if !noBrowser {
		if err := o.OpenBrowser(ctx, s.URL); err != nil {
			fmt.Fprintf(o.Streams.ErrOut, "could not open a browser (%v); open the URL above yourself\n", err)
		}
	}
	select {
	case <-ctx.Done():
		return nil
	case <-s.Done():
		return s.Err()
	}
}

func openBrowser(ctx context.Context, url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.CommandContext(ctx, "open", url)
	case "windows":
		cmd = exec.CommandContext(ctx, "rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.CommandContext(ctx, "xdg-open", url)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", cmd.Path, err)
	}
	// The opener hands over to the browser and exits; reap it without blocking.
	go func() { _ = cmd.Wait() }()
	return nil
}
