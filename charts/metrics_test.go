package charts

// The metric reference (docs/metrics.md) is generated from the server's and the agent's real
// registries, so the dashboard and alert tests check names against what the binaries export,
// not against a list kept by hand.

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/d44b/pulltrace/internal/agent"
	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/internal/metrics"
	"github.com/d44b/pulltrace/pkg/api"
)

var update = flag.Bool("update", false, "rewrite generated files (docs/metrics.md) instead of comparing")

const metricsDoc = "../docs/metrics.md"

// family is one exported metric as the reference lists it.
type family struct {
	name, kind, help, source string
	labels                   []string
}

// exported gathers every pulltrace_* family of the server and the agent. The server's
// node-labelled series exist once a node is known, so one node is observed first.
func exported(t *testing.T) []family {
	t.Helper()
	srv := metrics.NewServer("reference")
	srv.Observe(aggregate.Stats{
		Nodes:      map[string]aggregate.NodeStats{"node-1": {Active: 1, LastReport: time.Unix(1700000000, 0)}},
		Completed:  []aggregate.Finished{{Node: "node-1", State: api.PullCompleted, Duration: time.Second}},
		BytesAdded: map[string]int64{"node-1": 1},
	}, 0, 0)
	var out []family
	for _, src := range []struct {
		name string
		g    prometheus.Gatherer
	}{{"server", srv.Registry}, {"agent", agent.NewMetrics().Registry}} {
		mfs, err := src.g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "pulltrace_") {
				continue // go_* and process_*: the standard collectors
			}
			labels := map[string]bool{}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = true
				}
			}
			out = append(out, family{name: mf.GetName(), kind: strings.ToLower(mf.GetType().String()), help: mf.GetHelp(),
				source: src.name, labels: slices.Sorted(maps.Keys(labels))})
		}
	}
	slices.SortFunc(out, func(a, b family) int { return strings.Compare(a.name, b.name) })
	return out
}

func metricsReference(fams []family) string {
	var b strings.Builder
	b.WriteString(`# Metrics

<!-- Generated from the server's and the agent's registries by
     go test ./charts -run TestMetricsReference -update
     Do not edit; charts tests fail when this file and the binaries disagree. -->

The server serves these on ` + "`--metrics-addr`" + ` (default ` + "`:9090`" + `), the agent on
` + "`--health-addr`" + ` (default ` + "`:9091`" + `), both at ` + "`/metrics`" + `, next to the
standard ` + "`go_*`" + ` and ` + "`process_*`" + ` series. Labels stay low-cardinality: node at
most, never pod, image or digest.

**Several server replicas.** Agents report to every replica, so every replica exports the same
pull series (each counts every pull). Aggregate server series across replicas with ` + "`max`" + `,
never ` + "`sum`" + `: ` + "`max by (node) (pulltrace_pulls_active)`" + `,
` + "`max by (node) (rate(pulltrace_pull_bytes_total[5m]))`" + `,
` + "`histogram_quantile(0.9, max by (le) (rate(pulltrace_pull_duration_seconds_bucket[5m])))`" + `.
The chart's dashboard and alerts do exactly that. Agent series are one per node; sum them.

A node's series appear at zero when the server first hears from it (so ` + "`rate`" + ` and
` + "`increase`" + ` see its first pull) and go when the server forgets the node (its last pull
expired after ` + "`--history-ttl`" + `). ` + "`pulltrace_pull_bytes_total`" + ` counts bytes that moved
while the server listened: a replica that starts during a pull does not count what was
downloaded before, so a rate over it is the real throughput.

| Metric | Type | Labels | Exported by | Description |
|---|---|---|---|---|
`)
	for _, f := range fams {
		labels := "-"
		if len(f.labels) > 0 {
			labels = "`" + strings.Join(f.labels, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", f.name, f.kind, labels, f.source, f.help)
	}
	return b.String()
}

func TestMetricsReference(t *testing.T) {
	want := metricsReference(exported(t))
	if *update {
		if err := os.WriteFile(metricsDoc, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatalf("%v (generate it: go test ./charts -run TestMetricsReference -update)", err)
	}
	if string(got) != want {
		t.Errorf("%s is stale; regenerate it: go test ./charts -run TestMetricsReference -update\n--- want\n%s", metricsDoc, want)
	}
}
