// Package server assembles the Pulltrace server from its parts: the aggregate store, the
// SSE broker, the lifecycle log, metrics, pod correlation and the HTTP API.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"

	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/internal/correlate"
	"github.com/d44b/pulltrace/internal/eventlog"
	"github.com/d44b/pulltrace/internal/group"
	"github.com/d44b/pulltrace/internal/httpapi"
	"github.com/d44b/pulltrace/internal/metrics"
	"github.com/d44b/pulltrace/internal/stream"
	"github.com/d44b/pulltrace/pkg/api"
)

// Config is everything the server's flags set.
type Config struct {
	Version string
	Token   func() (string, error)
	// TokenRequired: a token is configured (a token file), so an empty one refuses
	// reports instead of turning authentication off.
	TokenRequired bool
	Aggregate     aggregate.Config
	Stream        stream.Config
	Groups        group.Config
	MaxReport     int64
	Kube          kubernetes.Interface // nil: run without Kubernetes
	Namespaces    []string
	UI            http.Handler
	Logger        *slog.Logger
	// EventLog receives one v1 JSON line per lifecycle event.
	EventLog io.Writer
	LogLevel slog.Leveler
	// HTTP are the listeners' timeouts; zero fields take the defaults.
	HTTP HTTPLimits
}

// HTTPLimits bound each connection of both listeners. A request (headers and body) must
// arrive within ReadTimeout, so a slow body holds a connection for seconds, not forever;
// idle keep-alive connections close after IdleTimeout. The event stream lifts its read
// deadline and sets a write deadline per write (stream.Config.WriteTimeout).
type HTTPLimits struct {
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
}

func (l *HTTPLimits) defaults() {
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = 10 * time.Second
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = 30 * time.Second
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = 60 * time.Second
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = 60 * time.Second
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 64 << 10
	}
}

// NewHTTPServer is the http.Server both listeners use: the handler with the limits.
func (l HTTPLimits) NewHTTPServer(h http.Handler) *http.Server {
	l.defaults()
	return &http.Server{Handler: h, ReadHeaderTimeout: l.ReadHeaderTimeout, ReadTimeout: l.ReadTimeout,
		WriteTimeout: l.WriteTimeout, IdleTimeout: l.IdleTimeout, MaxHeaderBytes: l.MaxHeaderBytes}
}

// Server is a running Pulltrace server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	Store   *aggregate.Store
	Broker  *stream.Broker
	Groups  *group.Index
	Metrics *metrics.Server
	corr    *correlate.Correlator
	events  *eventlog.Logger
	mu      sync.Mutex
}

// New builds the server.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Token == nil {
		cfg.Token = func() (string, error) { return "", nil }
	}
	if cfg.EventLog == nil {
		cfg.EventLog = io.Discard
	}
	if cfg.LogLevel == nil {
		cfg.LogLevel = slog.LevelInfo
	}
	s := &Server{cfg: cfg, log: cfg.Logger, Groups: group.New(cfg.Groups), Metrics: metrics.NewServer(cfg.Version),
		events: eventlog.New(cfg.EventLog, cfg.LogLevel)}
	var corr aggregate.Correlator
	if cfg.Kube != nil {
		c, err := correlate.New(correlate.Config{Client: cfg.Kube, Namespaces: cfg.Namespaces, Logger: cfg.Logger,
			OnChange: func(nodes []string, touches func(*api.Pull) bool) { s.Store.Recorrelate(nodes, touches) }})
		if err != nil {
			return nil, err
		}
		s.corr, corr = c, c
	}
	s.Store = aggregate.New(cfg.Aggregate, corr, s.sink)
	s.Broker = stream.New(cfg.Stream, s.Store)
	return s, nil
}

// sink runs under the store's lock, in event order: log, publish, count.
func (s *Server) sink(events []api.PullEvent) {
	if len(events) == 0 {
		return
	}
	data := eventlog.Encode(events)
	s.events.Log(events, data)
	s.Broker.Publish(events, data)
	s.Groups.Observe(events)
}

// Ready reports whether answers are complete: informer caches synced, or no Kubernetes.
func (s *Server) Ready() (bool, string) {
	if s.corr == nil {
		return true, "running without Kubernetes: pulls are served, pods are not correlated"
	}
	if !s.corr.HasSynced() {
		return false, "waiting for the pod and event informers to sync"
	}
	return true, "informers synced"
}

// Handler is the API, SSE and UI mux.
func (s *Server) Handler() http.Handler {
	return httpapi.Handler(httpapi.Config{
		Store: s.Store, Broker: s.Broker, Groups: s.Groups, Token: s.cfg.Token, TokenRequired: s.cfg.TokenRequired, MaxReportBytes: s.cfg.MaxReport,
		Ready: s.Ready, Version: s.cfg.Version, UI: s.cfg.UI, Logger: s.log,
		OnReport: func(result string) {
			s.Metrics.Report(result)
		},
	})
}

// MetricsHandler serves /metrics.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Metrics.Registry, promhttp.HandlerOpts{}))
	return mux
}

func (s *Server) observe() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Metrics.Observe(s.Store.TakeStats(), s.Broker.Clients(), s.Broker.Rejected())
}

// Run serves on the given listeners until ctx ends; background work (informers, expiry,
// metrics) runs alongside.
func (s *Server) Run(ctx context.Context, apiLn, metricsLn net.Listener) error {
	if s.corr != nil {
		s.corr.Start(ctx)
		go func() {
			if s.corr.WaitForSync(ctx) {
				s.log.Info("pod and event informers synced")
				s.Store.Recorrelate(nil, nil)
			}
		}()
	}
	go s.background(ctx)
	go s.Groups.Run(ctx)
	// Requests inherit ctx, so SSE streams end when the server stops instead of holding
	// Shutdown until its timeout.
	apiSrv := s.cfg.HTTP.NewHTTPServer(s.Handler())
	apiSrv.BaseContext = func(net.Listener) context.Context { return ctx }
	metSrv := s.cfg.HTTP.NewHTTPServer(s.MetricsHandler())
	errc := make(chan error, 2)
	go func() { errc <- serve(apiSrv, apiLn) }()
	go func() { errc <- serve(metSrv, metricsLn) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = metSrv.Shutdown(shut)
	if e := apiSrv.Shutdown(shut); e != nil {
		_ = apiSrv.Close()
	}
	return err
}

func serve(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

func (s *Server) background(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.observe()
		s.Store.Tick()
		if i%5 == 0 { // stale agents are noticed within seconds of AgentTimeout
			s.Store.Expire()
		}
	}
}
