package plugin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/d44b/pulltrace/internal/plugin"
	"github.com/d44b/pulltrace/pkg/api"
)

// fakeAPI is an httptest stand-in for the API server: pods and nodes, and the service
// proxy path of the Pulltrace server, whose SSE answers are scripted per connection. It
// lets the unit tests drive every branch the real cluster cannot reach cheaply.
type fakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	pods     map[string]*corev1.Pod // "ns/name"
	nodes    map[string]bool
	services map[string]bool // "ns/name"; the proxy answers only for these
	// streams script each SSE connection in turn; a script returning true drops the
	// connection, otherwise it stays open until the client leaves.
	streams     []func(w io.Writer, flush func()) (drop bool)
	conns       int
	lastIDs     []string
	queries     []string
	nodeStatus  []api.NodeStatus
	pulls       api.PullList
	pages       []api.PullList // served by continue index when set
	forbidProxy bool
	unready     bool // the Service exists, its pods are not ready
	// podSelectors are the label selectors pod lists asked for (every pod is returned
	// unless selectPods is set).
	podSelectors []string
	selectPods   bool
	// Deployments: every deployment/NAME exists with deploy's generation, observed
	// generation and replicas; replicaSets (name -> revision) are owned by it.
	deploy      appsv1.DeploymentStatus
	deployGen   int64
	deployRepl  int32
	replicaSets map[string]int
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{t: t, pods: map[string]*corev1.Pod{}, nodes: map[string]bool{}, services: map[string]bool{"pulltrace/pulltrace-server": true},
		deploy: appsv1.DeploymentStatus{ObservedGeneration: 1}, deployGen: 1, deployRepl: 2, replicaSets: map[string]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func status(w http.ResponseWriter, code int, reason, msg, kind, name string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure,
		Message: msg, Reason: metav1.StatusReason(reason), Code: int32(code), Details: &metav1.StatusDetails{Kind: kind, Name: name}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	f.mu.Lock()
	locked := true
	defer func() {
		if locked {
			f.mu.Unlock()
		}
	}()
	switch {
	case len(parts) == 3 && parts[2] == "nodes":
		l := corev1.NodeList{TypeMeta: metav1.TypeMeta{Kind: "NodeList", APIVersion: "v1"}}
		for n := range f.nodes {
			l.Items = append(l.Items, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
		}
		writeJSON(w, &l)
	case len(parts) == 4 && parts[2] == "nodes":
		if !f.nodes[parts[3]] {
			status(w, 404, "NotFound", fmt.Sprintf("nodes %q not found", parts[3]), "nodes", parts[3])
			return
		}
		writeJSON(w, &corev1.Node{TypeMeta: metav1.TypeMeta{Kind: "Node", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: parts[3]}})
	case len(parts) == 7 && parts[0] == "apis" && parts[5] == "deployments":
		d := appsv1.Deployment{TypeMeta: metav1.TypeMeta{Kind: "Deployment", APIVersion: "apps/v1"},
			ObjectMeta: metav1.ObjectMeta{Name: parts[6], Namespace: parts[4], UID: "uid-deploy", Generation: f.deployGen},
			Spec:       appsv1.DeploymentSpec{Replicas: &f.deployRepl, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": parts[6]}}},
			Status:     f.deploy}
		writeJSON(w, &d)
	case len(parts) == 6 && parts[0] == "apis" && parts[5] == "replicasets":
		l := appsv1.ReplicaSetList{TypeMeta: metav1.TypeMeta{Kind: "ReplicaSetList", APIVersion: "apps/v1"}}
		for name, rev := range f.replicaSets {
			l.Items = append(l.Items, appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: parts[4], UID: types.UID("uid-" + name),
				Annotations:     map[string]string{"deployment.kubernetes.io/revision": fmt.Sprint(rev)},
				OwnerReferences: []metav1.OwnerReference{{UID: "uid-deploy", Controller: new(true), Kind: "Deployment", Name: "web"}}}})
		}
		writeJSON(w, &l)
	case len(parts) == 6 && parts[4] == "pods":
		p := f.pods[parts[3]+"/"+parts[5]]
		if p == nil {
			status(w, 404, "NotFound", fmt.Sprintf("pods %q not found", parts[5]), "pods", parts[5])
			return
		}
		writeJSON(w, p)
	case len(parts) == 5 && parts[4] == "pods":
		f.podSelectors = append(f.podSelectors, r.URL.Query().Get("labelSelector"))
		l := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
		sel, err := labels.Parse(r.URL.Query().Get("labelSelector"))
		if err != nil {
			status(w, 400, "BadRequest", err.Error(), "", "")
			return
		}
		for _, p := range f.pods {
			if p.Namespace == parts[3] && (!f.selectPods || sel.Matches(labels.Set(p.Labels))) {
				l.Items = append(l.Items, *p)
			}
		}
		writeJSON(w, &l)
	case len(parts) == 6 && parts[4] == "services":
		if !f.services[parts[3]+"/"+parts[5]] {
			status(w, 404, "NotFound", fmt.Sprintf("services %q not found", parts[5]), "services", parts[5])
			return
		}
		writeJSON(w, &corev1.Service{TypeMeta: metav1.TypeMeta{Kind: "Service", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: parts[5], Namespace: parts[3]}})
	case len(parts) >= 7 && parts[4] == "services" && parts[6] == "proxy":
		svc, _, _ := strings.Cut(parts[5], ":")
		if f.forbidProxy {
			status(w, 403, "Forbidden", fmt.Sprintf("services %q is forbidden: User \"u\" cannot get resource \"services/proxy\" in API group \"\" in the namespace %q", parts[5], parts[3]), "services", parts[5])
			return
		}
		if !f.services[parts[3]+"/"+svc] || f.unready {
			// What the API server says for a Service it cannot route to, existing or not.
			status(w, 503, "ServiceUnavailable", fmt.Sprintf("no endpoints available for service %q", svc), "", "")
			return
		}
		if "/"+strings.Join(parts[7:], "/") == "/api/v1/nodes" {
			writeJSON(w, api.NodeList{Nodes: f.nodeStatus})
			return
		}
		f.queries = append(f.queries, r.URL.RawQuery)
		switch "/" + strings.Join(parts[7:], "/") {
		case "/api/v1/pulls":
			if len(f.pages) > 0 {
				i, _ := strconv.Atoi(r.URL.Query().Get("continue"))
				writeJSON(w, f.pages[min(i, len(f.pages)-1)])
				break
			}
			writeJSON(w, f.pulls)
		case "/api/v1/version":
			writeJSON(w, map[string]string{"version": "v9.9.9", "schemaVersion": "v1"})
		case "/api/v1/events":
			f.lastIDs = append(f.lastIDs, r.Header.Get("Last-Event-ID"))
			n := f.conns
			f.conns++
			var script func(io.Writer, func()) bool
			if n < len(f.streams) {
				script = f.streams[n]
			}
			f.mu.Unlock()
			locked = false
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			fl := w.(http.Flusher)
			fl.Flush()
			if script == nil || !script(w, fl.Flush) {
				<-r.Context().Done()
			}
		default:
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"error":"no API endpoint"}`)
		}
	default:
		status(w, 404, "NotFound", "the server could not find the requested resource", "", "")
	}
}

// kubeconfig writes a kubeconfig for the fake, namespace "default".
func (f *fakeAPI) kubeconfig() string {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["fake"] = &clientcmdapi.Cluster{Server: f.srv.URL}
	cfg.AuthInfos["u"] = &clientcmdapi.AuthInfo{Token: "t"}
	cfg.Contexts["fake"] = &clientcmdapi.Context{Cluster: "fake", AuthInfo: "u", Namespace: "default"}
	cfg.CurrentContext = "fake"
	p := filepath.Join(f.t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func (f *fakeAPI) addPod(ns, name, node string, imageID string, images ...string) {
	f.addRSPod("", ns, name, node, imageID, images...)
}

// addRSPod adds a pod controlled by ReplicaSet rs (none when empty).
func (f *fakeAPI) addRSPod(rs, ns, name, node string, imageID string, images ...string) {
	p := &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}, ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: node}}
	if rs != "" {
		p.OwnerReferences = []metav1.OwnerReference{{UID: types.UID("uid-" + rs), Controller: new(true), Kind: "ReplicaSet", Name: rs}}
	}
	for i, img := range images {
		c := fmt.Sprintf("c%d", i)
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c, Image: img})
		cs := corev1.ContainerStatus{Name: c, Image: img, ImageID: imageID}
		if imageID == "" {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		}
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, cs)
	}
	f.mu.Lock()
	f.pods[ns+"/"+name] = p
	f.mu.Unlock()
}

// sse writes one event as the server does: the snapshot (and any other name a newer
// server might add) as a named event, PullEvents as plain messages.
func sse(w io.Writer, id, typ string, data any) {
	b, ok := data.(string)
	if !ok {
		raw, _ := json.Marshal(data)
		b = string(raw)
	}
	if id != "" {
		fmt.Fprintf(w, "id: %s\n", id)
	}
	if !strings.HasPrefix(typ, "pull.") && !strings.HasPrefix(typ, "layer.") {
		fmt.Fprintf(w, "event: %s\n", typ)
	}
	fmt.Fprintf(w, "data: %s\n\n", b)
}

func event(typ api.EventType, p api.Pull) api.PullEvent {
	return api.PullEvent{SchemaVersion: "v1", Timestamp: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Type: typ, NodeName: p.NodeName, Pull: p}
}

func pull(id string, state api.PullState, got, total int64, pods ...api.PodRef) api.Pull {
	p := api.Pull{ID: id, NodeName: "node-1", ImageRef: "registry.local/shop/web:v1", State: state, TotalBytes: total, DownloadedBytes: got,
		TotalKnown: total > 0, StartedAt: time.Date(2026, 3, 1, 11, 59, 0, 0, time.UTC), Pods: pods, Layers: []api.Layer{}}
	if pods == nil {
		p.Pods = []api.PodRef{}
	}
	if total > 0 {
		p.Percent = float64(got) / float64(total) * 100
	}
	if state.Finished() {
		c := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		p.CompletedAt = &c
	}
	return p
}

var webPod = api.PodRef{Namespace: "default", PodName: "web", Container: "c0"}

// exec runs the plugin in-process against the fake and waits for it.
func (f *fakeAPI) exec(t *testing.T, tty bool, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	o := plugin.NewOptions(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, "v1.2.3")
	o.IsTerminal = func(any) bool { return tty }
	o.TerminalWidth = func(any) int { return 120 }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code = plugin.Execute(ctx, o, append([]string{"--kubeconfig", f.kubeconfig()}, args...))
	return code, out.String(), errOut.String()
}

// start runs the plugin in the background until stop; out and errOut fill as it runs.
func (f *fakeAPI) start(t *testing.T, args ...string) (out, errOut *syncBuffer, stop func() int) {
	t.Helper()
	out, errOut = &syncBuffer{}, &syncBuffer{}
	o := plugin.NewOptions(genericiooptions.IOStreams{In: strings.NewReader(""), Out: out, ErrOut: errOut}, "v1.2.3")
	o.IsTerminal = func(any) bool { return false }
	o.TerminalWidth = func(any) int { return 0 }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	done := make(chan int, 1)
	kc := f.kubeconfig()
	go func() { done <- plugin.Execute(ctx, o, append([]string{"--kubeconfig", kc}, args...)) }()
	return out, errOut, func() int { cancel(); return <-done }
}
