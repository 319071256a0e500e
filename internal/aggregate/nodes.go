package aggregate

import (
	"slices"
	"strings"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// Refused records a report the server turned away although its sender named its node, so
// the API can say that node's data is not fresh and why. Only authenticated senders get
// here: a stranger cannot mark nodes.
func (s *Store) Refused(nodeName, reason string) {
	if nodeName == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[nodeName]
	if n == nil {
		if len(s.nodes) >= s.cfg.MaxTotal {
			return
		}
		n = &node{pulls: map[string]*entry{}}
		s.nodes[nodeName] = n
	}
	n.refusedAt, n.refusedReason = s.cfg.Now(), reason
}

// Nodes is the freshness of every node the server has heard of, by name.
func (s *Store) Nodes() []api.NodeStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	out := make([]api.NodeStatus, 0, len(s.nodes))
	for name, n := range s.nodes {
		if n.lastSeen.IsZero() && n.refusedAt.IsZero() {
			continue // known only from kubelet events, never from an agent
		}
		out = append(out, n.status(name, now, s.cfg.AgentTimeout))
	}
	slices.SortFunc(out, func(a, b api.NodeStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (n *node) status(name string, now time.Time, timeout time.Duration) api.NodeStatus {
	st := api.NodeStatus{Name: name, ContainerdConnected: n.connected, Stale: true}
	if !n.lastSeen.IsZero() {
		t := n.lastSeen.UTC()
		st.LastReportAt = &t
		st.Stale = now.Sub(n.lastSeen) > timeout
	}
	// A refusal counts until a later report is accepted.
	if !n.refusedAt.IsZero() && n.refusedAt.After(n.lastSeen) {
		t := n.refusedAt.UTC()
		st.Refused, st.RefusedAt, st.RefusedReason = true, &t, n.refusedReason
	}
	return st
}

// Tick re-measures the rate of pulls whose agent has gone quiet. An agent sends a report
// whenever bytes arrive, so ReportGrace after its last word nothing has: the window slides
// over a flat stretch and the rate falls to 0, and the ETA goes absent, instead of
// freezing at the last figure. Call it every second or so.
func (s *Store) Tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	var events []api.PullEvent
	for _, n := range s.nodes {
		quiet := now.Add(-n.skew).Add(-s.cfg.ReportGrace)
		for _, e := range n.pulls {
			if e.present || e.pull.State.Finished() || len(e.meter.samples) == 0 {
				continue
			}
			known := e.meter.last()
			if quiet.After(known) {
				known = quiet
			}
			r := e.meter.rate(known, s.cfg.RateWindow)
			if r == e.rate {
				continue
			}
			e.rate = r
			in := e.pull
			s.derive(e, &in)
			if in.BytesPerSec == e.pull.BytesPerSec && sameETA(in.ETASeconds, e.pull.ETASeconds) {
				continue
			}
			// The pull is Equal to before (only derived figures moved), but a client must
			// see its speed fall: this is the one progress event that is not a change.
			s.set(e, in)
			events = append(events, s.event(api.EventPullProgress, &in, nil, now))
		}
	}
	s.sink(events)
}

func sameETA(a, b *float64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// addPresent stores the cached pulls of containers started from an image already on the
// node, each once: it is history from the moment it is seen.
func (s *Store) addPresent(events []api.PullEvent, now time.Time, present []api.Pull) []api.PullEvent {
	for _, p := range present {
		n := s.nodes[p.NodeName]
		if n == nil {
			n = &node{pulls: map[string]*entry{}}
			s.nodes[p.NodeName] = n
		}
		if n.pulls[p.ID] != nil {
			continue
		}
		e := &entry{present: true, finishedAt: now}
		s.derive(e, &p)
		n.pulls[p.ID] = e
		n.gen++
		s.total++
		events = s.finishEvents(events, nil, &p, now)
		s.set(e, p)
	}
	return events
}
