// Package api holds the one definition of every object that crosses a process boundary:
// agent to server (AgentReport), server to clients (Pull, Layer, PodRef, PullEvent). The web
// UI mirrors these in web/src/api.ts and docs/schemas/pull-event-v1.json describes PullEvent;
// tests keep all three in step.
package api

import (
	"slices"
	"strings"
	"time"
)

// SchemaVersion is carried by every report and event. Fields may be added within v1, never
// renamed or dropped.
const SchemaVersion = "v1"

// PullState is where a pull is in its life.
type PullState string

const (
	PullActive    PullState = "active"
	PullCompleted PullState = "completed"
	PullCached    PullState = "cached"
	PullFailed    PullState = "failed"
	PullStalled   PullState = "stalled"
	// PullQueued is made by the server, never an agent: a pod waits for an image that no
	// pull on its node serves yet (the kubelet pulls one image at a time by default).
	PullQueued PullState = "queued"
)

// Finished reports whether no more bytes will arrive for a pull in this state.
func (s PullState) Finished() bool {
	return s == PullCompleted || s == PullCached || s == PullFailed
}

// PullStates lists every pull state, in the order a person scans them: moving, waiting,
// stuck, then finished. Flags, completions and error texts list these.
var PullStates = []PullState{PullActive, PullStalled, PullQueued, PullCompleted, PullCached, PullFailed}

// Valid reports whether s is one of PullStates.
func (s PullState) Valid() bool { return slices.Contains(PullStates, s) }

// ParsePullState reads one state, with an error that lists the valid ones.
func ParsePullState(s string) (PullState, error) {
	if st := PullState(s); st.Valid() {
		return st, nil
	}
	return "", fieldErr("state", "unknown state %q: want one of %s", s, joinStates(PullStates, ", "))
}

func joinStates[S ~string](states []S, sep string) string {
	out := make([]string, len(states))
	for i, s := range states {
		out[i] = string(s)
	}
	return strings.Join(out, sep)
}

// LayerState is where one layer blob is in its download.
type LayerState string

const (
	// LayerWaiting: queued behind max_concurrent_downloads, or not opened yet.
	LayerWaiting LayerState = "waiting"
	// LayerDownloading: bytes are arriving in a containerd ingest.
	LayerDownloading LayerState = "downloading"
	// LayerDone: committed to the content store during this pull.
	LayerDone LayerState = "done"
	// LayerExists: already in the content store before this pull began.
	LayerExists LayerState = "exists"
	// LayerFailed: its ingest vanished without a commit.
	LayerFailed LayerState = "failed"
)

// Finished reports whether the layer needs no more bytes.
func (s LayerState) Finished() bool { return s == LayerDone || s == LayerExists }

// LayerStates lists every layer state, in download order.
var LayerStates = []LayerState{LayerWaiting, LayerDownloading, LayerDone, LayerExists, LayerFailed}

// Valid reports whether s is one of LayerStates.
func (s LayerState) Valid() bool { return slices.Contains(LayerStates, s) }

// PodRef names one container of a pod that waits for a pull.
type PodRef struct {
	Namespace string `json:"namespace"`
	PodName   string `json:"podName"`
	Container string `json:"container"`
	// OwnerKind and OwnerName name the workload the pod belongs to, through its controller
	// ownerReference: Deployment (through its ReplicaSet), DaemonSet, StatefulSet, Job, or
	// the controller's own kind for others. Empty for a pod without a controller.
	OwnerKind string `json:"ownerKind,omitempty"`
	OwnerName string `json:"ownerName,omitempty"`
}

// Layer is one blob of a pull. Digest has no containerd "layer-" prefix.
type Layer struct {
	Digest          string     `json:"digest"`
	MediaType       string     `json:"mediaType,omitempty"`
	TotalBytes      int64      `json:"totalBytes"`
	DownloadedBytes int64      `json:"downloadedBytes"`
	State           LayerState `json:"state"`
}

// Pull is one image being pulled on one node. Byte counts are compressed bytes, as they
// cross the network.
type Pull struct {
	ID       string `json:"id"`
	NodeName string `json:"nodeName"`
	// ImageRef is normalised: registry/repo:tag or registry/repo@sha256:..., or registry/repo
	// until the tag is known.
	ImageRef        string    `json:"imageRef"`
	Repository      string    `json:"repository,omitempty"`
	ManifestDigest  string    `json:"manifestDigest,omitempty"`
	IndexDigest     string    `json:"indexDigest,omitempty"`
	State           PullState `json:"state"`
	TotalBytes      int64     `json:"totalBytes"`
	DownloadedBytes int64     `json:"downloadedBytes"`
	BytesPerSec     float64   `json:"bytesPerSec"`
	// ETASeconds is absent when no rate is known or the pull has finished.
	ETASeconds  *float64   `json:"etaSeconds,omitempty"`
	Percent     float64    `json:"percent"`
	LayerCount  int        `json:"layerCount"`
	LayersDone  int        `json:"layersDone"`
	TotalKnown  bool       `json:"totalKnown"`
	StartedAt   time.Time  `json:"startedAt"`
	CompletedAt *time.Time `json:"completedAt,omitempty"`
	// UpdatedAt is when a byte last arrived; it drives stall detection.
	UpdatedAt time.Time `json:"updatedAt"`
	Error     string    `json:"error,omitempty"`
	// BackOff is a v1 extension: the pull failed and the kubelet keeps retrying it (its pod
	// still waits in ErrImagePull / ImagePullBackOff). Error stays the kubelet's real reason.
	BackOff bool     `json:"backOff,omitempty"`
	Pods    []PodRef `json:"pods"`
	Layers  []Layer  `json:"layers"`
}

// EventType names a lifecycle event.
type EventType string

const (
	EventPullStarted    EventType = "pull.started"
	EventPullProgress   EventType = "pull.progress"
	EventPullCompleted  EventType = "pull.completed"
	EventPullFailed     EventType = "pull.failed"
	EventLayerStarted   EventType = "layer.started"
	EventLayerProgress  EventType = "layer.progress"
	EventLayerCompleted EventType = "layer.completed"
	// EventPullRemoved is a v1 extension: the entry left the server (history expired, or a
	// queued pod stopped waiting). Clients ignore types they do not know.
	EventPullRemoved EventType = "pull.removed"
	// v1 extensions, one per state change the seed's types do not name:
	// EventPullQueued: a pod waits for an image no pull on its node serves yet.
	EventPullQueued EventType = "pull.queued"
	// EventPullStalled: an active pull turned stalled (no byte for the stall timeout).
	EventPullStalled EventType = "pull.stalled"
	// EventPullResumed: a stalled pull receives bytes again.
	EventPullResumed EventType = "pull.resumed"
	// EventPullCached: the image was already on the node; nothing was downloaded.
	EventPullCached EventType = "pull.cached"
)

// EventTypes lists every event type, in lifecycle order.
var EventTypes = []EventType{
	EventPullQueued, EventPullStarted, EventPullProgress, EventPullStalled, EventPullResumed,
	EventPullCompleted, EventPullCached, EventPullFailed,
	EventLayerStarted, EventLayerProgress, EventLayerCompleted, EventPullRemoved,
}

// TransitionEvent is the one event type that says a pull moved from state from to state
// to, or "" when the state did not change (a change within a state is pull.progress).
// from is "" for a pull seen for the first time.
func TransitionEvent(from, to PullState) EventType {
	if from == to {
		return ""
	}
	switch to {
	case PullQueued:
		return EventPullQueued
	case PullActive:
		if from == PullStalled {
			return EventPullResumed
		}
		return EventPullStarted
	case PullStalled:
		return EventPullStalled
	case PullCompleted:
		return EventPullCompleted
	case PullCached:
		return EventPullCached
	case PullFailed:
		return EventPullFailed
	}
	return ""
}

// PullEvent is one SSE data payload and one JSON log line. On the stream it is a plain
// `data:` message (no `event:` field: a browser's EventSource.onmessage receives it); its
// type is inside the JSON. layer.* events carry a summary of the pull (no layers) and the
// layer; see MarshalJSON and Apply.
type PullEvent struct {
	SchemaVersion string    `json:"schemaVersion"`
	Timestamp     time.Time `json:"timestamp"`
	Type          EventType `json:"type"`
	NodeName      string    `json:"nodeName"`
	Pull          Pull      `json:"pull"`
	// Layer is set on layer.* events only.
	Layer *Layer `json:"layer,omitempty"`
}

// AgentReport is a full snapshot of one node's pulls, sent by its agent. Because it is a
// snapshot, a lost, duplicated or reordered report loses nothing.
type AgentReport struct {
	SchemaVersion string `json:"schemaVersion"`
	NodeName      string `json:"nodeName"`
	AgentVersion  string `json:"agentVersion,omitempty"`
	// AgentID is random per agent process; with Sequence it orders reports from one process.
	AgentID   string    `json:"agentId"`
	Sequence  uint64    `json:"sequence"`
	Timestamp time.Time `json:"timestamp"`
	// Heartbeat reports carry no pulls: they say "nothing changed since Sequence" and keep
	// the agent counted as connected. A server that lacks this agent's state asks for a
	// full report in its response.
	Heartbeat           bool   `json:"heartbeat,omitempty"`
	ContainerdConnected bool   `json:"containerdConnected"`
	Pulls               []Pull `json:"pulls"`
}

// ReportResponse is the server's answer to an accepted report.
type ReportResponse struct {
	// Resync asks the agent to send a full snapshot now (the server restarted or never saw it).
	Resync bool `json:"resync,omitempty"`
	// Rejected names pulls left out of an applied report because they are invalid (the
	// rest was applied): the first MaxReportErrors in full, RejectedCount counts them all.
	Rejected      []PullRejection `json:"rejected,omitempty"`
	RejectedCount int             `json:"rejectedCount,omitempty"`
	// Ignored is set when the report was valid but not applied: an older snapshot, or
	// one from an agent that another agent of the node has replaced. The reason says why.
	Ignored string `json:"ignored,omitempty"`
}

// PullList is the body of GET /api/v1/pulls and the data of the stream's `snapshot` event.
type PullList struct {
	SchemaVersion string `json:"schemaVersion"`
	// Metadata is set on GET /api/v1/pulls: where the next page starts.
	Metadata *ListMeta `json:"metadata,omitempty"`
	Pulls    []Pull    `json:"pulls"`
}

// ListMeta pages a list as Kubernetes does: pass Continue back as ?continue= with the same
// filter to get the next page; it is empty on the last page.
type ListMeta struct {
	Continue string `json:"continue,omitempty"`
	// RemainingItemCount is how many matching pulls follow this page, when known.
	RemainingItemCount *int64 `json:"remainingItemCount,omitempty"`
}

// ErrorResponse is every JSON error body.
type ErrorResponse struct {
	Error string `json:"error"`
}

// ServerVersion is the body of GET /api/v1/version.
type ServerVersion struct {
	Version       string `json:"version"`
	SchemaVersion string `json:"schemaVersion,omitempty"`
}

// NodeStatus is how fresh the server's data about one node is: a v1 extension, served at
// GET /api/v1/nodes.
type NodeStatus struct {
	Name string `json:"name"`
	// LastReportAt is when the node's agent last reported successfully (server clock).
	LastReportAt *time.Time `json:"lastReportAt,omitempty"`
	// Stale: no report accepted within the server's agent timeout; its pulls are old news.
	Stale bool `json:"stale"`
	// Refused: the node's latest report was turned away (RefusedReason says why), and none
	// was accepted since.
	Refused             bool       `json:"refused"`
	RefusedAt           *time.Time `json:"refusedAt,omitempty"`
	RefusedReason       string     `json:"refusedReason,omitempty"`
	ContainerdConnected bool       `json:"containerdConnected"`
}

// NodeList is the body of GET /api/v1/nodes.
type NodeList struct {
	Nodes []NodeStatus `json:"nodes"`
}
