package api

import (
	"net/url"
	"slices"
	"strings"
)

// Filter selects pulls; empty fields match everything. Its query form (Query, ParseFilter)
// is what GET /api/v1/pulls and /api/v1/events read and what the plugin and the UI send:
// node, namespace, pod, image and state (comma-separated).
type Filter struct {
	Node      string
	Namespace string
	// Pod matches a waiting pod's name, in Namespace when that is set too.
	Pod string
	// Image is a substring of the image reference or repository.
	Image  string
	States []PullState
}

// FilterKeys are the query parameters of a filter, in the order Query writes them.
var FilterKeys = []string{"node", "namespace", "pod", "image", "state"}

// Match reports whether p passes the filter.
func (f *Filter) Match(p *Pull) bool {
	if f.Node != "" && p.NodeName != f.Node {
		return false
	}
	if f.Image != "" && !strings.Contains(p.ImageRef, f.Image) && !strings.Contains(p.Repository, f.Image) {
		return false
	}
	if len(f.States) > 0 && !slices.Contains(f.States, p.State) {
		return false
	}
	if f.Namespace == "" && f.Pod == "" {
		return true
	}
	return slices.ContainsFunc(p.Pods, func(pod PodRef) bool {
		return (f.Namespace == "" || pod.Namespace == f.Namespace) && (f.Pod == "" || pod.PodName == f.Pod)
	})
}

// Query encodes the filter; empty fields are left out, so the zero filter is no query.
func (f *Filter) Query() url.Values {
	q := url.Values{}
	for i, v := range []string{f.Node, f.Namespace, f.Pod, f.Image, joinStates(f.States, ",")} {
		if v != "" {
			q.Set(FilterKeys[i], v)
		}
	}
	return q
}

// ParseFilter reads a filter from a query. Other parameters are ignored (the event stream
// takes lastEventId beside it); an unknown state is an error that lists the valid ones.
func ParseFilter(q url.Values) (Filter, error) {
	f := Filter{Node: q.Get("node"), Namespace: q.Get("namespace"), Pod: q.Get("pod"), Image: q.Get("image")}
	for _, s := range strings.Split(q.Get("state"), ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		st, err := ParsePullState(s)
		if err != nil {
			return Filter{}, err
		}
		if !slices.Contains(f.States, st) {
			f.States = append(f.States, st)
		}
	}
	return f, nil
}
