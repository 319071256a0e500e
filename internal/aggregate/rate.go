package aggregate

import "time"

// sample is one observation of a pull's downloaded bytes, timed by the agent's clock (the
// poll that saw them), so the network and the report interval add no error to the rate.
type sample struct {
	t time.Time
	b int64
}

// meter estimates a pull's rate as the bytes gained over a short window ending at the
// latest moment the byte count is known, interpolating linearly between observations.
// An EWMA lags a steady download by several time constants and never reaches zero on
// its own; a window follows a change in one window length and reads exactly 0 once the
// window holds no growth.
type meter struct {
	samples []sample
}

// observe records that the pull had b bytes at agent time t.
func (m *meter) observe(t time.Time, b int64, window time.Duration) {
	if n := len(m.samples); n > 0 {
		last := &m.samples[n-1]
		if !t.After(last.t) {
			last.b = max(last.b, b)
			return
		}
		b = max(b, last.b)
	}
	m.samples = append(m.samples, sample{t, b})
	// Keep one sample older than the window, to interpolate the window's start.
	cut := t.Add(-window)
	i := 0
	for i+1 < len(m.samples) && !m.samples[i+1].t.After(cut) {
		i++
	}
	if i > 0 {
		m.samples = append(m.samples[:0], m.samples[i:]...)
	}
}

// last is the newest observation's time.
func (m *meter) last() time.Time {
	if len(m.samples) == 0 {
		return time.Time{}
	}
	return m.samples[len(m.samples)-1].t
}

// bytesAt interpolates the byte count at t; after the newest sample it is flat (the
// caller only asks up to a time at which it knows nothing arrived).
func (m *meter) bytesAt(t time.Time) int64 {
	s := m.samples
	if !t.After(s[0].t) {
		return s[0].b
	}
	for i := 1; i < len(s); i++ {
		if !t.After(s[i].t) {
			a, b := s[i-1], s[i]
			f := float64(t.Sub(a.t)) / float64(b.t.Sub(a.t))
			return a.b + int64(f*float64(b.b-a.b))
		}
	}
	return s[len(s)-1].b
}

// rate is bytes per second over the window ending at known. It is 0 until the samples
// span minSpan: one observation says nothing about speed.
func (m *meter) rate(known time.Time, window time.Duration) float64 {
	if len(m.samples) < 2 && (len(m.samples) == 0 || !known.After(m.samples[0].t)) {
		return 0
	}
	start := known.Add(-window)
	if first := m.samples[0].t; start.Before(first) {
		start = first
	}
	span := known.Sub(start)
	if span < minSpan {
		return 0
	}
	return float64(m.bytesAt(known)-m.bytesAt(start)) / span.Seconds()
}

// minSpan is the shortest stretch of observations a rate is computed from.
const minSpan = 500 * time.Millisecond

// lastBytes is the newest observation's byte count.
func (m *meter) lastBytes() int64 {
	if len(m.samples) == 0 {
		return 0
	}
	return m.samples[len(m.samples)-1].b
}
