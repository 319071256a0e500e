// Command kubectl-pulltrace is the kubectl plugin `kubectl pulltrace`; see internal/plugin.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/d44b/pulltrace/internal/plugin"
)

// version is set at build time: -ldflags "-X main.version=v0.1.0".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := plugin.Main(ctx, version, os.Args[1:])
	stop()
	os.Exit(code)
}
