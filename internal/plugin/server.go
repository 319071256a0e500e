package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/d44b/pulltrace/internal/plugin/uiproxy"
	"github.com/d44b/pulltrace/pkg/api"
)

// Server reaches the Pulltrace server through the API server's service proxy
// (/api/v1/namespaces/NS/services/SVC:PORT/proxy/...), never directly: every request then
// carries the user's identity and is allowed by RBAC (`get` on `services/proxy`) or not.
type Server struct {
	Namespace string
	Service   string
	// Port is the Service port's name or number.
	Port string

	rest rest.Interface
	// stream has no overall timeout: --request-timeout must not cut a follow.
	stream rest.Interface
	core   kubernetes.Interface
}

// NewServer builds a Server from a REST config.
func NewServer(cfg *rest.Config, namespace, service, port string) (*Server, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	sc := rest.CopyConfig(cfg)
	sc.Timeout = 0
	scs, err := kubernetes.NewForConfig(sc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes streaming client: %w", err)
	}
	return &Server{Namespace: namespace, Service: service, Port: port, rest: cs.CoreV1().RESTClient(), stream: scs.CoreV1().RESTClient(), core: cs}, nil
}

// ProxyPath is the API server path that reaches the server's root.
func (s *Server) ProxyPath() string {
	return ProxyPath(s.Namespace, s.Service, s.Port)
}

// ProxyPath is the API server path of a Service's proxy subresource, with a trailing slash.
func ProxyPath(namespace, service, port string) string {
	return uiproxy.Prefix(namespace, service, port)
}

func (s *Server) request(c rest.Interface, path string, q url.Values) *rest.Request {
	name := s.Service
	if s.Port != "" {
		name += ":" + s.Port
	}
	r := c.Get().Namespace(s.Namespace).Resource("services").SubResource("proxy").Name(name).Suffix(strings.TrimPrefix(path, "/"))
	for k, vs := range q {
		for _, v := range vs {
			r = r.Param(k, v)
		}
	}
	return r
}

// getJSON fetches path and decodes its JSON body into out.
func (s *Server) getJSON(ctx context.Context, path string, q url.Values, out any) error {
	res := s.request(s.rest, path, q).Do(ctx)
	body, err := res.Raw()
	if err != nil {
		// Error, unlike Raw, decodes a Status body into the error it describes.
		return s.explainProxyError(ctx, res.Error(), path, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return exitErr(ExitOther, err, "the server's answer to %s is not the expected JSON (%v): %.200q", path, err, body)
	}
	return nil
}

// Pulls lists the pulls that pass f.
// The list comes in pages (limit and continue, as a Kubernetes list); all of them are read.
func (s *Server) Pulls(ctx context.Context, f api.Filter) (*api.PullList, error) {
	out := &api.PullList{SchemaVersion: api.SchemaVersion, Pulls: []api.Pull{}}
	q := f.Query()
	q.Set("limit", strconv.Itoa(pageSize))
	for {
		var l api.PullList
		if err := s.getJSON(ctx, "/api/v1/pulls", q, &l); err != nil {
			return nil, err
		}
		out.Pulls = append(out.Pulls, l.Pulls...)
		if l.Metadata == nil || l.Metadata.Continue == "" || len(l.Pulls) == 0 {
			return out, nil
		}
		q.Set("continue", l.Metadata.Continue)
	}
}

// pageSize is how many pulls one request of Pulls asks for.
const pageSize = 500

// Version asks the server for its version.
func (s *Server) Version(ctx context.Context) (*api.ServerVersion, error) {
	var v api.ServerVersion
	if err := s.getJSON(ctx, "/api/v1/version", nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Events opens the SSE stream. lastID resumes after that event (the header a browser's
// EventSource sends, and the query parameter for proxies that drop unknown headers).
func (s *Server) Events(ctx context.Context, f api.Filter, lastID string) (io.ReadCloser, error) {
	q := f.Query()
	if lastID != "" {
		q.Set("lastEventId", lastID)
	}
	r := s.request(s.stream, "/api/v1/events", q).SetHeader("Accept", "text/event-stream")
	if lastID != "" {
		r = r.SetHeader("Last-Event-ID", lastID)
	}
	body, err := r.Stream(ctx)
	if err != nil {
		return nil, s.explainProxyError(ctx, err, "/api/v1/events", nil)
	}
	return body, nil
}
