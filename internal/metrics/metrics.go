// Package metrics holds the server's Prometheus series. Labels stay low-cardinality: node
// at most, never pod, image or digest.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/pkg/api"
)

// Server is the server's registry and series.
type Server struct {
	Registry     *prometheus.Registry
	pullsActive  prometheus.Gauge
	pullsTotal   *prometheus.CounterVec
	pullDuration prometheus.Histogram
	pullBytes    *prometheus.CounterVec
	agents       prometheus.Gauge
	pullErrors   *prometheus.CounterVec
	reports      *prometheus.CounterVec
	sseClients   prometheus.Gauge
	sseRejected  prometheus.Counter
	sseRejSeen   uint64
	dropped      prometheus.Counter
	droppedSeen  uint64
	buildInfo    *prometheus.GaugeVec
}

// NewServer registers every series.
func NewServer(version string) *Server {
	m := &Server{
		Registry:    prometheus.NewRegistry(),
		pullsActive: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pulltrace_pulls_active", Help: "Number of image pulls currently in progress."}),
		pullsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pulltrace_pulls_total", Help: "Total image pulls observed, by node and final state (completed, cached, failed).",
		}, []string{"node", "state"}),
		pullDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pulltrace_pull_duration_seconds", Help: "Image pull duration, from the first byte requested to the image record.",
			Buckets: []float64{1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 3600},
		}),
		pullBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pulltrace_pull_bytes_total", Help: "Total compressed image bytes downloaded, by node.",
		}, []string{"node"}),
		agents: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pulltrace_agents_connected", Help: "Number of agents heard from within the agent timeout."}),
		pullErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pulltrace_pull_errors_total", Help: "Image pulls that failed, by node.",
		}, []string{"node"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pulltrace_reports_total", Help: "Agent reports received, by result (accepted, heartbeat, unauthorized, invalid, too_large, error).",
		}, []string{"result"}),
		sseClients: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pulltrace_sse_clients", Help: "Connected SSE clients."}),
		sseRejected: prometheus.NewCounter(prometheus.CounterOpts{Name: "pulltrace_sse_rejected_total",
			Help: "SSE followers turned away with 503 because the follower cap (--max-followers) was reached."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "pulltrace_pulls_dropped_total", Help: "Pulls dropped from memory by the per-node or total cap before their history TTL."}),
		buildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pulltrace_build_info", Help: "Always 1; the version label says which build runs.",
		}, []string{"version", "schema"}),
	}
	m.buildInfo.WithLabelValues(version, api.SchemaVersion).Set(1)
	m.Registry.MustRegister(m.pullsActive, m.pullsTotal, m.pullDuration, m.pullBytes, m.agents, m.pullErrors,
		m.reports, m.sseClients, m.sseRejected, m.dropped, m.buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Report counts one report by result.
func (m *Server) Report(result string) { m.reports.WithLabelValues(result).Inc() }

// Observe folds the store's and the stream's stats in; call it periodically.
// sseRejected is the stream's running count of followers turned away.
func (m *Server) Observe(st aggregate.Stats, sseClients int, sseRejected uint64) {
	if sseRejected > m.sseRejSeen {
		m.sseRejected.Add(float64(sseRejected - m.sseRejSeen))
		m.sseRejSeen = sseRejected
	}
	m.pullsActive.Set(float64(st.Active))
	m.agents.Set(float64(st.Agents))
	m.sseClients.Set(float64(sseClients))
	if st.Dropped > m.droppedSeen {
		m.dropped.Add(float64(st.Dropped - m.droppedSeen))
		m.droppedSeen = st.Dropped
	}
	for _, f := range st.Completed {
		m.pullsTotal.WithLabelValues(f.Node, string(f.State)).Inc()
		if f.State == api.PullFailed {
			m.pullErrors.WithLabelValues(f.Node).Inc()
			continue
		}
		if f.State == api.PullCompleted {
			m.pullDuration.Observe(f.Duration.Seconds())
		}
	}
	for node, b := range st.BytesAdded {
		if b > 0 {
			m.pullBytes.WithLabelValues(node).Add(float64(b))
		}
	}
	// A node that left the store takes its series along: node names must not pile up.
	for _, node := range st.ExpiredNodes {
		labels := prometheus.Labels{"node": node}
		m.pullsTotal.DeletePartialMatch(labels)
		m.pullBytes.DeletePartialMatch(labels)
		m.pullErrors.DeletePartialMatch(labels)
	}
}
