package plugin

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// Nodes asks the server how fresh each node's data is. A server older than the endpoint
// answers 404, which callers treat as "nothing known".
func (s *Server) Nodes(ctx context.Context) ([]api.NodeStatus, error) {
	var l api.NodeList
	if err := s.getJSON(ctx, "/api/v1/nodes", nil, &l); err != nil {
		return nil, err
	}
	return l.Nodes, nil
}

// StaleNotice is the warning for a node whose data is not fresh, or "" for a fresh one:
// the same words as the web UI (staleMessage in web/src/nodes.ts).
func StaleNotice(n api.NodeStatus, now time.Time) string {
	if !n.Stale && !n.Refused {
		return ""
	}
	msg := fmt.Sprintf("no data from node %s yet", n.Name)
	if n.LastReportAt != nil {
		msg = fmt.Sprintf("no fresh data from node %s for %s", n.Name, formatSince(now.Sub(*n.LastReportAt)))
	}
	switch {
	case n.Refused:
		msg += fmt.Sprintf(": its reports are refused (%s)", lastOr(n.RefusedReason, "no reason given"))
	case n.Stale:
		msg += ": its agent is not reporting"
	}
	return msg
}

// formatSince is a coarse age for a warning: 45s, 3m, 2h, 4d.
func formatSince(d time.Duration) string {
	s := max(0, int64(d/time.Second))
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm", s/60)
	case s < 86400:
		return fmt.Sprintf("%dh", s/3600)
	}
	return fmt.Sprintf("%dd", s/86400)
}

// staleNotices lists the warnings for the named nodes (all nodes when names is empty).
func staleNotices(nodes []api.NodeStatus, names []string, now time.Time) []string {
	var out []string
	for _, n := range nodes {
		if len(names) > 0 && !slices.Contains(names, n.Name) {
			continue
		}
		if m := StaleNotice(n, now); m != "" {
			out = append(out, m)
		}
	}
	return out
}

// nodeWatch tells a follow when a node it depends on goes stale or comes back, once per
// change, so a silent node is never mistaken for a slow pull.
type nodeWatch struct {
	stale map[string]bool
}

func (w *nodeWatch) update(nodes []api.NodeStatus, names []string, now time.Time) []string {
	if len(names) == 0 {
		return nil // no node known yet: nothing depends on one
	}
	if w.stale == nil {
		w.stale = map[string]bool{}
	}
	var out []string
	for _, n := range nodes {
		if !slices.Contains(names, n.Name) {
			continue
		}
		m := StaleNotice(n, now)
		switch {
		case m != "" && !w.stale[n.Name]:
			w.stale[n.Name] = true
			out = append(out, m)
		case m == "" && w.stale[n.Name]:
			delete(w.stale, n.Name)
			out = append(out, fmt.Sprintf("node %s reports again", n.Name))
		}
	}
	return out
}
