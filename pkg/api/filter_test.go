package api_test

import (
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/d44b/pulltrace/pkg/api"
)

func TestFilterQueryRoundTrip(t *testing.T) {
	for _, f := range []api.Filter{
		{},
		{Node: "worker-1"},
		{Namespace: "default", Pod: "web-0"},
		{Image: "nginx:1.27", States: []api.PullState{api.PullActive, api.PullQueued}},
		{Node: "n", Namespace: "a b&c=d", Pod: "p,q", Image: "registry:5000/x@sha256:ab", States: api.PullStates},
	} {
		q := f.Query()
		// Through the wire: the encoded string is what a client sends.
		parsed, err := url.ParseQuery(q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		got, err := api.ParseFilter(parsed)
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		if !reflect.DeepEqual(got, f) {
			t.Errorf("round trip of %+v gave %+v (query %q)", f, got, q.Encode())
		}
	}
	if q := (&api.Filter{}).Query(); len(q) != 0 {
		t.Errorf("the zero filter has a query: %v", q)
	}
}

func TestParseFilterLenient(t *testing.T) {
	f, err := api.ParseFilter(url.Values{"state": {" active, ,failed,active"}, "lastEventId": {"7"}, "other": {"x"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []api.PullState{api.PullActive, api.PullFailed}; !reflect.DeepEqual(f.States, want) {
		t.Fatalf("states %v, want %v", f.States, want)
	}
}

func TestParseFilterBadState(t *testing.T) {
	_, err := api.ParseFilter(url.Values{"state": {"active,exploded"}})
	var fe *api.FieldError
	if !errors.As(err, &fe) || fe.Field != "state" {
		t.Fatalf("want a FieldError on state, got %v", err)
	}
	for _, s := range append([]string{`"exploded"`}, statesText()...) {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
}

func statesText() []string {
	var out []string
	for _, s := range api.PullStates {
		out = append(out, string(s))
	}
	return out
}

func TestFilterMatch(t *testing.T) {
	p := &api.Pull{NodeName: "n1", ImageRef: "docker.io/library/nginx:1.27", Repository: "docker.io/library/nginx", State: api.PullActive,
		Pods: []api.PodRef{{Namespace: "a", PodName: "web"}, {Namespace: "b", PodName: "api"}}}
	for f, want := range map[*api.Filter]bool{
		{}:               true,
		{Node: "n1"}:     true,
		{Node: "n2"}:     false,
		{Image: "nginx"}: true,
		{Image: "redis"}: false,
		{States: []api.PullState{api.PullFailed}}: false,
		{Namespace: "a", Pod: "web"}:              true,
		{Namespace: "a", Pod: "api"}:              false, // both must hold for one pod
		{Pod: "api"}:                              true,
		{Namespace: "c"}:                          false,
	} {
		if got := f.Match(p); got != want {
			t.Errorf("%+v.Match = %v, want %v", *f, got, want)
		}
	}
}

func TestStatesValid(t *testing.T) {
	for _, s := range api.PullStates {
		if st, err := api.ParsePullState(string(s)); err != nil || st != s {
			t.Errorf("ParsePullState(%q) = %q, %v", s, st, err)
		}
	}
	for _, s := range []string{"", "Active", "queued "} {
		if api.PullState(s).Valid() {
			t.Errorf("%q is not a state", s)
		}
	}
	for _, s := range api.LayerStates {
		if !s.Valid() {
			t.Errorf("%q must be valid", s)
		}
	}
	if api.LayerState("exploded").Valid() {
		t.Error("unknown layer state accepted")
	}
}
