package charts

// Rendering and strict decoding shared by the chart tests. kubeconform cannot fetch schemas
// offline, so every rendered document is decoded into its client-go type with a strict
// serializer instead: an unknown or misspelt field, or a kind client-go does not know, fails.

import (
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// kubeVersion is the cluster version the tests render for (the version the project's e2e
// apiserver runs).
const kubeVersion = "v1.37.2"

// monitoringAPI is what a cluster with the Prometheus Operator reports.
var monitoringAPI = []string{"monitoring.coreos.com/v1", "monitoring.coreos.com/v1/ServiceMonitor"}

// serviceMonitor mirrors the fields of monitoring.coreos.com/v1 ServiceMonitor the chart uses.
// The operator's Go types are not a dependency of this module; a strict decode into this
// subset still fails on any field the chart writes that the test does not expect.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// podMonitor mirrors the fields of monitoring.coreos.com/v1 PodMonitor the chart uses.
type podMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector            metav1.LabelSelector `json:"selector"`
		PodMetricsEndpoints []struct {
			Port        string `json:"port"`
			Path        string `json:"path"`
			Interval    string `json:"interval"`
			Relabelings []struct {
				SourceLabels []string `json:"sourceLabels"`
				TargetLabel  string   `json:"targetLabel"`
			} `json:"relabelings"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// prometheusRule mirrors monitoring.coreos.com/v1 PrometheusRule; Spec is a Prometheus rule
// file as promtool reads it.
type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ruleFile `json:"spec"`
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels,omitempty"`
			Annotations map[string]string `json:"annotations,omitempty"`
		} `json:"rules"`
	} `json:"groups"`
}

// rendered is one install's output, decoded.
type rendered struct {
	t         *testing.T
	namespace string
	objects   []runtime.Object // manifest and hooks, in render order
	monitors  []serviceMonitor
	pods      []podMonitor
	rules     []prometheusRule
	hooks     map[string]bool // "Kind/name" of hook objects
	notes     string
	raw       string // every document, for text checks
}

var strictYAML = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

var testChart *chart.Chart

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	if testChart == nil {
		c, err := Load()
		if err != nil {
			t.Fatalf("load embedded chart: %v", err)
		}
		testChart = c
	}
	// The engine never mutates the chart, but values are coalesced into fresh maps per
	// install, so sharing one loaded chart between tests is safe.
	return testChart
}

// render runs what `helm install --dry-run` does offline (client-only: no cluster, lookup
// returns nothing) for release name/ns with the given user values.
func render(t *testing.T, name, ns string, vals map[string]any, apiVersions ...string) (*rendered, error) {
	t.Helper()
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.DryRun = true
	install.ClientOnly = true
	install.Replace = true
	install.ReleaseName = name
	install.Namespace = ns
	install.KubeVersion = kv
	install.APIVersions = apiVersions
	if vals == nil {
		vals = map[string]any{}
	}
	rel, err := install.Run(loadChart(t), vals)
	if err != nil {
		return nil, err
	}
	r := &rendered{t: t, namespace: ns, hooks: map[string]bool{}, notes: rel.Info.Notes}
	manifests := releaseutil.SplitManifests(rel.Manifest)
	// SplitManifests keys documents "manifest-<n>"; decode them in render order.
	for i := 0; i < len(manifests); i++ {
		r.decode(manifests[fmt.Sprintf("manifest-%d", i)], false)
	}
	for _, h := range rel.Hooks {
		r.decode(h.Manifest, true)
	}
	return r, nil
}

func mustRender(t *testing.T, vals map[string]any, apiVersions ...string) *rendered {
	t.Helper()
	r, err := render(t, "pulltrace", "pulltrace", vals, apiVersions...)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return r
}

func (r *rendered) decode(doc string, hook bool) {
	r.t.Helper()
	if strings.TrimSpace(doc) == "" {
		return
	}
	r.raw += "---\n" + doc + "\n"
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
		r.t.Fatalf("not YAML: %v\n%s", err, doc)
	}
	if tm.APIVersion == "monitoring.coreos.com/v1" && tm.Kind == "ServiceMonitor" {
		var sm serviceMonitor
		if err := yaml.UnmarshalStrict([]byte(doc), &sm); err != nil {
			r.t.Fatalf("ServiceMonitor does not decode strictly: %v\n%s", err, doc)
		}
		r.monitors = append(r.monitors, sm)
		return
	}
	if tm.APIVersion == "monitoring.coreos.com/v1" && tm.Kind == "PodMonitor" {
		var pm podMonitor
		if err := yaml.UnmarshalStrict([]byte(doc), &pm); err != nil {
			r.t.Fatalf("PodMonitor does not decode strictly: %v\n%s", err, doc)
		}
		r.pods = append(r.pods, pm)
		return
	}
	if tm.APIVersion == "monitoring.coreos.com/v1" && tm.Kind == "PrometheusRule" {
		var pr prometheusRule
		if err := yaml.UnmarshalStrict([]byte(doc), &pr); err != nil {
			r.t.Fatalf("PrometheusRule does not decode strictly: %v\n%s", err, doc)
		}
		r.rules = append(r.rules, pr)
		return
	}
	obj, _, err := strictYAML.Decode([]byte(doc), nil, nil)
	if err != nil {
		r.t.Fatalf("%s %s does not decode strictly into client-go types: %v\n%s", tm.APIVersion, tm.Kind, err, doc)
	}
	if hook {
		acc, _ := metaOf(obj)
		r.hooks[tm.Kind+"/"+acc.GetName()] = true
	}
	r.objects = append(r.objects, obj)
}

func metaOf(obj runtime.Object) (metav1.Object, string) {
	acc, ok := obj.(metav1.Object)
	if !ok {
		panic(fmt.Sprintf("%T has no object meta", obj))
	}
	return acc, obj.GetObjectKind().GroupVersionKind().Kind
}

// all returns every decoded object of type T.
func all[T runtime.Object](r *rendered) []T {
	var out []T
	for _, o := range r.objects {
		if v, ok := o.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// one returns the object of type T called name, failing the test if there is none.
func one[T runtime.Object](r *rendered, name string) T {
	r.t.Helper()
	var names []string
	for _, o := range all[T](r) {
		acc, _ := metaOf(o)
		if acc.GetName() == name {
			return o
		}
		names = append(names, acc.GetName())
	}
	var zero T
	r.t.Fatalf("no %T named %q (have %v)", zero, name, names)
	return zero
}

func has[T runtime.Object](r *rendered, name string) bool {
	for _, o := range all[T](r) {
		if acc, _ := metaOf(o); acc.GetName() == name {
			return true
		}
	}
	return false
}

func (r *rendered) server() *appsv1.Deployment {
	r.t.Helper()
	return one[*appsv1.Deployment](r, "pulltrace-server")
}

func (r *rendered) agent() *appsv1.DaemonSet {
	r.t.Helper()
	return one[*appsv1.DaemonSet](r, "pulltrace-agent")
}

func (r *rendered) testPod() *corev1.Pod {
	r.t.Helper()
	pods := all[*corev1.Pod](r)
	if len(pods) != 1 {
		r.t.Fatalf("want exactly one test pod, have %d", len(pods))
	}
	return pods[0]
}

func (r *rendered) serverPolicy() *networkingv1.NetworkPolicy {
	r.t.Helper()
	return one[*networkingv1.NetworkPolicy](r, "pulltrace-server")
}

func (r *rendered) pdb() *policyv1.PodDisruptionBudget {
	r.t.Helper()
	return one[*policyv1.PodDisruptionBudget](r, "pulltrace-server")
}

func (r *rendered) roles() []*rbacv1.Role { return all[*rbacv1.Role](r) }

// onlyContainer returns the single container of a pod spec.
func onlyContainer(t *testing.T, spec corev1.PodSpec) corev1.Container {
	t.Helper()
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("want exactly one container, have %d (+%d init)", len(spec.Containers), len(spec.InitContainers))
	}
	return spec.Containers[0]
}

// flags parses --name=value args into a map, failing on anything else (a positional argument
// or a flag given twice would be a chart bug).
func flags(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range c.Args {
		name, value, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(name, "--") {
			t.Fatalf("container %s: arg %q is not --flag=value", c.Name, a)
		}
		if _, dup := out[name]; dup {
			t.Fatalf("container %s: flag %s given twice", c.Name, name)
		}
		out[name] = value
	}
	return out
}

func wantFlag(t *testing.T, c corev1.Container, name, value string) {
	t.Helper()
	got, ok := flags(t, c)[name]
	if !ok {
		t.Errorf("container %s: no %s flag (args %q)", c.Name, name, c.Args)
	} else if got != value {
		t.Errorf("container %s: %s=%q, want %q", c.Name, name, got, value)
	}
}

func port(t *testing.T, c corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port %q", c.Name, name)
	return 0
}

func servicePort(t *testing.T, s *corev1.Service, name string) int32 {
	t.Helper()
	for _, p := range s.Spec.Ports {
		if p.Name == name {
			return p.Port
		}
	}
	t.Fatalf("Service %s has no port %q", s.Name, name)
	return 0
}

func envVar(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

func volume(t *testing.T, spec corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("pod has no volume %q", name)
	return corev1.Volume{}
}

func mount(t *testing.T, c corev1.Container, name string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("container %s has no mount of %q", c.Name, name)
	return corev1.VolumeMount{}
}

// documentedFlags reads the flag tables of docs/architecture.md: the section of the agent
// ("## Agent") or the server ("## Server"). The chart may only pass flags listed there.
func documentedFlags(t *testing.T, section string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatalf("read flag reference: %v", err)
	}
	flagRE := regexp.MustCompile("`(--[a-z0-9-]+)`")
	out := map[string]bool{}
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "## ") {
			in = strings.HasPrefix(line, "## "+section)
			continue
		}
		if in && strings.HasPrefix(line, "| `--") {
			cell := strings.Split(line, "|")[1]
			for _, m := range flagRE.FindAllStringSubmatch(cell, -1) {
				out[m[1]] = true
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no flags found for section %q of docs/architecture.md", section)
	}
	return out
}

// setPath returns vals with the dotted path set to v, creating maps on the way.
func setPath(vals map[string]any, path string, v any) map[string]any {
	if vals == nil {
		vals = map[string]any{}
	}
	keys := strings.Split(path, ".")
	m := vals
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
	return vals
}

// merge deep-merges b into a copy of a.
func merge(a, b map[string]any) map[string]any {
	out := maps.Clone(a)
	if out == nil {
		out = map[string]any{}
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = merge(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// leaves lists the dotted paths of values.yaml's settings: maps are walked, except the
// free-form ones (whose keys are the user's, like labels), which count as one setting.
func leaves(m map[string]any, prefix string, freeForm map[string]bool) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		if sub, ok := m[k].(map[string]any); ok && len(sub) > 0 && !freeForm[p] {
			out = append(out, leaves(sub, p, freeForm)...)
			continue
		}
		out = append(out, p)
	}
	return out
}
