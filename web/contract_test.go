package web

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/d44b/pulltrace/pkg/api"
)

// tsInterfaces reads `export interface Name { field?: type; }` blocks from src/api.ts:
// interface name -> field name -> optional.
func tsInterfaces(t *testing.T) map[string]map[string]bool {
	t.Helper()
	src, err := os.ReadFile("src/api.ts")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	block := regexp.MustCompile(`(?s)export interface (\w+) \{(.*?)\n\}`)
	field := regexp.MustCompile(`(?m)^\s+(\w+)(\??):`)
	for _, m := range block.FindAllStringSubmatch(string(src), -1) {
		fields := map[string]bool{}
		for _, f := range field.FindAllStringSubmatch(m[2], -1) {
			fields[f[1]] = f[2] == "?"
		}
		out[m[1]] = fields
	}
	return out
}

// goFields lists a struct's JSON fields: name -> optional (omitempty or a pointer).
func goFields(v any) map[string]bool {
	out := map[string]bool{}
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		f := rt.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		out[name] = strings.Contains(","+opts+",", ",omitempty,") || f.Type.Kind() == reflect.Pointer
	}
	return out
}

// web/src/api.ts mirrors pkg/api field for field, optional exactly where Go may omit.
func TestAPITypesMirrorGo(t *testing.T) {
	ts := tsInterfaces(t)
	for name, v := range map[string]any{
		"PodRef":         api.PodRef{},
		"Layer":          api.Layer{},
		"Pull":           api.Pull{},
		"PullEvent":      api.PullEvent{},
		"AgentReport":    api.AgentReport{},
		"ReportResponse": api.ReportResponse{},
		"PullList":       api.PullList{},
		"ListMeta":       api.ListMeta{},
		"PullRejection":  api.PullRejection{},
		"ErrorResponse":  api.ErrorResponse{},
		"ServerVersion":  api.ServerVersion{},
		"NodeStatus":     api.NodeStatus{},
		"NodeList":       api.NodeList{},
		"WorkloadRef":    api.WorkloadRef{},
		"GroupCounts":    api.GroupCounts{},
		"GroupNode":      api.GroupNode{},
		"GroupFailure":   api.GroupFailure{},
		"Group":          api.Group{},
		"GroupList":      api.GroupList{},
		"GroupEvent":     api.GroupEvent{},
	} {
		got, ok := ts[name]
		if !ok {
			t.Errorf("src/api.ts has no interface %s", name)
			continue
		}
		want := goFields(v)
		for f, opt := range want {
			tsOpt, ok := got[f]
			switch {
			case !ok:
				t.Errorf("%s.%s is in Go but not in src/api.ts", name, f)
			case tsOpt != opt:
				t.Errorf("%s.%s: optional in Go = %v, in TypeScript = %v", name, f, opt, tsOpt)
			}
		}
		for f := range got {
			if _, ok := want[f]; !ok {
				t.Errorf("%s.%s is in src/api.ts but not in Go", name, f)
			}
		}
	}
}

// tsStringList reads `export const NAME: readonly T[] = ['a', 'b'];` from src/api.ts.
func tsStringList(t *testing.T, name string) []string {
	t.Helper()
	src, err := os.ReadFile("src/api.ts")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)export const ` + name + `: readonly \w+\[\] = \[(.*?)\];`).FindSubmatch(src)
	if m == nil {
		t.Fatalf("src/api.ts has no list %s", name)
	}
	var out []string
	for _, q := range regexp.MustCompile(`'([^']*)'`).FindAllSubmatch(m[1], -1) {
		out = append(out, string(q[1]))
	}
	return out
}

func sorted[S ~string](in []S) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = string(s)
	}
	slices.Sort(out)
	return out
}

// The UI knows every state and event type of the Go API and of the JSON Schema, and no others.
func TestAPIEnumsMatchGoAndSchema(t *testing.T) {
	pullStates, layerStates := api.PullStates, api.LayerStates

	for _, s := range tsStringList(t, "PULL_STATES") {
		if !api.PullState(s).Valid() {
			t.Errorf("PULL_STATES has %q, not a Go PullState", s)
		}
	}
	if got, want := sorted(tsStringList(t, "PULL_STATES")), sorted(pullStates); !slices.Equal(got, want) {
		t.Errorf("PULL_STATES = %v, want %v", got, want)
	}
	if got, want := sorted(tsStringList(t, "LAYER_STATES")), sorted(layerStates); !slices.Equal(got, want) {
		t.Errorf("LAYER_STATES = %v, want %v", got, want)
	}
	// Same order as Go's EventTypes.
	var goEvents []string
	for _, e := range api.EventTypes {
		goEvents = append(goEvents, string(e))
	}
	if got := tsStringList(t, "EVENT_TYPES"); !slices.Equal(got, goEvents) {
		t.Errorf("EVENT_TYPES = %v, want %v", got, goEvents)
	}
	if got, want := tsStringList(t, "GROUP_EVENT_TYPES"), sorted(api.GroupEventTypes); !slices.Equal(sorted(got), want) {
		t.Errorf("GROUP_EVENT_TYPES = %v, want %v", got, want)
	}
	if got, want := tsStringList(t, "GROUP_BYS"), sorted(api.GroupBys); !slices.Equal(sorted(got), want) {
		t.Errorf("GROUP_BYS = %v, want %v", got, want)
	}

	raw, err := os.ReadFile("../docs/schemas/pull-event-v1.json")
	if err != nil {
		t.Skipf("no schema next to web/: %v", err)
	}
	var schema struct {
		Properties struct {
			Type struct {
				Enum []string `json:"enum"`
			} `json:"type"`
		} `json:"properties"`
		Defs struct {
			Pull struct {
				Properties struct {
					State struct {
						Enum []string `json:"enum"`
					} `json:"state"`
				} `json:"properties"`
			} `json:"pull"`
			Layer struct {
				Properties struct {
					State struct {
						Enum []string `json:"enum"`
					} `json:"state"`
				} `json:"properties"`
			} `json:"layer"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		ts, schema []string
	}{
		{"event types", tsStringList(t, "EVENT_TYPES"), schema.Properties.Type.Enum},
		{"pull states", tsStringList(t, "PULL_STATES"), schema.Defs.Pull.Properties.State.Enum},
		{"layer states", tsStringList(t, "LAYER_STATES"), schema.Defs.Layer.Properties.State.Enum},
	} {
		if got, want := sorted(c.ts), sorted(c.schema); !slices.Equal(got, want) {
			t.Errorf("%s: src/api.ts %v, schema %v", c.name, got, want)
		}
	}
}

// The UI's filters are the query form of api.Filter, so a view's link also works against
// GET /api/v1/pulls.
func TestUIFilterKeysAreAPIFilterKeys(t *testing.T) {
	src, err := os.ReadFile("src/filters.ts")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`export const FILTER_KEYS = \[(.*?)\] as const;`).FindSubmatch(src)
	if m == nil {
		t.Fatal("src/filters.ts has no FILTER_KEYS")
	}
	var ui []string
	for _, q := range regexp.MustCompile(`'([^']*)'`).FindAllSubmatch(m[1], -1) {
		ui = append(ui, string(q[1]))
	}
	if got, want := sorted(ui), sorted(api.FilterKeys); !slices.Equal(got, want) {
		t.Errorf("FILTER_KEYS = %v, api.FilterKeys = %v", got, want)
	}
}
