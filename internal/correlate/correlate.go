// Package correlate attaches Kubernetes pods and kubelet events to pulls, using client-go
// shared informers: which pods on a node wait for an image, the exact reference the
// kubelet is pulling, and the kubelet's error text when a pull fails.
package correlate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/d44b/pulltrace/pkg/api"
)

// Config configures the correlator.
type Config struct {
	Client kubernetes.Interface
	// Namespaces limits the watch; empty means all namespaces.
	Namespaces []string
	// OnChange is called (debounced) after pods or kubelet events change, with the nodes
	// concerned (nil: every node) and which of their pulls (touches; nil: all).
	OnChange func(nodes []string, touches func(p *api.Pull) bool)
	Logger   *slog.Logger
}

const (
	byNode = "node"
	byPod  = "pod"
	byHost = "host"
	// debounce coalesces bursts of pod updates (a Deployment rollout) into one recompute.
	debounce = 200 * time.Millisecond
)

// Correlator answers the aggregate's questions from informer caches.
type Correlator struct {
	cfg       Config
	factories []informers.SharedInformerFactory
	pods      []cache.SharedIndexInformer
	events    []cache.SharedIndexInformer

	kick    chan struct{}
	changes changes
}

// New builds informers; Start runs them.
func New(cfg Config) (*Correlator, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("correlate: no Kubernetes client")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func([]string, func(*api.Pull) bool) {}
	}
	c := &Correlator{cfg: cfg, kick: make(chan struct{}, 1)}
	nss := cfg.Namespaces
	if len(nss) == 0 {
		nss = []string{corev1.NamespaceAll}
	}
	for _, ns := range nss {
		f := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 10*time.Minute, informers.WithNamespace(ns))
		pods := f.Core().V1().Pods().Informer()
		if err := pods.AddIndexers(cache.Indexers{byNode: func(obj any) ([]string, error) {
			p, ok := obj.(*corev1.Pod)
			if !ok || p.Spec.NodeName == "" {
				return nil, nil
			}
			return []string{p.Spec.NodeName}, nil
		}}); err != nil {
			return nil, fmt.Errorf("pod index: %w", err)
		}
		// Only pod events matter, and the kubelet's pull reasons among them; the reason is
		// filtered here because field selectors cannot OR several reasons.
		ef := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 10*time.Minute, informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("involvedObject.kind", "Pod").String()
			}))
		evs := ef.Core().V1().Events().Informer()
		if err := evs.AddIndexers(cache.Indexers{
			byPod: func(obj any) ([]string, error) {
				e, ok := obj.(*corev1.Event)
				if !ok || !pullReason(e.Reason) {
					return nil, nil
				}
				return []string{e.InvolvedObject.Namespace + "/" + e.InvolvedObject.Name}, nil
			},
			byHost: func(obj any) ([]string, error) {
				e, ok := obj.(*corev1.Event)
				if !ok || e.Reason != "Pulling" || eventHost(e) == "" {
					return nil, nil
				}
				return []string{eventHost(e)}, nil
			},
		}); err != nil {
			return nil, fmt.Errorf("event index: %w", err)
		}
		if _, err := pods.AddEventHandler(handler(c.podChanged)); err != nil {
			return nil, err
		}
		if _, err := evs.AddEventHandler(handler(c.eventChanged)); err != nil {
			return nil, err
		}
		c.factories = append(c.factories, f, ef)
		c.pods = append(c.pods, pods)
		c.events = append(c.events, evs)
	}
	return c, nil
}

// handler hands every version an informer saw of an object (both sides of an update) to fn.
func handler(fn func(objs ...any)) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { fn(o) },
		UpdateFunc: func(old, o any) { fn(old, o) },
		DeleteFunc: func(o any) { fn(o) },
	}
}

func pullReason(r string) bool {
	return r == "Pulling" || r == "Pulled" || r == "Failed" || r == "BackOff"
}

func eventHost(e *corev1.Event) string {
	if e.Source.Host != "" {
		return e.Source.Host
	}
	return e.ReportingInstance
}

func (c *Correlator) changed() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Start runs the informers and the debounced change loop until ctx ends.
func (c *Correlator) Start(ctx context.Context) {
	for _, f := range c.factories {
		f.Start(ctx.Done())
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.kick:
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(debounce):
			}
			if nodes, touches, some := c.changes.take(); some {
				c.cfg.OnChange(nodes, touches)
			}
		}
	}()
}

// HasSynced reports whether every informer has its first list.
func (c *Correlator) HasSynced() bool {
	for _, i := range append(slices.Clone(c.pods), c.events...) {
		if !i.HasSynced() {
			return false
		}
	}
	return true
}

// WaitForSync blocks until the caches are filled or ctx ends.
func (c *Correlator) WaitForSync(ctx context.Context) bool {
	var synced []cache.InformerSynced
	for _, i := range append(slices.Clone(c.pods), c.events...) {
		synced = append(synced, i.HasSynced)
	}
	return cache.WaitForCacheSync(ctx.Done(), synced...)
}

func (c *Correlator) podsOn(node string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, inf := range c.pods {
		objs, _ := inf.GetIndexer().ByIndex(byNode, node)
		for _, o := range objs {
			if p, ok := o.(*corev1.Pod); ok {
				out = append(out, p)
			}
		}
	}
	return out
}

func (c *Correlator) eventsBy(index, key string) []*corev1.Event {
	var out []*corev1.Event
	for _, inf := range c.events {
		objs, _ := inf.GetIndexer().ByIndex(index, key)
		for _, o := range objs {
			if e, ok := o.(*corev1.Event); ok {
				out = append(out, e)
			}
		}
	}
	slices.SortFunc(out, func(a, b *corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	return out
}

func eventTime(e *corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

var quoted = regexp.MustCompile(`image "([^"]+)"`)

// eventImage pulls the image out of kubelet messages like `Pulling image "nginx:1.27"`.
func eventImage(msg string) string {
	if m := quoted.FindStringSubmatch(msg); m != nil {
		return m[1]
	}
	return ""
}

// container is one container (or init container) of a pod with its image and status.
type container struct {
	name   string
	image  image
	status *corev1.ContainerStatus
}

func containers(p *corev1.Pod) []container {
	var out []container
	add := func(specs []corev1.Container, statuses []corev1.ContainerStatus) {
		for _, s := range specs {
			img, ok := parseImage(s.Image)
			if !ok {
				continue
			}
			ct := container{name: s.Name, image: img}
			for i := range statuses {
				if statuses[i].Name == s.Name {
					ct.status = &statuses[i]
				}
			}
			out = append(out, ct)
		}
	}
	add(p.Spec.InitContainers, p.Status.InitContainerStatuses)
	add(p.Spec.Containers, p.Status.ContainerStatuses)
	return out
}

var waitingReasons = map[string]bool{"ContainerCreating": true, "PodInitializing": true, "ErrImagePull": true, "ImagePullBackOff": true}

// waitsForImage: the container has no image yet. A container with no status at all is
// waiting too: the kubelet has not reported on a just-scheduled pod.
func waitsForImage(p *corev1.Pod, ct container) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false
	}
	if ct.status == nil {
		return p.Status.Phase == corev1.PodPending || p.Status.Phase == ""
	}
	if ct.status.ImageID != "" || ct.status.State.Waiting == nil {
		return false
	}
	return waitingReasons[ct.status.State.Waiting.Reason]
}

// pullError is the kubelet's reason for a failed pull of ct's image, from its waiting
// state. Only the two pull reasons count: RunContainerError, CrashLoopBackOff and the like
// are about starting the container, not the image.
func pullError(ct container) string {
	if ct.status == nil || ct.status.State.Waiting == nil {
		return ""
	}
	w := ct.status.State.Waiting
	if (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") && w.Message != "" {
		return realPullError(w.Message)
	}
	return ""
}

// inBackOff: the kubelet failed to pull ct's image and will try again.
func inBackOff(ct container) bool {
	if ct.status == nil || ct.status.State.Waiting == nil || ct.status.ImageID != "" {
		return false
	}
	r := ct.status.State.Waiting.Reason
	return r == "ErrImagePull" || r == "ImagePullBackOff"
}

var backOffPrefix = regexp.MustCompile(`^Back-off pulling image "[^"]*": (?:ErrImagePull: )?`)

// realPullError strips the kubelet's back-off wrapping, so a pull's error stays the one
// reason while the pod's message alternates ErrImagePull / ImagePullBackOff:
// `Back-off pulling image "x": ErrImagePull: rpc error: ...` is `rpc error: ...`.
func realPullError(msg string) string {
	if m := backOffPrefix.FindStringIndex(msg); m != nil && m[1] < len(msg) {
		return msg[m[1]:]
	}
	return msg
}

// failedPullPrefix starts the kubelet's Failed event for a pull: its other Failed events
// ("Error: ErrImagePull", "Error: ImagePullBackOff", "Error: failed to create containerd
// task ...") repeat a status or are about the container, not the image.
const failedPullPrefix = "Failed to pull image "

// alreadyPresent ends the kubelet's Pulled event for a container whose image was on the
// node (imagePullPolicy IfNotPresent): `Container image "x" already present on machine and
// can be accessed by the pod` (v1.37; older kubelets end at "machine").
const alreadyPresent = "already present on machine"

// latestPulling is the exact ref of the kubelet's newest "Pulling image" on node for repoKey.
func (c *Correlator) latestPulling(node, repoKey string) string {
	evs := c.eventsBy(byHost, node)
	for i := len(evs) - 1; i >= 0; i-- {
		ref := eventImage(evs[i].Message)
		if img, ok := parseImage(ref); ok && img.repoKey == repoKey {
			return ref
		}
	}
	return ""
}

// Enrich attaches pods waiting for p, the exact ref, and the kubelet's error.
func (c *Correlator) Enrich(p *api.Pull) {
	pulling := ""
	if !hasTagOrDigest(p.ImageRef) {
		pulling = c.latestPulling(p.NodeName, repoKeyOf(p.ImageRef))
		if pulling != "" {
			if img, ok := parseImage(pulling); ok {
				p.ImageRef = img.full
			}
		}
	}
	var pods []api.PodRef
	kubeletErr := ""
	backOff := false
	exact := map[string]bool{}
	for _, pod := range c.podsOn(p.NodeName) {
		for _, ct := range containers(pod) {
			if !matches(ct.image, p, pulling) {
				continue
			}
			// A finished pull keeps pods that have since started: it served them.
			if !waitsForImage(pod, ct) && !p.State.Finished() {
				continue
			}
			if p.State.Finished() && ct.status != nil && ct.status.ImageID != "" && !startedAfter(ct.status, p) {
				continue
			}
			// A pod created after a pull finished was served by a later pull of the image
			// (a re-pull after rmi or image GC, a kubelet retry): not by this one.
			if p.State.Finished() && p.CompletedAt != nil && pod.CreationTimestamp.After(*p.CompletedAt) {
				continue
			}
			pods = append(pods, podRef(pod, ct.name))
			exact[ct.image.full] = true
			if inBackOff(ct) {
				backOff = true
			}
			if e := pullError(ct); e != "" {
				kubeletErr = e
			}
			if e := c.failedEvent(pod, ct, p.StartedAt); e != "" && kubeletErr == "" {
				kubeletErr = e
			}
		}
	}
	sortPods(pods)
	p.Pods = pods
	if p.Pods == nil {
		p.Pods = []api.PodRef{}
	}
	if kubeletErr != "" && (p.State == api.PullFailed || p.State == api.PullStalled) {
		p.Error = kubeletErr
	}
	p.BackOff = backOff && p.State == api.PullFailed
	// Only the repository was known (containerd's label drops the registry port) and every
	// pod it serves names one image: that is the exact reference.
	if !hasTagOrDigest(p.ImageRef) && len(exact) == 1 {
		for ref := range exact {
			if img, ok := parseImage(ref); ok && img.digest == "" {
				p.ImageRef = ref
			}
		}
	}
}

// startedAfter: a running container whose status arrived after the pull started was
// created from it.
func startedAfter(st *corev1.ContainerStatus, p *api.Pull) bool {
	if st.State.Running != nil {
		return !st.State.Running.StartedAt.Time.Before(p.StartedAt)
	}
	return true
}

func (c *Correlator) failedEvent(pod *corev1.Pod, ct container, since time.Time) string {
	evs := c.eventsBy(byPod, pod.Namespace+"/"+pod.Name)
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		if eventTime(e).Before(since.Add(-time.Second)) {
			break
		}
		if e.Reason != "Failed" || !strings.HasPrefix(e.Message, failedPullPrefix) || !strings.Contains(e.InvolvedObject.FieldPath, "{"+ct.name+"}") {
			continue
		}
		return e.Message
	}
	return ""
}

func (c *Correlator) pulled(pod *corev1.Pod, ct container) bool {
	for _, e := range c.eventsBy(byPod, pod.Namespace+"/"+pod.Name) {
		if e.Reason == "Pulled" && strings.Contains(e.InvolvedObject.FieldPath, "{"+ct.name+"}") {
			return true
		}
	}
	return false
}

func sortPods(ps []api.PodRef) {
	slices.SortFunc(ps, func(a, b api.PodRef) int {
		return strings.Compare(a.Namespace+"/"+a.PodName+"/"+a.Container, b.Namespace+"/"+b.PodName+"/"+b.Container)
	})
}

// Queued lists, per node and image, pods on node ("" = every node) that wait for an image
// no pull in pulls serves: the kubelet pulls one image at a time, so these show why a pod
// is still waiting.
func (c *Correlator) Queued(node string, pulls []api.Pull) []api.Pull {
	type key struct{ node, image string }
	out := map[key]*api.Pull{}
	nodes := map[string]bool{}
	if node != "" {
		nodes[node] = true
	} else {
		for _, inf := range c.pods {
			for _, n := range inf.GetIndexer().ListIndexFuncValues(byNode) {
				nodes[n] = true
			}
		}
	}
	for node := range nodes {
		for _, pod := range c.podsOn(node) {
			for _, ct := range containers(pod) {
				if !waitsForImage(pod, ct) || c.pulled(pod, ct) || served(ct.image, node, pulls) {
					continue
				}
				k := key{node, ct.image.full}
				q := out[k]
				if q == nil {
					h := sha256.Sum256([]byte(node + "\x00" + ct.image.full))
					q = &api.Pull{
						ID: "queued-" + hex.EncodeToString(h[:8]), NodeName: node, ImageRef: ct.image.full, Repository: ct.image.repo,
						State: api.PullQueued, StartedAt: pod.CreationTimestamp.UTC(), UpdatedAt: pod.CreationTimestamp.UTC(), Layers: []api.Layer{},
					}
					out[k] = q
				}
				if pod.CreationTimestamp.Time.Before(q.StartedAt) {
					q.StartedAt = pod.CreationTimestamp.UTC()
				}
				q.Pods = append(q.Pods, podRef(pod, ct.name))
				if e := pullError(ct); e != "" {
					// The kubelet failed before a byte moved: unknown tag, auth, registry
					// down. It keeps retrying; the store keeps when the failure began.
					q.State, q.Error, q.BackOff = api.PullFailed, e, true
				}
			}
		}
	}
	res := make([]api.Pull, 0, len(out))
	for _, q := range out {
		sortPods(q.Pods)
		res = append(res, *q)
	}
	return res
}

func served(img image, node string, pulls []api.Pull) bool {
	for i := range pulls {
		if pulls[i].NodeName == node && matches(img, &pulls[i], "") {
			return true
		}
	}
	return false
}

// Present lists one cached pull per pod container on node ("" = every node) that the
// kubelet started from an image already on the node: its Pulled event says so, and no
// agent sees anything, since nothing is pulled.
func (c *Correlator) Present(node string) []api.Pull {
	var out []api.Pull
	nodes := []string{node}
	if node == "" {
		nodes = nil
		for _, inf := range c.pods {
			nodes = append(nodes, inf.GetIndexer().ListIndexFuncValues(byNode)...)
		}
	}
	for _, node := range nodes {
		for _, pod := range c.podsOn(node) {
			evs := c.eventsBy(byPod, pod.Namespace+"/"+pod.Name)
			for _, ct := range containers(pod) {
				if pulledFor(evs, pod, ct) {
					// The kubelet pulled this container's image (a restart then finds it
					// present): the pull it made served the pod, not a cached image.
					continue
				}
				for _, e := range evs {
					if e.Reason != "Pulled" || !strings.Contains(e.Message, alreadyPresent) ||
						!strings.Contains(e.InvolvedObject.FieldPath, "{"+ct.name+"}") || e.InvolvedObject.UID != pod.UID {
						continue
					}
					img := ct.image
					if ref, ok := parseImage(eventImage(e.Message)); ok {
						img = ref
					}
					at := e.FirstTimestamp.Time
					if at.IsZero() {
						at = eventTime(e)
					}
					at = at.UTC()
					h := sha256.Sum256([]byte(node + "\x00" + string(pod.UID) + "\x00" + ct.name + "\x00" + img.full))
					out = append(out, api.Pull{
						ID: "present-" + hex.EncodeToString(h[:8]), NodeName: node, ImageRef: img.full, Repository: img.repo,
						State: api.PullCached, StartedAt: at, UpdatedAt: at, CompletedAt: &at,
						Pods:   []api.PodRef{podRef(pod, ct.name)},
						Layers: []api.Layer{},
					})
					break
				}
			}
		}
	}
	return out
}

// pulledFor: the kubelet announced pulling ct's image for this pod.
func pulledFor(evs []*corev1.Event, pod *corev1.Pod, ct container) bool {
	for _, e := range evs {
		if e.Reason == "Pulling" && e.InvolvedObject.UID == pod.UID && strings.Contains(e.InvolvedObject.FieldPath, "{"+ct.name+"}") {
			return true
		}
	}
	return false
}
