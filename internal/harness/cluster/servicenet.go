package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// clusterDomain is the DNS domain of Services, as kubelets are told.
const clusterDomain = "cluster.local"

// serviceNet stands in for kube-proxy and CoreDNS, which this machine does not have: it
// answers cluster DNS on the bridge's gateway address, and forwards TCP connections to each
// Service's ClusterIP:port to a ready endpoint, the way kube-proxy's old userspace mode did.
// No packet filter rule, no NAT and no forwarding sysctl is touched: ClusterIPs are local
// addresses on the cluster's bridge and every connection is a plain socket pair here.
type serviceNet struct {
	net     *podNetwork
	apiAddr string // where default/kubernetes goes: the apiserver's own address
	log     *slog.Logger

	factory  informers.SharedInformerFactory
	services corelisters.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	kick     chan struct{}
	stopCh   chan struct{}
	done     sync.WaitGroup

	mu        sync.Mutex
	listeners map[string]*svcListener // "ip:port"
	dnsUDP    net.PacketConn
	dnsTCP    net.Listener
	stopped   bool
}

type svcListener struct {
	ns, name, portName string
	ln                 net.Listener
}

func startServiceNet(ctx context.Context, cl kubernetes.Interface, pn *podNetwork, apiAddr string, log *slog.Logger) (*serviceNet, error) {
	s := &serviceNet{
		net: pn, apiAddr: apiAddr, log: log,
		factory:   informers.NewSharedInformerFactory(cl, 0),
		kick:      make(chan struct{}, 1),
		stopCh:    make(chan struct{}),
		listeners: map[string]*svcListener{},
	}
	svcInf := s.factory.Core().V1().Services()
	epsInf := s.factory.Discovery().V1().EndpointSlices()
	s.services, s.slices = svcInf.Lister(), epsInf.Lister()
	kick := func(any) {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	if _, err := svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: kick, UpdateFunc: func(_, n any) { kick(n) }, DeleteFunc: kick,
	}); err != nil {
		return nil, fmt.Errorf("service informer: %w", err)
	}
	_ = epsInf.Informer()
	s.factory.Start(s.stopCh)
	for typ, ok := range s.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			close(s.stopCh)
			return nil, fmt.Errorf("cache of %v did not sync", typ)
		}
	}
	gw := pn.gateway().String()
	udp, err := net.ListenPacket("udp4", net.JoinHostPort(gw, "53"))
	if err != nil {
		close(s.stopCh)
		return nil, fmt.Errorf("cluster dns: %w", err)
	}
	tcp, err := net.Listen("tcp4", net.JoinHostPort(gw, "53"))
	if err != nil {
		udp.Close()
		close(s.stopCh)
		return nil, fmt.Errorf("cluster dns: %w", err)
	}
	s.dnsUDP, s.dnsTCP = udp, tcp
	s.done.Go(s.serveDNSUDP)
	s.done.Go(s.serveDNSTCP)
	s.done.Go(s.reconcileLoop)
	kick(nil)
	return s, nil
}

func (s *serviceNet) stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	ls := s.listeners
	s.listeners = map[string]*svcListener{}
	s.mu.Unlock()
	close(s.stopCh)
	s.dnsUDP.Close()
	s.dnsTCP.Close()
	for _, l := range ls {
		l.ln.Close()
	}
	s.factory.Shutdown()
	s.done.Wait()
}

// reconcileLoop reconciles on every Service change, and every second as well, so that a
// listener that could not be opened (an address not usable yet) is retried.
func (s *serviceNet) reconcileLoop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-s.stopCh:
			return
		case <-s.kick:
			s.reconcile()
		case <-tick.C:
			s.reconcile()
		}
	}
}

// reconcile opens a listener for every ClusterIP:port and closes those of deleted Services.
func (s *serviceNet) reconcile() {
	svcs, err := s.services.List(labels.Everything())
	if err != nil {
		return
	}
	want := map[string]*svcListener{}
	for _, svc := range svcs {
		ip := svc.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
				continue
			}
			want[net.JoinHostPort(ip, strconv.Itoa(int(p.Port)))] = &svcListener{ns: svc.Namespace, name: svc.Name, portName: p.Name}
		}
	}
	s.mu.Lock()
	var gone []*svcListener
	for k, l := range s.listeners {
		if w, ok := want[k]; !ok || w.ns != l.ns || w.name != l.name || w.portName != l.portName {
			gone = append(gone, l)
			delete(s.listeners, k)
		}
	}
	var add []string
	for k := range want {
		if _, ok := s.listeners[k]; !ok {
			add = append(add, k)
		}
	}
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, l := range gone {
		l.ln.Close()
	}
	for _, k := range add {
		ip, _, _ := net.SplitHostPort(k)
		if err := s.net.addLocalIP(ctx, ip); err != nil {
			s.log.Warn("service address", "addr", k, "err", err)
			continue
		}
		ln, err := net.Listen("tcp4", k)
		if err != nil {
			s.log.Warn("service listener", "addr", k, "err", err)
			continue
		}
		l := want[k]
		l.ln = ln
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			ln.Close()
			return
		}
		s.listeners[k] = l
		s.mu.Unlock()
		s.log.Info("service proxy", "service", l.ns+"/"+l.name, "port", l.portName, "addr", k)
		s.done.Go(func() { s.accept(l) })
	}
}

func (s *serviceNet) accept(l *svcListener) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		go s.forward(conn, l)
	}
}

// backends lists the ready addresses (ip:port) behind a Service port.
func (s *serviceNet) backends(ns, name, portName string) []string {
	if ns == corev1.NamespaceDefault && name == "kubernetes" {
		return []string{s.apiAddr}
	}
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name})
	slices, err := s.slices.EndpointSlices(ns).List(sel)
	if err != nil {
		return nil
	}
	var out []string
	for _, sl := range slices {
		port := int32(0)
		for _, p := range sl.Ports {
			if p.Port != nil && (p.Name == nil && portName == "" || p.Name != nil && *p.Name == portName) {
				port = *p.Port
			}
		}
		if port == 0 {
			continue
		}
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(int(port))))
			}
		}
	}
	return out
}

func (s *serviceNet) forward(conn net.Conn, l *svcListener) {
	defer conn.Close()
	bs := s.backends(l.ns, l.name, l.portName)
	if len(bs) == 0 {
		return // as kube-proxy: no endpoint, the connection is refused (closed)
	}
	up, err := net.DialTimeout("tcp", bs[rand.IntN(len(bs))], 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, conn)
	go pipe(conn, up)
	<-done
	<-done
}

// lookup answers an A query: a Service's ClusterIP, or a headless Service's ready pod
// addresses. Names outside the cluster domain are never forwarded anywhere.
func (s *serviceNet) lookup(name string) (ips []net.IP, known bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	rest, ok := strings.CutSuffix(name, ".svc."+clusterDomain)
	if !ok {
		return nil, false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 2 {
		return nil, false
	}
	svc, err := s.services.Services(parts[1]).Get(parts[0])
	if err != nil {
		return nil, false
	}
	if svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		return []net.IP{net.ParseIP(svc.Spec.ClusterIP)}, true
	}
	seen := map[string]bool{}
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name})
	slices, _ := s.slices.EndpointSlices(svc.Namespace).List(sel)
	for _, sl := range slices {
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			for _, a := range ep.Addresses {
				if ip := net.ParseIP(a); ip != nil && !seen[a] {
					seen[a] = true
					ips = append(ips, ip)
				}
			}
		}
	}
	return ips, true
}

func (s *serviceNet) answer(req []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, OpCode: h.OpCode}
	ips, known := s.lookup(q.Name.String())
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeALL {
		for _, ip := range ips {
			var a [4]byte
			copy(a[:], ip.To4())
			if err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: a}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}

func (s *serviceNet) serveDNSUDP() {
	buf := make([]byte, 1500)
	for {
		n, addr, err := s.dnsUDP.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		resp, err := s.answer(buf[:n])
		if err != nil {
			continue
		}
		_, _ = s.dnsUDP.WriteTo(resp, addr)
	}
}

func (s *serviceNet) serveDNSTCP() {
	for {
		conn, err := s.dnsTCP.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			for {
				var l [2]byte
				if _, err := io.ReadFull(conn, l[:]); err != nil {
					return
				}
				req := make([]byte, int(l[0])<<8|int(l[1]))
				if _, err := io.ReadFull(conn, req); err != nil {
					return
				}
				resp, err := s.answer(req)
				if err != nil {
					return
				}
				if _, err := conn.Write(append([]byte{byte(len(resp) >> 8), byte(len(resp))}, resp...)); err != nil {
					return
				}
			}
		}()
	}
}
