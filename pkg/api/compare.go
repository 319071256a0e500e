package api

import (
	"math"
	"slices"
	"strings"
	"time"
)

// Equal reports whether p and q are the same pull as a client sees it: every field that
// says what is pulled, where, how far and for whom (identity, image, state, bytes, layers,
// pods, error). Left out are the figures that follow from those or from the clock (Percent,
// BytesPerSec, ETASeconds, CompletedAt, UpdatedAt): a pull whose rate alone decayed has not
// changed. The agent sends a report, and the server emits pull.progress, only for a pull
// that is not Equal to what it last had.
func (p *Pull) Equal(q *Pull) bool {
	return p.ID == q.ID && p.NodeName == q.NodeName && p.ImageRef == q.ImageRef && p.Repository == q.Repository &&
		p.ManifestDigest == q.ManifestDigest && p.IndexDigest == q.IndexDigest && p.State == q.State &&
		p.TotalBytes == q.TotalBytes && p.DownloadedBytes == q.DownloadedBytes && p.LayerCount == q.LayerCount &&
		p.LayersDone == q.LayersDone && p.TotalKnown == q.TotalKnown && p.StartedAt.Equal(q.StartedAt) &&
		p.Error == q.Error && p.BackOff == q.BackOff && sameElems(p.Pods, q.Pods) && sameElems(p.Layers, q.Layers)
}

// Identical reports whether p and q marshal to the same JSON: Equal, and the derived
// figures, time zones and nil-ness of slices too. The event encoder uses it to marshal one
// pull once for the several events of one change.
func (p *Pull) Identical(q *Pull) bool {
	return p.Equal(q) && sameBits(p.Percent, q.Percent) && sameBits(p.BytesPerSec, q.BytesPerSec) &&
		samePtr(p.ETASeconds, q.ETASeconds, sameBits) && samePtr(p.CompletedAt, q.CompletedAt, sameTime) &&
		sameTime(p.StartedAt, q.StartedAt) && sameTime(p.UpdatedAt, q.UpdatedAt) &&
		(p.Pods == nil) == (q.Pods == nil) && (p.Layers == nil) == (q.Layers == nil)
}

// sameElems compares element by element; copies of one stored pull share their arrays,
// which answers at once.
func sameElems[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}

// sameBits tells 0 from -0, which JSON writes differently.
func sameBits(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

func sameTime(a, b time.Time) bool { return a.Equal(b) && a.Location() == b.Location() }

func samePtr[T any](a, b *T, eq func(T, T) bool) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a == b || eq(*a, *b)
}

// ComparePulls orders pulls newest first by start time, ties by id so output is stable.
// Every list of pulls (agent snapshots, GET /api/v1/pulls, SSE snapshots) uses it.
func ComparePulls(a, b *Pull) int {
	if c := b.StartedAt.Compare(a.StartedAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// SortNewestFirst sorts ps in place with ComparePulls.
func SortNewestFirst(ps []Pull) {
	slices.SortFunc(ps, func(a, b Pull) int { return ComparePulls(&a, &b) })
}
