package stream

import (
	"sync"
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// Publishing one event to 1,000 registered followers that drain their buffers.
func BenchmarkPublish1000Followers(b *testing.B) {
	br := New(Config{ClientBuffer: 1024})
	var wg sync.WaitGroup
	for range 1000 {
		c, _, _ := br.register(api.Filter{}, 0)
		wg.Go(func() {
			for range c.ch {
			}
		})
	}
	ev := []api.PullEvent{{SchemaVersion: "v1", Timestamp: time.Now(), Type: api.EventPullProgress, NodeName: "n",
		Pull: api.Pull{ID: "p", NodeName: "n", State: api.PullActive, Pods: []api.PodRef{}, Layers: []api.Layer{}}}}
	data := [][]byte{[]byte(`{"type":"pull.progress"}`)}
	b.ReportAllocs()
	for b.Loop() {
		br.Publish(ev, data)
	}
	b.StopTimer()
	br.mu.Lock()
	for c := range br.clients {
		if !c.overflow {
			close(c.ch)
		}
		delete(br.clients, c)
	}
	br.mu.Unlock()
	wg.Wait()
}
