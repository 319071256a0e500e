// Command chartpush packages charts/pulltrace and pushes it to an OCI registry with the Helm
// SDK (`make chart-push REGISTRY=...`): what `helm package` and `helm push` do, without a
// helm binary.
package main

import (
	"flag"
	"fmt"
	"os"

	"helm.sh/helm/v3/pkg/cli"

	"github.com/d44b/pulltrace/charts"
)

func main() {
	fs := flag.NewFlagSet("chartpush", flag.ContinueOnError)
	reg := fs.String("registry", "", "OCI location without the chart name, e.g. ghcr.io/d44b/charts or 127.0.0.1:5000/charts (required)")
	dir := fs.String("chart", "charts/pulltrace", "chart directory")
	version := fs.String("version", "", "chart version to publish; empty: Chart.yaml's")
	plain := fs.Bool("plain-http", false, "use HTTP, not HTTPS (always on for loopback registries)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *reg == "" {
		fmt.Fprintln(os.Stderr, "chartpush: -registry is required, e.g. make chart-push REGISTRY=ghcr.io/d44b/charts")
		os.Exit(2)
	}
	p, err := charts.Push(charts.PushOptions{Dir: *dir, Registry: *reg, Version: *version, PlainHTTP: *plain,
		CredentialsFile: cli.New().RegistryConfig})
	if err != nil {
		fmt.Fprintln(os.Stderr, "chartpush:", err)
		os.Exit(1)
	}
	fmt.Printf("pushed %s (%s)\ninstall: helm install pulltrace oci://%s --version %s -n pulltrace\n",
		p.Ref, p.Digest, trimTag(p.Ref), p.Version)
}

func trimTag(ref string) string {
	for i := len(ref) - 1; i >= 0 && ref[i] != '/'; i-- {
		if ref[i] == ':' {
			return ref[:i]
		}
	}
	return ref
}
