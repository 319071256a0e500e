package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/d44b/pulltrace/internal/plugin/output"
	"github.com/d44b/pulltrace/pkg/api"
)

type getOptions struct {
	*Options
	print         *output.Flags
	node          string
	image         string
	states        []string
	selector      string
	allNamespaces bool
	watch         bool
}

func newGetCommand(o *Options) *cobra.Command {
	g := &getOptions{Options: o, print: output.NewFlags()}
	cmd := &cobra.Command{
		Use:   "get [pulls] [POD]",
		Short: "List active and recent pulls as a table",
		Long: `List the pulls the Pulltrace server holds: those in progress, those queued behind another
pull on their node, and finished ones (kept for the server's --history-ttl, 30m by default).

Without -n or -A the pulls of pods in the current namespace are listed; -A lists every pull,
including pulls no pod waits for. A POD argument lists the pulls that pod waits (or waited) for;
-l lists the pulls of the pods its label selector matches.

Output is a table (-o wide adds LAYERS and DIGEST) or, as with kubectl, json, yaml, name,
jsonpath, go-template or custom-columns of a typed list:
{"apiVersion": "pulltrace.d44b.io/v1", "kind": "PullList", "items": [...]} where each item is
a v1 Pull with apiVersion, kind "Pull" and metadata.name (the pull's id). -w prints a pull
again whenever it changes state, and at most every few seconds while it progresses.`,
		Example: `  kubectl pulltrace get
  kubectl pulltrace get -A --state active,queued
  kubectl pulltrace get pulls web-5d9c7 -n shop -o wide
  kubectl pulltrace get -l app=web -n shop -w
  kubectl pulltrace get -A --sort-by .startedAt --no-headers
  kubectl pulltrace get -A -o jsonpath='{.items[*].imageRef}'
  kubectl pulltrace get -A -o custom-columns=IMAGE:.imageRef,NODE:.nodeName,STATE:.state`,
		ValidArgsFunction: completeGetArgs(o),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd.Context(), args)
		},
	}
	g.print.AddFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&g.node, "node", "", "Only pulls on this node")
	f.StringVar(&g.image, "image", "", "Only pulls whose image reference contains this text")
	f.StringSliceVar(&g.states, "state", nil, "Only pulls in these states (comma-separated): active, stalled, queued, completed, cached, failed")
	f.StringVarP(&g.selector, "selector", "l", "", "Only pulls of pods matching this label selector (e.g. -l app=web)")
	f.BoolVarP(&g.allNamespaces, "all-namespaces", "A", false, "List pulls of every namespace, and pulls no pod waits for")
	f.BoolVarP(&g.watch, "watch", "w", false, "After listing, print pulls again as they change")
	registerFlagCompletions(cmd, o)
	return cmd
}

// filter turns the arguments and flags into the server's filter.
func (g *getOptions) filter(args []string) (api.Filter, string, error) {
	if len(args) > 0 && (args[0] == "pulls" || args[0] == "pull") {
		args = args[1:]
	}
	if len(args) > 1 {
		return api.Filter{}, "", usageErr("get takes at most one pod name, got %q", args)
	}
	pod := ""
	if len(args) == 1 {
		pod = args[0]
		if kind, name, ok := strings.Cut(pod, "/"); ok {
			if kind != "pod" && kind != "pods" && kind != "po" {
				return api.Filter{}, "", usageErr("get takes a pod name (or pod/NAME), got %q", args[0])
			}
			pod = name
		}
		if pod == "" {
			return api.Filter{}, "", usageErr("empty pod name")
		}
	}
	if err := g.print.Validate(); err != nil {
		return api.Filter{}, "", exitErr(ExitUsage, err, "%s", strings.TrimPrefix(err.Error(), output.ErrUsage.Error()+": "))
	}
	if pod != "" && g.selector != "" {
		return api.Filter{}, "", usageErr("name a pod or give a selector (-l), not both")
	}
	if g.selector != "" {
		if _, err := labels.Parse(g.selector); err != nil {
			return api.Filter{}, "", exitErr(ExitUsage, err, "bad selector %q: %v", g.selector, err)
		}
	}
	var f api.Filter
	scope := "all namespaces"
	if pod != "" && g.allNamespaces {
		return api.Filter{}, "", usageErr("a pod cannot be named across all namespaces: drop -A, or use -n")
	}
	if !g.allNamespaces {
		ns, err := g.namespace()
		if err != nil {
			return api.Filter{}, "", err
		}
		f.Namespace = ns
		scope = ns + " namespace"
	}
	if pod != "" {
		f.Pod = pod
		scope = "pod " + f.Namespace + "/" + pod
	}
	if g.selector != "" {
		scope = "pods matching " + g.selector + " in " + scope
	}
	f.Node, f.Image = g.node, g.image
	for _, s := range g.states {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		st, err := api.ParsePullState(s)
		if err != nil {
			return api.Filter{}, "", exitErr(ExitUsage, err, "--%v", err)
		}
		f.States = append(f.States, st)
	}
	return f, scope, nil
}

func (g *getOptions) run(ctx context.Context, args []string) error {
	filter, scope, err := g.filter(args)
	if err != nil {
		return err
	}
	var pods *podSelection
	if g.selector != "" {
		cs, err := g.clientset()
		if err != nil {
			return err
		}
		pods = &podSelection{cs: cs, namespace: filter.Namespace, selector: g.selector}
		if err := pods.refresh(ctx); err != nil {
			return err
		}
	}
	srv, err := g.server()
	if err != nil {
		return err
	}
	list, err := srv.Pulls(ctx, filter)
	if err != nil {
		return err
	}
	// Old data must not pass for news: say which nodes have not reported. A server without
	// the endpoint (older) knows nothing to say.
	if nodes, err := srv.Nodes(ctx); err == nil {
		var names []string
		if filter.Node != "" {
			names = []string{filter.Node}
		}
		for _, m := range staleNotices(nodes, names, time.Now()) {
			fmt.Fprintf(g.Streams.ErrOut, "Warning: %s\n", m)
		}
	}
	pulls := list.Pulls
	if pods != nil {
		pulls = pods.keep(pulls)
	}
	pr, err := g.print.NewPrinter(g.Streams.Out)
	if err != nil {
		return exitErr(ExitUsage, err, "%v", err)
	}
	if len(pulls) == 0 && g.print.IsTable() {
		fmt.Fprintf(g.Streams.ErrOut, "No pulls found in %s.\n", scope)
	} else if err := pr.PrintList(NewPullObjectList(pulls), pullTable(pulls, g.print.Format() == "wide", time.Now())); err != nil {
		return err
	}
	if !g.watch {
		return nil
	}
	return g.watchPulls(ctx, srv, filter, pods, pulls, pr)
}

// watchPulls prints pulls as they change, like kubectl get -w: on every change of state,
// and while a pull progresses at most every watchEvery.
func (g *getOptions) watchPulls(ctx context.Context, srv *Server, filter api.Filter, pods *podSelection, listed []api.Pull, pr *output.Printer) error {
	type seen struct {
		state api.PullState
		at    time.Time
	}
	last := map[string]seen{}
	for _, p := range listed {
		last[p.ID] = seen{p.State, time.Now()}
	}
	show := func(p *api.Pull) error {
		if !filter.Match(p) || pods != nil && !pods.has(ctx, p) {
			return nil
		}
		now := time.Now()
		if s, ok := last[p.ID]; ok && s.state == p.State && now.Sub(s.at) < watchEvery {
			return nil
		}
		last[p.ID] = seen{p.State, now}
		one := []api.Pull{*p}
		return pr.PrintItems(NewPullObjectList(one), pullTable(one, g.print.Format() == "wide", now))
	}
	f := &followOptions{Options: g.Options, watch: true, giveUpAfter: 2 * time.Minute}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	items := make(chan streamItem, 64)
	errc := make(chan error, 1)
	go func() { errc <- f.read(ctx, srv, filter, items) }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case it := <-items:
			if it.notice != "" {
				fmt.Fprintln(g.Streams.ErrOut, it.notice)
				continue
			}
			if it.ev.Type == "snapshot" {
				var l api.PullList
				if json.Unmarshal([]byte(it.ev.Data), &l) == nil {
					for i := range l.Pulls {
						if err := show(&l.Pulls[i]); err != nil {
							return err
						}
					}
				}
				continue
			}
			var pe api.PullEvent
			if json.Unmarshal([]byte(it.ev.Data), &pe) != nil || !slices.Contains(api.EventTypes, pe.Type) || pe.Type == api.EventPullRemoved {
				continue
			}
			if err := show(&pe.Pull); err != nil {
				return err
			}
		}
	}
}

// watchEvery is how often get -w reprints a pull that progresses without changing state.
const watchEvery = 5 * time.Second

// podSelection is the pods a label selector matches; get and follow keep the pulls of
// those pods.
type podSelection struct {
	cs        kubernetes.Interface
	namespace string // "" is every namespace
	selector  string
	pods      map[string]bool // namespace/name
	listedAt  time.Time
}

func (s *podSelection) refresh(ctx context.Context) error {
	l, err := s.cs.CoreV1().Pods(s.namespace).List(ctx, metav1.ListOptions{LabelSelector: s.selector})
	if err != nil {
		return explainKubeError(err, "list", "pods", s.namespace, "")
	}
	s.pods = map[string]bool{}
	for i := range l.Items {
		s.pods[l.Items[i].Namespace+"/"+l.Items[i].Name] = true
	}
	s.listedAt = time.Now()
	return nil
}

func (s *podSelection) match(p *api.Pull) bool {
	return slices.ContainsFunc(p.Pods, func(r api.PodRef) bool { return s.pods[r.Namespace+"/"+r.PodName] })
}

// has reports whether a pod of p is selected, listing the pods again (at most every two
// seconds) when p names a pod not seen yet: it may have been created since.
func (s *podSelection) has(ctx context.Context, p *api.Pull) bool {
	if s.match(p) {
		return true
	}
	if len(p.Pods) == 0 || time.Since(s.listedAt) < 2*time.Second {
		return false
	}
	if s.refresh(ctx) != nil {
		return false
	}
	return s.match(p)
}

func (s *podSelection) keep(pulls []api.Pull) []api.Pull {
	var out []api.Pull
	for i := range pulls {
		if s.match(&pulls[i]) {
			out = append(out, pulls[i])
		}
	}
	return out
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func printYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode YAML: %w", err)
	}
	_, err = w.Write(b)
	return err
}

// RenderTable writes pulls as get's table, kubectl-style.
func RenderTable(w io.Writer, pulls []api.Pull, wide bool, now time.Time) error {
	f := output.NewFlags()
	if wide {
		f.SetFormat("wide")
	}
	pr, err := f.NewPrinter(w)
	if err != nil {
		return err
	}
	return pr.PrintList(NewPullObjectList(pulls), pullTable(pulls, wide, now))
}
