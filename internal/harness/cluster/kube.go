package cluster

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Versions the stand-in kubelet reports on Node objects; they match hack/components.sh.
const (
	kubeletVersion    = "v1.37.2"
	containerdVersion = "containerd://2.4.2"
)

type kubeState struct {
	admin  *rest.Config
	user   *rest.Config
	client kubernetes.Interface
}

func (c *Cluster) kubeDir() string { return filepath.Join(c.Dir, "kube") }

func (c *Cluster) startKube(ctx context.Context) error {
	kd := c.kubeDir()
	alloc, err := newNetnsAlloc(c.Dir)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.netns = alloc
	c.mu.Unlock()

	p, err := newPKI(filepath.Join(kd, "pki"))
	if err != nil {
		return err
	}
	// The host ends of the veths ExposeService creates are in the serving cert too, so a
	// process inside such a namespace can verify the apiserver by that address.
	ips := append([]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.96.0.1")}, alloc.hostIPs()...)
	if c.podNet != nil {
		// Pods reach the apiserver at default/kubernetes's ClusterIP.
		ips = append(ips, c.podNet.apiServiceIP(), c.podNet.gateway())
	}
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if _, _, err := p.issue("apiserver", "kube-apiserver", nil, ips, dns, x509.ExtKeyUsageServerAuth); err != nil {
		return err
	}
	adminCert, adminKey, err := p.issue("admin", "pulltrace-admin", []string{"system:masters"}, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	if err := p.serviceAccountKeys(); err != nil {
		return err
	}
	token := randomHex(24)
	c.UserName = "pulltrace-user"
	// token,user,uid: the user gets only system:authenticated, which RBAC grants almost
	// nothing, which is what the permission tests need.
	if err := os.WriteFile(filepath.Join(kd, "tokens.csv"), fmt.Appendf(nil, "%s,%s,%s-uid\n", token, c.UserName, c.UserName), 0o600); err != nil {
		return fmt.Errorf("token file: %w", err)
	}

	etcdURL, err := c.startEtcd(ctx)
	if err != nil {
		return err
	}
	if err := c.startAPIServer(ctx, p, etcdURL, adminCert, adminKey); err != nil {
		return err
	}
	c.kube.user = &rest.Config{
		Host:            c.APIServerURL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM},
		QPS:             100, Burst: 200,
	}

	c.Kubeconfig = filepath.Join(kd, "admin.kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, c.APIServerURL, p.caPEM, "pulltrace-admin", &clientcmdapi.AuthInfo{
		ClientCertificateData: adminCert, ClientKeyData: adminKey,
	}); err != nil {
		return err
	}
	c.UserKubeconfig = filepath.Join(kd, "user.kubeconfig")
	return writeKubeconfig(c.UserKubeconfig, c.APIServerURL, p.caPEM, c.UserName, &clientcmdapi.AuthInfo{Token: token})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func writeKubeconfig(path, server string, ca []byte, user string, auth *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["pulltrace-test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[user] = auth
	cfg.Contexts[user] = &clientcmdapi.Context{Cluster: "pulltrace-test", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = user
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

func (c *Cluster) startEtcd(ctx context.Context) (string, error) {
	data := filepath.Join(c.kubeDir(), "etcd")
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		cport, err := freePort()
		if err != nil {
			return "", err
		}
		pport, err := freePort()
		if err != nil {
			return "", err
		}
		if cport == pport {
			continue
		}
		_ = os.RemoveAll(data)
		client := fmt.Sprintf("http://127.0.0.1:%d", cport)
		peer := fmt.Sprintf("http://127.0.0.1:%d", pport)
		p, err := c.startChild("etcd", c.bin("kube", "etcd"), []string{
			"--name", "default",
			"--data-dir", data,
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", "default=" + peer,
			// Test data is disposable; fsync would make every write wait on the disk.
			"--unsafe-no-fsync",
			"--log-level", "warn",
		}, os.Environ(), nil)
		if err != nil {
			return "", err
		}
		c.mu.Lock()
		c.etcd = p
		c.mu.Unlock()
		lastErr = waitReady(ctx, p, 60*time.Second, func(ctx context.Context) error {
			return httpOK(ctx, client+"/health")
		})
		if lastErr == nil {
			c.log.Info("etcd ready", "url", client)
			return client, nil
		}
		p.Kill()
		if !addrInUse(p) {
			return "", lastErr
		}
	}
	return "", lastErr
}

func (c *Cluster) startAPIServer(ctx context.Context, p *pki, etcdURL string, adminCert, adminKey []byte) error {
	kd := c.kubeDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		url := fmt.Sprintf("https://127.0.0.1:%d", port)
		// Without real nodes no controller creates default ServiceAccounts, so
		// ServiceAccount admission would reject every pod.
		extra := []string{"--service-cluster-ip-range=10.96.0.0/16", "--disable-admission-plugins=ServiceAccount"}
		if c.podNet != nil {
			extra = []string{"--service-cluster-ip-range=" + c.podNet.serviceSubnet()}
		}
		proc, err := c.startChild("kube-apiserver", c.bin("kube", "kube-apiserver"), append([]string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=127.0.0.1",
			fmt.Sprintf("--secure-port=%d", port),
			"--advertise-address=127.0.0.1",
			// The endpoint reconciler refuses a loopback advertise address.
			"--endpoint-reconciler-type=none",
			"--cert-dir=" + filepath.Join(kd, "certs"),
			"--tls-cert-file=" + p.path("apiserver.crt"),
			"--tls-private-key-file=" + p.path("apiserver.key"),
			"--client-ca-file=" + p.path("ca.crt"),
			"--token-auth-file=" + filepath.Join(kd, "tokens.csv"),
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + p.path("sa.pub"),
			"--service-account-signing-key-file=" + p.path("sa.key"),
			"--profiling=false",
		}, extra...), os.Environ(), nil)
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.apiserver = proc
		c.mu.Unlock()
		admin := &rest.Config{
			Host: url,
			TLSClientConfig: rest.TLSClientConfig{
				CAData: p.caPEM, CertData: adminCert, KeyData: adminKey,
			},
			QPS: 200, Burst: 400,
		}
		client, err := kubernetes.NewForConfig(admin)
		if err != nil {
			return fmt.Errorf("admin client: %w", err)
		}
		lastErr = waitReady(ctx, proc, 120*time.Second, func(ctx context.Context) error {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
			if err != nil {
				return fmt.Errorf("readyz: %w: %s", err, strings.TrimSpace(string(body)))
			}
			// The bootstrap controller creates "default" a moment after readyz; tests
			// create objects there straight away.
			_, err = client.CoreV1().Namespaces().Get(rctx, metav1.NamespaceDefault, metav1.GetOptions{})
			return err
		})
		if lastErr == nil {
			c.APIServerURL = url
			c.kube = &kubeState{admin: admin, client: client}
			c.log.Info("kube-apiserver ready", "url", url)
			return nil
		}
		proc.Kill()
		if !addrInUse(proc) {
			return lastErr
		}
	}
	return lastErr
}

func (c *Cluster) client() (kubernetes.Interface, error) {
	if c.kube == nil {
		return nil, fmt.Errorf("cluster runs without Kube")
	}
	return c.kube.client, nil
}

// EnsureNamespace creates namespace ns unless it exists.
func (c *Cluster) EnsureNamespace(ctx context.Context, ns string) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	_, err = cl.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return nil
}

// Node creates (or returns) a Ready Node named name, as a registering kubelet would.
func (c *Cluster) Node(ctx context.Context, name string) (*corev1.Node, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	n, err := cl.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: name,
		Labels: map[string]string{
			"kubernetes.io/hostname": name,
			"kubernetes.io/os":       "linux",
			"kubernetes.io/arch":     goarch(),
		},
	}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return cl.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("create node %s: %w", name, err)
	}
	now := metav1.Now()
	n.Status = corev1.NodeStatus{
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: kubeletVersion, ContainerRuntimeVersion: containerdVersion,
			OperatingSystem: "linux", Architecture: goarch(), OSImage: "pulltrace test node",
		},
	}
	n, err = cl.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("node %s status: %w", name, err)
	}
	return n, nil
}

// CreatePod creates a pod on node with one container per image, named c0, c1, ...
// The namespace is created when missing.
func (c *Cluster) CreatePod(ctx context.Context, ns, name, node string, images ...string) (*corev1.Pod, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	if len(images) == 0 {
		return nil, fmt.Errorf("create pod %s/%s: no images", ns, name)
	}
	if err := c.EnsureNamespace(ctx, ns); err != nil {
		return nil, err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{NodeName: node},
	}
	for i, img := range images {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
			Name: fmt.Sprintf("c%d", i), Image: img, ImagePullPolicy: corev1.PullIfNotPresent,
		})
	}
	out, err := cl.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}
	return out, nil
}

// DeletePod deletes a pod at once; with no kubelet to confirm, a graceful delete of a
// scheduled pod would never finish.
func (c *Cluster) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	zero := int64(0)
	err = cl.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// KubeletEvent records an event about the pod's first container the way the kubelet does
// (reasons Pulling, Pulled, Failed, BackOff, ...).
func (c *Cluster) KubeletEvent(ctx context.Context, pod *corev1.Pod, reason, message string) (*corev1.Event, error) {
	container := ""
	if len(pod.Spec.Containers) > 0 {
		container = pod.Spec.Containers[0].Name
	}
	return c.KubeletContainerEvent(ctx, pod, container, reason, message)
}

// KubeletContainerEvent records a kubelet event about one container of the pod: a core/v1
// Event with involvedObject the pod and fieldPath spec.containers{name} (or
// spec.initContainers{name}), source kubelet on the pod's node.
func (c *Cluster) KubeletContainerEvent(ctx context.Context, pod *corev1.Pod, container, reason, message string) (*corev1.Event, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	fieldPath := fmt.Sprintf("spec.containers{%s}", container)
	for _, ic := range pod.Spec.InitContainers {
		if ic.Name == container {
			fieldPath = fmt.Sprintf("spec.initContainers{%s}", container)
		}
	}
	typ := corev1.EventTypeNormal
	switch reason {
	case "Failed", "BackOff", "ErrImageNeverPull", "InspectFailed":
		typ = corev1.EventTypeWarning
	}
	now := time.Now()
	ev := &corev1.Event{
		// The kubelet's recorder names events <object>.<unix nanos in hex>.
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", pod.Name, now.UnixNano()), Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name,
			UID: pod.UID, ResourceVersion: pod.ResourceVersion, FieldPath: fieldPath,
		},
		Reason:              reason,
		Message:             message,
		Source:              corev1.EventSource{Component: "kubelet", Host: pod.Spec.NodeName},
		FirstTimestamp:      metav1.NewTime(now),
		LastTimestamp:       metav1.NewTime(now),
		Count:               1,
		Type:                typ,
		ReportingController: "kubelet",
		ReportingInstance:   pod.Spec.NodeName,
	}
	out, err := cl.CoreV1().Events(pod.Namespace).Create(ctx, ev, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("kubelet event %s for %s/%s: %w", reason, pod.Namespace, pod.Name, err)
	}
	return out, nil
}

// SetPodWaiting sets a container's state to waiting with reason (ContainerCreating,
// ErrImagePull, ImagePullBackOff, ...) and no imageID, as the kubelet reports a container
// whose image is not there yet. Other containers keep their status.
func (c *Cluster) SetPodWaiting(ctx context.Context, pod *corev1.Pod, container, reason, message string) (*corev1.Pod, error) {
	return c.updateContainerStatus(ctx, pod, container, func(cs *corev1.ContainerStatus) {
		cs.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
		cs.Ready = false
		started := false
		cs.Started = &started
		cs.ImageID = ""
		cs.ContainerID = ""
	})
}

// SetContainerRunning marks a container running with the image id the runtime resolved
// ("sha256:<config>" or "repo@sha256:<digest>"), as after a successful pull and start.
func (c *Cluster) SetContainerRunning(ctx context.Context, pod *corev1.Pod, container, imageID string) (*corev1.Pod, error) {
	return c.updateContainerStatus(ctx, pod, container, func(cs *corev1.ContainerStatus) {
		cs.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
		cs.Ready = true
		started := true
		cs.Started = &started
		cs.ImageID = imageID
		cs.ContainerID = "containerd://" + randomHex(32)
	})
}

func (c *Cluster) updateContainerStatus(ctx context.Context, pod *corev1.Pod, container string, set func(*corev1.ContainerStatus)) (*corev1.Pod, error) {
	cl, err := c.client()
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		cur, err := cl.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("get pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		if err := applyContainerStatus(cur, container, set); err != nil {
			return nil, err
		}
		out, err := cl.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) && attempt < 10 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s status: %w", pod.Namespace, pod.Name, err)
		}
		return out, nil
	}
}

// applyContainerStatus rebuilds the status the way the kubelet reports it: one entry per
// container in spec order, conditions and phase following the containers' states.
func applyContainerStatus(pod *corev1.Pod, container string, set func(*corev1.ContainerStatus)) error {
	found := false
	old := map[string]corev1.ContainerStatus{}
	for _, cs := range pod.Status.ContainerStatuses {
		old[cs.Name] = cs
	}
	statuses := make([]corev1.ContainerStatus, 0, len(pod.Spec.Containers))
	allReady := true
	for _, ctr := range pod.Spec.Containers {
		cs, ok := old[ctr.Name]
		if !ok {
			started := false
			cs = corev1.ContainerStatus{
				Name: ctr.Name, Image: ctr.Image, Started: &started,
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
			}
		}
		if ctr.Name == container {
			set(&cs)
			found = true
		}
		allReady = allReady && cs.Ready
		statuses = append(statuses, cs)
	}
	if !found {
		return fmt.Errorf("pod %s/%s has no container %q", pod.Namespace, pod.Name, container)
	}
	pod.Status.ContainerStatuses = statuses
	now := metav1.Now()
	if pod.Status.StartTime == nil {
		pod.Status.StartTime = &now
	}
	if pod.Status.HostIP == "" {
		pod.Status.HostIP = "127.0.0.1"
		pod.Status.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	}
	ready := corev1.ConditionFalse
	pod.Status.Phase = corev1.PodPending
	if allReady {
		ready = corev1.ConditionTrue
		pod.Status.Phase = corev1.PodRunning
	}
	setCondition(pod, corev1.PodScheduled, corev1.ConditionTrue, "")
	setCondition(pod, corev1.PodInitialized, corev1.ConditionTrue, "")
	reason := ""
	if !allReady {
		reason = "ContainersNotReady"
	}
	setCondition(pod, corev1.ContainersReady, ready, reason)
	setCondition(pod, corev1.PodReady, ready, reason)
	return nil
}

func setCondition(pod *corev1.Pod, typ corev1.PodConditionType, status corev1.ConditionStatus, reason string) {
	for i := range pod.Status.Conditions {
		cond := &pod.Status.Conditions[i]
		if cond.Type == typ {
			if cond.Status != status {
				cond.LastTransitionTime = metav1.Now()
			}
			cond.Status, cond.Reason = status, reason
			return
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{
		Type: typ, Status: status, Reason: reason, LastTransitionTime: metav1.Now(),
	})
}

// AdminHTTPClient returns an http.Client authenticated as admin to the apiserver, for raw
// requests such as service-proxy streams.
func (c *Cluster) AdminHTTPClient() (*http.Client, error) {
	cfg := c.AdminConfig()
	if cfg == nil {
		return nil, fmt.Errorf("cluster runs without Kube")
	}
	return rest.HTTPClientFor(cfg)
}
