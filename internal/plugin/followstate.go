package plugin

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/d44b/pulltrace/pkg/api"
)

type needState int

const (
	needWaiting needState = iota // no pull seen for it yet
	needQueued
	needPulling
	needDone
	needFailed
)

// need is one container of a followed pod that has no image yet.
type need struct {
	namespace, pod, container, image, node string
	pullID                                 string
	pullStarted                            time.Time
	state                                  needState
	err                                    string
	statusSince                            time.Time // when the pod status first named the image
}

// nodesFollowed are the nodes whose freshness matters to this follow: the node followed,
// or those of the pods' containers still waiting. Empty when none is known yet.
func (st *followState) nodesFollowed() []string {
	if n := st.t.filter().Node; n != "" {
		return []string{n}
	}
	var out []string
	for _, n := range st.needs {
		if n.node != "" && n.state != needDone && !slices.Contains(out, n.node) {
			out = append(out, n.node)
		}
	}
	return out
}

// pullFinishGrace is how long a follow waits for a watched pull's completion after the pod's
// status already names the image: a bit more than the chart's default report interval.
const pullFinishGrace = 5 * time.Second

func (n *need) key() string { return n.namespace + "/" + n.pod + "/" + n.container }

// followState is what a follow knows: the pulls it sees and, for pods, which containers
// still wait for an image. It decides when the follow is over and how it ended.
type followState struct {
	t       *target
	pulls   map[string]api.Pull
	needs   []*need
	present []string // "cached: ..." lines for containers that had their image at the start
	podSet  map[string]bool

	sawUnfinished bool
	failures      map[string]string // pull id -> error, node mode
	announced     map[string]bool

	// Workload mode: the rollout's pods change while the follow runs. seen keeps every pull
	// of the namespace, so that a pod that joins later gets the pulls that already served it;
	// rolloutDone says the workload has created all the pods of its current revision.
	seen        map[string]api.Pull
	rolloutDone bool
	rolloutWait string
	now         func() time.Time
}

func newFollowState(t *target) *followState {
	st := &followState{t: t, pulls: map[string]api.Pull{}, podSet: map[string]bool{}, failures: map[string]string{},
		announced: map[string]bool{}, seen: map[string]api.Pull{}, now: time.Now}
	for _, pod := range t.pods {
		st.addPod(pod, true)
	}
	return st
}

// addPod starts following a pod's containers; those that have their image already are
// reported as present (at the start) or done (a pod that joined later).
func (st *followState) addPod(pod *corev1.Pod, atStart bool) {
	st.podSet[pod.Namespace+"/"+pod.Name] = true
	for _, c := range podContainers(pod) {
		if c.imageID != "" && atStart {
			msg := fmt.Sprintf("cached: %s already present on %s", c.image, nodeName(pod.Spec.NodeName))
			if !slices.Contains(st.present, msg) {
				st.present = append(st.present, msg)
			}
			continue
		}
		st.needs = append(st.needs, &need{namespace: pod.Namespace, pod: pod.Name, container: c.name, image: c.image, node: pod.Spec.NodeName})
	}
}

// setRollout makes the workload's current pods the followed set: new pods join (with the
// pulls already seen for them), pods of an older revision or deleted ones leave, and every
// pod's status is taken as in podUpdated.
func (st *followState) setRollout(v rolloutView) []string {
	var msgs []string
	cur := map[string]bool{}
	var joined []*corev1.Pod
	for _, p := range v.pods {
		k := p.Namespace + "/" + p.Name
		cur[k] = true
		if !st.podSet[k] {
			st.addPod(p, false)
			joined = append(joined, p)
		}
	}
	for k := range st.podSet {
		if !cur[k] {
			delete(st.podSet, k)
		}
	}
	st.needs = slices.DeleteFunc(st.needs, func(n *need) bool { return !cur[n.namespace+"/"+n.pod] })
	for id, p := range st.pulls {
		if !st.matches(&p) {
			delete(st.pulls, id)
		}
	}
	if len(joined) > 0 {
		replay := make([]api.Pull, 0, len(st.seen))
		for _, p := range st.seen {
			if st.matches(&p) {
				replay = append(replay, p)
			}
		}
		slices.SortStableFunc(replay, func(a, b api.Pull) int { return a.StartedAt.Compare(b.StartedAt) })
		for i := range replay {
			st.pulls[replay[i].ID] = replay[i]
			msgs = append(msgs, st.observe(&replay[i], false)...)
		}
	}
	t := st.t
	t.pods = v.pods
	for _, p := range v.pods {
		msgs = append(msgs, st.podUpdated(p)...)
	}
	st.rolloutDone, st.rolloutWait = v.complete, v.waiting
	return msgs
}

// remember keeps a pull for pods that may join the follow later.
func (st *followState) remember(p *api.Pull) {
	if st.t.workload != nil {
		st.seen[p.ID] = *p
	}
}

// rememberEvent is remember for a stream event, with apply's rule that only the pull's own
// completed or failed event finishes it.
func (st *followState) rememberEvent(ev *api.PullEvent) {
	if st.t.workload == nil || ev.Type == api.EventPullRemoved {
		return
	}
	p := ev.Pull
	if p.State.Finished() && ev.Type != api.EventPullCompleted && ev.Type != api.EventPullFailed {
		p = p.Clone()
		p.State, p.CompletedAt = api.PullActive, nil
		if prev, ok := st.seen[p.ID]; ok && !prev.State.Finished() {
			p.State = prev.State
		}
	}
	st.seen[p.ID] = p
}

func nodeName(n string) string {
	if n == "" {
		return "<not scheduled yet>"
	}
	return n
}

type podContainer struct{ name, image, imageID string }

// podContainers lists init and app containers with the image id their status reports; an
// image id means the image is on the node.
func podContainers(pod *corev1.Pod) []podContainer {
	var out []podContainer
	add := func(specs []corev1.Container, statuses []corev1.ContainerStatus) {
		for _, s := range specs {
			c := podContainer{name: s.Name, image: s.Image}
			for _, cs := range statuses {
				if cs.Name == s.Name {
					c.imageID = cs.ImageID
				}
			}
			out = append(out, c)
		}
	}
	add(pod.Spec.InitContainers, pod.Status.InitContainerStatuses)
	add(pod.Spec.Containers, pod.Status.ContainerStatuses)
	return out
}

// presentAtStart is the "cached: ..." lines for images the pods already have.
func (st *followState) presentAtStart() []string { return st.present }

// matches reports whether a pull belongs to the follow (the server filters one pod or a
// node; several pods are filtered here).
func (st *followState) matches(p *api.Pull) bool {
	if st.t.node != "" {
		return p.NodeName == st.t.node
	}
	for _, r := range p.Pods {
		if st.podSet[r.Namespace+"/"+r.PodName] {
			return true
		}
	}
	return false
}

func (st *followState) filter(pulls []api.Pull) []api.Pull {
	var out []api.Pull
	for _, p := range pulls {
		if st.matches(&p) {
			out = append(out, p)
		}
	}
	return out
}

// snapshot replaces what is known (a first connection, or a resync after the server lost
// our place in its replay window).
func (st *followState) snapshot(all []api.Pull) []string {
	st.seen = map[string]api.Pull{}
	for i := range all {
		st.remember(&all[i])
	}
	pulls := st.filter(all)
	st.pulls = map[string]api.Pull{}
	var msgs []string
	// Oldest first, so a retry's state wins over the attempt before it.
	pulls = slices.Clone(pulls)
	slices.SortStableFunc(pulls, func(a, b api.Pull) int { return a.StartedAt.Compare(b.StartedAt) })
	for i := range pulls {
		st.pulls[pulls[i].ID] = pulls[i]
		msgs = append(msgs, st.observe(&pulls[i], true)...)
	}
	return msgs
}

// apply takes one lifecycle event; recheck is true when an entry a container waited on
// left the server, so the pod should be read again.
func (st *followState) apply(ev *api.PullEvent) (msgs []string, recheck bool) {
	var held *api.Pull
	if h, ok := st.pulls[ev.Pull.ID]; ok {
		held = &h
	}
	// A layer event carries the pull's summary: the layers held are kept.
	cur := ev.Apply(held)
	p := &cur
	if ev.Type == api.EventPullRemoved {
		delete(st.pulls, p.ID)
		delete(st.seen, p.ID)
		for _, n := range st.needs {
			if n.pullID == p.ID && n.state == needQueued {
				n.state = needWaiting
				recheck = true
			}
		}
		return nil, recheck
	}
	if p.State.Finished() && ev.Type != api.EventPullCompleted && ev.Type != api.EventPullCached && ev.Type != api.EventPullFailed {
		// The server sends a finishing pull's last layer events before its pull.completed,
		// already carrying the final state; only the pull event itself ends the pull here,
		// so a follower never exits with that event still unread.
		cp := p.Clone()
		cp.State, cp.CompletedAt = api.PullActive, nil
		if prev, ok := st.pulls[p.ID]; ok && !prev.State.Finished() {
			cp.State = prev.State
		}
		p = &cp
	}
	st.pulls[p.ID] = *p
	return st.observe(p, false), false
}

// observe takes a pull's new state. Failures already in the snapshot are history to a node
// follow (they ended before it started); a pod follow still reports its pod's.
func (st *followState) observe(p *api.Pull, fromSnapshot bool) []string {
	var msgs []string
	if !p.State.Finished() {
		st.sawUnfinished = true
	}
	if p.State == api.PullFailed && !fromSnapshot {
		st.failures[p.ID] = fmt.Sprintf("pull of %s on %s failed: %s", imageOf(p), p.NodeName, lastOr(p.Error, "unknown error"))
	} else {
		delete(st.failures, p.ID)
	}
	announce := func(key, msg string) {
		if !st.announced[key] {
			st.announced[key] = true
			msgs = append(msgs, msg)
		}
	}
	switch p.State {
	case api.PullQueued:
		announce("queued|"+p.ID, fmt.Sprintf("queued: waiting for the kubelet to start pulling %s on %s", imageOf(p), p.NodeName))
	case api.PullCached:
		announce("cached|"+p.NodeName+"|"+imageOf(p), fmt.Sprintf("cached: %s already present on %s", imageOf(p), p.NodeName))
	}
	for _, n := range st.needs {
		if !servesContainer(p, n) {
			continue
		}
		if n.pullID != "" && n.pullID != p.ID && p.StartedAt.Before(n.pullStarted) {
			continue // an earlier attempt; the kubelet has moved on to a newer one
		}
		n.pullID, n.pullStarted = p.ID, p.StartedAt
		if p.NodeName != "" {
			n.node = p.NodeName
		}
		switch p.State {
		case api.PullQueued:
			if n.state != needDone {
				n.state = needQueued
			}
		case api.PullActive, api.PullStalled:
			n.state = needPulling
		case api.PullCompleted, api.PullCached:
			n.state = needDone
		case api.PullFailed:
			if n.state != needDone {
				n.state, n.err = needFailed, lastOr(p.Error, "unknown error")
			}
		}
	}
	return msgs
}

func servesContainer(p *api.Pull, n *need) bool {
	for _, r := range p.Pods {
		if r.Namespace == n.namespace && r.PodName == n.pod && r.Container == n.container {
			return true
		}
	}
	return false
}

// podUpdated marks containers whose status now names an image id as done: the image got
// there without a pull the stream showed (it was present, or came while disconnected).
func (st *followState) podUpdated(pod *corev1.Pod) []string {
	var msgs []string
	cs := podContainers(pod)
	for _, n := range st.needs {
		if n.namespace != pod.Namespace || n.pod != pod.Name || n.state == needDone {
			continue
		}
		if pod.Spec.NodeName != "" {
			n.node = pod.Spec.NodeName
		}
		for _, c := range cs {
			if c.name == n.container && c.imageID != "" {
				// The pod's status can name the image before the agent's last report of
				// the pull reaches the stream: a pull being watched gets a moment to finish
				// on screen, so the follow does not end on a pull shown part-way.
				if n.state == needPulling || n.state == needQueued {
					if n.statusSince.IsZero() {
						n.statusSince = st.now()
					}
					if st.now().Sub(n.statusSince) < pullFinishGrace {
						continue
					}
				}
				n.state = needDone
				key := "present|" + n.key()
				if !st.announced[key] {
					st.announced[key] = true
					msgs = append(msgs, fmt.Sprintf("present: %s on %s (container %s of pod %s/%s has its image)", n.image, nodeName(n.node), n.container, n.namespace, n.pod))
				}
			}
		}
	}
	return msgs
}

// outcome says whether the follow is over, and the error when it failed.
func (st *followState) outcome() (bool, error) {
	if st.t.node != "" {
		for _, p := range st.pulls {
			if !p.State.Finished() {
				return false, nil
			}
		}
		if !st.sawUnfinished {
			return false, nil
		}
		if len(st.failures) > 0 {
			var msgs []string
			for _, m := range st.failures {
				msgs = append(msgs, m)
			}
			slices.Sort(msgs)
			return true, exitErr(ExitPullFailed, nil, "%s", strings.Join(msgs, "; "))
		}
		return true, nil
	}
	for _, n := range st.needs {
		if n.state == needFailed {
			return true, exitErr(ExitPullFailed, nil, "pull of %s for container %s of pod %s/%s on %s failed: %s",
				n.image, n.container, n.namespace, n.pod, nodeName(n.node), n.err)
		}
	}
	for _, n := range st.needs {
		if n.state != needDone {
			return false, nil
		}
	}
	if st.t.workload != nil && !st.rolloutDone {
		return false, nil
	}
	return true, nil
}

func (st *followState) doneMessage() string {
	if st.t.node != "" {
		return fmt.Sprintf("done: no pull in progress on node %s", st.t.node)
	}
	if st.t.kind == "pod" {
		return fmt.Sprintf("done: every image of pod %s/%s is present", st.t.namespace, st.t.name)
	}
	return fmt.Sprintf("done: every image of the %d pods of %s/%s is present", len(st.t.pods), st.t.kind, st.t.name)
}

// stillWaiting explains a follow that has seen nothing yet.
func (st *followState) stillWaiting() string {
	if st.t.node != "" {
		if len(st.pulls) == 0 {
			return fmt.Sprintf("no pull on node %s yet; still following", st.t.node)
		}
		return ""
	}
	var images []string
	for _, n := range st.needs {
		if n.pullID == "" && n.state == needWaiting && !slices.Contains(images, n.image) {
			images = append(images, n.image)
		}
	}
	if len(images) == 0 {
		if st.t.workload != nil && !st.rolloutDone {
			return fmt.Sprintf("%s: %s; still following", st.t.describe(), st.rolloutWait)
		}
		return ""
	}
	return fmt.Sprintf("no pull reported yet for %s (%s): the kubelet has not started it, or the Pulltrace server does not watch namespace %s; still following",
		st.t.describe(), strings.Join(images, ", "), st.t.namespace)
}

// active lists unfinished pulls, oldest first, for the live view.
func (st *followState) active() []api.Pull {
	var out []api.Pull
	for _, p := range st.pulls {
		if !p.State.Finished() {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b api.Pull) int {
		if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}
