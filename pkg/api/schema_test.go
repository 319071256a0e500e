package api_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/d44b/pulltrace/pkg/api"
)

func compileSchema(t *testing.T) *jsonschema.Schema {
	return compileSchemaFile(t, "pull-event-v1.json")
}

func compileSchemaFile(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	path := filepath.Join("..", "..", "docs", "schemas", name)
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open schema: %v", err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("parse schema: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource(name, doc); err != nil {
		t.Fatalf("add schema: %v", err)
	}
	s, err := c.Compile(name)
	if err != nil {
		t.Fatalf("compile schema: %v", err)
	}
	return s
}

func samplePull(state api.PullState) api.Pull {
	started := time.Date(2025, 1, 15, 10, 29, 50, 0, time.UTC)
	p := api.Pull{
		ID:             "abc123",
		NodeName:       "worker-1",
		ImageRef:       "docker.io/library/nginx:1.27",
		Repository:     "docker.io/library/nginx",
		ManifestDigest: "sha256:" + strings.Repeat("a", 64),
		State:          state,
		TotalKnown:     true,
		StartedAt:      started,
		UpdatedAt:      started.Add(5 * time.Second),
		BytesPerSec:    5242880,
		Pods:           []api.PodRef{{Namespace: "default", PodName: "nginx-7d4f8b6c9-x2k9p", Container: "nginx"}},
		Layers: []api.Layer{
			{Digest: "sha256:" + strings.Repeat("1", 64), MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", TotalBytes: 1 << 20, DownloadedBytes: 1 << 20, State: api.LayerDone},
			{Digest: "sha256:" + strings.Repeat("2", 64), MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", TotalBytes: 4 << 20, DownloadedBytes: 1 << 20, State: api.LayerDownloading},
			{Digest: "sha256:" + strings.Repeat("3", 64), TotalBytes: 2 << 20, State: api.LayerWaiting},
		},
	}
	eta := 6.4
	p.ETASeconds = &eta
	if state.Finished() {
		for i := range p.Layers {
			p.Layers[i].State, p.Layers[i].DownloadedBytes = api.LayerDone, p.Layers[i].TotalBytes
		}
		done := started.Add(20 * time.Second)
		p.CompletedAt = &done
		p.ETASeconds, p.BytesPerSec = nil, 0
	}
	if state == api.PullFailed {
		p.Layers[2].State, p.Layers[2].DownloadedBytes = api.LayerFailed, 0
		p.Error = "aborted: ingests vanished without commit"
	}
	p.Summarize()
	return p
}

func eventOf(typ api.EventType) api.PullEvent {
	state := api.PullActive
	switch typ {
	case api.EventPullCompleted:
		state = api.PullCompleted
	case api.EventPullFailed:
		state = api.PullFailed
	case api.EventPullCached:
		state = api.PullCached
	case api.EventPullQueued:
		state = api.PullQueued
	case api.EventPullStalled:
		state = api.PullStalled
	}
	p := samplePull(state)
	ev := api.PullEvent{SchemaVersion: api.SchemaVersion, Timestamp: time.Now().UTC(), Type: typ, NodeName: p.NodeName, Pull: p}
	if strings.HasPrefix(string(typ), "layer.") {
		l := p.Layers[1]
		ev.Layer = &l
	}
	return ev
}

// Every event type, marshalled by the real Go types, must validate: the schema and the code
// cannot drift apart without this test failing.
func TestEventsValidateAgainstSchema(t *testing.T) {
	s := compileSchema(t)
	for _, typ := range api.EventTypes {
		t.Run(string(typ), func(t *testing.T) {
			b, err := json.Marshal(eventOf(typ))
			if err != nil {
				t.Fatal(err)
			}
			v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Validate(v); err != nil {
				t.Fatalf("%s does not validate: %v\n%s", typ, err, b)
			}
		})
	}
}

// The schema must also reject what the contract forbids, or the test above proves nothing.
func TestSchemaRejectsBrokenEvents(t *testing.T) {
	s := compileSchema(t)
	cases := map[string]func(m map[string]any){
		"wrong schemaVersion": func(m map[string]any) { m["schemaVersion"] = "v2" },
		"unknown type":        func(m map[string]any) { m["type"] = "pull.exploded" },
		"renamed field": func(m map[string]any) {
			p := m["pull"].(map[string]any)
			p["image_ref"] = p["imageRef"]
			delete(p, "imageRef")
		},
		"percent over 100": func(m map[string]any) { m["pull"].(map[string]any)["percent"] = 101 },
		"layer event without layer": func(m map[string]any) {
			m["type"] = "layer.progress"
			delete(m, "layer")
		},
		"pods null":                 func(m map[string]any) { m["pull"].(map[string]any)["pods"] = nil },
		"pull event without layers": func(m map[string]any) { delete(m["pull"].(map[string]any), "layers") },
		"layer event with the whole pull": func(m map[string]any) {
			m["type"] = "layer.progress"
			m["layer"] = m["pull"].(map[string]any)["layers"].([]any)[0]
		},
		"stalled event of an active pull": func(m map[string]any) { m["type"] = "pull.stalled" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			b, _ := json.Marshal(eventOf(api.EventPullProgress))
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			mutate(m)
			b, _ = json.Marshal(m)
			v, _ := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err := s.Validate(v); err == nil {
				t.Fatalf("schema accepted a broken event: %s", b)
			}
		})
	}
}

// The seed README's sample log line is the public v1 format; it must stay readable.
func TestSeedSampleFieldNames(t *testing.T) {
	b, _ := json.Marshal(eventOf(api.EventPullProgress))
	for _, field := range []string{`"schemaVersion":"v1"`, `"timestamp"`, `"type":"pull.progress"`, `"nodeName"`, `"pull"`,
		`"id"`, `"imageRef"`, `"totalBytes"`, `"downloadedBytes"`, `"bytesPerSec"`, `"etaSeconds"`, `"percent"`,
		`"layerCount"`, `"layersDone"`, `"startedAt"`, `"pods"`, `"podName"`, `"container"`, `"totalKnown"`} {
		if !bytes.Contains(b, []byte(field)) {
			t.Errorf("marshalled event lacks %s: %s", field, b)
		}
	}
}

// Every state change has exactly one event type, and it is one the schema knows.
func TestTransitionEventCoversEveryChange(t *testing.T) {
	states := []api.PullState{"", api.PullQueued, api.PullActive, api.PullStalled, api.PullCompleted, api.PullCached, api.PullFailed}
	for _, from := range states {
		for _, to := range states[1:] {
			typ := api.TransitionEvent(from, to)
			if from == to {
				if typ != "" {
					t.Errorf("%s -> %s is no change, got %s", from, to, typ)
				}
				continue
			}
			if !slices.Contains(api.EventTypes, typ) {
				t.Errorf("%q -> %s: %q is not an event type", from, to, typ)
			}
		}
	}
	if api.TransitionEvent(api.PullStalled, api.PullActive) != api.EventPullResumed || api.TransitionEvent(api.PullQueued, api.PullActive) != api.EventPullStarted {
		t.Error("resumed vs started")
	}
}
