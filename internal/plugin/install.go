package plugin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/d44b/pulltrace/charts"
	"github.com/d44b/pulltrace/pkg/api"
)

// ReleaseName is the Helm release the plugin manages. With this name the chart's Services
// are "pulltrace-server", the plugin's default --server-service.
const ReleaseName = "pulltrace"

// PodSecurityLabel lets the agent's hostPath socket mount pass Pod Security Admission.
const PodSecurityLabel = "pod-security.kubernetes.io/enforce"

type installOptions struct {
	*Options
	values  values.Options
	dryRun  string // none, client or server, as kubectl's --dry-run
	yes     bool
	wait    bool
	timeout time.Duration
}

func newInstallCommand(o *Options) *cobra.Command {
	in := &installOptions{Options: o, wait: true, timeout: 5 * time.Minute}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install or upgrade Pulltrace from the chart embedded in this plugin",
		Long: `Install Pulltrace, or upgrade an existing installation, from the Helm chart built into this
binary: no helm binary and no chart repository are needed. The release is named "pulltrace"
and goes to the namespace given with -n (default "pulltrace"), which is created if missing.

The agent reads each node's containerd socket, which is root-equivalent access to the node.
Before enabling it the command states that risk and asks for confirmation (or --yes), then
sets runtimeSocket.risksAcknowledged=true. --set runtimeSocket.enabled=false installs the
server alone (it then sees no pulls). With the agent on, the namespace is labelled
pod-security.kubernetes.io/enforce=privileged (baseline and restricted reject hostPath).

Values given again on each run: an upgrade starts from the chart's defaults plus -f/--set,
not from the previous release's values.

` + exitCodesHelp,
		Example: `  kubectl pulltrace install --yes
  kubectl pulltrace install -n observability -f my-values.yaml
  kubectl pulltrace install --set runtimeSocket.enabled=false
  kubectl pulltrace install --dry-run=client > pulltrace.yaml && kubectl apply -f pulltrace.yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns := o.ServerNamespace
			if cmd.Flags().Changed("namespace") {
				ns = *o.Config.Namespace
			}
			return in.run(cmd.Context(), ns)
		},
	}
	f := cmd.Flags()
	f.StringSliceVarP(&in.values.ValueFiles, "values", "f", nil, "Values file (YAML) for the chart; repeatable")
	f.StringArrayVar(&in.values.Values, "set", nil, "Chart value on the command line (key1=val1,key2=val2); repeatable")
	f.StringArrayVar(&in.values.StringValues, "set-string", nil, "Chart value forced to a string; repeatable")
	f.StringVar(&in.dryRun, "dry-run", "none", `"none", "client" or "server": print the manifests (the Namespace first) and change nothing. client needs no cluster; server renders with the cluster's lookups and capabilities. --dry-run alone is client`)
	f.Lookup("dry-run").NoOptDefVal = "client"
	f.BoolVarP(&in.yes, "yes", "y", false, "Accept the containerd socket risk without asking")
	f.BoolVar(&in.wait, "wait", true, "Wait until the server is ready and the agents run")
	f.DurationVar(&in.timeout, "timeout", in.timeout, "How long to wait with --wait")
	return cmd
}

func newUninstallCommand(o *Options) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove the Pulltrace release installed by `kubectl pulltrace install`",
		Long: `Remove the Helm release "pulltrace" and every object it created (Deployment, DaemonSet,
Services, RBAC, Secret) from the namespace given with -n (default "pulltrace"). The namespace
itself is kept, since it may hold other things.

` + exitCodesHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns := o.ServerNamespace
			if cmd.Flags().Changed("namespace") {
				ns = *o.Config.Namespace
			}
			return uninstall(cmd.Context(), o, ns, timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "How long deletions may take")
	return cmd
}

// nsGetter pins the namespace Helm's Kubernetes client sees: -n is the install namespace
// here, while the kubeconfig's context namespace is usually "default".
type nsGetter struct {
	genericclioptions.RESTClientGetter
	ns string
}

func (g nsGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return nsClientConfig{base: g.RESTClientGetter.ToRawKubeConfigLoader(), ns: g.ns}
}

type nsClientConfig struct {
	base clientcmd.ClientConfig
	ns   string
}

func (c nsClientConfig) RawConfig() (clientcmdapi.Config, error) { return c.base.RawConfig() }
func (c nsClientConfig) ClientConfig() (*rest.Config, error)     { return c.base.ClientConfig() }
func (c nsClientConfig) ConfigAccess() clientcmd.ConfigAccess    { return c.base.ConfigAccess() }

func (c nsClientConfig) Namespace() (string, bool, error) { return c.ns, true, nil }

func helmConfig(o *Options, ns string) (*action.Configuration, error) {
	cfg := new(action.Configuration)
	if err := cfg.Init(nsGetter{RESTClientGetter: o.Config, ns: ns}, ns, "secret", func(string, ...any) {}); err != nil {
		return nil, exitErr(ExitOther, err, "cannot set up Helm for namespace %s: %v", ns, err)
	}
	return cfg, nil
}

// ChartDescription names the embedded chart and its app version.
func ChartDescription(ch *chart.Chart) string {
	return fmt.Sprintf("chart %s-%s (app %s)", ch.Metadata.Name, ch.Metadata.Version, ch.Metadata.AppVersion)
}

const socketRisk = `The Pulltrace agent runs on every node with the node's containerd socket (%s) mounted.
Access to that socket is ROOT-EQUIVALENT on the node: whoever controls the agent can start
privileged containers and read every image and container filesystem. The agent only reads
(content ingests, labels, events), runs without capabilities, with a read-only root filesystem
and no Kubernetes API token, but a compromised agent image would hold that power on every node.
To run without the agent (Pulltrace then sees no pulls): --set runtimeSocket.enabled=false
`

func (in *installOptions) run(ctx context.Context, ns string) error {
	ch, err := charts.Load()
	if err != nil {
		return fmt.Errorf("load the embedded chart: %w", err)
	}
	vals, err := in.values.MergeValues(getter.Providers{})
	if err != nil {
		return usageErr("chart values: %v", err)
	}
	effective, err := chartutil.CoalesceValues(ch, vals)
	if err != nil {
		return usageErr("chart values: %v", err)
	}
	switch in.dryRun {
	case "none", "client", "server":
	default:
		return usageErr(`--dry-run must be "none", "client" or "server", got %q`, in.dryRun)
	}
	dryRun := in.dryRun != "none"
	agent := boolValue(effective, true, "runtimeSocket", "enabled")
	out, errOut := in.Streams.Out, in.Streams.ErrOut
	if agent {
		socket := stringValue(effective, "/run/containerd/containerd.sock", "agent", "containerd", "socketPath")
		fmt.Fprintf(errOut, socketRisk, socket)
		if !dryRun {
			if err := in.confirm(); err != nil {
				return err
			}
		}
		setValue(vals, true, "runtimeSocket", "risksAcknowledged")
	}
	if dryRun {
		return in.dryRunRender(ctx, ch, vals, ns, agent)
	}

	cs, err := in.clientset()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Installing %s, embedded in kubectl-pulltrace %s, as release %q in namespace %s\n",
		ChartDescription(ch), in.Version, ReleaseName, ns)
	if err := ensureNamespace(ctx, cs, out, ns, agent); err != nil {
		return err
	}
	cfg, err := helmConfig(in.Options, ns)
	if err != nil {
		return err
	}
	rel, upgraded, err := installOrUpgrade(ctx, cfg, ch, vals, ns, in.timeout)
	if err != nil {
		return err
	}
	verb := "installed"
	if upgraded {
		verb = "upgraded"
	}
	fmt.Fprintf(out, "release %s %s (revision %d):\n", rel.Name, verb, rel.Version)
	objs := manifestObjects(rel.Manifest)
	for _, obj := range objs {
		fmt.Fprintf(out, "  applied %s\n", obj)
	}
	printNotes(out, rel)
	if !agent {
		fmt.Fprintln(out, "runtimeSocket.enabled=false: no agent was deployed, so no pulls will be seen")
	}
	if !in.wait {
		fmt.Fprintln(out, "not waiting for the pods (--wait=false); check later with `kubectl pulltrace version`")
		return nil
	}
	probe := func(ctx context.Context, svc string) (*api.ServerVersion, error) {
		srv, err := NewServerFromOptions(in.Options, ns, svc)
		if err != nil {
			return nil, err
		}
		return srv.Version(ctx)
	}
	return waitReady(ctx, cs, probe, out, ns, objs, in.timeout)
}

// confirm asks before the socket is mounted: --yes, or y on a terminal.
func (in *installOptions) confirm() error {
	if in.yes {
		fmt.Fprintln(in.Streams.ErrOut, "Risk accepted with --yes: setting runtimeSocket.risksAcknowledged=true")
		return nil
	}
	if !in.IsTerminal(in.Streams.In) {
		return usageErr("the agent's containerd socket access needs confirmation: pass --yes, or run on a terminal to answer the prompt (or --set runtimeSocket.enabled=false)")
	}
	fmt.Fprint(in.Streams.ErrOut, "Deploy the agent with access to the containerd socket? [y/N]: ")
	answer, err := bufio.NewReader(in.Streams.In).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read the answer: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		fmt.Fprintln(in.Streams.ErrOut, "Risk accepted: setting runtimeSocket.risksAcknowledged=true")
		return nil
	}
	return exitErr(ExitOther, nil, "install cancelled: the containerd socket risk was not accepted (nothing was changed)")
}

func (in *installOptions) dryRunRender(ctx context.Context, ch *chart.Chart, vals map[string]any, ns string, agent bool) (err error) {
	cfg := new(action.Configuration)
	if in.dryRun == "server" {
		if cfg, err = helmConfig(in.Options, ns); err != nil {
			return err
		}
	}
	inst := action.NewInstall(cfg)
	inst.ReleaseName, inst.Namespace = ReleaseName, ns
	inst.DryRun, inst.DryRunOption, inst.ClientOnly, inst.Replace = true, in.dryRun, in.dryRun == "client", true
	inst.DisableHooks = true
	kv, source := in.kubeVersion()
	if inst.KubeVersion, err = chartutil.ParseKubeVersion(kv); err != nil {
		return exitErr(ExitOther, err, "Kubernetes version %q: %v", kv, err)
	}
	rel, err := inst.RunWithContext(ctx, ch, vals)
	if err != nil {
		return exitErr(ExitOther, err, "render %s: %v", ChartDescription(ch), err)
	}
	out := in.Streams.Out
	fmt.Fprintf(out, "# %s, embedded in kubectl-pulltrace %s\n", ChartDescription(ch), in.Version)
	fmt.Fprintf(out, "# dry run: release %q in namespace %s, rendered for Kubernetes %s (%s); nothing was applied\n", ReleaseName, ns, kv, source)
	fmt.Fprint(out, namespaceManifest(ns, agent))
	fmt.Fprintln(out, strings.TrimSpace(rel.Manifest))
	printNotes(in.Streams.ErrOut, rel)
	return nil
}

// namespaceManifest is the Namespace install creates (or labels), first in a dry run's
// output so that the output can be applied as it is.
func namespaceManifest(ns string, agent bool) string {
	m := "---\n# the namespace; install creates it if missing"
	labels := ""
	if agent {
		m += " and labels it for the agent's hostPath socket"
		labels = "\n  labels:\n    " + PodSecurityLabel + ": privileged"
	}
	return m + "\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + ns + labels + "\n"
}

// printNotes shows the chart's NOTES (its warnings about NetworkPolicy, ServiceMonitor and
// the like), as helm install does.
func printNotes(w io.Writer, rel *release.Release) {
	if rel == nil || rel.Info == nil || strings.TrimSpace(rel.Info.Notes) == "" {
		return
	}
	fmt.Fprintf(w, "NOTES:\n%s\n", strings.TrimSpace(rel.Info.Notes))
}

// kubeVersion is what a dry run renders for: the cluster's version when the kubeconfig
// reaches one quickly, else the version of the client libraries this plugin is built on
// (a dry run must work without a cluster).
func (in *installOptions) kubeVersion() (version, source string) {
	if cfg, err := in.Config.ToRESTConfig(); err == nil {
		cfg = rest.CopyConfig(cfg)
		cfg.Timeout = 3 * time.Second
		if dc, err := discovery.NewDiscoveryClientForConfig(cfg); err == nil {
			if v, err := dc.ServerVersion(); err == nil && v.GitVersion != "" {
				return v.GitVersion, "the cluster's version"
			}
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "k8s.io/client-go" && strings.HasPrefix(m.Version, "v0.") {
				return "v1." + strings.TrimPrefix(m.Version, "v0."), "no cluster reachable: the plugin's client version"
			}
		}
	}
	return "v1.37.0", "no cluster reachable: the plugin's default"
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface, out io.Writer, ns string, label bool) error {
	_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		if label {
			obj.Labels = map[string]string{PodSecurityLabel: "privileged"}
		}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return explainKubeError(err, "create", "namespaces", "", ns)
		}
		fmt.Fprintf(out, "namespace %s created\n", ns)
	case err != nil:
		return explainKubeError(err, "get", "namespaces", "", ns)
	}
	if !label {
		return nil
	}
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"privileged"}}}`, PodSecurityLabel)
	if _, err := cs.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return explainKubeError(err, "patch", "namespaces", "", ns)
	}
	fmt.Fprintf(out, "namespace %s labelled %s=privileged (the agent mounts a hostPath socket)\n", ns, PodSecurityLabel)
	return nil
}

func installOrUpgrade(ctx context.Context, cfg *action.Configuration, ch *chart.Chart, vals map[string]any, ns string, timeout time.Duration) (*release.Release, bool, error) {
	hist := action.NewHistory(cfg)
	hist.Max = 1
	_, err := hist.Run(ReleaseName)
	switch {
	case errors.Is(err, driver.ErrReleaseNotFound):
		inst := action.NewInstall(cfg)
		inst.ReleaseName, inst.Namespace, inst.Timeout = ReleaseName, ns, timeout
		rel, err := inst.RunWithContext(ctx, ch, vals)
		if err != nil {
			return nil, false, explainHelmError(err, "install", ns)
		}
		return rel, false, nil
	case err != nil:
		return nil, false, explainHelmError(err, "read the release history of", ns)
	}
	up := action.NewUpgrade(cfg)
	up.Namespace, up.Timeout, up.ResetValues = ns, timeout, true
	rel, err := up.RunWithContext(ctx, ReleaseName, ch, vals)
	if err != nil {
		return nil, true, explainUpgradeError(ctx, cfg, rel, err, ns)
	}
	return rel, true, nil
}

// manifestObjects lists "Kind/name" of each object in a rendered manifest, in order.
func manifestObjects(manifest string) []string {
	var out []string
	for _, doc := range releaseutil.SplitManifests(manifest) {
		var m struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil || m.Kind == "" {
			continue
		}
		out = append(out, m.Kind+"/"+m.Metadata.Name)
	}
	sortByInstallOrder(out)
	return out
}

// sortByInstallOrder orders objects the way Helm applies them, so the list reads as what
// happened.
func sortByInstallOrder(objs []string) {
	rank := map[string]int{}
	for i, k := range releaseutil.InstallOrder {
		rank[k] = i
	}
	kindOf := func(s string) string { k, _, _ := strings.Cut(s, "/"); return k }
	for i := 1; i < len(objs); i++ {
		for j := i; j > 0 && rank[kindOf(objs[j])] < rank[kindOf(objs[j-1])]; j-- {
			objs[j], objs[j-1] = objs[j-1], objs[j]
		}
	}
}

// pollEvery is how often waitReady looks again.
var pollEvery = 2 * time.Second

// waitReady waits for the server Deployment, then the server's API through the service
// proxy (probe: the path the plugin uses), then the agent DaemonSet.
func waitReady(ctx context.Context, cs kubernetes.Interface, probe func(ctx context.Context, svc string) (*api.ServerVersion, error),
	out io.Writer, ns string, objs []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var deploy, ds string
	for _, obj := range objs {
		kind, name, _ := strings.Cut(obj, "/")
		switch kind {
		case "Deployment":
			deploy = name
		case "DaemonSet":
			ds = name
		}
	}
	poll := func(what string, check func() (bool, string, error)) error {
		fmt.Fprintf(out, "waiting for %s (timeout %s)...\n", what, timeout)
		last := ""
		for {
			ok, state, err := check()
			if err != nil {
				return err
			}
			if ok {
				fmt.Fprintf(out, "  %s\n", state)
				return nil
			}
			last = state
			select {
			case <-ctx.Done():
				if errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return exitErr(ExitUnreachable, ctx.Err(), "timed out after %s waiting for %s: %s; see `kubectl -n %s get pods` and `kubectl -n %s describe pods`", timeout, what, last, ns, ns)
				}
				return ctx.Err()
			case <-time.After(pollEvery):
			}
		}
	}
	if deploy != "" {
		err := poll("deployment "+ns+"/"+deploy+" to be ready", func() (bool, string, error) {
			d, err := cs.AppsV1().Deployments(ns).Get(ctx, deploy, metav1.GetOptions{})
			if err != nil {
				if ctx.Err() != nil {
					return false, "", nil
				}
				return false, "", explainKubeError(err, "get", "deployments", ns, deploy)
			}
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			state := fmt.Sprintf("server: %d/%d replicas ready", d.Status.ReadyReplicas, want)
			ok := d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas >= want && d.Status.ReadyReplicas >= want
			return ok, state, nil
		})
		if err != nil {
			return err
		}
		// The chart names the server's Deployment and its Service alike.
		err = poll("the server's API through the service proxy", func() (bool, string, error) {
			v, err := probe(ctx, deploy)
			if err != nil {
				if code := ExitCode(err); code == ExitForbidden {
					return false, "", err
				}
				return false, err.Error(), nil
			}
			return true, "server answers: version " + v.Version, nil
		})
		if err != nil {
			return err
		}
	}
	if ds != "" {
		err := poll("daemonset "+ns+"/"+ds+" (agents) to run on every node", func() (bool, string, error) {
			d, err := cs.AppsV1().DaemonSets(ns).Get(ctx, ds, metav1.GetOptions{})
			if err != nil {
				if ctx.Err() != nil {
					return false, "", nil
				}
				return false, "", explainKubeError(err, "get", "daemonsets", ns, ds)
			}
			state := fmt.Sprintf("agents: %d/%d ready", d.Status.NumberReady, d.Status.DesiredNumberScheduled)
			if d.Status.DesiredNumberScheduled == 0 {
				state += " (no node matches the agent's nodeSelector yet)"
			}
			ok := d.Status.ObservedGeneration >= d.Generation && d.Status.DesiredNumberScheduled > 0 &&
				d.Status.NumberReady >= d.Status.DesiredNumberScheduled
			return ok, state, nil
		})
		if err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "Pulltrace is ready: try `kubectl pulltrace get -A` or `kubectl pulltrace ui`")
	return nil
}

// NewServerFromOptions is the server of an install in ns with Service svc.
func NewServerFromOptions(o *Options, ns, svc string) (*Server, error) {
	cfg, err := o.restConfig()
	if err != nil {
		return nil, err
	}
	return NewServer(cfg, ns, svc, o.ServerPort)
}

func uninstall(ctx context.Context, o *Options, ns string, timeout time.Duration) error {
	cfg, err := helmConfig(o, ns)
	if err != nil {
		return err
	}
	un := action.NewUninstall(cfg)
	un.Timeout = timeout
	res, err := un.Run(ReleaseName)
	if err != nil {
		if errors.Is(err, driver.ErrReleaseNotFound) {
			return exitErr(ExitNotFound, err, "no Pulltrace release %q in namespace %s: nothing to remove", ReleaseName, ns)
		}
		return explainHelmError(err, "uninstall", ns)
	}
	out := o.Streams.Out
	fmt.Fprintf(out, "release %s uninstalled from namespace %s; removed:\n", ReleaseName, ns)
	if res != nil && res.Release != nil {
		objs := manifestObjects(res.Release.Manifest)
		// Helm deletes in the reverse of install order.
		for i := len(objs) - 1; i >= 0; i-- {
			fmt.Fprintf(out, "  %s\n", objs[i])
		}
	}
	fmt.Fprintf(out, "  Helm's release records (Secrets sh.helm.release.v1.%s.*)\n", ReleaseName)
	if res != nil && strings.TrimSpace(res.Info) != "" {
		fmt.Fprintln(out, strings.TrimSpace(res.Info))
	}
	fmt.Fprintf(out, "namespace %s was kept; delete it with `kubectl delete namespace %s` if nothing else lives there\n", ns, ns)
	return nil
}

func lookupValue(m map[string]any, path ...string) (any, bool) {
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		cur, ok = mm[k]
		if !ok {
			return nil, false
		}
	}
	return cur, true
}

func boolValue(m map[string]any, def bool, path ...string) bool {
	v, ok := lookupValue(m, path...)
	if !ok {
		return def
	}
	switch b := v.(type) {
	case bool:
		return b
	case string:
		return b == "true"
	}
	return def
}

func stringValue(m map[string]any, def string, path ...string) string {
	v, ok := lookupValue(m, path...)
	if s, isStr := v.(string); ok && isStr && s != "" {
		return s
	}
	return def
}

func setValue(m map[string]any, v any, path ...string) {
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}
