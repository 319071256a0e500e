package plugin_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/plugin"
	"github.com/d44b/pulltrace/pkg/api"
)

// The formats kubectl users reach for first, each of which once failed with exit 2.
func TestGetKubectlOutputFormats(t *testing.T) {
	f := newFakeAPI(t)
	a := pull("p1", api.PullActive, 3<<20, 12<<20, webPod)
	b := pull("p2", api.PullCompleted, 5<<20, 5<<20)
	b.ImageRef, b.NodeName, b.StartedAt = "docker.io/library/nginx:1.27", "node-0", a.StartedAt.Add(-time.Minute)
	f.pulls = api.PullList{Pulls: []api.Pull{a, b}}
	cases := []struct {
		args []string
		want string
	}{
		// Kubectl names objects of another API group kind.group/name.
		{[]string{"-o", "name"}, "pull.pulltrace.d44b.io/p1\npull.pulltrace.d44b.io/p2\n"},
		{[]string{"-o", "jsonpath={.items[*].imageRef}"}, "registry.local/shop/web:v1 docker.io/library/nginx:1.27"},
		{[]string{"-o", "jsonpath={range .items[*]}{.metadata.name} {.state}{\"\\n\"}{end}"}, "p1 active\np2 completed\n"},
		{[]string{"-o", "go-template={{range .items}}{{.nodeName}},{{end}}"}, "node-1,node-0,"},
		{[]string{"--template", "{{len .items}}"}, "2"},
		{[]string{"-o", "custom-columns=ID:.metadata.name,NODE:.nodeName,ERR:.error"}, "ID    NODE     ERR\np1    node-1   <none>\np2    node-0   <none>\n"},
		{[]string{"-o", "custom-columns=ID:.metadata.name", "--no-headers", "--sort-by", ".startedAt"}, "p2\np1\n"},
		{[]string{"-o", "name", "--sort-by", "{.totalBytes}"}, "pull.pulltrace.d44b.io/p2\npull.pulltrace.d44b.io/p1\n"},
		{[]string{"-o", "name", "--sort-by", "nodeName"}, "pull.pulltrace.d44b.io/p2\npull.pulltrace.d44b.io/p1\n"},
	}
	for _, c := range cases {
		code, stdout, stderr := f.exec(t, false, append([]string{"get", "-A"}, c.args...)...)
		if code != 0 || stdout != c.want {
			t.Errorf("get %q: exit %d\n%q\nwant\n%q\n%s", c.args, code, stdout, c.want, stderr)
		}
	}
	code, stdout, _ := f.exec(t, false, "get", "-A", "--no-headers", "--sort-by", ".nodeName")
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "docker.io/library/nginx:1.27   node-0") || !strings.HasPrefix(lines[1], "registry.local/shop/web:v1     node-1") {
		t.Fatalf("table --no-headers --sort-by (%d):\n%s", code, stdout)
	}
	code, stdout, _ = f.exec(t, false, "get", "-A", "-o", "wide")
	if code != 0 || !strings.HasSuffix(strings.Join(strings.Fields(strings.SplitN(stdout, "\n", 2)[0]), " "), "AGE LAYERS DIGEST") {
		t.Fatalf("wide (%d):\n%s", code, stdout)
	}
	for _, bad := range [][]string{{"-o", "custom-columns"}, {"-o", "custom-columns=NOPATH"}, {"-o", "jsonpath={.items[}"}, {"--sort-by", "{.a["}, {"-o", "xml"}} {
		code, _, stderr := f.exec(t, false, append([]string{"get", "-A"}, bad...)...)
		if code != plugin.ExitUsage || strings.Contains(stderr, "bad output flags") {
			t.Errorf("get %q: exit %d, want %d\n%s", bad, code, plugin.ExitUsage, stderr)
		}
	}
}

func TestGetSelectorSelectsPods(t *testing.T) {
	f := newFakeAPI(t)
	f.selectPods = true
	f.addPod("default", "web", "node-1", "")
	f.addPod("default", "db", "node-1", "")
	f.pods["default/web"].Labels = map[string]string{"app": "web"}
	f.pods["default/db"].Labels = map[string]string{"app": "db"}
	db := pull("p2", api.PullActive, 1, 2, api.PodRef{Namespace: "default", PodName: "db", Container: "c0"})
	f.pulls = api.PullList{Pulls: []api.Pull{pull("p1", api.PullActive, 1, 2, webPod), db}}
	code, stdout, stderr := f.exec(t, false, "get", "-l", "app=web", "-o", "name")
	if code != 0 || stdout != "pull.pulltrace.d44b.io/p1\n" {
		t.Fatalf("get -l app=web (%d): %q %s", code, stdout, stderr)
	}
	code, _, stderr = f.exec(t, false, "get", "-l", "app=nothing")
	if code != 0 || !strings.Contains(stderr, "No pulls found in pods matching app=nothing in default namespace.") {
		t.Fatalf("get -l app=nothing (%d): %s", code, stderr)
	}
	if code, _, _ := f.exec(t, false, "get", "-l", "a in (", "-o", "name"); code != plugin.ExitUsage {
		t.Fatalf("bad selector: exit %d", code)
	}
}

// get -w lists, then prints each pull again when it changes, as kubectl get -w does; a
// progress event in the same state right after the listing is not a change worth a line.
func TestGetWatchPrintsChanges(t *testing.T) {
	f := newFakeAPI(t)
	a := pull("p1", api.PullActive, 3<<20, 12<<20, webPod)
	f.pulls = api.PullList{Pulls: []api.Pull{a}}
	done := pull("p1", api.PullCompleted, 12<<20, 12<<20, webPod)
	other := pull("p9", api.PullActive, 1, 2, api.PodRef{Namespace: "elsewhere", PodName: "x"})
	f.streams = []func(w io.Writer, flush func()) bool{func(w io.Writer, flush func()) bool {
		sse(w, "1", "snapshot", api.PullList{SchemaVersion: "v1", Pulls: []api.Pull{a}})
		sse(w, "2", string(api.EventPullProgress), event(api.EventPullProgress, a))
		sse(w, "3", string(api.EventPullStarted), event(api.EventPullStarted, other))
		sse(w, "4", string(api.EventPullCompleted), event(api.EventPullCompleted, done))
		flush()
		return false
	}}
	out, errOut, stop := f.start(t, "get", "-w", "-o", "custom-columns=ID:.metadata.name,STATE:.state")
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "completed") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if got := out.String(); got != "ID    STATE\np1    active\np1    completed\n" {
		t.Fatalf("get -w printed %q\n%s", got, errOut.String())
	}
}
