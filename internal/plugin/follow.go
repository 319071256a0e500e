package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/d44b/pulltrace/pkg/api"
	"github.com/d44b/pulltrace/pkg/sseclient"
)

type followOptions struct {
	*Options
	output   string
	layers   bool
	watch    bool
	selector string
	timeout  time.Duration

	// Timings; tests shorten them.
	frame       time.Duration // live redraw interval (~10 fps)
	recheck     time.Duration // how often a followed pod is read again
	rolloutPoll time.Duration // how often a followed workload and its pods are read again
	hintAfter   time.Duration // when to say that no pull has shown up yet
	giveUpAfter time.Duration // reconnect attempts stop after failing this long (not with --watch)
}

func newFollowCommand(o *Options) *cobra.Command {
	f := &followOptions{Options: o, frame: 100 * time.Millisecond, recheck: 5 * time.Second, rolloutPoll: time.Second,
		hintAfter: 20 * time.Second, giveUpAfter: 2 * time.Minute}
	cmd := &cobra.Command{
		Use:   "follow (pod/NAME | node/NAME | deploy/NAME | sts/NAME | ds/NAME | rs/NAME | job/NAME | NAME)",
		Short: "Follow the pulls of a pod, a workload's pods or a node live",
		Long: `Follow image pulls as they happen. On a terminal, each pull gets a progress bar redrawn in
place (with -v, one line per layer), like docker pull. Otherwise, one line per event; with
-o json, the v1 PullEvent objects exactly as the server sends them, one per line.

A pod is followed until every container that waits for an image has it: exit 0 when each
pull completed or the image was already present (cached), exit 1 with the error when a pull
failed. A workload is followed across its rollout, like kubectl rollout status: the pods of
its current revision (for a Deployment, the newest ReplicaSet's), including pods created
after the command started, until the workload has created all of them and each has its
images; pods of an older revision no longer count. So "kubectl apply -f web.yaml &&
kubectl pulltrace follow deploy/web" waits for the new pods. A node is followed
until no pull on it is in progress any more (after at least one was). --watch keeps
following forever. A dropped stream is resumed (Last-Event-ID) with backoff.

` + exitCodesHelp,
		Example: `  kubectl pulltrace follow pod/web-5d9c7 -n shop
  kubectl pulltrace follow deploy/web -n shop -v
  kubectl pulltrace follow node/worker-3 --watch
  kubectl pulltrace follow pod/web-5d9c7 -o json | jq .type`,
		ValidArgsFunction: completeFollowArgs(o),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case f.selector != "" && len(args) == 0:
				if _, err := labels.Parse(f.selector); err != nil {
					return exitErr(ExitUsage, err, "bad selector %q: %v", f.selector, err)
				}
				return f.runTimed(cmd.Context(), "")
			case f.selector != "":
				return usageErr("give a target or a selector (-l), not both")
			case len(args) != 1:
				return usageErr("follow takes exactly one target: pod/NAME, node/NAME or a workload such as deploy/NAME (or -l SELECTOR)")
			}
			return f.runTimed(cmd.Context(), args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.output, "output", "o", "", "Output format: json prints each PullEvent as one JSON line")
	fl.BoolVar(&f.layers, "layers", false, "Show a line per layer under each pull (terminal view)")
	fl.BoolVar(&f.watch, "watch", false, "Keep following after the pulls finished, forever")
	fl.StringVarP(&f.selector, "selector", "l", "", "Follow the pods matching this label selector (instead of a target), including pods created later")
	fl.DurationVar(&f.timeout, "timeout", 0, "Give up after this long (e.g. 5m), exit 6; 0 waits as long as it takes")
	registerFlagCompletions(cmd, o)
	return cmd
}

// target is what a follow watches.
type target struct {
	kind, name, namespace string
	node                  string        // node mode
	pods                  []*corev1.Pod // pod and workload modes
	// workload is set in workload mode: its pods are read again while following.
	workload *rollout
	first    rolloutView
}

func (t *target) describe() string {
	if t.node != "" {
		return "node/" + t.node
	}
	if t.kind == "selector" {
		return "pods matching " + t.name + " in namespace " + t.namespace
	}
	return t.kind + "/" + t.name + " in namespace " + t.namespace
}

var workloadKinds = map[string]string{
	"deploy": "deployments", "deployment": "deployments", "deployments": "deployments",
	"rs": "replicasets", "replicaset": "replicasets", "replicasets": "replicasets",
	"sts": "statefulsets", "statefulset": "statefulsets", "statefulsets": "statefulsets",
	"ds": "daemonsets", "daemonset": "daemonsets", "daemonsets": "daemonsets",
	"job": "jobs", "jobs": "jobs",
}

// parseTarget splits TYPE/NAME; a bare NAME is a pod, as with kubectl logs.
func parseTarget(arg string) (kind, name string, err error) {
	kind, name, ok := strings.Cut(arg, "/")
	if !ok {
		kind, name = "pod", arg
	}
	switch kind {
	case "pod", "pods", "po":
		kind = "pod"
	case "node", "nodes", "no":
		kind = "node"
	default:
		if r, ok := workloadKinds[kind]; ok {
			kind = singular(r)
		} else {
			return "", "", usageErr("cannot follow %q: want pod/NAME, node/NAME, deploy/NAME, sts/NAME, ds/NAME, rs/NAME or job/NAME", arg)
		}
	}
	if name == "" || strings.Contains(name, "/") {
		return "", "", usageErr("bad target %q: want TYPE/NAME", arg)
	}
	return kind, name, nil
}

func (f *followOptions) resolve(ctx context.Context, cs kubernetes.Interface, kind, name string) (*target, error) {
	t := &target{kind: kind, name: name}
	if kind == "node" {
		t.node = name
		_, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		// Reading nodes is a cluster-scoped right many users lack; the stream itself does
		// not need it, so only a definite "not found" stops here.
		if apierrors.IsNotFound(err) {
			return nil, explainKubeError(err, "get", "nodes", "", name)
		}
		return t, nil
	}
	ns, err := f.namespace()
	if err != nil {
		return nil, err
	}
	t.namespace = ns
	if kind == "pod" {
		pod, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, explainKubeError(err, "get", "pods", ns, name)
		}
		t.pods = []*corev1.Pod{pod}
		return t, nil
	}
	t.workload = &rollout{kind: kind, name: name, namespace: ns}
	v, err := t.workload.read(ctx, cs)
	if err != nil {
		return nil, err
	}
	t.first, t.pods = v, v.pods
	return t, nil
}

// runTimed is run under --timeout: when it expires the follow ends with ExitOther, as
// kubectl rollout status --timeout fails.
func (f *followOptions) runTimed(ctx context.Context, arg string) error {
	if f.timeout < 0 {
		return usageErr("--timeout must not be negative")
	}
	if f.timeout == 0 {
		return f.run(ctx, arg)
	}
	tctx, cancel := context.WithTimeoutCause(ctx, f.timeout, errFollowTimeout)
	defer cancel()
	err := f.run(tctx, arg)
	if ctx.Err() == nil && errors.Is(context.Cause(tctx), errFollowTimeout) {
		return exitErr(ExitOther, errFollowTimeout, "timed out after %s (--timeout) following %s", f.timeout, lastOr(arg, "pods matching "+f.selector))
	}
	return err
}

var errFollowTimeout = errors.New("follow timed out")

func (f *followOptions) run(ctx context.Context, arg string) error {
	if f.output != "" && f.output != "json" {
		return usageErr("unknown output format %q for follow: want json", f.output)
	}
	kind, name := "selector", f.selector
	if arg != "" {
		var err error
		if kind, name, err = parseTarget(arg); err != nil {
			return err
		}
	}
	cs, err := f.clientset()
	if err != nil {
		return err
	}
	t, err := f.resolve(ctx, cs, kind, name)
	if err != nil {
		return err
	}
	srv, err := f.server()
	if err != nil {
		return err
	}
	pr := f.newPrinter()
	defer pr.Close()
	st := newFollowState(t)
	if t.workload != nil {
		st.rolloutDone, st.rolloutWait = t.first.complete, t.first.waiting
	}
	for _, m := range st.presentAtStart() {
		pr.Message(m)
	}
	if !f.watch {
		if done, err := st.outcome(); done {
			return err
		}
	}
	return f.loop(ctx, cs, srv, t, st, pr)
}

func (t *target) filter() api.Filter {
	switch {
	case t.node != "":
		return api.Filter{Node: t.node}
	case len(t.pods) == 1 && t.workload == nil:
		return api.Filter{Namespace: t.namespace, Pod: t.pods[0].Name}
	default:
		// Several pods: the server filters one pod at most, the rest is done here.
		return api.Filter{Namespace: t.namespace}
	}
}

// streamItem is what the reader hands the follow loop: an event, or a note about the
// connection.
type streamItem struct {
	ev     sseclient.Event
	notice string
}

func (f *followOptions) loop(ctx context.Context, cs kubernetes.Interface, srv *Server, t *target, st *followState, pr printer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	items := make(chan streamItem, 64)
	errc := make(chan error, 1)
	go func() { errc <- f.read(ctx, srv, t.filter(), items) }()

	frame := time.NewTicker(f.frame)
	defer frame.Stop()
	var recheck <-chan time.Time
	if len(t.pods) > 0 || t.workload != nil {
		every := f.recheck
		if t.workload != nil {
			every = f.rolloutPoll
		}
		tk := time.NewTicker(every)
		defer tk.Stop()
		recheck = tk.C
	}
	hint := time.NewTimer(f.hintAfter)
	defer hint.Stop()
	nodesTick := time.NewTicker(nodeCheckEvery)
	defer nodesTick.Stop()
	var nodes nodeWatch
	var readErr error
	for {
		if readErr != nil && len(items) == 0 {
			return readErr
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			// Events read before the reader gave up still count: one may end the follow.
			if err == nil {
				err = errors.New("the event stream ended")
			}
			readErr, errc = err, nil
			continue
		case it := <-items:
			if it.notice != "" {
				pr.Notice(it.notice)
				continue
			}
			recheckNow := f.handle(it.ev, st, pr)
			if recheckNow && (len(t.pods) > 0 || t.workload != nil) {
				if err := f.recheckPods(ctx, cs, t, st, pr); err != nil {
					return err
				}
			}
		case <-frame.C:
			pr.Frame(st)
			continue
		case <-recheck:
			if err := f.recheckPods(ctx, cs, t, st, pr); err != nil {
				return err
			}
		case <-hint.C:
			if m := st.stillWaiting(); m != "" {
				pr.Notice(m)
			}
			continue
		case <-nodesTick.C:
			if ns, err := srv.Nodes(ctx); err == nil {
				for _, m := range nodes.update(ns, st.nodesFollowed(), time.Now()) {
					pr.Notice(m)
				}
			}
			continue
		}
		if !f.watch {
			if done, err := st.outcome(); done {
				pr.Frame(st)
				if err == nil {
					pr.Message(st.doneMessage())
				}
				return err
			}
		}
	}
}

// nodeCheckEvery is how often a follow asks whether the nodes it depends on still report.
const nodeCheckEvery = 5 * time.Second

// handle applies one SSE event; it reports whether the pods should be read again (an
// entry they waited on left the server).
func (f *followOptions) handle(ev sseclient.Event, st *followState, pr printer) bool {
	if ev.Type == "snapshot" {
		var l api.PullList
		if err := json.Unmarshal([]byte(ev.Data), &l); err != nil {
			pr.Notice(fmt.Sprintf("ignoring a snapshot that is not JSON: %v", err))
			return false
		}
		for _, m := range st.snapshot(l.Pulls) {
			pr.Message(m)
		}
		pr.Snapshot(st.filter(l.Pulls))
		return false
	}
	if ev.Type != "" && ev.Type != "message" {
		return false // a named event from a newer server
	}
	// PullEvents are plain messages; the type is inside the JSON.
	var pe api.PullEvent
	if err := json.Unmarshal([]byte(ev.Data), &pe); err != nil {
		pr.Notice(fmt.Sprintf("ignoring an event that is not JSON: %v", err))
		return false
	}
	if !slices.Contains(api.EventTypes, pe.Type) {
		return false // a type from a newer server
	}
	st.rememberEvent(&pe)
	if !st.matches(&pe.Pull) {
		return false
	}
	msgs, recheck := st.apply(&pe)
	pr.Event(&pe, ev.Data)
	for _, m := range msgs {
		pr.Message(m)
	}
	return recheck
}

// read streams events into items, reconnecting with Last-Event-ID and backoff when the
// stream drops. The first connection's failure is returned at once: it is a setup problem
// (not installed, forbidden, no server pods), not a blip.
func (f *followOptions) read(ctx context.Context, srv *Server, filter api.Filter, items chan<- streamItem) error {
	send := func(it streamItem) bool {
		select {
		case items <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	lastID := ""
	backoff := 500 * time.Millisecond
	var failingSince time.Time
	connected := false
	for {
		body, err := srv.Events(ctx, filter, lastID)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			code := ExitCode(err)
			if !connected || code == ExitForbidden || code == ExitNotFound {
				return err
			}
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if !f.watch && time.Since(failingSince) > f.giveUpAfter {
				return err
			}
			if !send(streamItem{notice: fmt.Sprintf("reconnecting in %s: %v", backoff, err)}) {
				return ctx.Err()
			}
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return ctx.Err()
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		connected = true
		failingSince = time.Time{}
		rd := sseclient.NewReader(body)
		var rerr error
		for {
			ev, err := rd.Next()
			if err != nil {
				rerr = err
				break
			}
			backoff = 500 * time.Millisecond
			if !send(streamItem{ev: ev}) {
				body.Close()
				return ctx.Err()
			}
		}
		body.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if rd.LastID != "" {
			lastID = rd.LastID
		}
		why := "the server closed the stream"
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			why = rerr.Error()
		}
		if !send(streamItem{notice: fmt.Sprintf("stream dropped (%s); resuming after event %s", why, lastOr(lastID, "0"))}) {
			return ctx.Err()
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func lastOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// recheckPods reads the followed pods again: a container whose image arrived without a
// pull the server saw (already present, or pulled while the stream was down) is done.
func (f *followOptions) recheckPods(ctx context.Context, cs kubernetes.Interface, t *target, st *followState, pr printer) error {
	if t.workload != nil {
		v, err := t.workload.read(ctx, cs)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if c := ExitCode(err); c == ExitNotFound || c == ExitForbidden {
				return err
			}
			pr.Notice(fmt.Sprintf("cannot read %s again: %v", t.describe(), err))
			return nil
		}
		for _, m := range st.setRollout(v) {
			pr.Message(m)
		}
		return nil
	}
	for i, p := range t.pods {
		cur, err := cs.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return exitErr(ExitNotFound, err, "pod %s/%s was deleted while it was followed", p.Namespace, p.Name)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			pr.Notice(fmt.Sprintf("cannot read pod %s/%s again: %v", p.Namespace, p.Name, err))
			continue
		}
		t.pods[i] = cur
		for _, m := range st.podUpdated(cur) {
			pr.Message(m)
		}
	}
	return nil
}
