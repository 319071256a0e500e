package charts

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/registry"
)

// PushOptions say where Push puts the chart.
type PushOptions struct {
	// Dir is the chart directory (charts/pulltrace).
	Dir string
	// Registry is the OCI location without the chart name, with or without "oci://":
	// "ghcr.io/d44b/charts" makes oci://ghcr.io/d44b/charts/pulltrace.
	Registry string
	// Version overrides Chart.yaml's version; empty keeps it.
	Version string
	// PlainHTTP talks HTTP instead of HTTPS. Loopback registries always use it.
	PlainHTTP bool
	// CredentialsFile is Helm's registry config (`helm registry login` writes it); empty
	// means no stored credentials.
	CredentialsFile string
	// WorkDir receives the packaged .tgz; empty means a temporary folder removed afterwards.
	WorkDir string
}

// Pushed says what landed in the registry.
type Pushed struct {
	Ref     string // host/path/name:version, what `helm install oci://<Ref without :version>` takes
	Version string
	Digest  string // of the OCI manifest
	Archive string // the packaged .tgz (gone when WorkDir was empty)
}

// Push packages the chart as `helm package` does and pushes it as `helm push` does.
func Push(o PushOptions) (Pushed, error) {
	remote := strings.TrimSuffix(strings.TrimPrefix(o.Registry, "oci://"), "/")
	if remote == "" || strings.Contains(remote, "://") {
		return Pushed{}, fmt.Errorf("registry %q: want host[:port]/path, optionally with oci://", o.Registry)
	}
	work := o.WorkDir
	if work == "" {
		tmp, err := os.MkdirTemp("", "pulltrace-chart-")
		if err != nil {
			return Pushed{}, fmt.Errorf("package: %w", err)
		}
		defer os.RemoveAll(tmp)
		work = tmp
	}
	pkg := action.NewPackage()
	pkg.Destination = work
	pkg.Version = o.Version
	archive, err := pkg.Run(o.Dir, nil)
	if err != nil {
		return Pushed{}, fmt.Errorf("package %s: %w", o.Dir, err)
	}
	data, err := os.ReadFile(archive)
	if err != nil {
		return Pushed{}, fmt.Errorf("package %s: %w", o.Dir, err)
	}
	// The archive is <name>-<version>.tgz; its metadata gives name and version exactly.
	name, version, err := archiveNameVersion(archive)
	if err != nil {
		return Pushed{}, err
	}

	opts := []registry.ClientOption{registry.ClientOptWriter(io.Discard), registry.ClientOptCredentialsFile(o.CredentialsFile)}
	if o.PlainHTTP || loopback(remote) {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	client, err := registry.NewClient(opts...)
	if err != nil {
		return Pushed{}, fmt.Errorf("registry client: %w", err)
	}
	ref := fmt.Sprintf("%s/%s:%s", remote, name, version)
	res, err := client.Push(data, ref)
	if err != nil {
		return Pushed{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return Pushed{Ref: res.Ref, Version: version, Digest: res.Manifest.Digest, Archive: archive}, nil
}

func archiveNameVersion(archive string) (string, string, error) {
	c, err := loadArchive(archive)
	if err != nil {
		return "", "", fmt.Errorf("read back %s: %w", filepath.Base(archive), err)
	}
	return c.Name(), c.Metadata.Version, nil
}

// loopback says whether a registry host is this machine, which has no TLS certificate to
// offer (the test harness's registry, a port-forward).
func loopback(remote string) bool {
	host := strings.SplitN(remote, "/", 2)[0]
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
