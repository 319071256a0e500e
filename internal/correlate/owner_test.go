package correlate

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestOwner(t *testing.T) {
	ctrl := func(kind, name string) []metav1.OwnerReference {
		yes := true
		return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &yes}}
	}
	notCtrl := []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-5d9f"}}
	for _, c := range []struct {
		name     string
		refs     []metav1.OwnerReference
		labels   map[string]string
		kind, nm string
	}{
		{"deployment through its replicaset", ctrl("ReplicaSet", "web-5d9f7c6b8"), map[string]string{"pod-template-hash": "5d9f7c6b8"}, "Deployment", "web"},
		{"bare replicaset", ctrl("ReplicaSet", "web-abc"), nil, "ReplicaSet", "web-abc"},
		{"replicaset whose name lacks the hash", ctrl("ReplicaSet", "web"), map[string]string{"pod-template-hash": "5d9f7c6b8"}, "ReplicaSet", "web"},
		{"daemonset", ctrl("DaemonSet", "agent"), nil, "DaemonSet", "agent"},
		{"statefulset", ctrl("StatefulSet", "db"), nil, "StatefulSet", "db"},
		{"job", ctrl("Job", "migrate"), nil, "Job", "migrate"},
		{"no controller", notCtrl, nil, "", ""},
		{"bare pod", nil, nil, "", ""},
	} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", OwnerReferences: c.refs, Labels: c.labels}}
		if k, n := owner(pod); k != c.kind || n != c.nm {
			t.Errorf("%s: %s/%s, want %s/%s", c.name, k, n, c.kind, c.nm)
		}
	}
}
