package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// preparePodNetwork picks the cluster's addresses, creates the pod bridge and the cluster's
// top cgroup, and records both for Teardown before anything uses them.
func (c *Cluster) preparePodNetwork(ctx context.Context) error {
	pn, err := newPodNetwork()
	if err != nil {
		return err
	}
	c.podNet = pn
	if err := pn.create(ctx, c.Dir); err != nil {
		return err
	}
	c.cgroup = "pulltrace-" + strings.TrimPrefix(filepath.Base(c.Dir), "pulltrace-")
	if err := appendLine(filepath.Join(c.Dir, cgroupsFile), c.cgroup); err != nil {
		return fmt.Errorf("record cgroup: %w", err)
	}
	if err := makeCgroup(c.cgroup); err != nil {
		return err
	}
	for i, o := range c.opts.Nodes {
		c.nodes = append(c.nodes, c.newNode(i, o))
	}
	seen := map[string]bool{}
	for _, n := range c.nodes {
		if seen[n.Name] {
			return fmt.Errorf("two nodes named %s", n.Name)
		}
		seen[n.Name] = true
	}
	c.log.Info("pod network", "bridge", pn.bridge, "pods", pn.podSubnet(), "services", pn.serviceSubnet(), "cgroup", c.cgroup)
	return nil
}

// startNodes runs what a real cluster adds to the apiserver: images for the nodes, the
// controllers and the scheduler, cluster DNS and Service addresses, and the nodes.
func (c *Cluster) startNodes(ctx context.Context) error {
	var wg sync.WaitGroup
	var imgErr, ctlErr, netErr error
	wg.Go(func() { c.PauseImage, imgErr = c.pushNodeImages(ctx) })
	wg.Go(func() { ctlErr = c.startControllers(ctx) })
	wg.Go(func() {
		cl, err := c.client()
		if err != nil {
			netErr = err
			return
		}
		apiAddr := strings.TrimPrefix(c.APIServerURL, "https://")
		c.svcNet, netErr = startServiceNet(ctx, cl, c.podNet, apiAddr, c.log)
	})
	wg.Wait()
	if err := errors.Join(imgErr, ctlErr, netErr); err != nil {
		return err
	}
	errs := make([]error, len(c.nodes))
	for i, n := range c.nodes {
		wg.Go(func() { errs[i] = n.start(ctx, c.PauseImage) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Cluster) stopNodes(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.nodes))
	for i, n := range c.nodes {
		wg.Go(func() { errs[i] = n.stop(ctx) })
	}
	wg.Wait()
	if c.cgroup != "" {
		errs = append(errs, removeCgroup(ctx, c.cgroup))
	}
	return errors.Join(errs...)
}

// RealNodes lists the cluster's real nodes, in Options.Nodes order.
func (c *Cluster) RealNodes() []*Node { return append([]*Node(nil), c.nodes...) }

// RealNode returns the real node named name, or nil.
func (c *Cluster) RealNode(name string) *Node {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// PodNetwork describes the pod network of a cluster with real nodes.
type PodNetwork struct {
	Bridge   string // the Linux bridge every node's pods join
	Gateway  string // the host's address on it (cluster DNS, node InternalIP)
	Pods     string // the pod CIDR
	Services string // the Service CIDR
}

// Network returns the pod network, or the zero value without real nodes.
func (c *Cluster) Network() PodNetwork {
	if c.podNet == nil {
		return PodNetwork{}
	}
	return PodNetwork{Bridge: c.podNet.bridge, Gateway: c.podNet.gateway().String(),
		Pods: c.podNet.podSubnet(), Services: c.podNet.serviceSubnet()}
}

// startTimeout is how long StartT gives a cluster to come up on a loaded 2-core machine.
func startTimeout(o Options) time.Duration {
	if len(o.Nodes) > 0 {
		return 5 * time.Minute
	}
	return 3 * time.Minute
}

// Cgroup is the cluster's top cgroup (relative to each hierarchy), "" without real nodes.
func (c *Cluster) Cgroup() string { return c.cgroup }
