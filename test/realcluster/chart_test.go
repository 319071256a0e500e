package realcluster

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestChart checks what `kubectl pulltrace install` left: an agent pod Ready on every node
// (so each mounted its own node's containerd socket and reached it), the server pod Ready,
// the plugin reaching the server through the Service and the apiserver's service proxy, and
// `helm test` passing.
func TestChart(t *testing.T) {
	t.Logf("cluster, images and chart took %s", env.setup)
	ctx := t.Context()
	agents := podsByNode(t, serverNS, "app.kubernetes.io/component=agent")
	for _, n := range env.c.RealNodes() {
		ps := agents[n.Name]
		if len(ps) != 1 {
			t.Errorf("node %s has %d agent pods, want 1", n.Name, len(ps))
			continue
		}
		if !podReady(&ps[0]) {
			t.Errorf("agent pod %s on %s is not ready", ps[0].Name, n.Name)
		}
	}
	servers, err := env.cs.CoreV1().Pods(serverNS).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=server"})
	if err != nil {
		t.Fatal(err)
	}
	if len(servers.Items) != 1 || !podReady(&servers.Items[0]) {
		t.Fatalf("server pods: %d, want 1 ready\n%s", len(servers.Items), podReport(env.cs, serverNS))
	}

	// The plugin through the service proxy: the server answers, and it has the agents'
	// reports (the pulls of the chart's own images were seen by the agents, or not: the
	// agent may have started after them; only the answer is checked here).
	r := pulltrace(ctx, "get")
	if r.code != 0 {
		t.Fatalf("kubectl pulltrace get: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = pulltrace(ctx, "version")
	if r.code != 0 || !strings.Contains(r.stdout, "test") {
		t.Fatalf("kubectl pulltrace version: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	h := tool(ctx, env.helm, "", "--kubeconfig", env.c.Kubeconfig, "test", "pulltrace", "-n", serverNS, "--timeout", "2m")
	if h.code != 0 {
		t.Fatalf("helm test: exit %d\n%s\n%s\n%s\n%s", h.code, h.stdout, h.stderr, podLogs(serverNS, "pulltrace-test-api"), podReport(env.cs, serverNS))
	}
	if !strings.Contains(h.stdout, "Phase:          Succeeded") && !strings.Contains(h.stdout, "Succeeded") {
		t.Fatalf("helm test did not succeed:\n%s", h.stdout)
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
