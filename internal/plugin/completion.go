package plugin

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/d44b/pulltrace/pkg/api"
)

func newCompletionCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "completion (bash|zsh|fish|powershell)",
		Short: "Print a shell completion script for kubectl-pulltrace",
		Long: `Print a completion script for the kubectl-pulltrace binary.

For "kubectl pulltrace <TAB>" (kubectl 1.26 and later), put the kubectl_complete-pulltrace
script shipped next to the binary on your PATH: kubectl runs it to complete plugin arguments.

  source <(kubectl-pulltrace completion bash)
  kubectl-pulltrace completion zsh > "${fpath[1]}/_kubectl-pulltrace"
  kubectl-pulltrace completion fish > ~/.config/fish/completions/kubectl-pulltrace.fish`,
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErr("completion takes one shell: bash, zsh, fish or powershell")
			}
			root, out := cmd.Root(), o.Streams.Out
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			case "powershell":
				return root.GenPowerShellCompletionWithDesc(out)
			}
			return usageErr("unknown shell %q: want bash, zsh, fish or powershell", args[0])
		},
	}
}

// completionClient is a clientset for completions: quick, and silent on failure (a
// completion must never print errors into the user's command line).
func completionClient(o *Options) (kubernetes.Interface, context.Context, context.CancelFunc, bool) {
	cs, err := o.clientset()
	if err != nil {
		return nil, nil, nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	return cs, ctx, cancel, true
}

func listNames(o *Options, resource string) []string {
	names := listNamesUnsorted(o, resource)
	slices.Sort(names)
	return names
}

func listNamesUnsorted(o *Options, resource string) []string {
	cs, ctx, cancel, ok := completionClient(o)
	if !ok {
		return nil
	}
	defer cancel()
	var names []string
	switch resource {
	case "nodes":
		l, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, x := range l.Items {
				names = append(names, x.Name)
			}
		}
		return names
	case "namespaces":
		l, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, x := range l.Items {
				names = append(names, x.Name)
			}
		}
		return names
	}
	ns, err := o.namespace()
	if err != nil {
		return nil
	}
	switch resource {
	case "pods":
		l, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, x := range l.Items {
				names = append(names, x.Name)
			}
		}
	case "deployments":
		l, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, x := range l.Items {
				names = append(names, x.Name)
			}
		}
	case "replicasets":
		l, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, x := range l.Items {
				names = append(names, x.Name)
			}
		}
	case "statefulsets":
		l, err := cs.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, x := range l.Items {
				names = append(names, x.Name)
			}
		}
	case "daemonsets":
		l, err := cs.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, x := range l.Items {
				names = append(names, x.Name)
			}
		}
	case "jobs":
		l, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, x := range l.Items {
				names = append(names, x.Name)
			}
		}
	}
	return names
}

func withPrefix(prefix string, names []string, toComplete string) []string {
	var out []string
	for _, n := range names {
		if c := prefix + n; strings.HasPrefix(c, toComplete) {
			out = append(out, c)
		}
	}
	return out
}

// followKinds are the TYPE/ prefixes offered before a name is typed.
var followKinds = []string{"pod/", "node/", "deploy/", "sts/", "ds/", "rs/", "job/"}

func completeFollowArgs(o *Options) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		kind, _, ok := strings.Cut(toComplete, "/")
		if !ok {
			var out []string
			for _, k := range followKinds {
				if strings.HasPrefix(k, toComplete) {
					out = append(out, k)
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
		}
		resource := ""
		switch kind {
		case "pod", "pods", "po":
			resource = "pods"
		case "node", "nodes", "no":
			resource = "nodes"
		default:
			resource = workloadKinds[kind]
		}
		if resource == "" {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return withPrefix(kind+"/", listNames(o, resource), toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

func completeGetArgs(o *Options) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		switch {
		case len(args) == 0:
			out := withPrefix("", listNames(o, "pods"), toComplete)
			if strings.HasPrefix("pulls", toComplete) {
				out = append([]string{"pulls"}, out...)
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		case len(args) == 1 && (args[0] == "pulls" || args[0] == "pull"):
			return withPrefix("", listNames(o, "pods"), toComplete), cobra.ShellCompDirectiveNoFileComp
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// registerFlagCompletions completes --node and --state where a command has them.
func registerFlagCompletions(cmd *cobra.Command, o *Options) {
	if cmd.Flags().Lookup("node") != nil {
		_ = cmd.RegisterFlagCompletionFunc("node", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return listNames(o, "nodes"), cobra.ShellCompDirectiveNoFileComp
		})
	}
	if cmd.Flags().Lookup("state") != nil {
		_ = cmd.RegisterFlagCompletionFunc("state", func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			// A comma-separated list: complete the last element, keep the ones before.
			done, last := "", toComplete
			if i := strings.LastIndex(toComplete, ","); i >= 0 {
				done, last = toComplete[:i+1], toComplete[i+1:]
			}
			var out []string
			for _, st := range api.PullStates {
				if s := string(st); strings.HasPrefix(s, last) && !slices.Contains(strings.Split(done, ","), s) {
					out = append(out, done+s)
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
		})
	}
	if cmd.Flags().Lookup("output") != nil {
		_ = cmd.RegisterFlagCompletionFunc("output", func(c *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
			switch c.Name() {
			case "get":
				return []string{"wide", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
			case "follow":
				return []string{"json"}, cobra.ShellCompDirectiveNoFileComp
			}
			return []string{"json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
		})
	}
}

// registerGlobalCompletions completes the kubeconfig flags from the kubeconfig and the
// namespace flags from the cluster.
func registerGlobalCompletions(root *cobra.Command, o *Options) {
	nsComp := func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return listNames(o, "namespaces"), cobra.ShellCompDirectiveNoFileComp
	}
	_ = root.RegisterFlagCompletionFunc("namespace", nsComp)
	_ = root.RegisterFlagCompletionFunc("server-namespace", nsComp)
	fromConfig := func(pick func(name string, isContext, isCluster, isUser bool) bool) cobra.CompletionFunc {
		return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			raw, err := o.Config.ToRawKubeConfigLoader().RawConfig()
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []string
			for n := range raw.Contexts {
				if pick(n, true, false, false) {
					out = append(out, n)
				}
			}
			for n := range raw.Clusters {
				if pick(n, false, true, false) {
					out = append(out, n)
				}
			}
			for n := range raw.AuthInfos {
				if pick(n, false, false, true) {
					out = append(out, n)
				}
			}
			slices.Sort(out)
			return out, cobra.ShellCompDirectiveNoFileComp
		}
	}
	_ = root.RegisterFlagCompletionFunc("context", fromConfig(func(_ string, c, _, _ bool) bool { return c }))
	_ = root.RegisterFlagCompletionFunc("cluster", fromConfig(func(_ string, _, c, _ bool) bool { return c }))
	_ = root.RegisterFlagCompletionFunc("user", fromConfig(func(_ string, _, _, u bool) bool { return u }))
}
