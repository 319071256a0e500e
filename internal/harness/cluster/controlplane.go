package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// startControllers starts kube-controller-manager (Deployments, ReplicaSets, DaemonSets,
// EndpointSlices, namespaces, garbage collection, node lifecycle, and the service account
// and token controllers, so that pods get a default ServiceAccount and a token) and
// kube-scheduler. Both use the admin kubeconfig and serve only their health on loopback.
func (c *Cluster) startControllers(ctx context.Context) error {
	pk := filepath.Join(c.kubeDir(), "pki")
	cm, err := c.startComponent(ctx, "kube-controller-manager", func(port int) []string {
		return []string{
			"--kubeconfig=" + c.Kubeconfig,
			"--authentication-kubeconfig=" + c.Kubeconfig,
			"--authorization-kubeconfig=" + c.Kubeconfig,
			"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
			"--cert-dir=" + filepath.Join(c.kubeDir(), "controller-manager"),
			"--leader-elect=false",
			"--service-account-private-key-file=" + filepath.Join(pk, "sa.key"),
			"--root-ca-file=" + filepath.Join(pk, "ca.crt"),
			"--service-cluster-ip-range=" + c.podNet.serviceSubnet(),
			"--kube-api-qps=100", "--kube-api-burst=200",
			"--profiling=false",
		}
	})
	if err != nil {
		return err
	}
	sched, err := c.startComponent(ctx, "kube-scheduler", func(port int) []string {
		return []string{
			"--kubeconfig=" + c.Kubeconfig,
			"--authentication-kubeconfig=" + c.Kubeconfig,
			"--authorization-kubeconfig=" + c.Kubeconfig,
			"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
			"--cert-dir=" + filepath.Join(c.kubeDir(), "scheduler"),
			"--leader-elect=false",
			"--profiling=false",
		}
	})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.controllerManager, c.scheduler = cm, sched
	c.mu.Unlock()
	// The token and service account controllers are what ServiceAccount admission needs
	// before any pod can be created.
	cl, _ := c.client()
	return waitReady(ctx, cm, 60*time.Second, func(ctx context.Context) error {
		_, err := cl.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

func (c *Cluster) startComponent(ctx context.Context, name string, args func(port int) []string) (*Process, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		p, err := c.startChild(name, c.bin("kube", name), args(port), os.Environ(), nil)
		if err != nil {
			return nil, err
		}
		hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
			// Its serving certificate is self-signed; only liveness is asked here.
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		}}
		lastErr = waitReady(ctx, p, 60*time.Second, func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/healthz", port), nil)
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s healthz: %s", name, resp.Status)
			}
			return nil
		})
		hc.CloseIdleConnections()
		if lastErr == nil {
			c.log.Info("ready", "name", name)
			return p, nil
		}
		p.Kill()
		if !addrInUse(p) {
			return nil, lastErr
		}
	}
	return nil, lastErr
}
