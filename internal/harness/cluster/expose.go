package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

func goarch() string { return runtime.GOARCH }

// slotsPerCluster is how many /30s fit the cluster's /24 of 10.213.0.0/16.
const slotsPerCluster = 64

// netnsAlloc hands out the cluster's network namespaces, each a /30 of the cluster's own
// 10.213.<block>.0/24: host end .1, namespace end .2. Picking the /24 up front lets the
// apiserver's serving cert name every host end.
type netnsAlloc struct {
	dir   string
	block int
	mu    sync.Mutex
	next  int
	all   []string
}

func newNetnsAlloc(dir string) (*netnsAlloc, error) {
	used := map[int]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("interface addresses: %w", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip4 := ipn.IP.To4(); ip4 != nil && ip4[0] == 10 && ip4[1] == 213 {
				used[int(ip4[2])] = true
			}
		}
	}
	// Another cluster on this machine holds blocks whose veths exist; a random pick among
	// the free ones keeps two clusters starting at once from choosing the same block.
	var free []int
	for b := 0; b < 256; b++ {
		if !used[b] {
			free = append(free, b)
		}
	}
	if len(free) == 0 {
		return nil, errors.New("no free /24 in 10.213.0.0/16 for service namespaces")
	}
	return &netnsAlloc{dir: dir, block: free[rand.IntN(len(free))]}, nil
}

func (a *netnsAlloc) ip(slot, host int) net.IP {
	return net.IPv4(10, 213, byte(a.block), byte(slot*4+host)).To4()
}

func (a *netnsAlloc) hostIPs() []net.IP {
	ips := make([]net.IP, 0, slotsPerCluster)
	for s := 0; s < slotsPerCluster; s++ {
		ips = append(ips, a.ip(s, 1))
	}
	return ips
}

func (a *netnsAlloc) take() (slot int, name string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.next >= slotsPerCluster {
		return 0, "", fmt.Errorf("all %d service namespaces of this cluster are in use", slotsPerCluster)
	}
	slot = a.next
	a.next++
	name = "pt-" + randomHex(4)
	a.all = append(a.all, name)
	// Recorded before it exists, so a Teardown after a crash mid-setup still removes it.
	if err := appendLine(filepath.Join(a.dir, netnsFile), name); err != nil {
		return 0, "", fmt.Errorf("record netns: %w", err)
	}
	return slot, name, nil
}

func (a *netnsAlloc) names() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.all...)
}

// Exposed is a server reachable as a Kubernetes Service through the apiserver proxy.
type Exposed struct {
	Namespace string
	Name      string // the Service, and its EndpointSlice's service-name label
	PodName   string // the Pod that claims IP
	Port      int    // Service port, also the listener's port
	IP        string // the listener's address inside the namespace (the pod IP)
	HostIP    string // the host end of the veth
	Addr      string // IP:Port
	NetNS     string // network namespace name (ip netns)
	// ProxyPath is the apiserver path prefix that reaches the server; append "/hello" etc.
	ProxyPath string
	// File is the listening socket, set by ExposeServiceListener: pass it in ExtraFiles so
	// the child serves on it (fd 3 when first). The cluster closes it on Stop.
	File *os.File

	c        *Cluster
	srv      *http.Server
	listener net.Listener
	once     sync.Once
}

// URL is the server's direct address, reachable from the host (it is in a namespace this
// process created); the apiserver path is ProxyPath.
func (e *Exposed) URL() string { return "http://" + e.Addr }

// ExposeService serves handler in this process on an address inside a new network
// namespace and publishes it as Service ns/name (port name "http") that the apiserver's
// service proxy reaches: /api/v1/namespaces/ns/services/name:http/proxy/...
func (c *Cluster) ExposeService(ctx context.Context, ns, name string, port int, handler http.Handler) (*Exposed, error) {
	e, ln, err := c.expose(ctx, ns, name, port)
	if err != nil {
		return nil, err
	}
	e.listener = ln
	e.srv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	srv := e.srv
	go func() { _ = srv.Serve(ln) }()
	return e, nil
}

// ExposeServiceListener is ExposeService for a server in another process: it returns the
// listening socket as Exposed.File instead of serving it here.
func (c *Cluster) ExposeServiceListener(ctx context.Context, ns, name string, port int) (*Exposed, error) {
	e, ln, err := c.expose(ctx, ns, name, port)
	if err != nil {
		return nil, err
	}
	f, err := ln.(*net.TCPListener).File()
	// The dup in File keeps the socket; this process must not accept on it as well.
	ln.Close()
	if err != nil {
		e.shutdown()
		return nil, fmt.Errorf("listener file: %w", err)
	}
	e.File = f
	return e, nil
}

func (c *Cluster) expose(ctx context.Context, ns, name string, port int) (*Exposed, net.Listener, error) {
	cl, err := c.client()
	if err != nil {
		return nil, nil, err
	}
	if port <= 0 || port > 65535 {
		return nil, nil, fmt.Errorf("expose %s/%s: bad port %d", ns, name, port)
	}
	slot, nsName, err := c.netns.take()
	if err != nil {
		return nil, nil, err
	}
	hostIP, podIP := c.netns.ip(slot, 1).String(), c.netns.ip(slot, 2).String()
	e := &Exposed{
		Namespace: ns, Name: name, PodName: name + "-backend", Port: port,
		IP: podIP, HostIP: hostIP, Addr: net.JoinHostPort(podIP, fmt.Sprint(port)), NetNS: nsName,
		ProxyPath: fmt.Sprintf("/api/v1/namespaces/%s/services/%s:http/proxy", ns, name),
		c:         c,
	}
	if err := setupNetns(ctx, nsName, hostIP, podIP); err != nil {
		_ = deleteNetns(context.WithoutCancel(ctx), nsName)
		return nil, nil, err
	}
	ln, err := listenInNetns(nsName, e.Addr)
	if err != nil {
		_ = deleteNetns(context.WithoutCancel(ctx), nsName)
		return nil, nil, err
	}
	c.mu.Lock()
	c.exposed = append(c.exposed, e)
	c.mu.Unlock()
	if err := c.publishService(ctx, cl, e); err != nil {
		ln.Close()
		e.shutdown()
		return nil, nil, err
	}
	if err := waitProxyEndpoints(ctx, cl, e); err != nil {
		ln.Close()
		e.shutdown()
		return nil, nil, err
	}
	c.log.Info("exposed service", "service", ns+"/"+name, "addr", e.Addr, "netns", nsName)
	return e, ln, nil
}

// waitProxyEndpoints waits until the apiserver's service proxy knows the endpoint: its
// caches trail the writes, and on a loaded machine a first request right after publishing
// gets 503 "no endpoints available". Any other answer, or a probe that times out because the
// listener has no server yet (its backlog took the connection), means the proxy routes to us.
func waitProxyEndpoints(ctx context.Context, cl kubernetes.Interface, e *Exposed) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cl.CoreV1().Services(e.Namespace).ProxyGet("http", e.Name, "http", "healthz", nil).DoRaw(pctx)
		cancel()
		if err == nil || !apierrors.IsServiceUnavailable(err) || apierrors.IsUnexpectedServerError(err) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("apiserver proxy for %s/%s still has no endpoints after 30s: %w", e.Namespace, e.Name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// setupNetns creates the namespace and a veth pair with an address on each end. Both ends
// are needed: the apiserver dials the pod IP from the host side of the pair.
func setupNetns(ctx context.Context, nsName, hostIP, podIP string) error {
	hostIf, nsIf := nsName+"h", nsName+"n"
	steps := [][]string{
		{"netns", "add", nsName},
		{"link", "add", hostIf, "type", "veth", "peer", "name", nsIf, "netns", nsName},
		{"addr", "add", hostIP + "/30", "dev", hostIf},
		{"link", "set", hostIf, "up"},
		{"-n", nsName, "addr", "add", podIP + "/30", "dev", nsIf},
		{"-n", nsName, "link", "set", nsIf, "up"},
		{"-n", nsName, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, "ip", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// listenInNetns opens a TCP listener inside network namespace nsName. A socket belongs
// to the namespace it was created in for its whole life, so only the creating thread has
// to switch; it switches back before any other goroutine can run on it.
func listenInNetns(nsName, addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open own netns: %w", err)}
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(filepath.Join("/run/netns", nsName), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open netns %s: %w", nsName, err)}
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("enter netns %s: %w", nsName, err)}
			return
		}
		ln, lerr := net.Listen("tcp", addr)
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// The thread is stuck in the wrong namespace: returning while still locked
			// makes the runtime discard it rather than reuse it.
			if ln != nil {
				ln.Close()
			}
			ch <- result{err: fmt.Errorf("leave netns %s: %w", nsName, err)}
			return
		}
		runtime.UnlockOSThread()
		if lerr != nil {
			lerr = fmt.Errorf("listen %s in netns %s: %w", addr, nsName, lerr)
		}
		ch <- result{ln: ln, err: lerr}
	}()
	r := <-ch
	return r.ln, r.err
}

// publishService creates what the apiserver's service proxy checks before it dials: a
// selector-less Service, a Pod whose status claims the address, and an EndpointSlice
// pointing at that address with a targetRef to the Pod (no controller-manager runs to
// make the slice from a selector).
func (c *Cluster) publishService(ctx context.Context, cl kubernetes.Interface, e *Exposed) error {
	if err := c.EnsureNamespace(ctx, e.Namespace); err != nil {
		return err
	}
	pod, err := cl.CoreV1().Pods(e.Namespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: e.PodName, Namespace: e.Namespace, Labels: map[string]string{"app": e.Name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "server", Image: "pulltrace.invalid/test-backend:v1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(e.Port)}},
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("backend pod %s/%s: %w", e.Namespace, e.PodName, err)
	}
	now := metav1.Now()
	started := true
	pod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		PodIP:     e.IP,
		PodIPs:    []corev1.PodIP{{IP: e.IP}},
		HostIP:    e.HostIP,
		HostIPs:   []corev1.HostIP{{IP: e.HostIP}},
		StartTime: &now,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "server", Image: "pulltrace.invalid/test-backend:v1", Ready: true, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	if pod, err = cl.CoreV1().Pods(e.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("backend pod %s/%s status: %w", e.Namespace, e.PodName, err)
	}
	if _, err := cl.CoreV1().Services(e.Namespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: e.Name, Namespace: e.Namespace},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{
			Name: "http", Port: int32(e.Port), TargetPort: intstr.FromInt32(int32(e.Port)), Protocol: corev1.ProtocolTCP,
		}}},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("service %s/%s: %w", e.Namespace, e.Name, err)
	}
	ready, serving, terminating := true, true, false
	portName, portNum, proto := "http", int32(e.Port), corev1.ProtocolTCP
	if _, err := cl.DiscoveryV1().EndpointSlices(e.Namespace).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: e.Name + "-pulltrace", Namespace: e.Namespace,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: e.Name,
				discoveryv1.LabelManagedBy:   "pulltrace-test-cluster",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{e.IP},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &terminating},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: e.Namespace, Name: pod.Name, UID: pod.UID},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &portName, Port: &portNum, Protocol: &proto}},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("endpointslice for %s/%s: %w", e.Namespace, e.Name, err)
	}
	return nil
}

// Close stops serving, deletes the Service, EndpointSlice and Pod, and removes the
// network namespace. Cluster.Stop does the same for every Exposed still open.
func (e *Exposed) Close(ctx context.Context) error {
	var errs []error
	if cl, err := e.c.client(); err == nil {
		del := func(what string, err error) {
			if err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete %s: %w", what, err))
			}
		}
		zero := int64(0)
		del("service", cl.CoreV1().Services(e.Namespace).Delete(ctx, e.Name, metav1.DeleteOptions{}))
		del("endpointslice", cl.DiscoveryV1().EndpointSlices(e.Namespace).Delete(ctx, e.Name+"-pulltrace", metav1.DeleteOptions{}))
		del("pod", cl.CoreV1().Pods(e.Namespace).Delete(ctx, e.PodName, metav1.DeleteOptions{GracePeriodSeconds: &zero}))
	}
	e.c.mu.Lock()
	for i, x := range e.c.exposed {
		if x == e {
			e.c.exposed = append(e.c.exposed[:i], e.c.exposed[i+1:]...)
			break
		}
	}
	e.c.mu.Unlock()
	e.shutdown()
	return errors.Join(errs...)
}

// shutdown stops the server and drops the namespace. The socket holds a reference to the
// namespace, so it is closed first; deleting the namespace then takes the veth pair too.
func (e *Exposed) shutdown() {
	e.once.Do(func() {
		if e.srv != nil {
			_ = e.srv.Close()
		}
		if e.listener != nil {
			_ = e.listener.Close()
		}
		if e.File != nil {
			_ = e.File.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := deleteNetns(ctx, e.NetNS); err != nil {
			e.c.log.Warn("delete netns", "netns", e.NetNS, "err", err)
		}
	})
}
