package correlate

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/d44b/pulltrace/pkg/api"
)

func podRef(pod *corev1.Pod, container string) api.PodRef {
	r := api.PodRef{Namespace: pod.Namespace, PodName: pod.Name, Container: container}
	r.OwnerKind, r.OwnerName = owner(pod)
	return r
}

// owner is the workload a pod belongs to, from its controller ownerReference. A
// ReplicaSet that a Deployment made is named "<deployment>-<pod-template-hash>" and its
// pods carry that hash as a label, so the Deployment is read from the names alone: no
// ReplicaSet informer (and no RBAC on replicasets) for what the names already say.
func owner(pod *corev1.Pod) (kind, name string) {
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil {
		return "", ""
	}
	if ref.Kind == "ReplicaSet" {
		if h := pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]; h != "" {
			if d, ok := strings.CutSuffix(ref.Name, "-"+h); ok && d != "" {
				return "Deployment", d
			}
		}
	}
	return ref.Kind, ref.Name
}
