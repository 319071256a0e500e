package plugin_test

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/plugin"
	"github.com/d44b/pulltrace/pkg/api"
)

func TestGetFiltersBecomeQueryParameters(t *testing.T) {
	f := newFakeAPI(t)
	f.pulls = api.PullList{Pulls: []api.Pull{pull("p1", api.PullActive, 3<<20, 12<<20, webPod)}}
	cases := []struct {
		args []string
		want url.Values
	}{
		{[]string{"get"}, url.Values{"namespace": {"default"}, "limit": {"500"}}},
		{[]string{"get", "-A"}, url.Values{"limit": {"500"}}},
		{[]string{"get", "pulls", "web", "-n", "shop", "--node", "n1", "--image", "nginx", "--state", "active,queued"},
			url.Values{"namespace": {"shop"}, "pod": {"web"}, "node": {"n1"}, "image": {"nginx"}, "state": {"active,queued"}, "limit": {"500"}}},
		{[]string{"get", "pod/web", "--state", "failed", "--state", "stalled"}, url.Values{"namespace": {"default"}, "pod": {"web"}, "state": {"failed,stalled"}, "limit": {"500"}}},
	}
	for _, c := range cases {
		f.queries = nil
		code, _, stderr := f.exec(t, false, append(c.args, "-o", "json")...)
		if code != 0 || len(f.queries) != 1 {
			t.Fatalf("%v: exit %d queries %v\n%s", c.args, code, f.queries, stderr)
		}
		got, _ := url.ParseQuery(f.queries[0])
		if got.Encode() != c.want.Encode() {
			t.Errorf("%v: query %q, want %q", c.args, got.Encode(), c.want.Encode())
		}
	}
	for _, bad := range [][]string{{"get", "-A", "web"}, {"get", "a", "b"}, {"get", "--state", "bogus"}, {"get", "-o", "xml"}, {"get", "svc/x"}, {"get", "--bogus"}, {"bogus"}, {"--bogus"}, {"gett"}, {"get", "--node"}} {
		code, _, stderr := f.exec(t, false, bad...)
		if code != plugin.ExitUsage || !strings.Contains(stderr, "error: ") {
			t.Errorf("%v: exit %d, want %d\n%s", bad, code, plugin.ExitUsage, stderr)
		}
	}
}

func TestUnknownCommandIsAUsageError(t *testing.T) {
	f := newFakeAPI(t)
	code, _, stderr := f.exec(t, false, "gett")
	if code != plugin.ExitUsage || !strings.Contains(stderr, `error: unknown command "gett" for "kubectl pulltrace"; did you mean get?`) {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	code, stdout, _ := f.exec(t, false)
	if code != 0 || !strings.Contains(stdout, "Usage:") {
		t.Fatalf("bare command: exit %d, want help\n%s", code, stdout)
	}
}

func TestGetOutputs(t *testing.T) {
	f := newFakeAPI(t)
	f.pulls = api.PullList{Pulls: []api.Pull{pull("p1", api.PullActive, 3<<20, 12<<20, webPod)}}
	code, stdout, _ := f.exec(t, false, "get", "-o", "json")
	var l plugin.PullObjectList
	if code != 0 || json.Unmarshal([]byte(stdout), &l) != nil || l.APIVersion != "pulltrace.d44b.io/v1" || l.Kind != "PullList" ||
		len(l.Items) != 1 || l.Items[0].ID != "p1" || l.Items[0].Kind != "Pull" || l.Items[0].Metadata.Name != "p1" || l.Items[0].ImageRef != "registry.local/shop/web:v1" {
		t.Fatalf("json (%d): %s", code, stdout)
	}
	code, stdout, _ = f.exec(t, false, "get", "-o", "yaml")
	if code != 0 || !strings.HasPrefix(stdout, "apiVersion: pulltrace.d44b.io/v1\nitems:\n- apiVersion: pulltrace.d44b.io/v1\n") || !strings.Contains(stdout, "  imageRef: registry.local/shop/web:v1\n") || !strings.Contains(stdout, "kind: PullList\n") {
		t.Fatalf("yaml (%d): %s", code, stdout)
	}
	code, stdout, _ = f.exec(t, false, "get")
	if code != 0 || !strings.HasPrefix(stdout, "IMAGE ") || !strings.Contains(stdout, "registry.local/shop/web:v1   node-1   default/web   active   [=>        ] 25%   3.0MiB/12.0MiB   -") {
		t.Fatalf("table (%d):\n%s", code, stdout)
	}
	f.pulls = api.PullList{}
	code, stdout, stderr := f.exec(t, false, "get", "-n", "shop")
	if code != 0 || stdout != "" || stderr != "No pulls found in shop namespace.\n" {
		t.Fatalf("empty (%d): %q %q", code, stdout, stderr)
	}
	// A node that stopped reporting is named, whatever the output format.
	last := time.Now().Add(-3*time.Minute - time.Second)
	f.nodeStatus = []api.NodeStatus{{Name: "node-1", LastReportAt: &last, Stale: true}, {Name: "node-2", LastReportAt: &last}}
	_, _, stderr = f.exec(t, false, "get", "-o", "json")
	if stderr != "Warning: no fresh data from node node-1 for 3m: its agent is not reporting\n" {
		t.Fatalf("stale node: %q", stderr)
	}
	if _, _, stderr = f.exec(t, false, "get", "--node", "node-2"); strings.Contains(stderr, "node-1") {
		t.Fatalf("--node node-2 warns about another node: %q", stderr)
	}
}

func TestVersion(t *testing.T) {
	f := newFakeAPI(t)
	code, stdout, _ := f.exec(t, false, "version")
	if code != 0 || stdout != "kubectl-pulltrace: v1.2.3\nserver: v9.9.9 (pulltrace/pulltrace-server, schema v1)\n" {
		t.Fatalf("version (%d): %q", code, stdout)
	}
	code, stdout, _ = f.exec(t, false, "version", "--server-namespace", "nowhere")
	if code != 0 || !strings.Contains(stdout, "server: not reachable (Pulltrace is not installed") {
		t.Fatalf("version without a server (%d): %q", code, stdout)
	}
	code, stdout, _ = f.exec(t, false, "version", "--client", "-o", "json")
	if code != 0 || strings.TrimSpace(stdout) != "{\n    \"clientVersion\": \"v1.2.3\"\n}" {
		t.Fatalf("version --client -o json (%d): %q", code, stdout)
	}
}

func TestHelpSaysKubectlPulltrace(t *testing.T) {
	f := newFakeAPI(t)
	code, stdout, _ := f.exec(t, false, "follow", "--help")
	if code != 0 || !strings.Contains(stdout, "Usage:\n  kubectl pulltrace follow (pod/NAME") || !strings.Contains(stdout, "Exit codes:") {
		t.Fatalf("help (%d):\n%s", code, stdout)
	}
	if strings.Contains(stdout, "kubectl-pulltrace follow") {
		t.Fatalf("help names the binary instead of the plugin:\n%s", stdout)
	}
}

func TestCompletion(t *testing.T) {
	f := newFakeAPI(t)
	f.addPod("default", "web", "node-1", "", "registry.local/shop/web:v1")
	f.addPod("default", "worker", "node-1", "", "registry.local/shop/worker:v1")
	f.nodes["node-1"] = true
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		code, stdout, _ := f.exec(t, false, "completion", sh)
		if code != 0 || !strings.Contains(stdout, "kubectl-pulltrace") {
			t.Fatalf("completion %s (%d): %.200s", sh, code, stdout)
		}
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "fo"}, "follow\tFollow the pulls of a pod, a workload's pods or a node live\n:4\n"},
		{[]string{"__complete", "follow", ""}, "pod/\nnode/\ndeploy/\nsts/\nds/\nrs/\njob/\n:6\n"},
		{[]string{"__complete", "follow", "pod/w"}, "pod/web\npod/worker\n:4\n"},
		{[]string{"__complete", "follow", "node/"}, "node/node-1\n:4\n"},
		{[]string{"__complete", "get", "pulls", "wo"}, "worker\n:4\n"},
		{[]string{"__complete", "get", "--state", "active,c"}, "active,completed\nactive,cached\n:6\n"},
	}
	for _, c := range cases {
		code, stdout, _ := f.exec(t, false, c.args...)
		if code != 0 || stdout != c.want {
			t.Errorf("%v (%d): %q, want %q", c.args, code, stdout, c.want)
		}
	}
	script, err := os.ReadFile(filepath.Join("..", "..", "cmd", "kubectl-pulltrace", "kubectl_complete-pulltrace"))
	if err != nil || !strings.Contains(string(script), `exec kubectl-pulltrace __complete "$@"`) {
		t.Fatalf("kubectl_complete-pulltrace: %v\n%s", err, script)
	}
	if fi, err := os.Stat(filepath.Join("..", "..", "cmd", "kubectl-pulltrace", "kubectl_complete-pulltrace")); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("kubectl_complete-pulltrace is not executable: %v", err)
	}
}

func TestInstallDryRunWithoutCluster(t *testing.T) {
	f := newFakeAPI(t)
	vals := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(vals, []byte("server:\n  replicas: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := f.exec(t, false, "install", "--dry-run", "-f", vals, "--set", "config.logLevel=debug")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"# chart pulltrace-0.1.0 (app 0.1.0), embedded in kubectl-pulltrace v1.2.3", `release "pulltrace" in namespace pulltrace`,
		"kind: DaemonSet", "kind: Deployment", "replicas: 2", "--log-level=debug"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dry run lacks %q", want)
		}
	}
	if !strings.Contains(stderr, "ROOT-EQUIVALENT") {
		t.Errorf("the risk is not stated:\n%s", stderr)
	}
	// The output can be applied as it is: the Namespace comes first, labelled for the agent.
	nsDoc := strings.Index(stdout, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: pulltrace\n  labels:\n    pod-security.kubernetes.io/enforce: privileged\n---\n")
	if nsDoc < 0 || nsDoc > strings.Index(stdout, "# Source:") {
		t.Errorf("dry run does not start with the Namespace:\n%.600s", stdout)
	}
	if !strings.Contains(stderr, "NOTES:\n") {
		t.Errorf("the chart's NOTES are not shown:\n%s", stderr)
	}
	if code, _, _ := f.exec(t, false, "install", "--dry-run=client", "--yes"); code != 0 {
		t.Errorf("--dry-run=client: exit %d", code)
	}
	if code, _, stderr := f.exec(t, false, "install", "--dry-run=maybe"); code != plugin.ExitUsage || !strings.Contains(stderr, `"none", "client" or "server"`) {
		t.Errorf("--dry-run=maybe: exit %d %s", code, stderr)
	}
	code, stdout, stderr = f.exec(t, false, "install", "--dry-run", "-n", "obs", "--set", "runtimeSocket.enabled=false")
	if code != 0 || strings.Contains(stdout, "kind: DaemonSet") || strings.Contains(stderr, "ROOT-EQUIVALENT") || !strings.Contains(stdout, "namespace: obs") ||
		!strings.Contains(stdout, "kind: Namespace\nmetadata:\n  name: obs\n") || strings.Contains(stdout, "privileged") {
		t.Fatalf("without the agent (%d):\n%.3000s\n%s", code, stdout, stderr)
	}
	code, _, stderr = f.exec(t, false, "install", "--dry-run", "--set", "server.replicas=many")
	if code == 0 || !strings.Contains(stderr, "error: ") {
		t.Fatalf("bad value accepted (%d): %s", code, stderr)
	}
}

// get reads every page of the list: it follows metadata.continue until the last page.
func TestGetReadsEveryPage(t *testing.T) {
	f := newFakeAPI(t)
	f.pages = []api.PullList{
		{Metadata: &api.ListMeta{Continue: "1"}, Pulls: []api.Pull{pull("p1", api.PullActive, 3<<20, 12<<20, webPod)}},
		{Metadata: &api.ListMeta{Continue: "2"}, Pulls: []api.Pull{pull("p2", api.PullActive, 3<<20, 12<<20, webPod)}},
		{Metadata: &api.ListMeta{}, Pulls: []api.Pull{pull("p3", api.PullActive, 3<<20, 12<<20, webPod)}},
	}
	code, stdout, stderr := f.exec(t, false, "get", "-A", "-o", "json")
	if code != 0 || len(f.queries) != 3 {
		t.Fatalf("exit %d queries %v\n%s", code, f.queries, stderr)
	}
	for _, id := range []string{"p1", "p2", "p3"} {
		if !strings.Contains(stdout, `"id": "`+id+`"`) && !strings.Contains(stdout, `"id":"`+id+`"`) {
			t.Errorf("output lacks %s:\n%s", id, stdout)
		}
	}
	if q, _ := url.ParseQuery(f.queries[2]); q.Get("continue") != "2" {
		t.Fatalf("third request %q", f.queries[2])
	}
}
