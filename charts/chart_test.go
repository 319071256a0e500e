package charts

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"sigs.k8s.io/yaml"
)

const tokenPath = "/etc/pulltrace/token/token"

// checked renders and applies the checks every install must pass whatever its values.
func checked(t *testing.T, vals map[string]any, apiVersions ...string) *rendered {
	t.Helper()
	r := mustRender(t, vals, apiVersions...)
	r.invariants()
	return r
}

// invariants: labels, namespaces, hardening and documented flags on every object and pod.
func (r *rendered) invariants() {
	t := r.t
	t.Helper()
	if strings.Contains(r.raw, "<no value>") || strings.Contains(r.notes, "<no value>") {
		t.Errorf("a template printed a missing value:\n%s\n%s", r.raw, r.notes)
	}
	watched := map[string]bool{}
	for _, ro := range r.roles() {
		watched[ro.Namespace] = true
	}
	for _, o := range r.objects {
		acc, kind := metaOf(o)
		l := acc.GetLabels()
		for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
			"app.kubernetes.io/component", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
			if l[k] == "" {
				t.Errorf("%s %s lacks label %s", kind, acc.GetName(), k)
			}
		}
		if l["app.kubernetes.io/managed-by"] != "Helm" || l["app.kubernetes.io/version"] != "0.1.0" ||
			l["helm.sh/chart"] != "pulltrace-0.1.0" {
			t.Errorf("%s %s: labels %v", kind, acc.GetName(), l)
		}
		switch kind {
		case "ClusterRole", "ClusterRoleBinding":
			if acc.GetNamespace() != "" {
				t.Errorf("cluster-scoped %s %s has namespace %q", kind, acc.GetName(), acc.GetNamespace())
			}
		case "Role", "RoleBinding":
			if !watched[acc.GetNamespace()] {
				t.Errorf("%s %s in unexpected namespace %q", kind, acc.GetName(), acc.GetNamespace())
			}
		default:
			if acc.GetNamespace() != r.namespace {
				t.Errorf("%s %s in namespace %q, want the release namespace %q", kind, acc.GetName(), acc.GetNamespace(), r.namespace)
			}
		}
	}
	agentFlags, serverFlags := documentedFlags(t, "Agent"), documentedFlags(t, "Server")
	for _, ds := range all[*appsv1.DaemonSet](r) {
		r.hardened(ds.Name, ds.Spec.Template.Spec)
		for f := range flags(t, onlyContainer(t, ds.Spec.Template.Spec)) {
			if !agentFlags[f] {
				t.Errorf("agent flag %s is not in docs/architecture.md", f)
			}
		}
	}
	for _, d := range all[*appsv1.Deployment](r) {
		r.hardened(d.Name, d.Spec.Template.Spec)
		for f := range flags(t, onlyContainer(t, d.Spec.Template.Spec)) {
			if !serverFlags[f] {
				t.Errorf("server flag %s is not in docs/architecture.md", f)
			}
		}
	}
	for _, p := range all[*corev1.Pod](r) {
		r.hardened(p.Name, p.Spec)
	}
}

// hardened: container-level settings every pod of the chart has, root or not.
func (r *rendered) hardened(owner string, spec corev1.PodSpec) {
	t := r.t
	t.Helper()
	if spec.SecurityContext == nil || spec.SecurityContext.SeccompProfile == nil ||
		spec.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccomp profile is not RuntimeDefault", owner)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("%s: uses a host namespace", owner)
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("%s/%s: no securityContext", owner, c.Name)
			continue
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s/%s: allowPrivilegeEscalation not false", owner, c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s/%s: root filesystem not read-only", owner, c.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s/%s: privileged", owner, c.Name)
		}
		if sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
			len(sc.Capabilities.Add) != 0 {
			t.Errorf("%s/%s: capabilities %+v, want drop [ALL] and nothing added", owner, c.Name, sc.Capabilities)
		}
		if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
			t.Errorf("%s/%s: no memory limit", owner, c.Name)
		}
	}
}

func TestEmbeddedChartMatchesDisk(t *testing.T) {
	c := loadChart(t)
	if c.Metadata.APIVersion != "v2" || c.Name() != "pulltrace" || c.Metadata.Version != "0.1.0" || c.Metadata.AppVersion != "0.1.0" {
		t.Errorf("Chart.yaml: %+v", c.Metadata)
	}
	if len(c.Schema) == 0 {
		t.Error("values.schema.json not loaded")
	}
	embedded := map[string]bool{}
	for _, f := range c.Templates {
		embedded[f.Name] = true
	}
	for _, want := range []string{"templates/_helpers.tpl", "templates/NOTES.txt", "templates/tests/test-api.yaml"} {
		if !embedded[want] {
			t.Errorf("%s missing from the embedded chart (go:embed without all:?)", want)
		}
	}
	// Every template on disk is in the embedded chart, so the tests cover what `helm` ships.
	err := fs.WalkDir(os.DirFS("pulltrace"), "templates", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !embedded[p] {
			t.Errorf("template %s on disk but not embedded", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDefaultInstall(t *testing.T) {
	r := checked(t, nil)

	kinds := map[string]int{}
	for _, o := range r.objects {
		_, kind := metaOf(o)
		kinds[kind]++
	}
	want := map[string]int{"ServiceAccount": 2, "Secret": 1, "ClusterRole": 1, "ClusterRoleBinding": 1,
		"Service": 2, "Deployment": 1, "DaemonSet": 1, "Pod": 1}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("objects %v, want %v", kinds, want)
	}
	if len(r.monitors) != 0 {
		t.Error("ServiceMonitor rendered although the cluster has no monitoring API")
	}

	// Names the plugin and docs rely on.
	svc := one[*corev1.Service](r, "pulltrace-server")
	if svc.Spec.Type != corev1.ServiceTypeClusterIP || servicePort(t, svc, "http") != 8080 || servicePort(t, svc, "metrics") != 9090 {
		t.Errorf("Service pulltrace-server: %+v", svc.Spec)
	}
	headless := one[*corev1.Service](r, "pulltrace-server-headless")
	if headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses ||
		len(headless.Spec.Ports) != 1 || servicePort(t, headless, "http") != 8080 {
		t.Errorf("headless Service: %+v", headless.Spec)
	}
	dep := r.server()
	for _, s := range []*corev1.Service{svc, headless} {
		if !reflect.DeepEqual(s.Spec.Selector, dep.Spec.Selector.MatchLabels) {
			t.Errorf("Service %s selects %v, server pods are %v", s.Name, s.Spec.Selector, dep.Spec.Selector.MatchLabels)
		}
	}
	if *dep.Spec.Replicas != 1 {
		t.Errorf("replicas %d", *dep.Spec.Replicas)
	}

	ds := r.agent()
	a := onlyContainer(t, ds.Spec.Template.Spec)
	wantFlag(t, a, "--containerd-socket", "/run/containerd/containerd.sock")
	wantFlag(t, a, "--server", "http://pulltrace-server-headless.pulltrace.svc:8080")
	wantFlag(t, a, "--report-interval", "2s")
	wantFlag(t, a, "--log-level", "info")
	wantFlag(t, a, "--token-file", tokenPath)
	if a.Image != "ghcr.io/d44b/pulltrace-agent:0.1.0" || a.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("agent image %s %s", a.Image, a.ImagePullPolicy)
	}
	if !reflect.DeepEqual(ds.Spec.Template.Spec.Tolerations, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}) {
		t.Errorf("agent tolerations %+v: every node must get an agent", ds.Spec.Template.Spec.Tolerations)
	}
	if ds.Spec.Template.Spec.PriorityClassName != "" || dep.Spec.Template.Spec.PriorityClassName != "" {
		t.Error("a priority class is set by default")
	}

	s := onlyContainer(t, dep.Spec.Template.Spec)
	wantFlag(t, s, "--listen", ":8080")
	wantFlag(t, s, "--metrics-addr", ":9090")
	wantFlag(t, s, "--history-ttl", "30m")
	wantFlag(t, s, "--watch-namespaces", "")
	wantFlag(t, s, "--log-level", "info")
	wantFlag(t, s, "--token-file", tokenPath)
	if s.Image != "ghcr.io/d44b/pulltrace-server:0.1.0" {
		t.Errorf("server image %s", s.Image)
	}

	// Generated token: 32 alphanumerics, mounted as a file in both workloads.
	sec := one[*corev1.Secret](r, "pulltrace-token")
	if !regexp.MustCompile(`^[A-Za-z0-9]{32}$`).Match(sec.Data["token"]) {
		t.Errorf("generated token %q", sec.Data["token"])
	}
	for _, spec := range []corev1.PodSpec{ds.Spec.Template.Spec, dep.Spec.Template.Spec} {
		v := volume(t, spec, "token")
		if v.Secret == nil || v.Secret.SecretName != "pulltrace-token" ||
			!reflect.DeepEqual(v.Secret.Items, []corev1.KeyToPath{{Key: "token", Path: "token"}}) {
			t.Errorf("token volume %+v", v)
		}
		m := mount(t, spec.Containers[0], "token")
		if m.MountPath+"/token" != tokenPath || !m.ReadOnly {
			t.Errorf("token mount %+v", m)
		}
	}

	// RBAC: read-only pods and events, cluster-wide, bound to the server's account only.
	cr := all[*rbacv1.ClusterRole](r)[0]
	wantRules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "events"}, Verbs: []string{"get", "list", "watch"}}}
	if !reflect.DeepEqual(cr.Rules, wantRules) {
		t.Errorf("ClusterRole rules %+v", cr.Rules)
	}
	crb := all[*rbacv1.ClusterRoleBinding](r)[0]
	if crb.RoleRef.Name != cr.Name || !reflect.DeepEqual(crb.Subjects, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "pulltrace-server", Namespace: "pulltrace"}}) {
		t.Errorf("ClusterRoleBinding %+v", crb)
	}
	if dep.Spec.Template.Spec.ServiceAccountName != "pulltrace-server" || ds.Spec.Template.Spec.ServiceAccountName != "pulltrace-agent" {
		t.Error("workloads do not use their own ServiceAccounts")
	}

	// helm test hook: fetches /healthz and /api/v1/pulls of the server Service.
	pod := r.testPod()
	if !r.hooks["Pod/"+pod.Name] || pod.Annotations["helm.sh/hook"] != "test" {
		t.Errorf("test pod %s is not a test hook: %v", pod.Name, pod.Annotations)
	}
	tc := onlyContainer(t, pod.Spec)
	script := strings.Join(tc.Command, " ")
	for _, u := range []string{"http://pulltrace-server:8080/healthz", "http://pulltrace-server:8080/api/v1/pulls"} {
		if !strings.Contains(script, u) {
			t.Errorf("test pod does not fetch %s: %s", u, script)
		}
	}
	if tc.Image != "busybox:1.37" {
		t.Errorf("test image %s", tc.Image)
	}

	for _, want := range []string{"DaemonSet pulltrace-agent", "1 replica,", "generated by the chart into Secret \"pulltrace-token\"",
		"kubectl -n pulltrace port-forward svc/pulltrace-server 8080:8080", "kubectl pulltrace ui", "kubectl pulltrace get"} {
		if !strings.Contains(r.notes, want) {
			t.Errorf("NOTES lacks %q:\n%s", want, r.notes)
		}
	}
	if strings.Contains(r.notes, "NO AGENT") || strings.Contains(r.notes, "--server-") {
		t.Errorf("NOTES warns about a default install:\n%s", r.notes)
	}
}

func TestAgentSecurity(t *testing.T) {
	ds := checked(t, nil).agent()
	spec := ds.Spec.Template.Spec
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("agent mounts a Kubernetes API token")
	}
	psc := spec.SecurityContext
	if psc.RunAsUser == nil || *psc.RunAsUser != 0 {
		t.Error("agent must run as uid 0, the socket's owner")
	}
	// Host access: exactly the socket, nothing else from the host.
	var hostPaths []corev1.Volume
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths = append(hostPaths, v)
		}
	}
	if len(hostPaths) != 1 || hostPaths[0].HostPath.Path != "/run/containerd/containerd.sock" ||
		hostPaths[0].HostPath.Type == nil || *hostPaths[0].HostPath.Type != corev1.HostPathSocket {
		t.Errorf("agent hostPath volumes %+v, want only the socket, type Socket", hostPaths)
	}
	c := onlyContainer(t, spec)
	if m := mount(t, c, hostPaths[0].Name); m.MountPath != "/run/containerd/containerd.sock" {
		t.Errorf("socket mounted at %s", m.MountPath)
	}
	env, ok := envVar(c, "NODE_NAME")
	if !ok || env.ValueFrom == nil || env.ValueFrom.FieldRef == nil || env.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME %+v, want the downward API spec.nodeName", env)
	}
	// Readiness follows containerd (/healthz); liveness only the process (/livez), so a
	// containerd outage does not put the agent in a restart loop.
	for p, path := range map[*corev1.Probe]string{c.LivenessProbe: "/livez", c.ReadinessProbe: "/healthz"} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromString("health") {
			t.Errorf("agent probe %+v, want %s", p, path)
		}
	}
	if port(t, c, "health") != 9091 {
		t.Error("agent health port is not 9091")
	}
	wantFlag(t, c, "--health-addr", ":9091")
}

func TestServerSecurity(t *testing.T) {
	dep := checked(t, nil).server()
	spec := dep.Spec.Template.Spec
	psc := spec.SecurityContext
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 65532 {
		t.Errorf("server pod security %+v, want non-root uid 65532", psc)
	}
	c := onlyContainer(t, spec)
	if c.SecurityContext.RunAsNonRoot == nil || !*c.SecurityContext.RunAsNonRoot {
		t.Error("server container may run as root")
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("server mounts host path %s", v.HostPath.Path)
		}
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port != intstr.FromString("http") {
		t.Errorf("liveness %+v", c.LivenessProbe)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.ReadinessProbe.HTTPGet.Port != intstr.FromString("http") {
		t.Errorf("readiness %+v", c.ReadinessProbe)
	}
	for _, name := range []string{"GOMEMLIMIT", "PULLTRACE_MEMORY_BUDGET"} {
		e, ok := envVar(c, name)
		if !ok || e.ValueFrom.ResourceFieldRef == nil || e.ValueFrom.ResourceFieldRef.Resource != "limits.memory" {
			t.Errorf("%s %+v", name, e)
		}
	}
}

// TestSeedValuesReachContainers sets every setting of the README's values table to a
// non-default value at once and finds each one in the pods: a value the chart declares but
// never passes on (the original chart did that with historyTTL and reportInterval) fails here.
func TestSeedValuesReachContainers(t *testing.T) {
	r := checked(t, map[string]any{
		"config": map[string]any{
			"logLevel":        "debug",
			"watchNamespaces": "team-a, team-b,team-a",
			"historyTTL":      "45m",
			"reportInterval":  "750ms",
		},
		"agent": map[string]any{
			"containerd": map[string]any{"socketPath": "/run/k3s/containerd/containerd.sock"},
			"auth":       map[string]any{"token": "s3cr3t-agent-token"},
		},
		"server": map[string]any{
			"replicas": 3,
			"service":  map[string]any{"port": 18080, "metricsPort": 19090},
		},
	})
	dep, ds := r.server(), r.agent()
	s, a := onlyContainer(t, dep.Spec.Template.Spec), onlyContainer(t, ds.Spec.Template.Spec)

	wantFlag(t, s, "--log-level", "debug")
	wantFlag(t, a, "--log-level", "debug")
	wantFlag(t, s, "--watch-namespaces", "team-a,team-b")
	wantFlag(t, s, "--history-ttl", "45m")
	wantFlag(t, a, "--report-interval", "750ms")
	wantFlag(t, a, "--containerd-socket", "/run/k3s/containerd/containerd.sock")
	if v := volume(t, ds.Spec.Template.Spec, "containerd-socket"); v.HostPath.Path != "/run/k3s/containerd/containerd.sock" {
		t.Errorf("socket hostPath %s", v.HostPath.Path)
	}
	if m := mount(t, a, "containerd-socket"); m.MountPath != "/run/k3s/containerd/containerd.sock" {
		t.Errorf("socket mount %s", m.MountPath)
	}
	if tok := one[*corev1.Secret](r, "pulltrace-token").Data["token"]; string(tok) != "s3cr3t-agent-token" {
		t.Errorf("token Secret holds %q", tok)
	}
	wantFlag(t, s, "--token-file", tokenPath)
	wantFlag(t, a, "--token-file", tokenPath)
	if strings.Contains(r.raw, "checksum/token") {
		t.Error("a user-chosen token's hash is published in a pod template (dictionary attack)")
	}
	if strings.Contains(r.raw, "s3cr3t-agent-token") {
		t.Error("the token appears in clear text in a manifest (it belongs base64 in the Secret only)")
	}
	wantFlag(t, s, "--listen", ":18080")
	wantFlag(t, s, "--metrics-addr", ":19090")
	if port(t, s, "http") != 18080 || port(t, s, "metrics") != 19090 {
		t.Errorf("server container ports %+v", s.Ports)
	}
	svc := one[*corev1.Service](r, "pulltrace-server")
	if servicePort(t, svc, "http") != 18080 || servicePort(t, svc, "metrics") != 19090 {
		t.Errorf("Service ports %+v", svc.Spec.Ports)
	}
	if servicePort(t, one[*corev1.Service](r, "pulltrace-server-headless"), "http") != 18080 {
		t.Error("headless Service port")
	}
	wantFlag(t, a, "--server", "http://pulltrace-server-headless.pulltrace.svc:18080")
	if !strings.Contains(strings.Join(onlyContainer(t, r.testPod().Spec).Command, " "), "http://pulltrace-server:18080/api/v1/pulls") {
		t.Error("test pod does not follow the port")
	}
	if *dep.Spec.Replicas != 3 || !strings.Contains(r.notes, "3 replicas") {
		t.Errorf("replicas %d; NOTES:\n%s", *dep.Spec.Replicas, r.notes)
	}
	if !strings.Contains(r.notes, "the value of agent.auth.token") {
		t.Errorf("NOTES do not name the token source:\n%s", r.notes)
	}
}

func TestWatchNamespacesUsesRoles(t *testing.T) {
	r := checked(t, setPath(nil, "config.watchNamespaces", "team-a,team-b"))
	if n := len(all[*rbacv1.ClusterRole](r)) + len(all[*rbacv1.ClusterRoleBinding](r)); n != 0 {
		t.Errorf("%d cluster-wide RBAC objects with a namespace list", n)
	}
	got := map[string]bool{}
	for _, ro := range r.roles() {
		got[ro.Namespace] = true
		if !reflect.DeepEqual(ro.Rules, []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods", "events"}, Verbs: []string{"get", "list", "watch"}}}) {
			t.Errorf("Role %s/%s rules %+v", ro.Namespace, ro.Name, ro.Rules)
		}
	}
	bindings := all[*rbacv1.RoleBinding](r)
	if !reflect.DeepEqual(got, map[string]bool{"team-a": true, "team-b": true}) || len(bindings) != 2 {
		t.Errorf("Roles in %v, %d bindings", got, len(bindings))
	}
	for _, b := range bindings {
		if b.Subjects[0].Name != "pulltrace-server" || b.Subjects[0].Namespace != "pulltrace" || b.RoleRef.Kind != "Role" {
			t.Errorf("RoleBinding %+v", b)
		}
	}
	if !strings.Contains(r.notes, "team-a,team-b") {
		t.Errorf("NOTES do not list the watched namespaces:\n%s", r.notes)
	}
}

func TestExistingSecret(t *testing.T) {
	r := checked(t, map[string]any{"agent": map[string]any{"auth": map[string]any{"existingSecret": "team-token", "existingSecretKey": "agent-token"}}})
	if n := len(all[*corev1.Secret](r)); n != 0 {
		t.Errorf("%d Secrets rendered although one exists", n)
	}
	for _, spec := range []corev1.PodSpec{r.agent().Spec.Template.Spec, r.server().Spec.Template.Spec} {
		v := volume(t, spec, "token")
		if v.Secret.SecretName != "team-token" || !reflect.DeepEqual(v.Secret.Items, []corev1.KeyToPath{{Key: "agent-token", Path: "token"}}) {
			t.Errorf("token volume %+v", v.Secret)
		}
		wantFlag(t, spec.Containers[0], "--token-file", tokenPath)
	}
	if !strings.Contains(r.notes, `your Secret "team-token", key "agent-token"`) {
		t.Errorf("NOTES:\n%s", r.notes)
	}
	if _, err := render(t, "pulltrace", "pulltrace", map[string]any{"agent": map[string]any{"auth": map[string]any{"existingSecret": "x", "token": "y"}}}); err == nil ||
		!strings.Contains(err.Error(), "both set") {
		t.Errorf("token and existingSecret together: %v", err)
	}
}

func TestRuntimeSocketDisabled(t *testing.T) {
	r := checked(t, setPath(nil, "runtimeSocket.enabled", false))
	if n := len(all[*appsv1.DaemonSet](r)); n != 0 {
		t.Errorf("%d DaemonSets with the socket disabled", n)
	}
	if has[*corev1.ServiceAccount](r, "pulltrace-agent") {
		t.Error("agent ServiceAccount without an agent")
	}
	if strings.Contains(r.raw, "hostPath") {
		t.Error("a hostPath volume is rendered with the socket disabled")
	}
	r.server()
	if !strings.Contains(r.notes, "NO AGENT IS RUNNING") || !strings.Contains(r.notes, "NO image pulls") {
		t.Errorf("NOTES do not say loudly that no agent runs:\n%s", r.notes)
	}
	// Acknowledgement is irrelevant without the socket.
	checked(t, map[string]any{"runtimeSocket": map[string]any{"enabled": false, "risksAcknowledged": false}})
}

func TestRisksNotAcknowledgedFails(t *testing.T) {
	_, err := render(t, "pulltrace", "pulltrace", setPath(nil, "runtimeSocket.risksAcknowledged", false))
	if err == nil {
		t.Fatal("socket enabled without acknowledgement rendered")
	}
	for _, want := range []string{"root-equivalent", "runtimeSocket.risksAcknowledged=true", "runtimeSocket.enabled=false", "/run/containerd/containerd.sock"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
}

func TestIngressNetworkPolicyServiceMonitor(t *testing.T) {
	vals := map[string]any{
		"ingress": map[string]any{
			"enabled":     true,
			"className":   "nginx",
			"annotations": map[string]any{"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
			"hosts":       []any{map[string]any{"host": "pt.example.org", "paths": []any{map[string]any{"path": "/", "pathType": "Prefix"}}}},
			"tls":         []any{map[string]any{"secretName": "pt-tls", "hosts": []any{"pt.example.org"}}},
		},
		"networkPolicy": map[string]any{
			"enabled":                     true,
			"allowedNamespaceSelectors":   []any{map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "ingress-nginx"}}},
			"monitoringNamespaceSelector": map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "observability"}},
			"apiServerCIDRs":              []any{"172.18.0.2/32"},
		},
		"serviceMonitor":      map[string]any{"enabled": true, "interval": "15s", "labels": map[string]any{"release": "kube-prometheus-stack"}},
		"podDisruptionBudget": map[string]any{"enabled": true},
		"server":              map[string]any{"replicas": 2},
	}
	r := checked(t, vals, monitoringAPI...)

	ing := one[*networkingv1.Ingress](r, "pulltrace-server")
	if ing.Spec.IngressClassName == nil || *ing.Spec.IngressClassName != "nginx" || ing.Annotations["nginx.ingress.kubernetes.io/proxy-buffering"] != "off" {
		t.Errorf("ingress class/annotations %+v %v", ing.Spec.IngressClassName, ing.Annotations)
	}
	if len(ing.Spec.Rules) != 1 || ing.Spec.Rules[0].Host != "pt.example.org" {
		t.Fatalf("ingress rules %+v", ing.Spec.Rules)
	}
	be := ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service
	if be.Name != "pulltrace-server" || be.Port.Name != "http" {
		t.Errorf("ingress backend %+v", be)
	}
	if !reflect.DeepEqual(ing.Spec.TLS, []networkingv1.IngressTLS{{Hosts: []string{"pt.example.org"}, SecretName: "pt-tls"}}) {
		t.Errorf("ingress tls %+v", ing.Spec.TLS)
	}

	np := r.serverPolicy()
	if !reflect.DeepEqual(np.Spec.PodSelector.MatchLabels, r.server().Spec.Selector.MatchLabels) ||
		!reflect.DeepEqual(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || len(np.Spec.Ingress) != 2 {
		t.Fatalf("server NetworkPolicy %+v", np.Spec)
	}
	web, metrics := np.Spec.Ingress[0], np.Spec.Ingress[1]
	if len(web.Ports) != 1 || *web.Ports[0].Port != intstr.FromString("http") {
		t.Errorf("first rule ports %+v", web.Ports)
	}
	if len(web.From) != 3 {
		t.Fatalf("http peers %+v, want agents+test, ingress namespace, API server", web.From)
	}
	agents := web.From[0].PodSelector
	if agents == nil || web.From[0].NamespaceSelector != nil || agents.MatchLabels["app.kubernetes.io/instance"] != "pulltrace" ||
		!reflect.DeepEqual(agents.MatchExpressions, []metav1.LabelSelectorRequirement{{Key: "app.kubernetes.io/component", Operator: metav1.LabelSelectorOpIn, Values: []string{"agent", "test"}}}) {
		t.Errorf("agent peer %+v", web.From[0])
	}
	// The peers admitted must match the real agent and test pods.
	for _, l := range []map[string]string{r.agent().Spec.Template.Labels, r.testPod().Labels} {
		sel, err := metav1.LabelSelectorAsSelector(agents)
		if err != nil {
			t.Fatal(err)
		}
		if !sel.Matches(labels.Set(l)) {
			t.Errorf("NetworkPolicy peer %v does not admit pod labels %v", agents, l)
		}
	}
	if ns := web.From[1].NamespaceSelector; ns == nil || ns.MatchLabels["kubernetes.io/metadata.name"] != "ingress-nginx" {
		t.Errorf("allowed namespace peer %+v", web.From[1])
	}
	if ip := web.From[2].IPBlock; ip == nil || ip.CIDR != "172.18.0.2/32" {
		t.Errorf("API server peer %+v", web.From[2])
	}
	if len(metrics.Ports) != 1 || *metrics.Ports[0].Port != intstr.FromString("metrics") ||
		metrics.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "observability" {
		t.Errorf("metrics rule %+v", metrics)
	}
	anp := one[*networkingv1.NetworkPolicy](r, "pulltrace-agent")
	if len(anp.Spec.Ingress) != 1 || *anp.Spec.Ingress[0].Ports[0].Port != intstr.FromString("health") ||
		anp.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "observability" {
		t.Errorf("agent NetworkPolicy %+v", anp.Spec)
	}
	if strings.Contains(r.notes, "WARNING") {
		t.Errorf("NOTES warn although everything is configured:\n%s", r.notes)
	}

	if len(r.monitors) != 1 {
		t.Fatalf("%d ServiceMonitors", len(r.monitors))
	}
	sm := r.monitors[0]
	if sm.Labels["release"] != "kube-prometheus-stack" || len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" ||
		sm.Spec.Endpoints[0].Interval != "15s" || !reflect.DeepEqual(sm.Spec.NamespaceSelector.MatchNames, []string{"pulltrace"}) ||
		!selects(sm.Spec.Selector, one[*corev1.Service](r, "pulltrace-server").Labels) {
		t.Errorf("ServiceMonitor %+v", sm)
	}

	pdb := r.pdb()
	if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) || pdb.Spec.MinAvailable != nil ||
		!reflect.DeepEqual(pdb.Spec.Selector.MatchLabels, r.server().Spec.Selector.MatchLabels) {
		t.Errorf("PDB %+v", pdb.Spec)
	}

	// Same values on a cluster without the Prometheus Operator: no ServiceMonitor, and NOTES say so.
	r = checked(t, vals)
	if len(r.monitors) != 0 || !strings.Contains(r.notes, "NO ServiceMonitor was created") {
		t.Errorf("%d ServiceMonitors without the API; NOTES:\n%s", len(r.monitors), r.notes)
	}
}

func TestNetworkPolicyWithoutAPIServerCIDRsWarns(t *testing.T) {
	r := checked(t, setPath(nil, "networkPolicy.enabled", true))
	web := r.serverPolicy().Spec.Ingress[0]
	if len(web.From) != 1 || web.From[0].PodSelector == nil {
		t.Errorf("http peers %+v, want only this release's pods", web.From)
	}
	if !strings.Contains(r.notes, "networkPolicy.apiServerCIDRs is empty") {
		t.Errorf("NOTES do not warn that the plugin is blocked:\n%s", r.notes)
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	for name, tc := range map[string]struct {
		vals map[string]any
		want string
	}{
		"unknown top-level key":  {map[string]any{"serverReplicas": 2}, "serverReplicas"},
		"unknown nested key":     {setPath(nil, "server.replica", 2), "replica"},
		"unknown key deep down":  {setPath(nil, "agent.containerd.socket", "/x.sock"), "socket"},
		"replicas not a number":  {setPath(nil, "server.replicas", "three"), "replicas"},
		"bool given as string":   {setPath(nil, "runtimeSocket.enabled", "yes"), "enabled"},
		"port out of range":      {setPath(nil, "server.service.port", 70000), "port"},
		"duration without unit":  {setPath(nil, "config.historyTTL", "30"), "historyTTL"},
		"unknown log level":      {setPath(nil, "config.logLevel", "verbose"), "logLevel"},
		"relative socket path":   {setPath(nil, "agent.containerd.socketPath", "containerd.sock"), "socketPath"},
		"bad namespace list":     {setPath(nil, "config.watchNamespaces", "Team_A"), "watchNamespaces"},
		"memory limit removed":   {setPath(nil, "server.resources.limits.memory", nil), "memory"},
		"toleration typo":        {setPath(nil, "agent.tolerations", []any{map[string]any{"operater": "Exists"}}), "operater"},
		"selector typo":          {setPath(nil, "networkPolicy.monitoringNamespaceSelector", map[string]any{"matchLabel": map[string]any{}}), "matchLabel"},
		"cidr without prefix":    {setPath(nil, "networkPolicy.apiServerCIDRs", []any{"10.0.0.1"}), "apiServerCIDRs"},
		"annotations not string": {setPath(nil, "ingress.annotations", map[string]any{"a": 1}), "annotations"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := render(t, "pulltrace", "pulltrace", tc.vals)
			if err == nil {
				t.Fatal("rendered")
			}
			if !strings.Contains(err.Error(), "schema") && !strings.Contains(err.Error(), "jsonschema") {
				t.Errorf("not a schema error: %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not name %q: %v", tc.want, err)
			}
		})
	}
}

func TestNamesAndNamespace(t *testing.T) {
	r, err := render(t, "demo", "observability", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.invariants()
	for _, n := range []string{"demo-pulltrace-server", "demo-pulltrace-server-headless"} {
		one[*corev1.Service](r, n)
	}
	wantFlag(t, onlyContainer(t, one[*appsv1.DaemonSet](r, "demo-pulltrace-agent").Spec.Template.Spec),
		"--server", "http://demo-pulltrace-server-headless.observability.svc:8080")
	if !strings.Contains(r.notes, "kubectl pulltrace ui --server-namespace observability --server-service demo-pulltrace-server") {
		t.Errorf("NOTES do not explain the non-default service to the plugin user:\n%s", r.notes)
	}
	if cr := all[*rbacv1.ClusterRole](r)[0]; cr.Name != "observability-demo-pulltrace-server" {
		t.Errorf("ClusterRole %s is not namespaced by name (two releases would collide)", cr.Name)
	}

	// namespace: a guard that must match the release namespace when set.
	if _, err := render(t, "demo", "observability", map[string]any{"namespace": "observability"}); err != nil {
		t.Errorf("namespace equal to the release namespace: %v", err)
	}
	_, err = render(t, "demo", "default", map[string]any{"namespace": "pulltrace"})
	if err == nil || !strings.Contains(err.Error(), "-n pulltrace") {
		t.Errorf("namespace different from the release namespace: %v", err)
	}

	// Long release names still give valid Service names.
	long := strings.Repeat("x", 53)
	r, err = render(t, long, "pulltrace", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all[*corev1.Service](r) {
		if len(s.Name) > 63 {
			t.Errorf("Service name %s longer than 63", s.Name)
		}
	}
}

// TestGeneratedTokenSurvivesUpgrade renders against a cluster that already holds the release's
// token Secret: the chart must reuse it, or every upgrade would lock out running agents.
func TestGeneratedTokenSurvivesUpgrade(t *testing.T) {
	c := loadChart(t)
	existing := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "pulltrace-token", Namespace: "pulltrace"},
		Data:       map[string][]byte{"token": []byte("kept-from-the-first-install")},
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(existing)
	if err != nil {
		t.Fatal(err)
	}
	// The unstructured form holds data base64-encoded, as the API server returns it.
	u["data"] = map[string]any{"token": base64.StdEncoding.EncodeToString([]byte("kept-from-the-first-install"))}
	client := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme(), &unstructured.Unstructured{Object: u})

	caps := chartutil.DefaultCapabilities.Copy()
	kv, _ := chartutil.ParseKubeVersion(kubeVersion)
	caps.KubeVersion = *kv
	vals, err := chartutil.ToRenderValues(c, map[string]any{}, chartutil.ReleaseOptions{Name: "pulltrace", Namespace: "pulltrace", IsUpgrade: true, Revision: 2}, caps)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.RenderWithClientProvider(c, vals, secretsProvider{client})
	if err != nil {
		t.Fatal(err)
	}
	var sec corev1.Secret
	if err := yaml.UnmarshalStrict([]byte(out["pulltrace/templates/secret.yaml"]), &sec); err != nil {
		t.Fatal(err)
	}
	if got := string(sec.Data["token"]); got != "kept-from-the-first-install" {
		t.Errorf("upgrade replaced the token with %q", got)
	}
	if notes := out["pulltrace/templates/NOTES.txt"]; !strings.Contains(notes, "read back with lookup") || strings.Contains(notes, "found no stored token") {
		t.Errorf("NOTES do not say the stored token was found:\n%s", notes)
	}
	// Both pod templates carry the same checksum of it, so they roll together when it changes.
	sums := regexp.MustCompile(`checksum/token: ([0-9a-f]{64})`).FindAllStringSubmatch(out["pulltrace/templates/server-deployment.yaml"]+out["pulltrace/templates/agent-daemonset.yaml"], -1)
	if len(sums) != 2 || sums[0][1] != sums[1][1] {
		t.Errorf("token checksums %v", sums)
	}
}

// TestEveryValueIsWired walks every setting in values.yaml, changes it alone, and checks the
// rendered objects changed the way the setting promises. A new key in values.yaml without an
// entry here fails the test: no setting can be declared and silently ignored.
func TestEveryValueIsWired(t *testing.T) {
	raw, err := fs.ReadFile(FS, "pulltrace/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var defaults map[string]any
	if err := yaml.Unmarshal(raw, &defaults); err != nil {
		t.Fatal(err)
	}
	freeForm := map[string]bool{}
	for _, p := range []string{"agent.resources", "server.resources", "agent.nodeSelector", "server.nodeSelector",
		"agent.affinity", "server.affinity", "ingress.annotations", "serviceMonitor.labels", "networkPolicy.monitoringNamespaceSelector",
		"agent.podAnnotations", "server.podAnnotations", "agent.podLabels", "server.podLabels",
		"agent.serviceAccount.annotations", "server.serviceAccount.annotations", "agent.updateStrategy",
		"podMonitor.labels", "prometheusRule.labels", "prometheusRule.alertLabels", "dashboard.labels"} {
		freeForm[p] = true
	}

	type wire struct {
		value   any
		with    map[string]any // other settings the value needs to matter
		apis    []string
		wantErr string
		check   func(t *testing.T, r *rendered)
	}
	agentC := func(r *rendered) corev1.Container { return onlyContainer(r.t, r.agent().Spec.Template.Spec) }
	serverC := func(r *rendered) corev1.Container { return onlyContainer(r.t, r.server().Spec.Template.Spec) }
	podSpecs := func(r *rendered) map[string]corev1.PodSpec {
		return map[string]corev1.PodSpec{"agent": r.agent().Spec.Template.Spec, "server": r.server().Spec.Template.Spec}
	}
	ingressOn := setPath(nil, "ingress.enabled", true)
	npOn := setPath(nil, "networkPolicy.enabled", true)
	smOn := setPath(nil, "serviceMonitor.enabled", true)
	pdbOn := setPath(nil, "podDisruptionBudget.enabled", true)
	pmOn := setPath(nil, "podMonitor.enabled", true)
	prOn := setPath(nil, "prometheusRule.enabled", true)
	dashOn := setPath(nil, "dashboard.enabled", true)
	digest := "sha256:" + strings.Repeat("ab", 32)
	affinity := map[string]any{"nodeAffinity": map[string]any{"requiredDuringSchedulingIgnoredDuringExecution": map[string]any{
		"nodeSelectorTerms": []any{map[string]any{"matchExpressions": []any{map[string]any{"key": "pool", "operator": "In", "values": []any{"pt"}}}}}}}}
	wantAffinity := func(t *testing.T, a *corev1.Affinity) {
		t.Helper()
		if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0].Values[0] != "pt" {
			t.Errorf("affinity %+v", a)
		}
	}
	wantResources := func(t *testing.T, c corev1.Container) {
		t.Helper()
		if !c.Resources.Limits.Memory().Equal(resource.MustParse("99Mi")) || !c.Resources.Requests.Cpu().Equal(resource.MustParse("7m")) {
			t.Errorf("resources %+v", c.Resources)
		}
	}
	resources := map[string]any{"requests": map[string]any{"cpu": "7m"}, "limits": map[string]any{"memory": "99Mi"}}
	tolerations := []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": "pt", "effect": "NoSchedule"}}
	wantTolerations := []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "pt", Effect: corev1.TaintEffectNoSchedule}}

	wires := map[string]wire{
		"nameOverride": {value: "ptrace", check: func(t *testing.T, r *rendered) {
			d := one[*appsv1.Deployment](r, "pulltrace-ptrace-server")
			if d.Labels["app.kubernetes.io/name"] != "ptrace" {
				t.Errorf("labels %v", d.Labels)
			}
		}},
		"fullnameOverride": {value: "pt", check: func(t *testing.T, r *rendered) {
			one[*corev1.Service](r, "pt-server")
			wantFlag(t, onlyContainer(t, one[*appsv1.DaemonSet](r, "pt-agent").Spec.Template.Spec), "--server", "http://pt-server-headless.pulltrace.svc:8080")
		}},
		"namespace": {value: "pulltrace", check: func(t *testing.T, r *rendered) {
			if _, err := render(t, "pulltrace", "elsewhere", map[string]any{"namespace": "pulltrace"}); err == nil {
				t.Error("a namespace different from the release namespace rendered")
			}
		}},
		"imagePullSecrets": {value: []any{map[string]any{"name": "regcred"}}, check: func(t *testing.T, r *rendered) {
			specs := podSpecs(r)
			specs["test"] = r.testPod().Spec
			for n, s := range specs {
				if !reflect.DeepEqual(s.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "regcred"}}) {
					t.Errorf("%s imagePullSecrets %+v", n, s.ImagePullSecrets)
				}
			}
		}},
		"runtimeSocket.enabled": {value: false, check: func(t *testing.T, r *rendered) {
			if len(all[*appsv1.DaemonSet](r)) != 0 {
				t.Error("agent deployed")
			}
		}},
		"runtimeSocket.risksAcknowledged": {value: false, wantErr: "runtimeSocket.risksAcknowledged=true"},
		"config.logLevel": {value: "warn", check: func(t *testing.T, r *rendered) {
			wantFlag(t, agentC(r), "--log-level", "warn")
			wantFlag(t, serverC(r), "--log-level", "warn")
		}},
		"config.watchNamespaces": {value: "apps", check: func(t *testing.T, r *rendered) {
			wantFlag(t, serverC(r), "--watch-namespaces", "apps")
			if ro := r.roles(); len(ro) != 1 || ro[0].Namespace != "apps" {
				t.Errorf("roles %+v", ro)
			}
		}},
		"config.historyTTL": {value: "2h", check: func(t *testing.T, r *rendered) { wantFlag(t, serverC(r), "--history-ttl", "2h") }},
		"config.reportInterval": {value: "5s", check: func(t *testing.T, r *rendered) {
			wantFlag(t, agentC(r), "--report-interval", "5s")
		}},
		"agent.image.repository": {value: "registry.local/pt-agent", check: func(t *testing.T, r *rendered) {
			if c := agentC(r); c.Image != "registry.local/pt-agent:0.1.0" {
				t.Errorf("image %s", c.Image)
			}
		}},
		"agent.image.tag": {value: "v9.9.9", check: func(t *testing.T, r *rendered) {
			if c := agentC(r); c.Image != "ghcr.io/d44b/pulltrace-agent:v9.9.9" {
				t.Errorf("image %s", c.Image)
			}
		}},
		"agent.image.pullPolicy": {value: "Always", check: func(t *testing.T, r *rendered) {
			if c := agentC(r); c.ImagePullPolicy != corev1.PullAlways {
				t.Errorf("pullPolicy %s", c.ImagePullPolicy)
			}
		}},
		"agent.containerd.socketPath": {value: "/var/run/alt/containerd.sock", check: func(t *testing.T, r *rendered) {
			wantFlag(t, agentC(r), "--containerd-socket", "/var/run/alt/containerd.sock")
			if v := volume(t, r.agent().Spec.Template.Spec, "containerd-socket"); v.HostPath.Path != "/var/run/alt/containerd.sock" {
				t.Errorf("hostPath %s", v.HostPath.Path)
			}
		}},
		"agent.auth.token": {value: "wired-token", check: func(t *testing.T, r *rendered) {
			if got := one[*corev1.Secret](r, "pulltrace-token").Data["token"]; string(got) != "wired-token" {
				t.Errorf("token %q", got)
			}
		}},
		"agent.auth.existingSecret": {value: "mine", check: func(t *testing.T, r *rendered) {
			for n, s := range podSpecs(r) {
				if v := volume(t, s, "token"); v.Secret.SecretName != "mine" {
					t.Errorf("%s token Secret %s", n, v.Secret.SecretName)
				}
			}
		}},
		"agent.auth.existingSecretKey": {value: "k", with: setPath(nil, "agent.auth.existingSecret", "mine"), check: func(t *testing.T, r *rendered) {
			for n, s := range podSpecs(r) {
				if v := volume(t, s, "token"); v.Secret.Items[0].Key != "k" {
					t.Errorf("%s token key %s", n, v.Secret.Items[0].Key)
				}
			}
		}},
		"agent.resources": {value: resources, check: func(t *testing.T, r *rendered) {
			wantResources(t, agentC(r))
			if e, _ := envVar(agentC(r), "GOMEMLIMIT"); e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef.Resource != "limits.memory" {
				t.Errorf("GOMEMLIMIT %+v", e)
			}
		}},
		"agent.nodeSelector": {value: map[string]any{"pool": "pt"}, check: func(t *testing.T, r *rendered) {
			if r.agent().Spec.Template.Spec.NodeSelector["pool"] != "pt" {
				t.Errorf("nodeSelector %v", r.agent().Spec.Template.Spec.NodeSelector)
			}
		}},
		"agent.tolerations": {value: tolerations, check: func(t *testing.T, r *rendered) {
			if got := r.agent().Spec.Template.Spec.Tolerations; !reflect.DeepEqual(got, wantTolerations) {
				t.Errorf("tolerations %+v", got)
			}
		}},
		"agent.affinity": {value: affinity, check: func(t *testing.T, r *rendered) { wantAffinity(t, r.agent().Spec.Template.Spec.Affinity) }},
		"agent.priorityClassName": {value: "system-node-critical", check: func(t *testing.T, r *rendered) {
			if p := r.agent().Spec.Template.Spec.PriorityClassName; p != "system-node-critical" {
				t.Errorf("priorityClassName %q", p)
			}
		}},
		"server.replicas": {value: 4, check: func(t *testing.T, r *rendered) {
			if n := *r.server().Spec.Replicas; n != 4 {
				t.Errorf("replicas %d", n)
			}
		}},
		"server.image.repository": {value: "registry.local/pt-server", check: func(t *testing.T, r *rendered) {
			if c := serverC(r); c.Image != "registry.local/pt-server:0.1.0" {
				t.Errorf("image %s", c.Image)
			}
		}},
		"server.image.tag": {value: "v9.9.9", check: func(t *testing.T, r *rendered) {
			if c := serverC(r); c.Image != "ghcr.io/d44b/pulltrace-server:v9.9.9" {
				t.Errorf("image %s", c.Image)
			}
		}},
		"server.image.pullPolicy": {value: "Never", check: func(t *testing.T, r *rendered) {
			if c := serverC(r); c.ImagePullPolicy != corev1.PullNever {
				t.Errorf("pullPolicy %s", c.ImagePullPolicy)
			}
		}},
		"server.service.port": {value: 8181, check: func(t *testing.T, r *rendered) {
			wantFlag(t, serverC(r), "--listen", ":8181")
			wantFlag(t, agentC(r), "--server", "http://pulltrace-server-headless.pulltrace.svc:8181")
			if servicePort(t, one[*corev1.Service](r, "pulltrace-server"), "http") != 8181 || port(t, serverC(r), "http") != 8181 {
				t.Error("port not on the Service and container")
			}
		}},
		"server.service.metricsPort": {value: 9191, check: func(t *testing.T, r *rendered) {
			wantFlag(t, serverC(r), "--metrics-addr", ":9191")
			if servicePort(t, one[*corev1.Service](r, "pulltrace-server"), "metrics") != 9191 || port(t, serverC(r), "metrics") != 9191 {
				t.Error("metrics port not on the Service and container")
			}
		}},
		"server.resources": {value: resources, check: func(t *testing.T, r *rendered) { wantResources(t, serverC(r)) }},
		"server.nodeSelector": {value: map[string]any{"pool": "pt"}, check: func(t *testing.T, r *rendered) {
			if r.server().Spec.Template.Spec.NodeSelector["pool"] != "pt" {
				t.Errorf("nodeSelector %v", r.server().Spec.Template.Spec.NodeSelector)
			}
		}},
		"server.tolerations": {value: tolerations, check: func(t *testing.T, r *rendered) {
			if got := r.server().Spec.Template.Spec.Tolerations; !reflect.DeepEqual(got, wantTolerations) {
				t.Errorf("tolerations %+v", got)
			}
		}},
		"server.affinity": {value: affinity, check: func(t *testing.T, r *rendered) { wantAffinity(t, r.server().Spec.Template.Spec.Affinity) }},
		"server.priorityClassName": {value: "high", check: func(t *testing.T, r *rendered) {
			if p := r.server().Spec.Template.Spec.PriorityClassName; p != "high" {
				t.Errorf("priorityClassName %q", p)
			}
		}},
		"ingress.enabled": {value: true, check: func(t *testing.T, r *rendered) {
			ing := one[*networkingv1.Ingress](r, "pulltrace-server")
			if ing.Spec.Rules[0].Host != "pulltrace.example.com" || ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name != "pulltrace-server" {
				t.Errorf("ingress %+v", ing.Spec)
			}
		}},
		"ingress.className": {value: "traefik", with: ingressOn, check: func(t *testing.T, r *rendered) {
			if c := one[*networkingv1.Ingress](r, "pulltrace-server").Spec.IngressClassName; c == nil || *c != "traefik" {
				t.Errorf("class %v", c)
			}
		}},
		"ingress.annotations": {value: map[string]any{"a.example/b": "c"}, with: ingressOn, check: func(t *testing.T, r *rendered) {
			if a := one[*networkingv1.Ingress](r, "pulltrace-server").Annotations; a["a.example/b"] != "c" {
				t.Errorf("annotations %v", a)
			}
		}},
		"ingress.hosts": {value: []any{map[string]any{"host": "h.example", "paths": []any{map[string]any{"path": "/pt", "pathType": "Exact"}}}}, with: ingressOn,
			check: func(t *testing.T, r *rendered) {
				rule := one[*networkingv1.Ingress](r, "pulltrace-server").Spec.Rules[0]
				if rule.Host != "h.example" || rule.HTTP.Paths[0].Path != "/pt" || *rule.HTTP.Paths[0].PathType != networkingv1.PathTypeExact {
					t.Errorf("rule %+v", rule)
				}
			}},
		"ingress.tls": {value: []any{map[string]any{"secretName": "s", "hosts": []any{"pulltrace.example.com"}}}, with: ingressOn, check: func(t *testing.T, r *rendered) {
			if tls := one[*networkingv1.Ingress](r, "pulltrace-server").Spec.TLS; len(tls) != 1 || tls[0].SecretName != "s" {
				t.Errorf("tls %+v", tls)
			}
		}},
		"networkPolicy.enabled": {value: true, check: func(t *testing.T, r *rendered) {
			r.serverPolicy()
			one[*networkingv1.NetworkPolicy](r, "pulltrace-agent")
		}},
		"networkPolicy.allowedNamespaceSelectors": {value: []any{map[string]any{"matchLabels": map[string]any{"team": "x"}}}, with: npOn, check: func(t *testing.T, r *rendered) {
			from := r.serverPolicy().Spec.Ingress[0].From
			if len(from) != 2 || from[1].NamespaceSelector.MatchLabels["team"] != "x" {
				t.Errorf("peers %+v", from)
			}
		}},
		"networkPolicy.monitoringNamespaceSelector": {value: map[string]any{"matchLabels": map[string]any{"prom": "yes"}}, with: npOn, check: func(t *testing.T, r *rendered) {
			if sel := r.serverPolicy().Spec.Ingress[1].From[0].NamespaceSelector; sel.MatchLabels["prom"] != "yes" {
				t.Errorf("metrics peer %+v", sel)
			}
		}},
		"networkPolicy.apiServerCIDRs": {value: []any{"10.9.8.7/32", "fd00::1/128"}, with: npOn, check: func(t *testing.T, r *rendered) {
			from := r.serverPolicy().Spec.Ingress[0].From
			if len(from) != 3 || from[1].IPBlock.CIDR != "10.9.8.7/32" || from[2].IPBlock.CIDR != "fd00::1/128" {
				t.Errorf("peers %+v", from)
			}
		}},
		"serviceMonitor.enabled": {value: true, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			if len(r.monitors) != 1 {
				t.Errorf("%d ServiceMonitors", len(r.monitors))
			}
		}},
		"serviceMonitor.interval": {value: "1m", with: smOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			if r.monitors[0].Spec.Endpoints[0].Interval != "1m" {
				t.Errorf("interval %s", r.monitors[0].Spec.Endpoints[0].Interval)
			}
		}},
		"serviceMonitor.labels": {value: map[string]any{"release": "prom"}, with: smOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			if r.monitors[0].Labels["release"] != "prom" {
				t.Errorf("labels %v", r.monitors[0].Labels)
			}
		}},
		"podDisruptionBudget.enabled": {value: true, check: func(t *testing.T, r *rendered) { r.pdb() }},
		"podDisruptionBudget.maxUnavailable": {value: "50%", with: pdbOn, check: func(t *testing.T, r *rendered) {
			if m := r.pdb().Spec.MaxUnavailable; m == nil || *m != intstr.FromString("50%") {
				t.Errorf("maxUnavailable %v", m)
			}
		}},
		"imageRegistry": {value: "mirror.local:5000", check: func(t *testing.T, r *rendered) {
			for n, want := range map[string]string{"agent": "mirror.local:5000/d44b/pulltrace-agent:0.1.0", "server": "mirror.local:5000/d44b/pulltrace-server:0.1.0"} {
				if c := onlyContainer(t, podSpecs(r)[n]); c.Image != want {
					t.Errorf("%s image %s, want %s", n, c.Image, want)
				}
			}
			if c := onlyContainer(t, r.testPod().Spec); c.Image != "mirror.local:5000/library/busybox:1.37" {
				t.Errorf("test image %s", c.Image)
			}
		}},
		"rbac.create": {value: false, check: func(t *testing.T, r *rendered) {
			if n := len(all[*rbacv1.ClusterRole](r)) + len(all[*rbacv1.ClusterRoleBinding](r)) + len(r.roles()) + len(all[*rbacv1.RoleBinding](r)); n != 0 {
				t.Errorf("%d RBAC objects with rbac.create=false", n)
			}
			if r.server().Spec.Template.Spec.ServiceAccountName != "pulltrace-server" {
				t.Error("server lost its ServiceAccount")
			}
		}},
		"agent.image.digest": {value: digest, check: func(t *testing.T, r *rendered) {
			if c := agentC(r); c.Image != "ghcr.io/d44b/pulltrace-agent@"+digest {
				t.Errorf("image %s", c.Image)
			}
		}},
		"server.image.digest": {value: digest, check: func(t *testing.T, r *rendered) {
			if c := serverC(r); c.Image != "ghcr.io/d44b/pulltrace-server@"+digest {
				t.Errorf("image %s", c.Image)
			}
		}},
		"agent.serviceAccount.create": {value: false, check: func(t *testing.T, r *rendered) {
			if has[*corev1.ServiceAccount](r, "pulltrace-agent") || r.agent().Spec.Template.Spec.ServiceAccountName != "default" {
				t.Errorf("agent account %q", r.agent().Spec.Template.Spec.ServiceAccountName)
			}
		}},
		"agent.serviceAccount.name": {value: "pt-nodes", check: func(t *testing.T, r *rendered) {
			one[*corev1.ServiceAccount](r, "pt-nodes")
			if n := r.agent().Spec.Template.Spec.ServiceAccountName; n != "pt-nodes" {
				t.Errorf("agent account %q", n)
			}
		}},
		"agent.serviceAccount.annotations": {value: map[string]any{"iam.example/role": "r"}, check: func(t *testing.T, r *rendered) {
			if a := one[*corev1.ServiceAccount](r, "pulltrace-agent").Annotations; a["iam.example/role"] != "r" {
				t.Errorf("annotations %v", a)
			}
		}},
		"server.serviceAccount.create": {value: false, with: setPath(nil, "server.serviceAccount.name", "platform-sa"), check: func(t *testing.T, r *rendered) {
			if has[*corev1.ServiceAccount](r, "platform-sa") || has[*corev1.ServiceAccount](r, "pulltrace-server") {
				t.Error("a server ServiceAccount was created")
			}
			if n := r.server().Spec.Template.Spec.ServiceAccountName; n != "platform-sa" {
				t.Errorf("server account %q", n)
			}
			if s := all[*rbacv1.ClusterRoleBinding](r)[0].Subjects; s[0].Name != "platform-sa" {
				t.Errorf("binding subjects %+v", s)
			}
		}},
		"server.serviceAccount.name": {value: "pt-api", check: func(t *testing.T, r *rendered) {
			one[*corev1.ServiceAccount](r, "pt-api")
			if n := r.server().Spec.Template.Spec.ServiceAccountName; n != "pt-api" {
				t.Errorf("server account %q", n)
			}
			if s := all[*rbacv1.ClusterRoleBinding](r)[0].Subjects; s[0].Name != "pt-api" {
				t.Errorf("binding subjects %+v", s)
			}
		}},
		"server.serviceAccount.annotations": {value: map[string]any{"iam.gke.io/gcp-service-account": "pt@p.iam.gserviceaccount.com"}, check: func(t *testing.T, r *rendered) {
			if a := one[*corev1.ServiceAccount](r, "pulltrace-server").Annotations; a["iam.gke.io/gcp-service-account"] != "pt@p.iam.gserviceaccount.com" {
				t.Errorf("annotations %v", a)
			}
		}},
		"agent.podAnnotations": {value: map[string]any{"prometheus.io/scrape": "true", "prometheus.io/port": "9091"}, check: func(t *testing.T, r *rendered) {
			a := r.agent().Spec.Template.Annotations
			if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "9091" || a["checksum/token"] == "" {
				t.Errorf("pod annotations %v", a)
			}
		}},
		"server.podAnnotations": {value: map[string]any{"a.example/b": "c"}, check: func(t *testing.T, r *rendered) {
			if a := r.server().Spec.Template.Annotations; a["a.example/b"] != "c" || a["checksum/token"] == "" {
				t.Errorf("pod annotations %v", a)
			}
		}},
		"agent.podLabels": {value: map[string]any{"team": "infra"}, check: func(t *testing.T, r *rendered) {
			ds := r.agent()
			if ds.Spec.Template.Labels["team"] != "infra" || !selects(*ds.Spec.Selector, ds.Spec.Template.Labels) {
				t.Errorf("pod labels %v", ds.Spec.Template.Labels)
			}
		}},
		"server.podLabels": {value: map[string]any{"team": "infra"}, check: func(t *testing.T, r *rendered) {
			d := r.server()
			if d.Spec.Template.Labels["team"] != "infra" || !selects(*d.Spec.Selector, d.Spec.Template.Labels) {
				t.Errorf("pod labels %v", d.Spec.Template.Labels)
			}
		}},
		"agent.extraArgs": {value: []any{"--poll-interval=500ms", "--stall-timeout=1m"}, check: func(t *testing.T, r *rendered) {
			wantFlag(t, agentC(r), "--poll-interval", "500ms")
			wantFlag(t, agentC(r), "--stall-timeout", "1m")
		}},
		"server.extraArgs": {value: []any{"--max-pulls=20000", "--agent-timeout=1m"}, check: func(t *testing.T, r *rendered) {
			wantFlag(t, serverC(r), "--max-pulls", "20000")
			wantFlag(t, serverC(r), "--agent-timeout", "1m")
		}},
		"agent.extraEnv": {value: []any{map[string]any{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}}, check: func(t *testing.T, r *rendered) {
			if e, ok := envVar(agentC(r), "HTTPS_PROXY"); !ok || e.Value != "http://proxy:3128" {
				t.Errorf("env %+v", agentC(r).Env)
			}
			if _, ok := envVar(agentC(r), "NODE_NAME"); !ok {
				t.Error("extraEnv replaced NODE_NAME")
			}
		}},
		"server.extraEnv": {value: []any{map[string]any{"name": "GODEBUG", "value": "http2debug=1"}}, check: func(t *testing.T, r *rendered) {
			if e, ok := envVar(serverC(r), "GODEBUG"); !ok || e.Value != "http2debug=1" {
				t.Errorf("env %+v", serverC(r).Env)
			}
		}},
		"agent.updateStrategy": {value: map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxUnavailable": "10%"}}, check: func(t *testing.T, r *rendered) {
			u := r.agent().Spec.UpdateStrategy
			if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil || *u.RollingUpdate.MaxUnavailable != intstr.FromString("10%") {
				t.Errorf("updateStrategy %+v", u)
			}
		}},
		"podMonitor.enabled": {value: true, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			if len(r.pods) != 1 || !selects(r.pods[0].Spec.Selector, r.agent().Spec.Template.Labels) {
				t.Errorf("PodMonitors %+v", r.pods)
			}
		}},
		"podMonitor.interval": {value: "1m", with: pmOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			if r.pods[0].Spec.PodMetricsEndpoints[0].Interval != "1m" {
				t.Errorf("interval %s", r.pods[0].Spec.PodMetricsEndpoints[0].Interval)
			}
		}},
		"podMonitor.labels": {value: map[string]any{"release": "prom"}, with: pmOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			if r.pods[0].Labels["release"] != "prom" {
				t.Errorf("labels %v", r.pods[0].Labels)
			}
		}},
		"prometheusRule.enabled": {value: true, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			if len(r.rules) != 1 || len(r.rules[0].Spec.Groups) != 1 || len(r.rules[0].Spec.Groups[0].Rules) != 5 {
				t.Errorf("PrometheusRules %+v", r.rules)
			}
		}},
		"prometheusRule.labels": {value: map[string]any{"release": "prom"}, with: prOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			if r.rules[0].Labels["release"] != "prom" {
				t.Errorf("labels %v", r.rules[0].Labels)
			}
		}},
		"prometheusRule.alertLabels": {value: map[string]any{"severity": "page", "team": "infra"}, with: prOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			for _, a := range r.rules[0].Spec.Groups[0].Rules {
				if a.Labels["severity"] != "page" || a.Labels["team"] != "infra" {
					t.Errorf("%s labels %v", a.Alert, a.Labels)
				}
			}
		}},
		"prometheusRule.stalledMinutes": {value: 7, with: prOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			wantRule(t, r, "PulltracePullStalled", "> 420", "")
		}},
		"prometheusRule.etaMinutes": {value: 45, with: prOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			wantRule(t, r, "PulltracePullSlow", "> 2700", "10m")
		}},
		"prometheusRule.etaForMinutes": {value: 20, with: prOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			wantRule(t, r, "PulltracePullSlow", "> 1800", "20m")
		}},
		"prometheusRule.failures": {value: 9, with: prOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			wantRule(t, r, "PulltracePullFailures", "[15m])) > 9", "")
		}},
		"prometheusRule.failuresWindow": {value: "1h", with: prOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			wantRule(t, r, "PulltracePullFailures", "[1h])) > 3", "")
		}},
		"prometheusRule.agentsMissingMinutes": {value: 30, with: prOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			wantRule(t, r, "PulltraceAgentsMissing", `daemonset="pulltrace-agent"`, "30m")
		}},
		"prometheusRule.silentMinutes": {value: 4, with: prOn, apis: monitoringAPI, check: func(t *testing.T, r *rendered) {
			wantRule(t, r, "PulltraceNodeSilent", "> 240 and on (node)", "")
		}},
		"dashboard.enabled": {value: true, check: func(t *testing.T, r *rendered) {
			cm := one[*corev1.ConfigMap](r, "pulltrace-dashboard")
			if cm.Labels["grafana_dashboard"] != "1" || !json.Valid([]byte(cm.Data["pulltrace.json"])) {
				t.Errorf("dashboard ConfigMap labels %v, valid JSON %v", cm.Labels, json.Valid([]byte(cm.Data["pulltrace.json"])))
			}
		}},
		"dashboard.sidecarLabel": {value: "grafana.example/dashboard", with: dashOn, check: func(t *testing.T, r *rendered) {
			if l := one[*corev1.ConfigMap](r, "pulltrace-dashboard").Labels; l["grafana.example/dashboard"] != "1" {
				t.Errorf("labels %v", l)
			}
		}},
		"dashboard.sidecarLabelValue": {value: "yes", with: dashOn, check: func(t *testing.T, r *rendered) {
			if l := one[*corev1.ConfigMap](r, "pulltrace-dashboard").Labels; l["grafana_dashboard"] != "yes" {
				t.Errorf("labels %v", l)
			}
		}},
		"dashboard.folder": {value: "Platform", with: dashOn, check: func(t *testing.T, r *rendered) {
			if a := one[*corev1.ConfigMap](r, "pulltrace-dashboard").Annotations; a["grafana_folder"] != "Platform" {
				t.Errorf("annotations %v", a)
			}
		}},
		"dashboard.labels": {value: map[string]any{"team": "infra"}, with: dashOn, check: func(t *testing.T, r *rendered) {
			if l := one[*corev1.ConfigMap](r, "pulltrace-dashboard").Labels; l["team"] != "infra" {
				t.Errorf("labels %v", l)
			}
		}},
		"test.image": {value: "registry.local/busybox:1", check: func(t *testing.T, r *rendered) {
			if c := onlyContainer(t, r.testPod().Spec); c.Image != "registry.local/busybox:1" {
				t.Errorf("image %s", c.Image)
			}
		}},
	}

	paths := leaves(defaults, "", freeForm)
	for _, p := range paths {
		if _, ok := wires[p]; !ok {
			t.Errorf("values.yaml setting %s has no wiring check in TestEveryValueIsWired", p)
		}
	}
	for p := range wires {
		if !slices.Contains(paths, p) {
			t.Errorf("wiring check for %s, which values.yaml does not have", p)
		}
	}
	for _, p := range paths {
		w, ok := wires[p]
		if !ok {
			continue
		}
		t.Run(p, func(t *testing.T) {
			vals := merge(w.with, setPath(nil, p, w.value))
			r, err := render(t, "pulltrace", "pulltrace", vals, w.apis...)
			if w.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), w.wantErr) {
					t.Errorf("want an error naming %q, got %v", w.wantErr, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("render: %v", err)
			}
			r.invariants()
			w.check(t, r)
		})
	}
}

func selects(sel metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(&sel)
	return err == nil && s.Matches(labels.Set(l))
}

// secretsProvider serves lookup "v1" "Secret" from a fake dynamic client.
type secretsProvider struct{ c dynamic.Interface }

func (p secretsProvider) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	return p.c.Resource(schema.GroupVersionResource{Version: "v1", Resource: strings.ToLower(kind) + "s"}), true, nil
}

// endpointsProvider serves lookup "v1" "Endpoints" from a fake dynamic client.
type endpointsProvider struct{ c dynamic.Interface }

func (p endpointsProvider) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	return p.c.Resource(schema.GroupVersionResource{Version: "v1", Resource: strings.ToLower(kind)}), true, nil
}

// With the policy on and no apiServerCIDRs, the chart admits the API server's own addresses
// from the endpoints of Service default/kubernetes, so `kubectl pulltrace` keeps working.
func TestNetworkPolicyFindsTheAPIServer(t *testing.T) {
	c := loadChart(t)
	ep := &corev1.Endpoints{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Endpoints"},
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: "default"},
		Subsets:    []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: "172.18.0.2"}, {IP: "fd00::2"}}}},
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ep)
	if err != nil {
		t.Fatal(err)
	}
	client := dynamicfake.NewSimpleDynamicClient(runtime.NewScheme())
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "endpoints"}
	if _, err := client.Resource(gvr).Namespace("default").Create(context.Background(), &unstructured.Unstructured{Object: u}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	kv, _ := chartutil.ParseKubeVersion(kubeVersion)
	caps.KubeVersion = *kv
	vals, err := chartutil.ToRenderValues(c, map[string]any{"networkPolicy": map[string]any{"enabled": true}},
		chartutil.ReleaseOptions{Name: "pulltrace", Namespace: "pulltrace", IsInstall: true, Revision: 1}, caps)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.RenderWithClientProvider(c, vals, endpointsProvider{client})
	if err != nil {
		t.Fatal(err)
	}
	np := out["pulltrace/templates/networkpolicy.yaml"]
	for _, want := range []string{"cidr: 172.18.0.2/32", "cidr: fd00::2/128"} {
		if !strings.Contains(np, want) {
			t.Errorf("network policy lacks %q:\n%s", want, np)
		}
	}
	notes := out["pulltrace/templates/NOTES.txt"]
	if strings.Contains(notes, "WARNING: networkPolicy.apiServerCIDRs") || !strings.Contains(notes, "found in the endpoints of Service default/kubernetes") {
		t.Errorf("NOTES do not say where the API server's address came from:\n%s", notes)
	}
}

// wantRule finds alert in the rendered PrometheusRule and checks its expression holds expr
// and its `for` is forDur.
func wantRule(t *testing.T, r *rendered, alert, expr, forDur string) {
	t.Helper()
	for _, g := range r.rules[0].Spec.Groups {
		for _, rule := range g.Rules {
			if rule.Alert != alert {
				continue
			}
			if !strings.Contains(rule.Expr, expr) || rule.For != forDur {
				t.Errorf("%s: expr %q for %q, want %q in it and for %q", alert, rule.Expr, rule.For, expr, forDur)
			}
			return
		}
	}
	t.Errorf("no alert %s", alert)
}
