package realcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/pkg/api"
)

// pushRunnable pushes a runnable image of a few random layers through which pulls are slow
// enough to watch.
func pushRunnable(t *testing.T, repo, tag string, layers ...int64) *cluster.Image {
	t.Helper()
	im, err := env.c.PushImage(t.Context(), cluster.ImageSpec{Repo: repo, Tag: tag, LayerSizes: layers, Runnable: true})
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// events parses `follow -o json` output: one v1 PullEvent a line.
func events(t *testing.T, out string) []api.PullEvent {
	t.Helper()
	var evs []api.PullEvent
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var e api.PullEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("follow -o json printed a line that is not a PullEvent: %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

// waitFollow waits for a follow run with a deadline that only guards against a hang.
func waitFollow(t *testing.T, r *running, what string) result {
	t.Helper()
	select {
	case code := <-r.done:
		return result{code: code, stdout: r.out.String(), stderr: r.errOut.String()}
	case <-time.After(4 * time.Minute):
		t.Fatalf("%s did not end\nstdout:\n%s\nstderr:\n%s", what, r.out.String(), r.errOut.String())
		return result{}
	}
}

// TestMissingTag: the kubelet's real ErrImagePull and ImagePullBackOff, follow exiting 1 with
// the kubelet's message, and the server's pull.failed carrying the real text.
func TestMissingTag(t *testing.T) {
	ns := testNamespace(t, "missing")
	ref := env.c.PullRef("missing/web", "nope")
	mustKubectl(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: broken, namespace: %s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: web, image: %q}
`, ns, ref), "apply", "-f", "-")
	r := waitFollow(t, startPulltrace(t.Context(), "follow", "pod/broken", "-n", ns, "-o", "json"), "follow pod/broken")
	if r.code != 1 {
		t.Fatalf("follow of a missing tag: exit %d, want 1\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "not found") {
		t.Errorf("follow's error does not carry the kubelet's text: %q", r.stderr)
	}
	var failed *api.PullEvent
	for _, e := range events(t, r.stdout) {
		if e.Type == api.EventPullFailed {
			failed = &e
		}
	}
	if failed == nil {
		t.Fatalf("no pull.failed in the follow's output:\n%s", r.stdout)
	}
	if !strings.Contains(failed.Pull.Error, "failed to resolve") || !strings.Contains(failed.Pull.Error, "not found") {
		t.Errorf("pull.failed error %q is not the kubelet's text", failed.Pull.Error)
	}
	// The real kubelet's back-off cycle.
	err := wait.PollUntilContextTimeout(t.Context(), time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		evs, err := env.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=broken"})
		if err != nil {
			return false, nil
		}
		var errPull, backOff bool
		for _, e := range evs.Items {
			errPull = errPull || e.Message == "Error: ErrImagePull"
			backOff = backOff || e.Message == "Error: ImagePullBackOff"
		}
		return errPull && backOff, nil
	})
	if err != nil {
		t.Errorf("no ErrImagePull and ImagePullBackOff events from the kubelet: %v\n%s", err, podReport(env.cs, ns))
	}
}

// TestIfNotPresentCached: a second pod of an image already on the node pulls nothing, and
// follow says the image is already present.
func TestIfNotPresentCached(t *testing.T) {
	ns := testNamespace(t, "cached")
	im := pushRunnable(t, "cached/web", "v1", 1*mib)
	pod := func(name string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - {name: web, image: %q, imagePullPolicy: IfNotPresent}
`, name, ns, serialNode, im.Ref)
	}
	mustKubectl(t, pod("first"), "apply", "-f", "-")
	if r := waitFollow(t, startPulltrace(t.Context(), "follow", "pod/first", "-n", ns), "follow pod/first"); r.code != 0 {
		t.Fatalf("follow pod/first: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	mustKubectl(t, pod("second"), "apply", "-f", "-")
	r := waitFollow(t, startPulltrace(t.Context(), "follow", "pod/second", "-n", ns), "follow pod/second")
	if r.code != 0 {
		t.Fatalf("follow pod/second: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "already present") && !strings.Contains(r.stdout, "cached") && !strings.Contains(r.stdout, "present:") {
		t.Errorf("follow of the re-deploy does not say the image was present:\n%s", r.stdout)
	}
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		evs, err := env.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=second"})
		if err != nil {
			return false, nil
		}
		for _, e := range evs.Items {
			if e.Reason == "Pulled" && strings.Contains(e.Message, "already present on machine") {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Errorf("kubelet did not report the image as present: %v", err)
	}
}
