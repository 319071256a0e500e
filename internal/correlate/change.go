package correlate

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/d44b/pulltrace/pkg/api"
)

// changes collects what informer updates can have affected since the last OnChange: per
// node, the images of the pods and kubelet events that moved. Re-correlation then looks at
// those pulls only, instead of every pull the server holds.
type changes struct {
	mu    sync.Mutex
	all   bool
	nodes map[string]*nodeChange
}

// nodeChange is one node's share; all means any pull on the node may be concerned.
type nodeChange struct {
	all     bool
	repos   map[string]bool
	digests map[string]bool
}

func (ch *changes) everything() {
	ch.mu.Lock()
	ch.all = true
	ch.mu.Unlock()
}

func (ch *changes) node(name string) *nodeChange {
	if ch.nodes == nil {
		ch.nodes = map[string]*nodeChange{}
	}
	nc := ch.nodes[name]
	if nc == nil {
		nc = &nodeChange{repos: map[string]bool{}, digests: map[string]bool{}}
		ch.nodes[name] = nc
	}
	return nc
}

// pod records every image of a pod on its node; a pod on no node concerns no pull yet.
func (ch *changes) pod(p *corev1.Pod) {
	if p.Spec.NodeName == "" {
		return
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	nc := ch.node(p.Spec.NodeName)
	for _, ct := range containers(p) {
		nc.image(ct.image)
	}
}

// wholeNode records that any pull on node may be concerned.
func (ch *changes) wholeNode(node string) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.node(node).all = true
}

func (ch *changes) image(node string, img image) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.node(node).image(img)
}

func (nc *nodeChange) image(img image) {
	nc.repos[img.repoKey] = true
	if img.digest != "" {
		nc.digests[img.digest] = true
	}
}

// take empties the set and says what it held: nodes == nil means every node.
func (ch *changes) take() (nodes []string, touches func(p *api.Pull) bool, some bool) {
	ch.mu.Lock()
	all, byNode := ch.all, ch.nodes
	ch.all, ch.nodes = false, nil
	ch.mu.Unlock()
	if all {
		return nil, nil, true
	}
	if len(byNode) == 0 {
		return nil, nil, false
	}
	nodes = make([]string, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	return nodes, func(p *api.Pull) bool { return byNode[p.NodeName].concerns(p) }, true
}

// concerns is true for every pull that matches could pair with one of the images: it
// compares exactly the keys matches compares (repository keys and digests).
func (nc *nodeChange) concerns(p *api.Pull) bool {
	switch {
	case nc == nil:
		return false
	case nc.all:
		return true
	}
	return nc.repos[repoKeyOf(p.ImageRef)] || (p.Repository != "" && nc.repos[repoKeyOf(p.Repository)]) ||
		(p.ManifestDigest != "" && nc.digests[p.ManifestDigest]) || (p.IndexDigest != "" && nc.digests[p.IndexDigest])
}

// podChanged is the pod informers' handler.
func (c *Correlator) podChanged(objs ...any) {
	for _, obj := range objs {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		p, ok := obj.(*corev1.Pod)
		if !ok {
			c.changes.everything()
			continue
		}
		c.changes.pod(p)
	}
	c.changed()
}

// eventChanged is the event informers' handler. A "Pulling" event names the image and the
// node; the others (Pulled, Failed, BackOff) concern the images of their pod.
func (c *Correlator) eventChanged(objs ...any) {
	for _, obj := range objs {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		e, ok := obj.(*corev1.Event)
		switch {
		case !ok:
			c.changes.everything()
			continue
		case !pullReason(e.Reason):
			continue // not indexed, so it changes no answer
		}
		if e.Reason == "Pulling" && eventHost(e) != "" {
			if img, ok := parseImage(eventImage(e.Message)); ok {
				c.changes.image(eventHost(e), img)
				continue
			}
		}
		switch pod, host := c.pod(e.InvolvedObject.Namespace, e.InvolvedObject.Name), eventHost(e); {
		case pod != nil && pod.Spec.NodeName != "":
			c.changes.pod(pod)
		case host != "":
			c.changes.wholeNode(host)
		default:
			c.changes.everything()
		}
	}
	c.changed()
}

// pod finds a pod in the informer caches.
func (c *Correlator) pod(namespace, name string) *corev1.Pod {
	for _, inf := range c.pods {
		obj, ok, err := inf.GetIndexer().GetByKey(namespace + "/" + name)
		if err != nil || !ok {
			continue
		}
		if p, ok := obj.(*corev1.Pod); ok {
			return p
		}
	}
	return nil
}
