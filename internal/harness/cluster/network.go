package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// bridgesFile lists the Linux bridges a cluster created, one a line, for Teardown.
const bridgesFile = "bridges"

// podNetwork is the pod network of a cluster with real nodes: one Linux bridge that every
// node's pods join, so pods on all nodes share one L2 segment and reach each other without
// any routing. The host holds the gateway address, which is how the apiserver's service proxy
// and the harness reach pod IPs, and how pods reach the cluster's DNS and Service addresses.
//
// Pods get 10.214.B.0/24 (each node a slice of it, so host-local IPAM on two nodes never
// hands out the same address) and Services 10.215.B.0/24, with B picked free on this machine.
// Pods get no default route and nothing is masqueraded: the only route they have beyond their
// own /24 is the Service range, and those addresses are local to the host.
type podNetwork struct {
	block   int
	bridge  string
	created bool
}

func newPodNetwork() (*podNetwork, error) {
	used := map[int]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("interface addresses: %w", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip4 := ipn.IP.To4(); ip4 != nil && ip4[0] == 10 && (ip4[1] == 214 || ip4[1] == 215) {
				used[int(ip4[2])] = true
			}
		}
	}
	var free []int
	for b := 1; b < 255; b++ {
		if !used[b] {
			free = append(free, b)
		}
	}
	if len(free) == 0 {
		return nil, errors.New("no free /24 in 10.214.0.0/16 for a pod network")
	}
	return &podNetwork{block: free[rand.IntN(len(free))], bridge: "ptbr" + randomHex(4)}, nil
}

func (n *podNetwork) gateway() net.IP       { return net.IPv4(10, 214, byte(n.block), 1).To4() }
func (n *podNetwork) podSubnet() string     { return fmt.Sprintf("10.214.%d.0/24", n.block) }
func (n *podNetwork) serviceSubnet() string { return fmt.Sprintf("10.215.%d.0/24", n.block) }

// apiServiceIP is the first address of the Service range: the apiserver gives it to
// default/kubernetes, so the serving certificate must name it.
func (n *podNetwork) apiServiceIP() net.IP { return net.IPv4(10, 215, byte(n.block), 1).To4() }

// nodeRange is node i's slice of the pod /24 (of count nodes), skipping .0-.9 and .250-.255.
func (n *podNetwork) nodeRange(i, count int) (start, end net.IP) {
	size := 240 / max(count, 1)
	lo := 10 + i*size
	return net.IPv4(10, 214, byte(n.block), byte(lo)).To4(), net.IPv4(10, 214, byte(n.block), byte(lo+size-1)).To4()
}

// create makes the bridge and gives the host the gateway address on it. The bridge is
// recorded before it exists so that a Teardown after a crash mid-way still deletes it.
func (n *podNetwork) create(ctx context.Context, dir string) error {
	if err := appendLine(filepath.Join(dir, bridgesFile), n.bridge); err != nil {
		return fmt.Errorf("record bridge: %w", err)
	}
	n.created = true
	for _, s := range [][]string{
		{"link", "add", n.bridge, "type", "bridge"},
		{"addr", "add", n.gateway().String() + "/24", "dev", n.bridge},
		{"link", "set", n.bridge, "up"},
	} {
		if err := ipCmd(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

// addLocalIP puts a Service address on the bridge, so the host accepts connections to it.
func (n *podNetwork) addLocalIP(ctx context.Context, ip string) error {
	err := ipCmd(ctx, "addr", "add", ip+"/32", "dev", n.bridge)
	if err != nil && strings.Contains(err.Error(), "File exists") {
		return nil
	}
	return err
}

// cniConfig is node i's CNI network: the shared bridge, host-local addresses from the node's
// slice, a route to the Service range through the host, and loopback. isGateway stays false
// although the host is the gateway: the bridge plugin would otherwise switch on
// net.ipv4.ip_forward for the whole machine. The harness puts the address on the bridge itself.
func (n *podNetwork) cniConfig(i, count int, ipamDir string) string {
	start, end := n.nodeRange(i, count)
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "pulltrace",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "rangeStart": %q, "rangeEnd": %q, "gateway": %q}]],
        "routes": [{"dst": %q, "gw": %q}],
        "dataDir": %q
      }
    },
    {"type": "loopback"}
  ]
}
`, n.bridge, n.podSubnet(), start, end, n.gateway(), n.serviceSubnet(), n.gateway(), ipamDir)
}

func ipCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// deleteBridge removes a bridge if it exists; the addresses on it go with it.
func deleteBridge(ctx context.Context, name string) error {
	if _, err := os.Stat(filepath.Join("/sys/class/net", name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return ipCmd(ctx, "link", "delete", name)
}
