package stream

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

type emptyStore struct{}

func (emptyStore) SnapshotPulls(_ api.Filter, at func() uint64) ([]api.Pull, uint64) {
	return nil, at()
}

// Publishing one event while 1,000 followers read: the publisher's cost must not grow
// with the number of followers (it appends to the window and wakes them).
func BenchmarkPublish1000Followers(b *testing.B) {
	br := New(Config{}, emptyStore{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { br.Serve(w, r, api.Filter{}) }))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 1100}
	for range 1000 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			b.Fatal(err)
		}
		go func() { _, _ = io.Copy(io.Discard, bufio.NewReader(resp.Body)) }()
	}
	for br.Clients() < 1000 {
		time.Sleep(time.Millisecond)
	}
	ev := []api.PullEvent{{SchemaVersion: "v1", Timestamp: time.Now(), Type: api.EventPullProgress, NodeName: "n",
		Pull: api.Pull{ID: "p", NodeName: "n", State: api.PullActive, Pods: []api.PodRef{}, Layers: []api.Layer{}}}}
	data := [][]byte{[]byte(fmt.Sprintf(`{"type":"pull.progress","pad":%q}`, make([]byte, 200)))}
	b.ReportAllocs()
	for b.Loop() {
		br.Publish(ev, data)
	}
}
