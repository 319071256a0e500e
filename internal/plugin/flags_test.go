package plugin_test

import (
	"io"
	"strings"
	"testing"

	"github.com/d44b/pulltrace/internal/plugin"
	"github.com/d44b/pulltrace/pkg/api"
)

// -v is klog's verbosity, as in kubectl: at 6 client-go logs each request to stderr. The
// layer view has its own flag.
func TestVerbosityIsKlogsAndLayersHaveTheirOwnFlag(t *testing.T) {
	f := newFakeAPI(t)
	f.pulls = api.PullList{Pulls: []api.Pull{pull("p1", api.PullActive, 1, 2, webPod)}}
	code, stdout, stderr := f.exec(t, false, "get", "-o", "name", "-v=6")
	if code != 0 || stdout != "pull.pulltrace.d44b.io/p1\n" || !strings.Contains(stderr, `verb="GET" url="`+f.srv.URL+"/api/v1/namespaces/pulltrace/services/pulltrace-server:http/proxy/api/v1/pulls") {
		t.Fatalf("get -v=6 (%d): %q\n%s", code, stdout, stderr)
	}
	if code, _, stderr := f.exec(t, false, "follow", "pod/x", "--layers", "--timeout", "bogus"); code != plugin.ExitUsage {
		t.Fatalf("follow --layers --timeout bogus: exit %d %s", code, stderr)
	}
}

// follow --timeout ends a follow that would wait forever with exit 6 and says so.
func TestFollowTimeout(t *testing.T) {
	f := newFakeAPI(t)
	f.addPod("default", "web", "node-1", "", "registry.local/shop/web:v1")
	code, _, stderr := f.exec(t, false, "follow", "pod/web", "--timeout", "300ms")
	if code != plugin.ExitOther || !strings.Contains(stderr, "timed out after 300ms (--timeout) following pod/web") {
		t.Fatalf("follow --timeout (%d): %s", code, stderr)
	}
	if code, _, _ := f.exec(t, false, "follow", "pod/web", "--timeout", "-1s"); code != plugin.ExitUsage {
		t.Fatalf("negative timeout: exit %d", code)
	}
}

// follow -l follows the pods a selector matches, and ends when their images are there.
func TestFollowSelector(t *testing.T) {
	f := newFakeAPI(t)
	f.selectPods = true
	f.addPod("default", "web", "node-1", "", "registry.local/shop/web:v1")
	f.addPod("default", "db", "node-1", "", "registry.local/shop/db:v1")
	f.pods["default/web"].Labels = map[string]string{"app": "web"}
	f.pods["default/db"].Labels = map[string]string{"app": "db"}
	done := pull("p1", api.PullCompleted, 2, 2, webPod)
	f.streams = []func(w io.Writer, flush func()) bool{func(w io.Writer, flush func()) bool {
		sse(w, "1", "snapshot", api.PullList{SchemaVersion: "v1", Pulls: []api.Pull{}})
		sse(w, "2", string(api.EventPullCompleted), event(api.EventPullCompleted, done))
		flush()
		return false
	}}
	code, stdout, stderr := f.exec(t, false, "follow", "-l", "app=web", "--timeout", "20s")
	if code != 0 || !strings.Contains(stdout, "registry.local/shop/web:v1") || strings.Contains(stdout, "shop/db") {
		t.Fatalf("follow -l app=web (%d):\n%s\n%s", code, stdout, stderr)
	}
	for _, bad := range [][]string{{"follow", "-l", "a in ("}, {"follow", "pod/web", "-l", "app=web"}} {
		if code, _, _ := f.exec(t, false, bad...); code != plugin.ExitUsage {
			t.Errorf("%q: exit %d", bad, code)
		}
	}
}

// A --context the kubeconfig lacks is named as such, not as a namespace problem.
func TestWrongContextIsNamed(t *testing.T) {
	f := newFakeAPI(t)
	code, _, stderr := f.exec(t, false, "get", "--context", "prod")
	if code != plugin.ExitOther || !strings.Contains(stderr, `--context context "prod" is not in the kubeconfig (it has: fake)`) {
		t.Fatalf("get --context prod (%d): %s", code, stderr)
	}
}

// ui does not take kubectl proxy's port: by default it picks a free one.
func TestUIDefaultPortIsFree(t *testing.T) {
	f := newFakeAPI(t)
	code, stdout, _ := f.exec(t, false, "ui", "--help")
	if code != 0 || !strings.Contains(stdout, "--port int") || strings.Contains(stdout, "(default 8001)") {
		t.Fatalf("ui --help (%d):\n%s", code, stdout)
	}
}
