package charts

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// imageRegistry moves every image the way image references name registries: the first path
// element is a registry only when it holds "." or ":" or is "localhost".
func TestImageRegistryRehostsEveryImage(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0f", 32)
	for name, tc := range map[string]struct {
		registry, repo, test string
		wantAgent, wantTest  string
	}{
		"ghcr to mirror": {"mirror.local:5000", "ghcr.io/d44b/pulltrace-agent", "busybox:1.37",
			"mirror.local:5000/d44b/pulltrace-agent:0.1.0", "mirror.local:5000/library/busybox:1.37"},
		"mirror with a path": {"harbor.example/proxy/", "ghcr.io/d44b/pulltrace-agent", "docker.io/library/busybox@" + digest,
			"harbor.example/proxy/d44b/pulltrace-agent:0.1.0", "harbor.example/proxy/library/busybox@" + digest},
		"repository without registry": {"mirror.local", "team/pulltrace-agent", "localhost:5000/tools/busybox:1",
			"mirror.local/team/pulltrace-agent:0.1.0", "mirror.local/tools/busybox:1"},
		"localhost registry": {"mirror.local", "localhost/pt", "localhost/busybox",
			"mirror.local/pt:0.1.0", "mirror.local/busybox"},
		"no override": {"", "registry.local:5000/pt", "busybox:1.37",
			"registry.local:5000/pt:0.1.0", "busybox:1.37"},
	} {
		t.Run(name, func(t *testing.T) {
			vals := setPath(nil, "imageRegistry", tc.registry)
			setPath(vals, "agent.image.repository", tc.repo)
			setPath(vals, "test.image", tc.test)
			r := checked(t, vals)
			if got := onlyContainer(t, r.agent().Spec.Template.Spec).Image; got != tc.wantAgent {
				t.Errorf("agent image %s, want %s", got, tc.wantAgent)
			}
			if got := onlyContainer(t, r.testPod().Spec).Image; got != tc.wantTest {
				t.Errorf("test image %s, want %s", got, tc.wantTest)
			}
		})
	}
	// Digest and registry together: the digest pins what the mirror serves.
	vals := map[string]any{"imageRegistry": "mirror.local", "server": map[string]any{"image": map[string]any{"digest": digest, "tag": "ignored"}}}
	if got := onlyContainer(t, checked(t, vals).server().Spec.Template.Spec).Image; got != "mirror.local/d44b/pulltrace-server@"+digest {
		t.Errorf("server image %s", got)
	}
}

// Escape hatches that would break the chart's own wiring are refused with a message naming
// the value to use instead.
func TestEscapeHatchesRefuseWhatTheChartOwns(t *testing.T) {
	for name, tc := range map[string]struct {
		vals map[string]any
		want []string
	}{
		"agent flag the chart sets": {setPath(nil, "agent.extraArgs", []any{"--report-interval=1s"}),
			[]string{"agent.extraArgs has --report-interval", "config.reportInterval"}},
		"server flag the chart sets": {setPath(nil, "server.extraArgs", []any{"--history-ttl=1h"}),
			[]string{"server.extraArgs has --history-ttl", "config.historyTTL"}},
		"selector label": {setPath(nil, "agent.podLabels", map[string]any{"app.kubernetes.io/component": "x"}),
			[]string{"agent.podLabels sets app.kubernetes.io/component"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := render(t, "pulltrace", "pulltrace", tc.vals)
			if err == nil {
				t.Fatal("rendered")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
		})
	}
	for name, tc := range map[string]struct {
		vals map[string]any
		want string
	}{
		"arg that is not a flag":    {setPath(nil, "agent.extraArgs", []any{"poll-interval=1s"}), "extraArgs"},
		"env without a name":        {setPath(nil, "server.extraEnv", []any{map[string]any{"value": "x"}}), "name"},
		"digest without algorithm":  {setPath(nil, "agent.image.digest", "abc"), "digest"},
		"registry with a scheme":    {setPath(nil, "imageRegistry", "https://mirror.local"), "imageRegistry"},
		"service account typo":      {setPath(nil, "server.serviceAccount.annotation", map[string]any{}), "annotation"},
		"unknown update strategy":   {setPath(nil, "agent.updateStrategy", map[string]any{"type": "Recreate"}), "type"},
		"threshold not a number":    {setPath(nil, "prometheusRule.stalledMinutes", "5m"), "stalledMinutes"},
		"window not a duration":     {setPath(nil, "prometheusRule.failuresWindow", "15"), "failuresWindow"},
		"unknown dashboard setting": {setPath(nil, "dashboard.namespace", "grafana"), "namespace"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := render(t, "pulltrace", "pulltrace", tc.vals)
			if err == nil || !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("want a schema error naming %q, got %v", tc.want, err)
			}
		})
	}
}

// With the chart's accounts replaced by existing ones, nothing refers to an account the chart
// no longer creates.
func TestExistingServiceAccounts(t *testing.T) {
	vals := map[string]any{
		"agent":  map[string]any{"serviceAccount": map[string]any{"create": false, "name": "node-observer"}},
		"server": map[string]any{"serviceAccount": map[string]any{"create": false, "name": "pulltrace-reader"}},
		"rbac":   map[string]any{"create": false},
	}
	r := checked(t, vals)
	if n := len(all[*corev1.ServiceAccount](r)); n != 0 {
		t.Errorf("%d ServiceAccounts created", n)
	}
	if a, s := r.agent().Spec.Template.Spec.ServiceAccountName, r.server().Spec.Template.Spec.ServiceAccountName; a != "node-observer" || s != "pulltrace-reader" {
		t.Errorf("accounts %q %q", a, s)
	}
	// The agent still mounts no API token, whichever account it runs as.
	if m := r.agent().Spec.Template.Spec.AutomountServiceAccountToken; m == nil || *m {
		t.Error("agent mounts an API token")
	}
}

// A render that found no stored token (helm template, Argo CD) says how GitOps tools avoid a
// new token on every render.
func TestNotesPointGitOpsToExistingSecret(t *testing.T) {
	r := checked(t, nil)
	for _, want := range []string{"found no stored token", "Argo CD", "agent.auth.existingSecret"} {
		if !strings.Contains(r.notes, want) {
			t.Errorf("NOTES lack %q:\n%s", want, r.notes)
		}
	}
	r = checked(t, setPath(nil, "agent.auth.existingSecret", "gitops-token"))
	if strings.Contains(r.notes, "found no stored token") {
		t.Errorf("NOTES warn about lookup with an existing Secret:\n%s", r.notes)
	}
}
