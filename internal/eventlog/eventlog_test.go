package eventlog

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// A log line must decode into the same PullEvent that was logged, with nothing else on
// the line: the log format is the public v1 event format.
func TestLineIsTheEvent(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, slog.LevelInfo)
	ts := time.Date(2025, 1, 15, 10, 30, 0, 0, time.UTC)
	ev := api.PullEvent{SchemaVersion: "v1", Timestamp: ts, Type: api.EventLayerProgress, NodeName: "worker-1",
		Pull:  api.Pull{ID: "abc123", NodeName: "worker-1", ImageRef: "docker.io/library/nginx:1.27", State: api.PullActive, Pods: []api.PodRef{}, Layers: []api.Layer{}},
		Layer: &api.Layer{Digest: "sha256:aa", TotalBytes: 10, DownloadedBytes: 4, State: api.LayerDownloading}}
	evs := []api.PullEvent{ev, ev}
	l.Log(evs, Encode(evs))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per event, got %d", len(lines))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"time", "level", "msg"} {
		if _, ok := m[k]; ok {
			t.Errorf("line carries slog's %q key: %s", k, lines[0])
		}
	}
	var got api.PullEvent
	dec := json.NewDecoder(strings.NewReader(lines[0]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("line is not a PullEvent: %v\n%s", err, lines[0])
	}
	if !got.Timestamp.Equal(ts) || got.Type != ev.Type || got.Pull.ID != "abc123" || got.Layer == nil || got.Layer.DownloadedBytes != 4 {
		t.Fatalf("round trip lost data: %+v", got)
	}
	if !strings.HasPrefix(lines[0], `{"schemaVersion":"v1","timestamp":"2025-01-15T10:30:00Z","type":"layer.progress","nodeName":"worker-1","pull":{`) {
		t.Fatalf("field order differs from the v1 sample: %s", lines[0])
	}
}

// Encode must give exactly json.Marshal's bytes, for shared and unshared pulls alike.
func TestEncodeMatchesMarshal(t *testing.T) {
	eta := 3.5
	done := time.Date(2025, 1, 15, 10, 31, 0, 0, time.UTC)
	p := api.Pull{ID: "p", NodeName: "n<&>", ImageRef: "r/x:1", State: api.PullActive, TotalBytes: 30, DownloadedBytes: 12, BytesPerSec: 1.5,
		ETASeconds: &eta, Percent: 40, LayerCount: 2, LayersDone: 1, TotalKnown: true, StartedAt: time.Unix(1700000000, 5).UTC(),
		UpdatedAt: time.Unix(1700000001, 0).UTC(), Pods: []api.PodRef{{Namespace: "a", PodName: "b", Container: "c"}},
		Layers: []api.Layer{{Digest: "sha256:aa", TotalBytes: 10, DownloadedBytes: 10, State: api.LayerDone}, {Digest: "sha256:bb", TotalBytes: 20, DownloadedBytes: 2, State: api.LayerDownloading}}}
	fin := p
	fin.State, fin.CompletedAt, fin.ETASeconds = api.PullCompleted, &done, nil
	ts := time.Date(2025, 1, 15, 10, 30, 0, 123, time.UTC)
	evs := []api.PullEvent{
		{SchemaVersion: "v1", Timestamp: ts, Type: api.EventLayerProgress, NodeName: "n", Pull: p, Layer: &p.Layers[1]},
		{SchemaVersion: "v1", Timestamp: ts, Type: api.EventLayerCompleted, NodeName: "n", Pull: p, Layer: &p.Layers[0]},
		{SchemaVersion: "v1", Timestamp: ts, Type: api.EventPullProgress, NodeName: "n", Pull: p},
		{SchemaVersion: "v1", Timestamp: ts, Type: api.EventPullCompleted, NodeName: "n", Pull: fin},
		{SchemaVersion: "v1", Timestamp: ts, Type: api.EventPullRemoved, NodeName: "n", Pull: api.Pull{ID: "q", Pods: []api.PodRef{}, Layers: []api.Layer{}}},
	}
	got := Encode(evs)
	for i := range evs {
		want, _ := json.Marshal(&evs[i])
		if string(got[i]) != string(want) {
			t.Fatalf("event %d:\n got %s\nwant %s", i, got[i], want)
		}
		// A layer event is the size of one layer, not of the whole pull.
		if hasLayers := bytes.Contains(got[i], []byte(`"layers"`)); hasLayers == evs[i].Type.IsLayer() {
			t.Fatalf("event %d (%s): layers present=%v: %s", i, evs[i].Type, hasLayers, got[i])
		}
	}
}
