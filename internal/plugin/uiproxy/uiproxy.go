// Package uiproxy serves the Pulltrace web UI on a local address the way `kubectl proxy`
// serves the API: requests are forwarded, with the kubeconfig's credentials, to the API
// server's service proxy of the Pulltrace server Service. Unlike `kubectl proxy` it forwards
// only that one Service's prefix and only reads (GET and HEAD), so a web page in the local
// browser cannot use the user's credentials for anything else.
package uiproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// Config says which Service to proxy to and with what credentials.
type Config struct {
	REST      *rest.Config
	Namespace string
	Service   string
	// Port is the Service port's name or number; empty means the Service's only port.
	Port string
	// AllowedHosts are Host header values accepted besides loopback names (localhost,
	// 127.0.0.1, ::1). The check stops DNS rebinding: another site's page resolving its
	// name to 127.0.0.1 would otherwise reach the proxy as same-origin.
	AllowedHosts []string
}

// Proxy is an http.Handler for the UI.
type Proxy struct {
	// Prefix is the service proxy path, with a trailing slash: the UI's URL path.
	Prefix string
	rp     *httputil.ReverseProxy
	hosts  map[string]bool
}

// Prefix is the API server path of the Service's proxy, ending in "/".
func Prefix(namespace, service, port string) string {
	name := service
	if port != "" {
		name += ":" + port
	}
	return fmt.Sprintf("/api/v1/namespaces/%s/services/%s/proxy/", url.PathEscape(namespace), url.PathEscape(name))
}

// New builds the proxy. Its transport is the kubeconfig's (rest.TransportFor): client
// certificates, tokens and exec/OIDC plugins all work as they do for kubectl.
func New(cfg Config) (*Proxy, error) {
	if cfg.REST == nil {
		return nil, errors.New("uiproxy: no REST config")
	}
	if cfg.Namespace == "" || cfg.Service == "" {
		return nil, errors.New("uiproxy: namespace and service are required")
	}
	rt, err := rest.TransportFor(cfg.REST)
	if err != nil {
		return nil, fmt.Errorf("uiproxy: transport for %s: %w", cfg.REST.Host, err)
	}
	base, _, err := rest.DefaultServerUrlFor(cfg.REST)
	if err != nil {
		return nil, fmt.Errorf("uiproxy: API server URL %q: %w", cfg.REST.Host, err)
	}
	// The path of Host (an API server behind a path prefix) comes before /api/v1/...
	basePath := strings.TrimSuffix(base.Path, "/")
	target := &url.URL{Scheme: base.Scheme, Host: base.Host}
	p := &Proxy{Prefix: Prefix(cfg.Namespace, cfg.Service, cfg.Port), hosts: map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}}
	for _, h := range cfg.AllowedHosts {
		p.hosts[strings.Trim(h, "[]")] = true
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = target.Scheme, target.Host
			r.Out.URL.Path = basePath + r.In.URL.Path
			r.Out.URL.RawPath = ""
			if r.In.URL.RawPath != "" {
				r.Out.URL.RawPath = basePath + r.In.URL.RawPath
			}
			r.Out.Host = ""
			// The browser's credentials for localhost are not the API server's business.
			r.Out.Header.Del("Cookie")
			r.Out.Header.Del("Authorization")
		},
		Transport: rt,
		// SSE: every event is flushed to the browser as it arrives.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "pulltrace ui: cannot reach the Kubernetes API server: "+err.Error(), http.StatusBadGateway)
		},
	}
	return p, nil
}

func (p *Proxy) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return p.hosts[strings.Trim(host, "[]")]
}

// ServeHTTP forwards reads under Prefix; / redirects to the UI.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !p.hostAllowed(r.Host) {
		http.Error(w, "pulltrace ui: host "+r.Host+" not allowed", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "pulltrace ui: read-only proxy", http.StatusMethodNotAllowed)
		return
	}
	switch {
	case r.URL.Path == "/" || r.URL.Path == strings.TrimSuffix(p.Prefix, "/"):
		http.Redirect(w, r, p.Prefix, http.StatusFound)
	case strings.HasPrefix(r.URL.Path, p.Prefix) && !strings.Contains(r.URL.Path, ".."):
		p.rp.ServeHTTP(w, r)
	default:
		http.Error(w, "pulltrace ui: only "+p.Prefix+" is served here", http.StatusNotFound)
	}
}

// Server is a running local UI proxy.
type Server struct {
	// URL opens the UI: http://ADDR/api/v1/namespaces/NS/services/SVC:PORT/proxy/
	URL      string
	Addr     net.Addr
	srv      *http.Server
	done     chan struct{}
	serveErr error
}

// Start listens on addr ("127.0.0.1:8001", ":0" for any free port) and serves p until
// Close or ctx ends.
func Start(ctx context.Context, addr string, p *Proxy) (*Server, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return Serve(ctx, ln, p), nil
}

// Serve serves p on ln until Close or ctx ends.
func Serve(ctx context.Context, ln net.Listener, p *Proxy) *Server {
	s := &Server{Addr: ln.Addr(), done: make(chan struct{}),
		srv: &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}}
	s.URL = "http://" + ln.Addr().String() + p.Prefix
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.serveErr = err
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Close()
		case <-s.done:
		}
	}()
	return s
}

// Done is closed when the server stops.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is why serving stopped, nil after Close.
func (s *Server) Err() error {
	<-s.done
	return s.serveErr
}

// Close stops serving; open SSE streams are cut.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	return err
}
