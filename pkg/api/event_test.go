package api_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/d44b/pulltrace/pkg/api"
)

// A layer event is a summary: applied to what a client holds it keeps the other layers,
// replaces the one it names, and takes the summary's figures.
func TestLayerEventApplies(t *testing.T) {
	held := samplePull(api.PullActive)
	ev := eventOf(api.EventLayerProgress)
	ev.Layer.DownloadedBytes = 3 << 20
	ev.Pull.DownloadedBytes = held.DownloadedBytes + 2<<20
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), `"layers"`) {
		t.Fatalf("layer event carries the pull's layers: %s", b)
	}
	var wire api.PullEvent
	if err := json.Unmarshal(b, &wire); err != nil {
		t.Fatal(err)
	}
	got := wire.Apply(&held)
	if len(got.Layers) != len(held.Layers) || got.Layers[1].DownloadedBytes != 3<<20 || got.Layers[0] != held.Layers[0] || got.Layers[2] != held.Layers[2] {
		t.Fatalf("layers after apply: %+v", got.Layers)
	}
	if got.DownloadedBytes != ev.Pull.DownloadedBytes || got.ID != held.ID {
		t.Fatalf("summary not applied: %+v", got)
	}
	if held.Layers[1].DownloadedBytes == 3<<20 {
		t.Fatal("apply edited the held pull in place")
	}
	// Nothing held: the layer is all that is known.
	if got := wire.Apply(nil); len(got.Layers) != 1 || got.Pods == nil {
		t.Fatalf("apply to nothing: %+v", got)
	}
	// A pull event replaces what is held, layers and all.
	pe := eventOf(api.EventPullProgress)
	if got := pe.Apply(&held); !reflect.DeepEqual(got, pe.Pull) {
		t.Fatalf("pull event apply: %+v", got)
	}
}

func TestEventIDRoundTrip(t *testing.T) {
	id := api.EventID{Epoch: "a1b2c3", Seq: 42}
	got, ok := api.ParseEventID(id.String())
	if !ok || got != id || id.String() != "a1b2c3-42" {
		t.Fatalf("%q -> %+v %v", id.String(), got, ok)
	}
	for _, bad := range []string{"", "42", "-42", "a1b2c3-", "a1b2c3-x", "a1b2c3-18446744073709551616"} {
		if _, ok := api.ParseEventID(bad); ok {
			t.Errorf("ParseEventID(%q) accepted", bad)
		}
	}
}
