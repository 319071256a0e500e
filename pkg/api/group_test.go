package api_test

import (
	"bytes"
	"encoding/json"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/d44b/pulltrace/pkg/api"
)

func sampleGroup() api.Group {
	eta := 12.5
	done := time.Date(2025, 1, 15, 10, 31, 0, 0, time.UTC)
	return api.Group{Key: "default/DaemonSet/nginx", By: api.GroupByWorkload,
		Workload: &api.WorkloadRef{Namespace: "default", Kind: "DaemonSet", Name: "nginx"},
		Images:   []string{"docker.io/library/nginx:1.27"}, Nodes: 3,
		Counts:          api.GroupCounts{Active: 1, Completed: 1, Failed: 1},
		DownloadedBytes: 150, TotalBytes: 300, BytesPerSec: 10, Percent: 50, ETASeconds: &eta,
		SlowestByPercent: []api.GroupNode{{NodeName: "n1", PullID: "p1", ImageRef: "docker.io/library/nginx:1.27", State: api.PullActive,
			Percent: 50, BytesPerSec: 10, DownloadedBytes: 50, TotalBytes: 100, ETASeconds: &eta,
			Pods: []api.PodRef{{Namespace: "default", PodName: "nginx-abc", Container: "nginx", OwnerKind: "DaemonSet", OwnerName: "nginx"}}}},
		SlowestByRate: []api.GroupNode{},
		Failures:      []api.GroupFailure{{Reason: "401 Unauthorized", Count: 1, Nodes: []string{"n3"}}},
		StartedAt:     time.Date(2025, 1, 15, 10, 29, 50, 0, time.UTC), FinishedAt: &done}
}

// Every group event type, marshalled by the Go types, validates against the schema, and the
// schema rejects what the contract forbids.
func TestGroupEventsValidateAgainstSchema(t *testing.T) {
	s := compileSchemaFile(t, "group-event-v1.json")
	validate := func(v any) error {
		b, _ := json.Marshal(v)
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		return s.Validate(doc)
	}
	for _, typ := range api.GroupEventTypes {
		ev := api.GroupEvent{SchemaVersion: api.SchemaVersion, Timestamp: time.Now().UTC(), Type: typ, Group: sampleGroup()}
		if err := validate(ev); err != nil {
			t.Errorf("%s does not validate: %v", typ, err)
		}
	}
	b, _ := json.Marshal(api.GroupEvent{SchemaVersion: api.SchemaVersion, Type: api.EventGroupUpdated, Group: sampleGroup()})
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	m["group"].(map[string]any)["counts"].(map[string]any)["pending"] = 1
	if err := validate(m); err == nil {
		t.Error("schema accepted an unknown count")
	}
}

func TestGroupQueryRoundTrip(t *testing.T) {
	q := api.GroupQuery{By: api.GroupByWorkload, Key: "ns/DaemonSet/x", Slowest: 25,
		Filter: api.Filter{Namespace: "ns", States: []api.PullState{api.PullActive}}}
	got, err := api.ParseGroupQuery(q.Query())
	if err != nil || got.By != q.By || got.Key != q.Key || got.Slowest != 25 || got.Filter.Namespace != "ns" ||
		!slices.Equal(got.Filter.States, q.Filter.States) {
		t.Fatalf("round trip %+v %v", got, err)
	}
	if d, err := api.ParseGroupQuery(url.Values{}); err != nil || d.By != api.GroupByImage || d.Slowest != api.DefaultSlowest {
		t.Errorf("defaults %+v %v", d, err)
	}
	for _, bad := range []url.Values{{"by": {"owner"}}, {"slowest": {"x"}}, {"slowest": {"100000"}}, {"state": {"lost"}}} {
		if _, err := api.ParseGroupQuery(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestGroupKeys(t *testing.T) {
	p := api.Pull{ImageRef: "docker.io/library/nginx:1.27", Pods: []api.PodRef{
		{Namespace: "a", PodName: "x-1", OwnerKind: "DaemonSet", OwnerName: "x"},
		{Namespace: "a", PodName: "x-2", OwnerKind: "DaemonSet", OwnerName: "x"},
		{Namespace: "b", PodName: "y-1", OwnerKind: "Deployment", OwnerName: "y"},
		{Namespace: "b", PodName: "bare"},
	}}
	if got := p.GroupKeys(api.GroupByWorkload); !slices.Equal(got, []string{"a/DaemonSet/x", "b/Deployment/y"}) {
		t.Errorf("workload keys %v", got)
	}
	if got := p.GroupKeys(api.GroupByImage); !slices.Equal(got, []string{"docker.io/library/nginx:1.27"}) {
		t.Errorf("image keys %v", got)
	}
}
