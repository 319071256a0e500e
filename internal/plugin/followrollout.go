package plugin

import (
	"context"
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// rollout follows a workload's current pods the way `kubectl rollout status` follows its
// rollout: it reads the workload again and again, so that pods created after the follow
// started count (right after `kubectl apply` there may be none yet), and pods of an older
// revision (the previous ReplicaSet of a Deployment) stop counting.
type rollout struct {
	kind, name, namespace string
}

// rolloutView is one reading: the pods that make up the workload's current revision, and
// whether the workload has created all of them.
type rolloutView struct {
	pods     []*corev1.Pod
	complete bool
	// waiting says what an incomplete rollout still waits for, for the live view.
	waiting string
}

// revisionHashLabel is the label DaemonSet and StatefulSet controllers put on each pod with
// the hash of the ControllerRevision it was made from.
const revisionHashLabel = appsv1.ControllerRevisionHashLabelKey

func (r *rollout) read(ctx context.Context, cs kubernetes.Interface) (rolloutView, error) {
	get := metav1.GetOptions{}
	switch r.kind {
	case "deployment":
		d, err := cs.AppsV1().Deployments(r.namespace).Get(ctx, r.name, get)
		if err != nil {
			return rolloutView{}, explainKubeError(err, "get", "deployments", r.namespace, r.name)
		}
		return r.deployment(ctx, cs, d)
	case "replicaset":
		rs, err := cs.AppsV1().ReplicaSets(r.namespace).Get(ctx, r.name, get)
		if err != nil {
			return rolloutView{}, explainKubeError(err, "get", "replicasets", r.namespace, r.name)
		}
		pods, err := r.pods(ctx, cs, rs.Spec.Selector, ownedBy(rs.UID))
		want := int(ptrOr(rs.Spec.Replicas, 1))
		return rolloutView{pods: pods, complete: rs.Status.ObservedGeneration >= rs.Generation && len(pods) >= want,
			waiting: fmt.Sprintf("%d of %d pods created", len(pods), want)}, err
	case "daemonset":
		ds, err := cs.AppsV1().DaemonSets(r.namespace).Get(ctx, r.name, get)
		if err != nil {
			return rolloutView{}, explainKubeError(err, "get", "daemonsets", r.namespace, r.name)
		}
		hash, err := r.newestRevision(ctx, cs, ds.Spec.Selector, ds.UID)
		if err != nil {
			return rolloutView{}, err
		}
		pods, err := r.pods(ctx, cs, ds.Spec.Selector, func(p *corev1.Pod) bool {
			return ownedBy(ds.UID)(p) && (hash == "" || p.Labels[revisionHashLabel] == hash)
		})
		want := int(ds.Status.DesiredNumberScheduled)
		done := ds.Status.ObservedGeneration >= ds.Generation && hash != "" && len(pods) >= want && want > 0
		return rolloutView{pods: pods, complete: done, waiting: fmt.Sprintf("%d of %d nodes have a pod of the current revision", len(pods), want)}, err
	case "statefulset":
		ss, err := cs.AppsV1().StatefulSets(r.namespace).Get(ctx, r.name, get)
		if err != nil {
			return rolloutView{}, explainKubeError(err, "get", "statefulsets", r.namespace, r.name)
		}
		observed := ss.Status.ObservedGeneration >= ss.Generation
		rev := ss.Status.UpdateRevision
		pods, err := r.pods(ctx, cs, ss.Spec.Selector, func(p *corev1.Pod) bool {
			return ownedBy(ss.UID)(p) && observed && rev != "" && p.Labels[revisionHashLabel] == rev
		})
		want := int(ptrOr(ss.Spec.Replicas, 1))
		return rolloutView{pods: pods, complete: observed && rev != "" && len(pods) >= want,
			waiting: fmt.Sprintf("%d of %d pods of revision %s", len(pods), want, rev)}, err
	case "selector":
		// -l: the pods the selector matches, whoever made them; done once there is one.
		ls, err := metav1.ParseToLabelSelector(r.name)
		if err != nil {
			return rolloutView{}, exitErr(ExitUsage, err, "bad selector %q: %v", r.name, err)
		}
		pods, err := r.pods(ctx, cs, ls, func(*corev1.Pod) bool { return true })
		return rolloutView{pods: pods, complete: len(pods) > 0, waiting: "no pod matches " + r.name + " yet"}, err
	case "job":
		j, err := cs.BatchV1().Jobs(r.namespace).Get(ctx, r.name, get)
		if err != nil {
			return rolloutView{}, explainKubeError(err, "get", "jobs", r.namespace, r.name)
		}
		pods, err := r.pods(ctx, cs, j.Spec.Selector, ownedBy(j.UID))
		return rolloutView{pods: pods, complete: len(pods) > 0, waiting: "no pod created yet"}, err
	}
	return rolloutView{}, fmt.Errorf("cannot follow the rollout of a %s", r.kind)
}

// deployment is the newest ReplicaSet's pods, as `kubectl rollout status` judges a
// Deployment: nothing counts until the controller has seen the latest spec, then only the
// ReplicaSet with the highest revision, until it has all its replicas.
func (r *rollout) deployment(ctx context.Context, cs kubernetes.Interface, d *appsv1.Deployment) (rolloutView, error) {
	want := int(ptrOr(d.Spec.Replicas, 1))
	if d.Status.ObservedGeneration < d.Generation {
		return rolloutView{waiting: "waiting for the deployment controller to see the new spec"}, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return rolloutView{}, exitErr(ExitOther, err, "deployment %s/%s has no usable selector", r.namespace, r.name)
	}
	rss, err := cs.AppsV1().ReplicaSets(r.namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return rolloutView{}, explainKubeError(err, "list", "replicasets", r.namespace, "")
	}
	var newest *appsv1.ReplicaSet
	best := int64(-1)
	for i := range rss.Items {
		rs := &rss.Items[i]
		if !isControlledBy(rs.OwnerReferences, d.UID) {
			continue
		}
		rev, _ := strconv.ParseInt(rs.Annotations["deployment.kubernetes.io/revision"], 10, 64)
		if rev > best {
			newest, best = rs, rev
		}
	}
	if newest == nil {
		return rolloutView{waiting: "waiting for the new ReplicaSet"}, nil
	}
	pods, err := r.pods(ctx, cs, d.Spec.Selector, ownedBy(newest.UID))
	return rolloutView{pods: pods, complete: len(pods) >= want,
		waiting: fmt.Sprintf("%d of %d pods of ReplicaSet %s created", len(pods), want, newest.Name)}, err
}

// newestRevision is the hash of a DaemonSet's newest ControllerRevision, "" when there is none yet.
func (r *rollout) newestRevision(ctx context.Context, cs kubernetes.Interface, ls *metav1.LabelSelector, owner types.UID) (string, error) {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return "", exitErr(ExitOther, err, "%s/%s has no usable selector", r.kind, r.name)
	}
	revs, err := cs.AppsV1().ControllerRevisions(r.namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return "", explainKubeError(err, "list", "controllerrevisions", r.namespace, "")
	}
	hash, best := "", int64(-1)
	for _, cr := range revs.Items {
		if isControlledBy(cr.OwnerReferences, owner) && cr.Revision > best {
			hash, best = cr.Labels[revisionHashLabel], cr.Revision
		}
	}
	return hash, nil
}

// pods lists the live (not terminating) pods the selector matches that keep says belong.
func (r *rollout) pods(ctx context.Context, cs kubernetes.Interface, ls *metav1.LabelSelector, keep func(*corev1.Pod) bool) ([]*corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil || sel.Empty() || sel.String() == labels.Nothing().String() {
		return nil, exitErr(ExitOther, err, "%s/%s has no usable pod selector", r.kind, r.name)
	}
	list, err := cs.CoreV1().Pods(r.namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, explainKubeError(err, "list", "pods", r.namespace, "")
	}
	var out []*corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if p.DeletionTimestamp == nil && keep(p) {
			out = append(out, p)
		}
	}
	return out, nil
}

func ownedBy(uid types.UID) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool { return isControlledBy(p.OwnerReferences, uid) }
}

func isControlledBy(refs []metav1.OwnerReference, uid types.UID) bool {
	for _, r := range refs {
		if r.UID == uid && r.Controller != nil && *r.Controller {
			return true
		}
	}
	return false
}

func ptrOr(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}
