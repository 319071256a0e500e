package group

import (
	"fmt"
	"testing"

	"github.com/d44b/pulltrace/pkg/api"
)

// BenchmarkReportRound: n nodes pulling one image each send one report's events, then one
// flush builds the changed group for a follower: the server's group cost per report round.
func BenchmarkReportRound(b *testing.B) {
	for _, n := range []int{5000, 15000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ix := New(Config{})
			evs := make([]api.PullEvent, n)
			for i := range evs {
				p := pull(fmt.Sprintf("p%d", i), fmt.Sprintf("n%d", i), api.PullActive, int64(i), 1<<30, float64(i), nil)
				evs[i] = api.PullEvent{Type: api.EventPullProgress, NodeName: p.NodeName, Pull: p}
			}
			s := &sub{q: api.GroupQuery{By: api.GroupByWorkload, Slowest: api.DefaultSlowest}, ch: make(chan []byte, 1)}
			ix.subs[s] = struct{}{}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for i := range evs {
					evs[i].Pull.DownloadedBytes++
				}
				ix.Observe(evs)
				ix.Flush()
				<-s.ch
			}
		})
	}
}
