// Package plugin is `kubectl pulltrace`: it shows Pulltrace's pulls as a table, follows a
// pod's or a node's pulls live, installs the embedded chart, serves the web UI locally and
// reports versions. It reaches the Pulltrace server only through the API server's service
// proxy, so every request is made as the kubeconfig's user and allowed by that user's RBAC.
package plugin

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	// exec, OIDC and other auth providers a kubeconfig may name.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

// Defaults of the server flags: what `kubectl pulltrace install` (the chart's release
// "pulltrace" in namespace "pulltrace") creates.
const (
	DefaultServerNamespace = "pulltrace"
	DefaultServerService   = "pulltrace-server"
	DefaultServerPort      = "http"
)

// Options is the state every subcommand shares.
type Options struct {
	Streams genericiooptions.IOStreams
	Config  *genericclioptions.ConfigFlags
	Version string

	ServerNamespace string
	ServerService   string
	ServerPort      string

	// IsTerminal reports whether w is a terminal; tests replace it.
	IsTerminal func(w any) bool
	// TerminalWidth returns the width of w, or 0 when unknown.
	TerminalWidth func(w any) int
	klogFlags     *flag.FlagSet
	// OpenBrowser opens a URL; tests replace it.
	OpenBrowser func(ctx context.Context, url string) error
}

// NewOptions returns options writing to streams.
func NewOptions(streams genericiooptions.IOStreams, version string) *Options {
	return &Options{
		Streams:         streams,
		Config:          genericclioptions.NewConfigFlags(true),
		Version:         version,
		ServerNamespace: DefaultServerNamespace,
		ServerService:   DefaultServerService,
		ServerPort:      DefaultServerPort,
		IsTerminal:      isTerminal,
		TerminalWidth:   terminalWidth,
		OpenBrowser:     openBrowser,
	}
}

func fdOf(w any) (int, bool) {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return 0, false
	}
	return int(f.Fd()), true
}

func isTerminal(w any) bool {
	fd, ok := fdOf(w)
	return ok && term.IsTerminal(fd)
}

func terminalWidth(w any) int {
	fd, ok := fdOf(w)
	if !ok {
		return 0
	}
	width, _, err := term.GetSize(fd)
	if err != nil {
		return 0
	}
	return width
}

// restConfig is the kubeconfig's client config, with errors a user can act on.
func (o *Options) restConfig() (*rest.Config, error) {
	cfg, err := o.Config.ToRESTConfig()
	if err != nil {
		return nil, o.kubeconfigErr(err)
	}
	return cfg, nil
}

// kubeconfigErr names what is wrong with the kubeconfig: a context (--context, or its
// current-context) it does not have, or else whatever client-go says.
func (o *Options) kubeconfigErr(err error) error {
	raw, rerr := o.Config.ToRawKubeConfigLoader().RawConfig()
	if rerr == nil {
		name, via := raw.CurrentContext, ""
		if o.Config.Context != nil && *o.Config.Context != "" {
			name, via = *o.Config.Context, "--context "
		}
		if name != "" && raw.Contexts[name] == nil {
			names := make([]string, 0, len(raw.Contexts))
			for n := range raw.Contexts {
				names = append(names, n)
			}
			slices.Sort(names)
			return exitErr(ExitOther, err, "%scontext %q is not in the kubeconfig (it has: %s); see kubectl config get-contexts",
				via, name, lastOr(strings.Join(names, ", "), "no contexts"))
		}
	}
	return exitErr(ExitOther, err, "cannot load a Kubernetes client configuration: %v (set --kubeconfig, KUBECONFIG or --context)", err)
}

func (o *Options) clientset() (kubernetes.Interface, error) {
	cfg, err := o.restConfig()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}

func (o *Options) server() (*Server, error) {
	cfg, err := o.restConfig()
	if err != nil {
		return nil, err
	}
	return NewServer(cfg, o.ServerNamespace, o.ServerService, o.ServerPort)
}

// namespace is the namespace from -n or the kubeconfig context.
func (o *Options) namespace() (string, error) {
	ns, _, err := o.Config.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", o.kubeconfigErr(err)
	}
	if ns == "" {
		ns = "default"
	}
	return ns, nil
}

// NewRootCommand builds `kubectl pulltrace` and its subcommands.
func NewRootCommand(o *Options) *cobra.Command {
	root := &cobra.Command{
		Use:   "kubectl-pulltrace",
		Short: "Live container image pull progress on Kubernetes",
		Long: `kubectl pulltrace shows what Pulltrace sees: which images are being pulled on which
nodes, for which pods, how far along they are and how long they will take.

The plugin talks to the Pulltrace server only through the Kubernetes API server's service
proxy (/api/v1/namespaces/<ns>/services/<svc>:<port>/proxy/), as the user of your kubeconfig:
you need ` + "`get`" + ` on ` + "`services/proxy`" + ` in the server's namespace.

` + exitCodesHelp,
		Example: `  # Install Pulltrace into the namespace "pulltrace"
  kubectl pulltrace install

  # What is being pulled right now, everywhere
  kubectl pulltrace get -A

  # Follow the pulls of a pod until its images are there
  kubectl pulltrace follow pod/web-5d9c7 -n shop

  # Open the web UI through the API server
  kubectl pulltrace ui`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl pulltrace"},
		SilenceUsage:  true,
		SilenceErrors: true,
		// Set, so cobra hands an unknown command to unknownCommand instead of failing with
		// an untyped error of its own.
		Args:                       unknownCommand,
		SuggestionsMinimumDistance: 2,
		// Bare `kubectl pulltrace` prints help rather than failing.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetIn(o.Streams.In)
	root.SetOut(o.Streams.Out)
	root.SetErr(o.Streams.ErrOut)
	flags := root.PersistentFlags()
	o.Config.AddFlags(flags)
	o.klogFlags = addKlogFlags(flags)
	flags.StringVar(&o.ServerNamespace, "server-namespace", o.ServerNamespace, "Namespace of the Pulltrace server's Service")
	flags.StringVar(&o.ServerService, "server-service", o.ServerService, "Name of the Pulltrace server's Service")
	flags.StringVar(&o.ServerPort, "server-port", o.ServerPort, "Port of the Pulltrace server's Service: its name or number")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &ExitError{Code: ExitUsage, Err: err, Msg: err.Error()}
	})
	registerGlobalCompletions(root, o)

	root.AddCommand(
		newGetCommand(o),
		newFollowCommand(o),
		newInstallCommand(o),
		newUninstallCommand(o),
		newUICommand(o),
		newVersionCommand(o),
		newCompletionCommand(o),
	)
	return root
}

// addKlogFlags adds kubectl's -v/--v (log verbosity: 6 shows each request, 8 its body) and
// --vmodule; client-go logs through klog to stderr.
func addKlogFlags(flags *pflag.FlagSet) *flag.FlagSet {
	gfs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(gfs)
	for _, name := range []string{"v", "vmodule"} {
		pf := pflag.PFlagFromGoFlag(gfs.Lookup(name))
		if name == "v" {
			pf.Shorthand = "v"
		}
		flags.AddFlag(pf)
	}
	return gfs
}

// Execute runs the command line args and returns the process exit code. Errors are
// printed as one "error: ..." line, never a stack trace.
func Execute(ctx context.Context, o *Options, args []string) int {
	root := NewRootCommand(o)
	root.SetArgs(args)
	// klog's state is the process's; it logs to this run's stderr and is reset after it.
	klog.LogToStderr(false)
	klog.SetOutput(o.Streams.ErrOut)
	defer func() {
		klog.Flush()
		_ = o.klogFlags.Set("v", "0")
		_ = o.klogFlags.Set("vmodule", "")
	}()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code := ExitCode(err)
	if code == ExitInterrupted {
		fmt.Fprintln(o.Streams.ErrOut, "interrupted")
		return code
	}
	msg := err.Error()
	fmt.Fprintf(o.Streams.ErrOut, "error: %s\n", msg)
	if code == ExitUsage {
		fmt.Fprintln(o.Streams.ErrOut, "See 'kubectl pulltrace --help' for usage.")
	}
	return code
}

// Main is the whole program: cmd/kubectl-pulltrace only wires it.
func Main(ctx context.Context, version string, args []string) int {
	o := NewOptions(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}, version)
	return Execute(ctx, o, args)
}

// unknownCommand is the root's argument check: any argument there names no subcommand.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return usageErr("%s", msg)
}

// noArgs rejects positional arguments with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErr("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}
