package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/d44b/pulltrace/pkg/api"
)

type getOptions struct {
	*Options
	output        string
	node          string
	image         string
	states        []string
	allNamespaces bool
}

func newGetCommand(o *Options) *cobra.Command {
	g := &getOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "get [pulls] [POD]",
		Short: "List active and recent pulls as a table",
		Long: `List the pulls the Pulltrace server holds: those in progress, those queued behind another
pull on their node, and finished ones (kept for the server's --history-ttl, 30m by default).

Without -n or -A the pulls of pods in the current namespace are listed; -A lists every pull,
including pulls no pod waits for. A POD argument lists the pulls that pod waits (or waited) for.`,
		Example: `  kubectl pulltrace get
  kubectl pulltrace get -A --state active,queued
  kubectl pulltrace get pulls web-5d9c7 -n shop -o wide
  kubectl pulltrace get -A --node worker-3 -o json`,
		ValidArgsFunction: completeGetArgs(o),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.run(cmd.Context(), args)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&g.output, "output", "o", "", "Output format: wide, json or yaml (default: a table)")
	f.StringVar(&g.node, "node", "", "Only pulls on this node")
	f.StringVar(&g.image, "image", "", "Only pulls whose image reference contains this text")
	f.StringSliceVar(&g.states, "state", nil, "Only pulls in these states (comma-separated): active, stalled, queued, completed, cached, failed")
	f.BoolVarP(&g.allNamespaces, "all-namespaces", "A", false, "List pulls of every namespace, and pulls no pod waits for")
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
	switch g.output {
	case "", "wide", "json", "yaml":
	default:
		return api.Filter{}, "", usageErr("unknown output format %q: want wide, json or yaml", g.output)
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
	srv, err := g.server()
	if err != nil {
		return err
	}
	list, err := srv.Pulls(ctx, filter)
	if err != nil {
		return err
	}
	switch g.output {
	case "json":
		return printJSON(g.Streams.Out, list)
	case "yaml":
		return printYAML(g.Streams.Out, list)
	}
	if len(list.Pulls) == 0 {
		fmt.Fprintf(g.Streams.ErrOut, "No pulls found in %s.\n", scope)
		return nil
	}
	return RenderTable(g.Streams.Out, list.Pulls, g.output == "wide", time.Now())
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

// TableHeader is the header row; wide adds LAYERS and DIGEST.
func TableHeader(wide bool) []string {
	h := []string{"IMAGE", "NODE", "PODS", "STATE", "PROGRESS", "SIZE", "SPEED", "ETA", "AGE"}
	if wide {
		h = append(h, "LAYERS", "DIGEST")
	}
	return h
}

// TableRow is one pull as table cells.
func TableRow(p *api.Pull, wide bool, now time.Time) []string {
	pods := 2
	if wide {
		pods = 0
	}
	row := []string{imageOf(p), p.NodeName, formatPods(p.Pods, pods), string(p.State), formatProgress(p, 10),
		formatSize(p), formatPullSpeed(p), formatETA(p), formatAge(p.StartedAt, now)}
	if wide {
		layers := "-"
		if p.LayerCount > 0 || len(p.Layers) > 0 {
			layers = strconv.Itoa(p.LayersDone) + "/" + strconv.Itoa(max(p.LayerCount, len(p.Layers)))
		}
		digest := p.ManifestDigest
		if p.IndexDigest != "" {
			digest += " (index " + p.IndexDigest + ")"
		}
		if digest == "" {
			digest = "<none>"
		}
		row = append(row, layers, digest)
	}
	if p.State == api.PullFailed && p.Error != "" && wide {
		row[3] = "failed: " + p.Error
	}
	return row
}

// RenderTable writes pulls as kubectl-style columns: no borders, left-aligned, three
// spaces between columns, no trailing blanks.
func RenderTable(w io.Writer, pulls []api.Pull, wide bool, now time.Time) error {
	var buf bytes.Buffer
	pad := tw.CellPadding{Global: tw.Padding{Left: "", Right: "   ", Overwrite: true}}
	table := tablewriter.NewTable(&buf,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{
			Borders:  tw.BorderNone,
			Symbols:  tw.NewSymbols(tw.StyleNone),
			Settings: tw.Settings{Separators: tw.SeparatorsNone, Lines: tw.LinesNone},
		})),
		tablewriter.WithConfig(tablewriter.Config{
			Header: tw.CellConfig{
				Formatting: tw.CellFormatting{AutoFormat: tw.Off, AutoWrap: tw.WrapNone},
				Alignment:  tw.CellAlignment{Global: tw.AlignLeft},
				Padding:    pad,
			},
			Row: tw.CellConfig{
				Formatting: tw.CellFormatting{AutoFormat: tw.Off, AutoWrap: tw.WrapNone},
				Alignment:  tw.CellAlignment{Global: tw.AlignLeft},
				Padding:    pad,
			},
		}),
	)
	table.Header(TableHeader(wide))
	for i := range pulls {
		if err := table.Append(TableRow(&pulls[i], wide, now)); err != nil {
			return fmt.Errorf("table row: %w", err)
		}
	}
	if err := table.Render(); err != nil {
		return fmt.Errorf("render table: %w", err)
	}
	var out strings.Builder
	for _, line := range strings.SplitAfter(buf.String(), "\n") {
		if line == "" {
			continue
		}
		out.WriteString(strings.TrimRight(line, " \n"))
		out.WriteByte('\n')
	}
	_, err := io.WriteString(w, out.String())
	return err
}
