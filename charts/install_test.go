package charts

// A real `helm install` and `helm upgrade` of the chart into a real kube-apiserver (the
// project's test cluster: etcd + kube-apiserver, no kubelet). The apiserver validates every
// object the chart makes, Pod Security admission judges the pod templates, RBAC is checked with
// SubjectAccessReviews, and the generated token is read back through Helm's lookup for real.

import (
	"context"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/harness/cluster"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/cli"
	"helm.sh/helm/v3/pkg/registry"
	"helm.sh/helm/v3/pkg/release"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
)

func helmConfig(t *testing.T, kubeconfig, ns string) *action.Configuration {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &kubeconfig
	flags.Namespace = &ns
	cfg := new(action.Configuration)
	if err := cfg.Init(flags, ns, "secret", func(f string, a ...any) { t.Logf("helm: "+f, a...) }); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestInstallIntoRealAPIServer(t *testing.T) {
	c := cluster.StartT(t, cluster.Options{Kube: true, Registry: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kc, err := c.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	// The release namespace allows the agent's hostPath, as the README tells users to do.
	mkNamespace(ctx, t, kc, "pulltrace", "privileged")
	for _, ns := range []string{"team-a", "team-b"} {
		mkNamespace(ctx, t, kc, ns, "")
	}
	ch := loadChart(t)
	cfg := helmConfig(t, c.Kubeconfig, "pulltrace")

	install := action.NewInstall(cfg)
	install.ReleaseName = "pulltrace"
	install.Namespace = "pulltrace"
	install.Timeout = time.Minute
	rel, err := install.RunWithContext(ctx, ch, map[string]any{})
	if err != nil {
		t.Fatalf("helm install: %v", err)
	}
	if rel.Info.Status != release.StatusDeployed {
		t.Fatalf("release status %s", rel.Info.Status)
	}
	sec, err := kc.CoreV1().Secrets("pulltrace").Get(ctx, "pulltrace-token", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first := string(sec.Data["token"])
	if len(first) != 32 {
		t.Fatalf("generated token %q", first)
	}
	for _, n := range []string{"pulltrace-server", "pulltrace-server-headless"} {
		if _, err := kc.CoreV1().Services("pulltrace").Get(ctx, n, metav1.GetOptions{}); err != nil {
			t.Error(err)
		}
	}
	ds, err := kc.AppsV1().DaemonSets("pulltrace").Get(ctx, "pulltrace-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep, err := kc.AppsV1().Deployments("pulltrace").Get(ctx, "pulltrace-server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// RBAC as installed: the server reads pods and events everywhere and nothing else.
	sa := "system:serviceaccount:pulltrace:pulltrace-server"
	for _, tc := range []struct {
		verb, resource, ns string
		allowed            bool
	}{
		{"watch", "pods", "", true}, {"list", "events", "team-a", true}, {"get", "pods", "kube-system", true},
		{"list", "secrets", "pulltrace", false}, {"create", "pods", "team-a", false}, {"delete", "events", "", false},
		{"list", "nodes", "", false},
	} {
		if got := can(ctx, t, kc, sa, tc.verb, tc.resource, tc.ns); got != tc.allowed {
			t.Errorf("server %s %s in %q: allowed=%v, want %v", tc.verb, tc.resource, tc.ns, got, tc.allowed)
		}
	}
	for _, v := range []string{"get", "list"} {
		if can(ctx, t, kc, "system:serviceaccount:pulltrace:pulltrace-agent", v, "pods", "") {
			t.Errorf("agent may %s pods", v)
		}
	}

	// Pod Security: the server and the test pod meet "restricted"; the agent needs the
	// namespace to allow hostPath (baseline rejects it), which is what the docs say.
	mkNamespace(ctx, t, kc, "psa-restricted", "restricted")
	mkNamespace(ctx, t, kc, "psa-baseline", "baseline")
	r := checked(t, nil)
	if err := dryRunPod(ctx, kc, "psa-restricted", dep.Spec.Template); err != nil {
		t.Errorf("server pod rejected by the restricted Pod Security level: %v", err)
	}
	if err := dryRunPod(ctx, kc, "psa-restricted", corev1.PodTemplateSpec{ObjectMeta: r.testPod().ObjectMeta, Spec: r.testPod().Spec}); err != nil {
		t.Errorf("test pod rejected by the restricted Pod Security level: %v", err)
	}
	if err := dryRunPod(ctx, kc, "psa-baseline", ds.Spec.Template); err == nil || !strings.Contains(err.Error(), "hostPath") {
		t.Errorf("agent pod in a baseline namespace: %v, want a hostPath rejection", err)
	}
	if err := dryRunPod(ctx, kc, "pulltrace", ds.Spec.Template); err != nil {
		t.Errorf("agent pod rejected in the privileged release namespace: %v", err)
	}

	// Upgrade with defaults: lookup finds the generated token and keeps it.
	upgrade := action.NewUpgrade(cfg)
	upgrade.Namespace = "pulltrace"
	if _, err := upgrade.RunWithContext(ctx, "pulltrace", ch, map[string]any{}); err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	sec, err = kc.CoreV1().Secrets("pulltrace").Get(ctx, "pulltrace-token", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data["token"]) != first {
		t.Errorf("upgrade replaced the generated token")
	}

	// Upgrade to every optional object and namespaced RBAC: the apiserver accepts them all, and
	// the cluster-wide grant is gone.
	vals := map[string]any{
		"config": map[string]any{"watchNamespaces": "team-a,team-b", "historyTTL": "1h"},
		"server": map[string]any{"replicas": 3},
		"ingress": map[string]any{"enabled": true, "className": "nginx",
			"tls": []any{map[string]any{"secretName": "pt-tls", "hosts": []any{"pulltrace.example.com"}}}},
		"networkPolicy": map[string]any{"enabled": true, "apiServerCIDRs": []any{"127.0.0.1/32"},
			"allowedNamespaceSelectors": []any{map[string]any{"matchLabels": map[string]any{"kubernetes.io/metadata.name": "ingress-nginx"}}}},
		"podDisruptionBudget": map[string]any{"enabled": true},
	}
	if _, err := upgrade.RunWithContext(ctx, "pulltrace", ch, vals); err != nil {
		t.Fatalf("helm upgrade with optional objects: %v", err)
	}
	for _, tc := range []struct {
		verb, resource, ns string
		allowed            bool
	}{
		{"watch", "pods", "team-a", true}, {"list", "events", "team-b", true},
		{"list", "pods", "", false}, {"list", "pods", "kube-system", false},
	} {
		if got := can(ctx, t, kc, sa, tc.verb, tc.resource, tc.ns); got != tc.allowed {
			t.Errorf("after upgrade: server %s %s in %q: allowed=%v, want %v", tc.verb, tc.resource, tc.ns, got, tc.allowed)
		}
	}
	if _, err := kc.NetworkingV1().NetworkPolicies("pulltrace").Get(ctx, "pulltrace-server", metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	if _, err := kc.NetworkingV1().Ingresses("pulltrace").Get(ctx, "pulltrace-server", metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	if _, err := kc.PolicyV1().PodDisruptionBudgets("pulltrace").Get(ctx, "pulltrace-server", metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	dep, err = kc.AppsV1().Deployments("pulltrace").Get(ctx, "pulltrace-server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *dep.Spec.Replicas != 3 || !slices.Contains(dep.Spec.Template.Spec.Containers[0].Args, "--history-ttl=1h") {
		t.Errorf("upgraded Deployment: replicas %d args %v", *dep.Spec.Replicas, dep.Spec.Template.Spec.Containers[0].Args)
	}

	// The published route: package and push to an OCI registry (the harness's real
	// distribution registry), then `helm install oci://... --version X` from there, with the
	// escape hatches an operator reaches for.
	installFromOCI(ctx, t, c, kc)

	// Upgrade to no agent: the DaemonSet goes away.
	if _, err := upgrade.RunWithContext(ctx, "pulltrace", ch, map[string]any{"runtimeSocket": map[string]any{"enabled": false}}); err != nil {
		t.Fatalf("helm upgrade without agent: %v", err)
	}
	if _, err := kc.AppsV1().DaemonSets("pulltrace").Get(ctx, "pulltrace-agent", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("agent DaemonSet after disabling the socket: %v", err)
	}
}

func mkNamespace(ctx context.Context, t *testing.T, kc kubernetes.Interface, name, podSecurity string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if podSecurity != "" {
		ns.Labels = map[string]string{"pod-security.kubernetes.io/enforce": podSecurity}
	}
	if _, err := kc.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// dryRunPod asks the apiserver (validation and admission, Pod Security included) to create a
// pod from a workload's template, without storing it.
func dryRunPod(ctx context.Context, kc kubernetes.Interface, ns string, tmpl corev1.PodTemplateSpec) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "psa-check-", Namespace: ns, Labels: tmpl.Labels},
		Spec:       tmpl.Spec,
	}
	// ServiceAccounts of the release exist only in its namespace.
	pod.Spec.ServiceAccountName = ""
	_, err := kc.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}

func can(ctx context.Context, t *testing.T, kc kubernetes.Interface, user, verb, resource, ns string) bool {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               user,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:pulltrace", "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: resource, Namespace: ns},
	}}
	res, err := kc.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status.Allowed
}

func installFromOCI(ctx context.Context, t *testing.T, c *cluster.Cluster, kc kubernetes.Interface) {
	t.Helper()
	for _, env := range []string{"HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"} {
		t.Setenv(env, t.TempDir())
	}
	const version = "0.1.0-oci.1"
	pushed, err := Push(PushOptions{Dir: "pulltrace", Registry: "oci://" + c.RegistryAddr + "/charts", Version: version})
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	t.Logf("pushed %s (%s)", pushed.Ref, pushed.Digest)
	if want := c.RegistryAddr + "/charts/pulltrace:" + version; pushed.Ref != want || !strings.HasPrefix(pushed.Digest, "sha256:") {
		t.Errorf("pushed %+v, want ref %s", pushed, want)
	}

	mkNamespace(ctx, t, kc, "pt-oci", "privileged")
	cfg := helmConfig(t, c.Kubeconfig, "pt-oci")
	rc, err := registry.NewClient(registry.ClientOptPlainHTTP(), registry.ClientOptWriter(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RegistryClient = rc
	install := action.NewInstall(cfg)
	install.ReleaseName = "pulltrace"
	install.Namespace = "pt-oci"
	install.Timeout = time.Minute
	install.Version = version
	install.PlainHTTP = true
	path, err := install.LocateChart("oci://"+c.RegistryAddr+"/charts/pulltrace", cli.New())
	if err != nil {
		t.Fatalf("locate oci chart: %v", err)
	}
	ch, err := loader.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	digest := "sha256:" + strings.Repeat("5e", 32)
	vals := map[string]any{
		"imageRegistry": "mirror.example:5000",
		"agent": map[string]any{
			"serviceAccount": map[string]any{"annotations": map[string]any{"iam.example/role": "agent"}},
			"podAnnotations": map[string]any{"prometheus.io/scrape": "true", "prometheus.io/port": "9091"},
			"podLabels":      map[string]any{"team": "infra"},
			"extraArgs":      []any{"--poll-interval=500ms", "--stall-timeout=1m"},
			"extraEnv":       []any{map[string]any{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}},
			"updateStrategy": map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxUnavailable": "10%"}},
		},
		"server": map[string]any{
			"image":          map[string]any{"digest": digest},
			"serviceAccount": map[string]any{"name": "pt-api", "annotations": map[string]any{"iam.gke.io/gcp-service-account": "pt@p.iam.gserviceaccount.com"}},
			"extraArgs":      []any{"--max-pulls=20000", "--agent-timeout=1m"},
			"podLabels":      map[string]any{"team": "infra"},
		},
		"config":    map[string]any{"watchNamespaces": "pt-oci"},
		"dashboard": map[string]any{"enabled": true},
	}
	rel, err := install.RunWithContext(ctx, ch, vals)
	if err != nil {
		t.Fatalf("helm install from oci: %v", err)
	}
	t.Logf("installed %s from oci://%s/charts/pulltrace --version %s", rel.Name, c.RegistryAddr, rel.Chart.Metadata.Version)
	if rel.Chart.Metadata.Version != version || rel.Info.Status != release.StatusDeployed {
		t.Errorf("release from oci: chart %s, status %s", rel.Chart.Metadata.Version, rel.Info.Status)
	}

	// What the apiserver stored is what the values asked for.
	ds, err := kc.AppsV1().DaemonSets("pt-oci").Get(ctx, "pulltrace-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a := ds.Spec.Template.Spec.Containers[0]
	if a.Image != "mirror.example:5000/d44b/pulltrace-agent:0.1.0" || !slices.Contains(a.Args, "--poll-interval=500ms") ||
		ds.Spec.Template.Labels["team"] != "infra" || ds.Spec.Template.Annotations["prometheus.io/scrape"] != "true" ||
		ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.String() != "10%" {
		t.Errorf("agent DaemonSet from oci: image %s args %v labels %v annotations %v strategy %+v",
			a.Image, a.Args, ds.Spec.Template.Labels, ds.Spec.Template.Annotations, ds.Spec.UpdateStrategy)
	}
	dep, err := kc.AppsV1().Deployments("pt-oci").Get(ctx, "pulltrace-server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := dep.Spec.Template.Spec
	if s.Containers[0].Image != "mirror.example:5000/d44b/pulltrace-server@"+digest || s.ServiceAccountName != "pt-api" ||
		!slices.Contains(s.Containers[0].Args, "--max-pulls=20000") {
		t.Errorf("server Deployment from oci: image %s account %s args %v", s.Containers[0].Image, s.ServiceAccountName, s.Containers[0].Args)
	}
	sa, err := kc.CoreV1().ServiceAccounts("pt-oci").Get(ctx, "pt-api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sa.Annotations["iam.gke.io/gcp-service-account"] == "" {
		t.Errorf("ServiceAccount annotations %v", sa.Annotations)
	}
	if _, err := kc.CoreV1().ConfigMaps("pt-oci").Get(ctx, "pulltrace-dashboard", metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	// The renamed account holds the RBAC grant.
	if !can(ctx, t, kc, "system:serviceaccount:pt-oci:pt-api", "watch", "pods", "pt-oci") {
		t.Error("the server's named ServiceAccount cannot watch pods")
	}
}
