// Package e2e holds the tests that cross every part: a real browser against the real
// server, directly and through the real apiserver's service proxy.
package e2e

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/d44b/pulltrace/pkg/server"
	"github.com/d44b/pulltrace/test/cluster"
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
	cfg := c.AdminConfig()
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	api, _ := url.Parse(cfg.Host)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(api)
			r.Out.Host = api.Host
		},
		Transport:     rt,
		FlushInterval: -1,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps := &http.Server{Handler: rp}
	go func() { _ = ps.Serve(ln) }()
	defer ps.Close()
	uiURL := "http://" + ln.Addr().String() + exp.ProxyPath + "/"
	runE2E(t, webDir, uiURL, exp.URL()+"/api/v1/report", "", filepath.Join(webDir, "e2e", "artifacts", "proxy"))
}
