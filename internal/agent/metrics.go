package agent

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the agent's own Prometheus series, on their own registry so tests and
// several agents in one process never collide.
type Metrics struct {
	Registry     *prometheus.Registry
	pollDuration prometheus.Histogram
	pollErrors   prometheus.Counter
	reports      *prometheus.CounterVec
	rejectedC    prometheus.Counter
	connectedG   prometheus.Gauge
	pullsG       prometheus.Gauge
}

// NewMetrics registers the agent's series.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		pollDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pulltrace_agent_poll_duration_seconds", Help: "Time to read containerd's ingests and update pulls.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		pollErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "pulltrace_agent_poll_errors_total", Help: "Polls of containerd that failed."}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pulltrace_agent_reports_total", Help: "Reports sent to servers, by result: ok, refused (the server answered 4xx: invalid, unauthorised, too large), error (unreachable or 5xx).",
		}, []string{"result"}),
		rejectedC: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pulltrace_agent_pulls_rejected_total", Help: "Pulls a server left out of an applied report as invalid.",
		}),
		connectedG: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pulltrace_agent_containerd_connected", Help: "1 while containerd answers."}),
		pullsG:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "pulltrace_agent_pulls", Help: "Pulls held (active and recently finished)."}),
	}
	for _, r := range []string{"ok", "refused", "error"} {
		m.reports.WithLabelValues(r)
	}
	m.Registry.MustRegister(m.pollDuration, m.pollErrors, m.reports, m.rejectedC, m.connectedG, m.pullsG,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) polled(d time.Duration, err error) {
	m.pollDuration.Observe(d.Seconds())
	if err != nil {
		m.pollErrors.Inc()
	}
}

func (m *Metrics) reported(err error, refused bool) {
	switch {
	case refused:
		m.reports.WithLabelValues("refused").Inc()
	case err != nil:
		m.reports.WithLabelValues("error").Inc()
	default:
		m.reports.WithLabelValues("ok").Inc()
	}
}

func (m *Metrics) rejected(n int) {
	if n > 0 {
		m.rejectedC.Add(float64(n))
	}
}

func (m *Metrics) connected(ok bool) {
	if ok {
		m.connectedG.Set(1)
	} else {
		m.connectedG.Set(0)
	}
}

func (m *Metrics) pulls(n int) { m.pullsG.Set(float64(n)) }

// Handler serves /healthz (containerd reachable: 200, else 503 with the reason), /livez
// (the process answers; for liveness probes, so a containerd outage does not restart the
// agent in a loop), /metrics and /debug/pulls (the agent's current snapshot).
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := a.Health()
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": ok, "containerd": why})
	})
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.cfg.Metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /debug/pulls", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"pulls": a.Snapshot()})
	})
	return mux
}
