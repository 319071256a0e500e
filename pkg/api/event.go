package api

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// IsLayer reports whether events of this type carry a layer, and so a pull summary.
func (t EventType) IsLayer() bool { return strings.HasPrefix(string(t), "layer.") }

// pullSummary encodes a pull without its layers. The outer Layers field shadows the
// embedded one (encoding/json picks the shallower field) and, nil, is left out.
type pullSummary struct {
	*Pull
	Layers *struct{} `json:"layers,omitempty"`
}

// layerEvent is the wire form of a layer.* event: the pull is a summary, so an event
// costs the size of one layer, not of the whole pull (a pull with 1,000 moving layers
// would otherwise send 1,000 copies of its 1,000 layers per report).
type layerEvent struct {
	SchemaVersion string      `json:"schemaVersion"`
	Timestamp     time.Time   `json:"timestamp"`
	Type          EventType   `json:"type"`
	NodeName      string      `json:"nodeName"`
	Pull          pullSummary `json:"pull"`
	Layer         *Layer      `json:"layer,omitempty"`
}

// MarshalJSON writes the v1 wire form: pull.* events carry the whole pull, layer.* events
// the pull's summary (every field but layers) and the one layer.
func (e PullEvent) MarshalJSON() ([]byte, error) {
	if !e.Type.IsLayer() {
		type plain PullEvent
		return json.Marshal(plain(e))
	}
	return json.Marshal(layerEvent{SchemaVersion: e.SchemaVersion, Timestamp: e.Timestamp, Type: e.Type,
		NodeName: e.NodeName, Pull: pullSummary{Pull: &e.Pull}, Layer: e.Layer})
}

// MarshalSummary encodes p as a layer event carries it: every field but layers.
func (p *Pull) MarshalSummary() ([]byte, error) { return json.Marshal(pullSummary{Pull: p}) }

// Apply returns the pull a client holds after ev, given what it held before (nil: none).
// A pull.* event carries the whole pull. A layer.* event carries a summary: its fields
// win, the held layers are kept, and the event's layer replaces the one with its digest.
func (e *PullEvent) Apply(held *Pull) Pull {
	p := e.Pull
	if !e.Type.IsLayer() || e.Layer == nil {
		return p
	}
	var layers []Layer
	if held != nil {
		layers = held.Layers
	}
	out := make([]Layer, 0, len(layers)+1)
	found := false
	for _, l := range layers {
		if l.Digest == e.Layer.Digest {
			l, found = *e.Layer, true
		}
		out = append(out, l)
	}
	if !found {
		out = append(out, *e.Layer)
	}
	p.Layers = out
	if p.Pods == nil {
		p.Pods = []PodRef{}
	}
	return p
}

// EventID is the SSE id of an event: the server process's epoch and a sequence number
// within it, written "epoch-seq". Sequence numbers start again in every process, so an id
// from another epoch (an earlier process, another replica) says nothing about this one's
// stream: the server answers it with a snapshot.
type EventID struct {
	Epoch string
	Seq   uint64
}

func (id EventID) String() string { return id.Epoch + "-" + strconv.FormatUint(id.Seq, 10) }

// ParseEventID reads an id written by EventID.String; ok is false for anything else.
func ParseEventID(s string) (id EventID, ok bool) {
	i := strings.LastIndexByte(s, '-')
	if i <= 0 {
		return EventID{}, false
	}
	n, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil {
		return EventID{}, false
	}
	return EventID{Epoch: s[:i], Seq: n}, true
}
