// Package promtool pins the promtool that hack/components.sh builds (the `tool` line of go.mod)
// and holds the tests that need the Prometheus libraries, which stay out of the product's
// go.mod: every PromQL query of the chart's Grafana dashboard is parsed with the Prometheus
// parser and each metric it names must be one the server or the agent exports.
package promtool

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

const (
	dashboardFile = "../../../charts/pulltrace/dashboards/pulltrace.json"
	// metricsDoc is generated from the server's and agent's real registries (a charts test
	// fails when it is stale), so it is the exported set.
	metricsDoc = "../../../docs/metrics.md"
)

// exportedNames reads the metric names of docs/metrics.md, with the series a histogram adds.
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `(pulltrace_[a-z0-9_]+)` \\| ([a-z]+) \\|")
	names := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := row.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		names[m[1]] = true
		if m[2] == "histogram" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[m[1]+s] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) < 10 {
		t.Fatalf("only %d metrics in %s", len(names), metricsDoc)
	}
	return names
}

type panel struct {
	ID      int     `json:"id"`
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
}

// grafanaVars are the variables the dashboard's queries use, replaced by what Grafana would
// put there so the Prometheus parser sees a real query.
// promql parses as Prometheus itself does, with the default functions.
var promql = parser.NewParser(parser.Options{})

var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__range", "6h", "$__interval", "30s", "$namespace", "pulltrace")

func TestDashboardQueriesNameExportedMetrics(t *testing.T) {
	exported := exportedNames(t)
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", filepath.Base(dashboardFile), err)
	}
	var flat []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			flat = append(flat, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)

	used := map[string]bool{}
	queries := 0
	ids := map[int]bool{}
	for _, p := range flat {
		if p.Type == "row" {
			continue
		}
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			expr, err := promql.ParseExpr(grafanaVars.Replace(tg.Expr))
			if err != nil {
				t.Errorf("panel %q query %s: %v\n%s", p.Title, tg.RefID, err, tg.Expr)
				continue
			}
			names := metricNames(expr)
			if len(names) == 0 {
				t.Errorf("panel %q query %s names no metric: %s", p.Title, tg.RefID, tg.Expr)
			}
			for _, n := range names {
				used[n] = true
				if !exported[n] {
					t.Errorf("panel %q query %s uses %s, which neither the server nor the agent exports", p.Title, tg.RefID, n)
				}
			}
			if !strings.Contains(tg.Expr, `namespace="$namespace"`) {
				t.Errorf("panel %q query %s does not select the dashboard's namespace: %s", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
	if queries < 10 {
		t.Errorf("only %d queries", queries)
	}
	// The panels the chart README promises.
	for _, m := range []string{"pulltrace_pulls_active", "pulltrace_pulls_stalled", "pulltrace_pull_errors_total",
		"pulltrace_pull_bytes_total", "pulltrace_pull_duration_seconds_bucket", "pulltrace_pull_longest_active_seconds",
		"pulltrace_agents_connected"} {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
	// The namespace variable's own query names an exported metric too.
	for _, v := range d.Templating.List {
		q, ok := v.Query.(map[string]any)
		if !ok {
			continue
		}
		s, _ := q["query"].(string)
		m := regexp.MustCompile(`label_values\(([a-z_:]+)`).FindStringSubmatch(s)
		if m == nil || !exported[m[1]] {
			t.Errorf("variable %s query %q names no exported metric", v.Name, s)
		}
	}
}

// metricNames lists the metric names an expression selects.
func metricNames(e parser.Expr) []string {
	var out []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		out = append(out, name)
		return nil
	})
	return out
}

// The checker itself: a query naming an unknown metric, or one that does not parse, is caught.
func TestMetricNamesSeesEverySelector(t *testing.T) {
	e, err := promql.ParseExpr(`max by (node) (rate(a_total[5m])) > on (node) b{x="1"} and {__name__="c"}`)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(metricNames(e), ",")
	if got != "a_total,b,c" {
		t.Errorf("names %s", got)
	}
	if _, err := promql.ParseExpr(grafanaVars.Replace(`max by (node) (rate(x[$__rate_interval])`)); err == nil {
		t.Error("an unbalanced query parsed")
	}
}
