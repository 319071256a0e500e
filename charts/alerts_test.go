package charts

// The chart's alerts, run by the real promtool (built from the Go module proxy by
// hack/components.sh) against series shaped like a real scrape of the server.

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

const alertTests = "testdata/alerts.test.yaml"

// promtoolPath returns the promtool binary of the component cache. Missing, it fails the
// test (with the command that builds it), except under -short.
func promtoolPath(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("bash", "../hack/components.sh", "path", "promtool").Output()
	if err != nil {
		t.Fatalf("components.sh path promtool: %v", err)
	}
	p := filepath.Join(strings.TrimSpace(string(out)), "promtool")
	if _, err := os.Stat(p); err != nil {
		if testing.Short() {
			t.Skipf("promtool not built (%v); run hack/components.sh promtool", err)
		}
		t.Fatalf("promtool not built: %v; run hack/components.sh promtool (a cold build takes minutes)", err)
	}
	return p
}

// The promtool tests are only worth something if their series look like what Prometheus
// scrapes from the server: each pulltrace_* series must be a metric the server exports, with
// its labels plus the target labels the ServiceMonitor adds.
func TestAlertTestSeriesMatchTheRegistry(t *testing.T) {
	fams := map[string]family{}
	for _, f := range exported(t) {
		fams[f.name] = f
	}
	data, err := os.ReadFile(alertTests)
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		Tests []struct {
			InputSeries []struct {
				Series string `json:"series"`
			} `json:"input_series"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(data, &tf); err != nil {
		t.Fatal(err)
	}
	// Target labels Prometheus adds to a ServiceMonitor scrape; kube-state-metrics' series are
	// the only foreign ones the alerts use.
	target := []string{"namespace", "pod", "instance", "job", "service", "container", "endpoint"}
	foreign := map[string][]string{"kube_daemonset_status_current_number_scheduled": {"namespace", "daemonset", "job", "instance"}}
	seriesRE := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$`)
	labelRE := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="[^"]*"`)
	n := 0
	for _, tc := range tf.Tests {
		for _, s := range tc.InputSeries {
			n++
			m := seriesRE.FindStringSubmatch(s.Series)
			if m == nil {
				t.Errorf("series %q is not name{labels}", s.Series)
				continue
			}
			var keys []string
			for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
				keys = append(keys, l[1])
			}
			allowed := foreign[m[1]]
			if f, ok := fams[m[1]]; ok {
				allowed = append(slices.Clone(f.labels), target...)
				for _, want := range append(slices.Clone(f.labels), "namespace", "pod") {
					if !slices.Contains(keys, want) {
						t.Errorf("series %s lacks label %s, which a real scrape has", s.Series, want)
					}
				}
			} else if allowed == nil {
				t.Errorf("series %s: %s is exported by neither the server nor the agent", s.Series, m[1])
				continue
			}
			for _, k := range keys {
				if !slices.Contains(allowed, k) {
					t.Errorf("series %s: label %s is not one a real scrape of %s has", s.Series, k, m[1])
				}
			}
		}
	}
	if n == 0 {
		t.Fatal(errors.New("no input series"))
	}
}
func TestAlertRulesWithPromtool(t *testing.T) {
	promtool := promtoolPath(t)
	r := checked(t, setPath(nil, "prometheusRule.enabled", true), monitoringAPI...)
	if len(r.rules) != 1 {
		t.Fatalf("%d PrometheusRules", len(r.rules))
	}
	rules, err := yaml.Marshal(r.rules[0].Spec)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(alertTests)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"rules.yaml": rules, "alerts.test.yaml": tests} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, args := range [][]string{{"check", "rules", "rules.yaml"}, {"test", "rules", "alerts.test.yaml"}} {
		cmd := exec.CommandContext(ctx, promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s\nrules:\n%s", strings.Join(args, " "), err, out, rules)
		}
	}

	// Every alert the chart ships is exercised, firing and quiet.
	var tf struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(tests, &tf); err != nil {
		t.Fatal(err)
	}
	fired, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fired[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, g := range r.rules[0].Spec.Groups {
		for _, rule := range g.Rules {
			if !fired[rule.Alert] || !quiet[rule.Alert] {
				t.Errorf("%s: tested firing %v, quiet %v; want both", rule.Alert, fired[rule.Alert], quiet[rule.Alert])
			}
		}
	}
}
