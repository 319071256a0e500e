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
	"github.com/d44b/pulltrace/internal/httpapi"
	"github.com/d44b/pulltrace/internal/metrics"
	"github.com/d44b/pulltrace/internal/stream"
	"github.com/d44b/pulltrace/pkg/api"
)

// Config is everything the server's flags set.
type Config struct {
	Version    string
	Token      func() (string, error)
	Aggregate  aggregate.Config
	Stream     stream.Config
	MaxReport  int64
	Kube       kubernetes.Interface // nil: run without Kubernetes
	Namespaces []string
	UI         http.Handler
	Logger     *slog.Logger
	// EventLog receives one v1 JSON line per lifecycle event.
	EventLog io.Writer
	LogLevel slog.Leveler
}

// Server is a running Pulltrace server.
type Server struct {
	cfg     Config
	log     *slog.Logger
	Store   *aggregate.Store
	Broker  *stream.Broker
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
	s := &Server{cfg: cfg, log: cfg.Logger, Broker: stream.New(cfg.Stream), Metrics: metrics.NewServer(cfg.Version),
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
		Store: s.Store, Broker: s.Broker, Token: s.cfg.Token, MaxReportBytes: s.cfg.MaxReport,
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
	s.Metrics.Observe(s.Store.TakeStats(), s.Broker.Clients())
}

// Run serves on the given listeners until ctx ends; background work (informers, expiry,
// metrics) runs alongside.
func (s *Server) Run(ctx context.Context, api, metricsLn net.Listener) error {
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
	// Requests inherit ctx, so SSE streams end when the server stops instead of holding
	// Shutdown until its timeout.
	apiSrv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	metSrv := &http.Server{Handler: s.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- serve(apiSrv, api) }()
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
		if i%30 == 0 {
			s.Store.Expire()
		}
	}
}
