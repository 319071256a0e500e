// Package metrics holds the server's Prometheus series. Labels stay low-cardinality: node
// at most, never pod, image or digest.
//
// Every server replica holds every pull (agents report to all of them), so each replica
// exports the same pull series: across replicas they are aggregated with max, never sum. The
// chart's dashboard and alerts do so; docs/metrics.md lists the series.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/pkg/api"
)

// ReportResults are the outcomes Report counts; their series exist from the start, so a
// rate over them is right from the first report.
var ReportResults = []string{"accepted", "heartbeat", "unauthorized", "invalid", "too_large", "error"}

// finalStates label pulltrace_pulls_total.
var finalStates = []api.PullState{api.PullCompleted, api.PullCached, api.PullFailed}

// DurationBuckets fit pulls from a cached layer (a second) to multi-GB images on slow links
// (an hour): roughly two per factor of ~2.5 up to an hour.
var DurationBuckets = []float64{1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 2700, 3600}

// Server is the server's registry and series.
type Server struct {
	Registry      *prometheus.Registry
	pullsActive   *prometheus.GaugeVec
	pullsStalled  *prometheus.GaugeVec
	longestStall  *prometheus.GaugeVec
	longestETA    *prometheus.GaugeVec
	longestActive *prometheus.GaugeVec
	lastReport    *prometheus.GaugeVec
	pullsTotal    *prometheus.CounterVec
	pullDuration  prometheus.Histogram
	pullBytes     *prometheus.CounterVec
	agents        prometheus.Gauge
	pullErrors    *prometheus.CounterVec
	reports       *prometheus.CounterVec
	sseClients    prometheus.Gauge
	sseRejected   prometheus.Counter
	sseRejSeen    uint64
	dropped       prometheus.Counter
	droppedSeen   uint64
	buildInfo     *prometheus.GaugeVec
	nodes         map[string]bool // nodes with series
}

// NewServer registers every series.
func NewServer(version string) *Server {
	node := []string{"node"}
	m := &Server{
		Registry: prometheus.NewRegistry(),
		pullsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pulltrace_pulls_active", Help: "Image pulls currently in progress (stalled ones included), by node.",
		}, node),
		pullsStalled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pulltrace_pulls_stalled", Help: "Image pulls in progress that receive no bytes (stalled), by node.",
		}, node),
		longestStall: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pulltrace_pull_longest_stall_seconds", Help: "Longest time since the last byte among the node's stalled pulls; 0 when none is stalled.",
		}, node),
		longestETA: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pulltrace_pull_longest_eta_seconds", Help: "Largest estimated time to finish among the node's pulls in progress; 0 when none has an estimate.",
		}, node),
		longestActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pulltrace_pull_longest_active_seconds", Help: "Age of the node's oldest pull in progress; 0 when none is.",
		}, node),
		lastReport: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pulltrace_node_last_report_timestamp_seconds", Help: "Unix time this server last heard from the node's agent (report or heartbeat).",
		}, node),
		pullsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pulltrace_pulls_total", Help: "Total image pulls observed, by node and final state (completed, cached, failed).",
		}, []string{"node", "state"}),
		pullDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pulltrace_pull_duration_seconds", Help: "Duration of completed image pulls, from the first byte requested to the image record.",
			Buckets: DurationBuckets,
		}),
		pullBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pulltrace_pull_bytes_total", Help: "Compressed image bytes downloaded while this server was listening to the node, by node.",
		}, node),
		agents: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pulltrace_agents_connected", Help: "Number of agents heard from within the agent timeout."}),
		pullErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pulltrace_pull_errors_total", Help: "Image pulls that failed, by node.",
		}, node),
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
		nodes: map[string]bool{},
	}
	m.buildInfo.WithLabelValues(version, api.SchemaVersion).Set(1)
	for _, r := range ReportResults {
		m.reports.WithLabelValues(r)
	}
	m.Registry.MustRegister(m.pullsActive, m.pullsStalled, m.longestStall, m.longestETA, m.longestActive, m.lastReport,
		m.pullsTotal, m.pullDuration, m.pullBytes, m.agents, m.pullErrors,
		m.reports, m.sseClients, m.sseRejected, m.dropped, m.buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Report counts one report by result.
func (m *Server) Report(result string) { m.reports.WithLabelValues(result).Inc() }

// Observe folds the store's and the stream's stats in; call it periodically. sseRejected is
// the stream's running count of followers turned away. Not safe for concurrent use: the
// server calls it from one goroutine at a time.
func (m *Server) Observe(st aggregate.Stats, sseClients int, sseRejected uint64) {
	if sseRejected > m.sseRejSeen {
		m.sseRejected.Add(float64(sseRejected - m.sseRejSeen))
		m.sseRejSeen = sseRejected
	}
	m.agents.Set(float64(st.Agents))
	m.sseClients.Set(float64(sseClients))
	if st.Dropped > m.droppedSeen {
		m.dropped.Add(float64(st.Dropped - m.droppedSeen))
		m.droppedSeen = st.Dropped
	}
	for name, ns := range st.Nodes {
		if !m.nodes[name] {
			m.addNode(name)
		}
		m.pullsActive.WithLabelValues(name).Set(float64(ns.Active))
		m.pullsStalled.WithLabelValues(name).Set(float64(ns.Stalled))
		m.longestStall.WithLabelValues(name).Set(ns.LongestStall.Seconds())
		m.longestETA.WithLabelValues(name).Set(ns.LongestETA.Seconds())
		m.longestActive.WithLabelValues(name).Set(ns.LongestActive.Seconds())
		if !ns.LastReport.IsZero() {
			m.lastReport.WithLabelValues(name).Set(float64(ns.LastReport.UnixNano()) / 1e9)
		}
	}
	for _, f := range st.Completed {
		if !m.nodes[f.Node] {
			m.addNode(f.Node)
		}
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
			if !m.nodes[node] {
				m.addNode(node)
			}
			m.pullBytes.WithLabelValues(node).Add(float64(b))
		}
	}
	// A node the store forgot (its last pull expired) takes its series with it, so a
	// cluster that replaces nodes does not grow the registry forever.
	for _, node := range st.ExpiredNodes {
		m.dropNode(node)
	}
	if st.Nodes != nil {
		for name := range m.nodes {
			if _, ok := st.Nodes[name]; !ok {
				m.dropNode(name)
			}
		}
	}
}

// addNode creates every series of a node at zero, so that rate() and increase() see the
// first pull, failure and byte of a node instead of a series that starts at 1.
func (m *Server) addNode(name string) {
	m.nodes[name] = true
	for _, s := range finalStates {
		m.pullsTotal.WithLabelValues(name, string(s))
	}
	m.pullErrors.WithLabelValues(name)
	m.pullBytes.WithLabelValues(name)
	// The report time is set once known: a zero timestamp would read as "silent since 1970".
	for _, g := range []*prometheus.GaugeVec{m.pullsActive, m.pullsStalled, m.longestStall, m.longestETA, m.longestActive} {
		g.WithLabelValues(name)
	}
}

func (m *Server) dropNode(name string) {
	delete(m.nodes, name)
	for _, s := range finalStates {
		m.pullsTotal.DeleteLabelValues(name, string(s))
	}
	m.pullErrors.DeleteLabelValues(name)
	m.pullBytes.DeleteLabelValues(name)
	for _, g := range []*prometheus.GaugeVec{m.pullsActive, m.pullsStalled, m.longestStall, m.longestETA, m.longestActive, m.lastReport} {
		g.DeleteLabelValues(name)
	}
}
