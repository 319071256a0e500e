// Package e2e holds the tests that cross every part: a real browser against the real
// server, directly and through the real apiserver's service proxy.
package e2e

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/internal/plugin/uiproxy"
	"github.com/d44b/pulltrace/internal/server"
	"github.com/d44b/pulltrace/web"
)

func needBrowser(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test; skipped with -short")
	}
	if !web.Built() {
		t.Fatal("the web UI is not built into this test binary: run `make web` first (make test does)")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", "web"))
	if err != nil {
		t.Fatal(err)
	}
	for _, need := range []string{"/usr/bin/chromium", filepath.Join(root, "node_modules", "playwright-core")} {
		if _, err := os.Stat(need); err != nil {
			t.Fatalf("%s is missing (apt-get install chromium; cd web && npm ci): %v", need, err)
		}
	}
	return root
}

func runE2E(t *testing.T, webDir, uiURL, reportURL, token, artifacts string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "e2e/e2e.mjs")
	cmd.Dir = webDir
	cmd.Env = append(os.Environ(), "PULLTRACE_URL="+uiURL, "PULLTRACE_REPORT_URL="+reportURL, "PULLTRACE_TOKEN="+token, "E2E_ARTIFACTS="+artifacts)
	out, err := cmd.CombinedOutput()
	t.Logf("e2e output:\n%s", out)
	if err != nil {
		t.Fatalf("browser e2e failed: %v", err)
	}
	if !strings.Contains(string(out), " 0 failed") {
		t.Fatal("browser e2e did not report its results")
	}
}

func newServer(t *testing.T, token string) *server.Server {
	t.Helper()
	srv, err := server.New(server.Config{Version: "e2e", UI: web.Handler(), Token: func() (string, error) { return token, nil },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// The UI served at / by the real server, fed real reports over HTTP, in headless Chromium.
func TestUIInBrowser(t *testing.T) {
	webDir := needBrowser(t)
	srv := newServer(t, "ui-token")
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	runE2E(t, webDir, hs.URL+"/", hs.URL+"/api/v1/report", "ui-token", filepath.Join(webDir, "e2e", "artifacts", "direct"))
}

// The same UI under the apiserver's service-proxy prefix, the way `kubectl pulltrace ui`
// and `kubectl proxy` show it: Chromium talks to a loopback proxy that authenticates to
// the real apiserver, which forwards to the server in its own network namespace.
func TestUIThroughServiceProxy(t *testing.T) {
	webDir := needBrowser(t)
	c := cluster.StartT(t, cluster.Options{Kube: true})
	srv := newServer(t, "")
	ctx := context.Background()
	exp, err := c.ExposeService(ctx, "pulltrace", "pulltrace-server", 8080, srv.Handler())
	if err != nil {
		t.Fatal(err)
	}
	// The proxy `kubectl pulltrace ui` runs, on loopback with the admin credentials.
	p, err := uiproxy.New(uiproxy.Config{REST: c.AdminConfig(), Namespace: exp.Namespace, Service: exp.Name, Port: "http"})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := uiproxy.Start(ctx, "127.0.0.1:0", p)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	uiURL := ps.URL
	runE2E(t, webDir, uiURL, exp.URL()+"/api/v1/report", "", filepath.Join(webDir, "e2e", "artifacts", "proxy"))
}
