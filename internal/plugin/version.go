package plugin

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/d44b/pulltrace/pkg/api"
)

func newVersionCommand(o *Options) *cobra.Command {
	var clientOnly bool
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version and the Pulltrace server's",
		Long: `Print the plugin's version and, through the API server's service proxy, the server's
(/api/v1/version). An unreachable server is reported, not an error: the exit code is 0.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runVersion(cmd.Context(), o, clientOnly, output)
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "Only the plugin's version; do not contact the cluster")
	cmd.Flags().StringVarP(&output, "output", "o", "", "Output format: json or yaml")
	return cmd
}

// VersionInfo is `version -o json`.
type VersionInfo struct {
	Client      string `json:"clientVersion"`
	Server      string `json:"serverVersion,omitempty"`
	Schema      string `json:"serverSchemaVersion,omitempty"`
	ServerError string `json:"serverError,omitempty"`
}

func runVersion(ctx context.Context, o *Options, clientOnly bool, output string) error {
	switch output {
	case "", "json", "yaml":
	default:
		return usageErr("unknown output format %q: want json or yaml", output)
	}
	info := VersionInfo{Client: o.Version}
	if !clientOnly {
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		srv, err := o.server()
		if err == nil {
			var v *api.ServerVersion
			if v, err = srv.Version(ctx); err == nil {
				info.Server, info.Schema = v.Version, v.SchemaVersion
			}
		}
		if err != nil {
			info.ServerError = err.Error()
		}
	}
	switch output {
	case "json":
		return printJSON(o.Streams.Out, info)
	case "yaml":
		return printYAML(o.Streams.Out, info)
	}
	out := o.Streams.Out
	fmt.Fprintf(out, "kubectl-pulltrace: %s\n", info.Client)
	switch {
	case clientOnly:
	case info.ServerError != "":
		fmt.Fprintf(out, "server: not reachable (%s)\n", info.ServerError)
	default:
		schema := ""
		if info.Schema != "" {
			schema = ", schema " + info.Schema
		}
		fmt.Fprintf(out, "server: %s (%s/%s%s)\n", info.Server, o.ServerNamespace, o.ServerService, schema)
	}
	return nil
}
