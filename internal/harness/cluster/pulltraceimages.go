package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/d44b/pulltrace/hack/images/ociimage"
)

// PulltraceImages are the agent and server images a cluster's registry holds, as the chart
// wants them.
type PulltraceImages struct {
	AgentRepo, ServerRepo, Tag string
	// Busybox is the image of the chart's `helm test` pod.
	Busybox string
}

// HelmValues are the --set values that point the chart at these images.
func (im PulltraceImages) HelmValues() []string {
	return []string{
		"agent.image.repository=" + im.AgentRepo, "agent.image.tag=" + im.Tag,
		"server.image.repository=" + im.ServerRepo, "server.image.tag=" + im.Tag,
		"test.image=" + im.Busybox,
	}
}

// PushPulltrace builds the agent and server images the way `make images` does (hack/images),
// for this machine's platform only, and pushes them to the registry directly (unthrottled,
// so that the chart's own pulls do not slow the tests).
func (c *Cluster) PushPulltrace(ctx context.Context, tag string) (PulltraceImages, error) {
	if c.RegistryAddr == "" {
		return PulltraceImages{}, fmt.Errorf("cluster runs without a registry")
	}
	out := filepath.Join(c.Dir, "images")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return PulltraceImages{}, err
	}
	built, err := ociimage.Build(ctx, ociimage.Options{
		BuildOptions: ociimage.BuildOptions{ModuleDir: filepath.Dir(filepath.Dir(c.components)), OutDir: out, Log: c.log},
		Meta:         ociimage.Meta{Version: tag},
		Platforms:    []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}},
		Components:   ociimage.Components(),
	})
	if err != nil {
		return PulltraceImages{}, err
	}
	im := PulltraceImages{Tag: tag, Busybox: c.BusyboxImage}
	for _, b := range built {
		repo := c.RegistryAddr + "/pulltrace/" + b.Component.Name
		if err := ociimage.Push(ctx, repo+":"+tag, b.Index); err != nil {
			return PulltraceImages{}, err
		}
		switch b.Component.Name {
		case ociimage.Agent.Name:
			im.AgentRepo = repo
		case ociimage.Server.Name:
			im.ServerRepo = repo
		}
	}
	c.log.Info("pushed pulltrace images", "agent", im.AgentRepo, "server", im.ServerRepo, "tag", tag)
	return im, nil
}
