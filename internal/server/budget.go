package server

import (
	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/internal/stream"
)

// DefaultMemoryBudget is the chart's default memory limit for the server.
const DefaultMemoryBudget = 256 << 20

// Budget sets the memory caps from the memory the server may use (the container's
// limit). The shares leave room for what they multiply into: the held pulls (MaxBytes, an
// estimate) are encoded into one shared snapshot about as large, which the encoder
// briefly holds twice; the replay window; pages of GET /api/v1/pulls; each follower's
// goroutine and socket buffers (about 64 KiB); and the Go runtime, whose GC is told the
// budget too (GOMEMLIMIT) so that garbage does not double the live heap near the limit.
// docs/benchmarks.md has what was measured at these caps.
func Budget(budget int64, ac *aggregate.Config, sc *stream.Config) {
	if budget <= 0 {
		budget = DefaultMemoryBudget
	}
	ac.MaxBytes = budget / 12
	sc.SnapshotCacheBytes = int(budget / 5)
	sc.WindowBytes = int(budget / 16)
	if sc.MaxClients <= 0 {
		sc.MaxClients = int(min(budget/(256<<10), stream.DefaultMaxClients))
	}
}
