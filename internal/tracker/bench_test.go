package tracker

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"

	"github.com/d44b/pulltrace/internal/ingest"
	"github.com/d44b/pulltrace/pkg/api"
)

// One poll cycle as the agent runs it: ListStatuses on containerd's real local store with
// 50 live ingests across 5 pulls, the tracker update, the snapshot and the report's JSON.
// Most of it is the store reading ingest files, which on a node is containerd's CPU.
func BenchmarkPollCycle50Ingests5Pulls(b *testing.B) { benchCycle(b, false) }

// The agent's own share of a cycle: the same, with ListStatuses answered from memory as
// the gRPC client hands it over.
func BenchmarkTrackerCycle50Ingests5Pulls(b *testing.B) { benchCycle(b, true) }

type frozenStatuses struct {
	ingest.Store
	st []content.Status
}

func (f *frozenStatuses) ListStatuses(context.Context, ...string) ([]content.Status, error) {
	return f.st, nil
}

func benchCycle(b *testing.B, frozen bool) {
	t := &testing.T{}
	e := newEnv(t)
	e.t = t
	e.tr.cfg.Now = time.Now
	for p := range 5 {
		var layers []blob
		for range 10 {
			layers = append(layers, randomLayer(t, 64<<10))
		}
		e.manifest(fmt.Sprintf("bench-%d", p), layers...)
		for i, l := range layers {
			e.open(l)
			e.write(l, (i+1)*1000)
		}
	}
	if err := e.tr.Poll(e.ctx); err != nil {
		b.Fatal(err)
	}
	if n := len(e.tr.Snapshot()); n != 5 {
		b.Fatalf("want 5 pulls, got %d", n)
	}
	if frozen {
		st, err := e.store.ListStatuses(e.ctx)
		if err != nil || len(st) != 50 {
			b.Fatalf("statuses %d %v", len(st), err)
		}
		e.tr.store = &frozenStatuses{Store: e.store, st: st}
	}
	var ms runtime.MemStats
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := e.tr.Poll(e.ctx); err != nil {
			b.Fatal(err)
		}
		r := api.AgentReport{SchemaVersion: api.SchemaVersion, NodeName: "n", Pulls: e.tr.Snapshot()}
		if _, err := json.Marshal(&r); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heapMiB")
}
