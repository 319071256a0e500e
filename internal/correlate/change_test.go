package correlate

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/d44b/pulltrace/pkg/api"
)

func podOn(node, name string, images ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: corev1.PodSpec{NodeName: node}}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: string(rune('a' + i)), Image: img})
	}
	return p
}

func TestChangesNameTheNodesAndImages(t *testing.T) {
	c, err := New(Config{Client: fake.NewClientset()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, some := c.changes.take(); some {
		t.Fatal("nothing changed yet")
	}
	c.podChanged(podOn("n1", "web", "nginx:1.27", "registry.local:5000/team/app@sha256:"+sha('1')))
	c.podChanged(podOn("", "unscheduled", "redis:7")) // on no node: concerns no pull
	nodes, touches, some := c.changes.take()
	if !some || !slices.Equal(nodes, []string{"n1"}) {
		t.Fatalf("nodes %v (some=%v), want [n1]", nodes, some)
	}
	for _, tc := range []struct {
		p    api.Pull
		want bool
	}{
		{api.Pull{NodeName: "n1", ImageRef: "docker.io/library/nginx:1.27"}, true},
		{api.Pull{NodeName: "n1", ImageRef: "docker.io/library/nginx"}, true}, // tag not known yet
		{api.Pull{NodeName: "n1", ImageRef: "docker.io/library/redis:7"}, false},
		{api.Pull{NodeName: "n2", ImageRef: "docker.io/library/nginx:1.27"}, false},
		{api.Pull{NodeName: "n1", ImageRef: "mirror.local/other:1", ManifestDigest: "sha256:" + sha('1')}, true},
	} {
		if got := touches(&tc.p); got != tc.want {
			t.Errorf("touches(%s on %s) = %v, want %v", tc.p.ImageRef, tc.p.NodeName, got, tc.want)
		}
	}
	if _, _, some := c.changes.take(); some {
		t.Fatal("take must empty the set")
	}

	// A kubelet event: "Pulling" names its image; "Failed" concerns its pod's images.
	if err := c.pods[0].GetIndexer().Add(podOn("n2", "api", "ghcr.io/org/api:v2")); err != nil {
		t.Fatal(err)
	}
	c.eventChanged(&corev1.Event{Reason: "Pulling", Message: `Pulling image "busybox:1.36"`, Source: corev1.EventSource{Host: "n3"}})
	c.eventChanged(&corev1.Event{Reason: "Failed", InvolvedObject: corev1.ObjectReference{Namespace: "ns", Name: "api"}})
	c.eventChanged(&corev1.Event{Reason: "Scheduled", InvolvedObject: corev1.ObjectReference{Namespace: "ns", Name: "other"}})
	nodes, touches, _ = c.changes.take()
	slices.Sort(nodes)
	if !slices.Equal(nodes, []string{"n2", "n3"}) {
		t.Fatalf("nodes %v, want [n2 n3]", nodes)
	}
	if !touches(&api.Pull{NodeName: "n3", ImageRef: "docker.io/library/busybox:1.36"}) || !touches(&api.Pull{NodeName: "n2", ImageRef: "ghcr.io/org/api:v2"}) ||
		touches(&api.Pull{NodeName: "n3", ImageRef: "ghcr.io/org/api:v2"}) {
		t.Fatal("event changes concern the wrong pulls")
	}

	// An event of a pod the cache does not know, with a host: that whole node. A deleted
	// object the informer lost track of: everything.
	c.eventChanged(&corev1.Event{Reason: "BackOff", InvolvedObject: corev1.ObjectReference{Namespace: "ns", Name: "gone"}, Source: corev1.EventSource{Host: "n4"}})
	nodes, touches, _ = c.changes.take()
	if !slices.Equal(nodes, []string{"n4"}) || !touches(&api.Pull{NodeName: "n4", ImageRef: "anything:1"}) {
		t.Fatalf("unknown pod on n4: nodes %v", nodes)
	}
	c.podChanged(cache.DeletedFinalStateUnknown{Key: "ns/x", Obj: "not a pod"})
	if nodes, touches, some := c.changes.take(); !some || nodes != nil || touches != nil {
		t.Fatalf("an unknown object must mean every node: %v", nodes)
	}
}

func sha(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}
