package plugin

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/d44b/pulltrace/pkg/api"
)

func TestExplainProxyError(t *testing.T) {
	svcs := schema.GroupResource{Resource: "services"}
	withService := fake.NewClientset(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "pulltrace-server", Namespace: "pulltrace"}})
	noService := fake.NewClientset()
	unavailable := apierrors.NewServiceUnavailable(`no endpoints available for service "pulltrace-server"`)
	dial := apierrors.NewServiceUnavailable(`error trying to reach service: dial tcp 10.0.0.7:8080: connect: connection refused`)
	cases := []struct {
		name string
		core *fake.Clientset
		err  error
		body string
		code int
		want string
	}{
		{"forbidden", withService, apierrors.NewForbidden(svcs, "pulltrace-server:http", errors.New(`User "jo" cannot get resource "services/proxy"`)), "",
			ExitForbidden, "you need permission to get services/proxy in namespace pulltrace: the plugin reaches the Pulltrace server only through the API server's service proxy, so it needs `get` on `services/proxy` (resourceName pulltrace-server) there; check with `kubectl auth can-i get services/pulltrace-server --subresource=proxy -n pulltrace`"},
		{"unauthorized", withService, apierrors.NewUnauthorized("token expired"), "", ExitForbidden, "did not accept your credentials"},
		{"service missing (404)", withService, apierrors.NewNotFound(svcs, "pulltrace-server"), "", ExitNotFound, "Pulltrace is not installed: service pulltrace/pulltrace-server not found. Install it with `kubectl pulltrace install`"},
		{"service missing (503)", noService, unavailable, "", ExitNotFound, "Pulltrace is not installed"},
		{"no ready pods", withService, unavailable, "", ExitUnreachable, "its pods are not ready or not running (no endpoints available"},
		{"pod refuses", withService, dial, "", ExitUnreachable, "connection refused"},
		{"server lacks the path", withService, apierrors.NewGenericServerResponse(404, "GET", schema.GroupResource{}, "", "unknown", 0, true), `{"error":"no API endpoint GET /api/v1/x"}`,
			ExitNotFound, "the Pulltrace server has no endpoint /api/v1/x (is it older than this plugin? compare `kubectl pulltrace version`): no API endpoint GET /api/v1/x"},
		{"api server down", withService, &url.Error{Op: "Get", URL: "https://k8s:6443", Err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}, "",
			ExitUnreachable, "cannot reach the Kubernetes API server"},
		{"proxy cannot dial (500 from the API server)", withService, apierrors.NewInternalError(errors.New("error trying to reach service: dial tcp 10.0.0.7:8080: i/o timeout")), "",
			ExitUnreachable, "its pods are not ready or not running"},
		{"the Pulltrace server's own 500", withService, apierrors.NewGenericServerResponse(500, "GET", schema.GroupResource{}, "", "unknown", 0, true), `{"error":"boom"}`,
			ExitOther, "boom"},
		{"other status", withService, apierrors.NewBadRequest("bad filter"), "", ExitOther, "bad filter"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := &Server{Namespace: "pulltrace", Service: "pulltrace-server", Port: "http", core: c.core}
			err := s.explainProxyError(context.Background(), c.err, "/api/v1/x", []byte(c.body))
			if ExitCode(err) != c.code || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("code %d (want %d): %v", ExitCode(err), c.code, err)
			}
			if !errors.Is(err, c.err) {
				t.Fatalf("the cause is not wrapped: %v", err)
			}
		})
	}
}

func TestExplainKubeError(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	err := explainKubeError(apierrors.NewNotFound(pods, "web"), "get", "pods", "shop", "web")
	if ExitCode(err) != ExitNotFound || err.Error() != `pod "web" not found in namespace shop` {
		t.Fatalf("%d %v", ExitCode(err), err)
	}
	err = explainKubeError(apierrors.NewForbidden(pods, "web", errors.New("no")), "get", "pods", "shop", "web")
	if ExitCode(err) != ExitForbidden || !strings.Contains(err.Error(), "you need permission to get pods in namespace shop (check with `kubectl auth can-i get pods -n shop`)") {
		t.Fatalf("%d %v", ExitCode(err), err)
	}
}

func TestInstallConfirmation(t *testing.T) {
	for _, c := range []struct {
		tty    bool
		yes    bool
		answer string
		code   int
	}{
		{false, true, "", ExitOK},
		{false, false, "y\n", ExitUsage},
		{true, false, "y\n", ExitOK},
		{true, false, "YES\n", ExitOK},
		{true, false, "\n", ExitOther},
		{true, false, "n\n", ExitOther},
	} {
		var errOut bytes.Buffer
		o := NewOptions(genericiooptions.IOStreams{In: strings.NewReader(c.answer), Out: &bytes.Buffer{}, ErrOut: &errOut}, "v")
		o.IsTerminal = func(any) bool { return c.tty }
		in := &installOptions{Options: o, yes: c.yes}
		if got := ExitCode(in.confirm()); got != c.code {
			t.Errorf("tty=%v yes=%v answer=%q: exit %d, want %d (%s)", c.tty, c.yes, c.answer, got, c.code, errOut.String())
		}
		if c.tty && !c.yes && !strings.Contains(errOut.String(), "[y/N]") {
			t.Errorf("no prompt: %q", errOut.String())
		}
	}
}

func TestValuesHelpers(t *testing.T) {
	m := map[string]any{"runtimeSocket": map[string]any{"enabled": false}}
	if boolValue(m, true, "runtimeSocket", "enabled") || !boolValue(m, true, "missing", "x") {
		t.Fatal("boolValue")
	}
	setValue(m, true, "runtimeSocket", "risksAcknowledged")
	setValue(m, "x", "a", "b", "c")
	if m["runtimeSocket"].(map[string]any)["risksAcknowledged"] != true || stringValue(m, "", "a", "b", "c") != "x" {
		t.Fatalf("setValue: %v", m)
	}
	objs := manifestObjects("---\nkind: Deployment\nmetadata:\n  name: d\n---\nkind: ServiceAccount\nmetadata:\n  name: sa\n---\n# empty\n")
	if strings.Join(objs, ",") != "ServiceAccount/sa,Deployment/d" {
		t.Fatalf("manifestObjects: %v", objs)
	}
}

// Several pods (a workload): done only when every waiting container has its image; a
// queued entry that leaves the server asks for the pods to be read again.
func TestFollowStateSeveralPods(t *testing.T) {
	pod := func(name string, imageID string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"}, Spec: corev1.PodSpec{NodeName: "n1",
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers:     []corev1.Container{{Name: "app", Image: "shop/app:1"}}},
			Status: corev1.PodStatus{InitContainerStatuses: []corev1.ContainerStatus{{Name: "init", ImageID: "sha256:i"}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "app", ImageID: imageID}}}}
	}
	st := newFollowState(&target{kind: "deployment", name: "app", namespace: "shop", pods: []*corev1.Pod{pod("a", ""), pod("b", "")}})
	if len(st.needs) != 2 || len(st.present) != 1 || st.present[0] != "cached: busybox already present on n1" {
		t.Fatalf("needs %d present %q", len(st.needs), st.present)
	}
	refA := api.PodRef{Namespace: "shop", PodName: "a", Container: "app"}
	refB := api.PodRef{Namespace: "shop", PodName: "b", Container: "app"}
	other := api.Pull{ID: "x", NodeName: "n1", State: api.PullActive, Pods: []api.PodRef{{Namespace: "shop", PodName: "c", Container: "app"}}}
	if st.matches(&other) {
		t.Fatal("a pull for another pod matches")
	}
	q := api.Pull{ID: "queued-1", NodeName: "n1", ImageRef: "docker.io/shop/app:1", State: api.PullQueued, Pods: []api.PodRef{refA, refB}}
	msgs := st.snapshot([]api.Pull{q})
	if len(msgs) != 1 || msgs[0] != "queued: waiting for the kubelet to start pulling docker.io/shop/app:1 on n1" {
		t.Fatalf("snapshot messages %q", msgs)
	}
	p := api.Pull{ID: "p", NodeName: "n1", ImageRef: "docker.io/shop/app:1", State: api.PullActive, Pods: []api.PodRef{refA}}
	st.apply(&api.PullEvent{Type: api.EventPullStarted, Pull: p})
	_, recheck := st.apply(&api.PullEvent{Type: api.EventPullRemoved, Pull: q})
	if !recheck {
		t.Fatal("removal of the queued entry b waited on does not ask for a re-read")
	}
	p.State = api.PullCompleted
	st.apply(&api.PullEvent{Type: api.EventPullCompleted, Pull: p})
	if done, _ := st.outcome(); done {
		t.Fatal("done while pod b still waits")
	}
	msgs = st.podUpdated(pod("b", "sha256:app"))
	if done, err := st.outcome(); !done || err != nil || len(msgs) != 1 || !strings.HasPrefix(msgs[0], "present: shop/app:1 on n1") {
		t.Fatalf("after b got its image: %v %v %q", done, err, msgs)
	}
}

func TestWaitReady(t *testing.T) {
	pollEvery = 10 * time.Millisecond
	defer func() { pollEvery = 2 * time.Second }()
	one := int32(1)
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "pulltrace-server", Namespace: "pt", Generation: 1}, Spec: appsv1.DeploymentSpec{Replicas: &one},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 1, UpdatedReplicas: 1, ReadyReplicas: 1}}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "pulltrace-agent", Namespace: "pt", Generation: 1},
		Status: appsv1.DaemonSetStatus{ObservedGeneration: 1, DesiredNumberScheduled: 3, NumberReady: 3}}
	objs := []string{"Service/pulltrace-server", "DaemonSet/pulltrace-agent", "Deployment/pulltrace-server"}
	probes := 0
	probe := func(_ context.Context, svc string) (*api.ServerVersion, error) {
		probes++
		if svc != "pulltrace-server" {
			t.Errorf("probed %q", svc)
		}
		if probes < 3 {
			return nil, exitErr(ExitUnreachable, nil, "no endpoints yet")
		}
		return &api.ServerVersion{Version: "0.1.0"}, nil
	}
	var out bytes.Buffer
	if err := waitReady(context.Background(), fake.NewClientset(dep, ds), probe, &out, "pt", objs, 5*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"server: 1/1 replicas ready", "server answers: version 0.1.0", "agents: 3/3 ready", "Pulltrace is ready"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	ds.Status.NumberReady = 1
	out.Reset()
	err := waitReady(context.Background(), fake.NewClientset(dep, ds), probe, &out, "pt", objs, 200*time.Millisecond)
	if ExitCode(err) != ExitUnreachable || !strings.Contains(err.Error(), "timed out after 200ms waiting for daemonset pt/pulltrace-agent (agents) to run on every node: agents: 1/3 ready") {
		t.Fatalf("%d %v", ExitCode(err), err)
	}
}

// A failed attempt in the history does not end a follow whose retry is in progress.
func TestFollowStateRetryWins(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}, Spec: corev1.PodSpec{NodeName: "n1",
		Containers: []corev1.Container{{Name: "app", Image: "shop/app:1"}}}}
	st := newFollowState(&target{kind: "pod", name: "web", namespace: "shop", pods: []*corev1.Pod{pod}})
	ref := api.PodRef{Namespace: "shop", PodName: "web", Container: "app"}
	failed := api.Pull{ID: "a1", State: api.PullFailed, Error: "EOF", StartedAt: t0, Pods: []api.PodRef{ref}}
	retry := api.Pull{ID: "a2", State: api.PullActive, StartedAt: t0.Add(time.Minute), Pods: []api.PodRef{ref}}
	st.snapshot([]api.Pull{retry, failed}) // the server's order: newest first
	if done, err := st.outcome(); done {
		t.Fatalf("ended on the earlier attempt: %v", err)
	}
	retry.State = api.PullFailed
	retry.Error = "manifest unknown"
	st.apply(&api.PullEvent{Type: api.EventPullFailed, Pull: retry})
	if done, err := st.outcome(); !done || ExitCode(err) != ExitPullFailed || !strings.Contains(err.Error(), "manifest unknown") {
		t.Fatalf("retry failed: %v %v", done, err)
	}
}
