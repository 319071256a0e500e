package api

// Summarize recomputes a pull's totals from its layers, so every producer (agent tracker,
// server aggregate, test fixtures) derives them the same way. It never lowers
// DownloadedBytes: a layer that restarts from zero must not make the bar go backwards.
func (p *Pull) Summarize() {
	if len(p.Layers) == 0 {
		return
	}
	var total, got int64
	done := 0
	for _, l := range p.Layers {
		total += l.TotalBytes
		switch {
		case l.State.Finished():
			got += l.TotalBytes
			done++
		default:
			got += min(l.DownloadedBytes, l.TotalBytes)
		}
	}
	p.TotalBytes = total
	p.LayerCount = len(p.Layers)
	p.LayersDone = done
	p.DownloadedBytes = max(p.DownloadedBytes, got)
	if p.TotalKnown {
		p.DownloadedBytes = min(p.DownloadedBytes, p.TotalBytes)
	}
	p.Percent = Percent(p.DownloadedBytes, p.TotalBytes, p.State)
}

// Percent is 0-100, and exactly 100 once a pull has completed.
func Percent(got, total int64, state PullState) float64 {
	if state == PullCompleted || state == PullCached {
		return 100
	}
	if total <= 0 {
		return 0
	}
	pc := float64(got) * 100 / float64(total)
	if pc > 100 {
		pc = 100
	}
	// Two decimals are enough for a bar and keep the JSON short.
	return float64(int64(pc*100)) / 100
}

// Clone returns a deep copy, so a snapshot handed to another goroutine can't be mutated.
func (p Pull) Clone() Pull {
	c := p
	c.Pods = append(make([]PodRef, 0, len(p.Pods)), p.Pods...)
	c.Layers = append(make([]Layer, 0, len(p.Layers)), p.Layers...)
	if p.ETASeconds != nil {
		v := *p.ETASeconds
		c.ETASeconds = &v
	}
	if p.CompletedAt != nil {
		v := *p.CompletedAt
		c.CompletedAt = &v
	}
	return c
}
