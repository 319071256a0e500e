package plugin

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/d44b/pulltrace/pkg/api"
)

// formatBytes prints a byte count in binary units, the way registries and docker size layers.
func formatBytes(n int64) string {
	if n < 0 {
		n = 0
	}
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	v := float64(n) / unit
	i := 0
	for v >= unit && i < len(units)-1 {
		v /= unit
		i++
	}
	if v >= 100 {
		return fmt.Sprintf("%.0f%s", v, units[i])
	}
	return fmt.Sprintf("%.1f%s", v, units[i])
}

func formatSpeed(bps float64) string {
	if bps <= 0 || math.IsNaN(bps) || math.IsInf(bps, 0) {
		return "-"
	}
	return formatBytes(int64(bps)) + "/s"
}

// formatSeconds prints a short duration: 8s, 1m20s, 2h5m.
func formatSeconds(s float64) string {
	if s < 0 || math.IsNaN(s) || math.IsInf(s, 0) {
		return "-"
	}
	d := time.Duration(math.Round(s)) * time.Second
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

func formatETA(p *api.Pull) string {
	if p.ETASeconds == nil || p.State.Finished() {
		return "-"
	}
	return formatSeconds(*p.ETASeconds)
}

// formatAge is kubectl's AGE column.
func formatAge(t time.Time, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

// bar draws [=====>    ] with width cells between the brackets.
func bar(pct float64, width int) string {
	if width < 3 {
		width = 3
	}
	pct = math.Max(0, math.Min(100, pct))
	filled := int(math.Floor(pct / 100 * float64(width)))
	var b strings.Builder
	b.Grow(width + 2)
	b.WriteByte('[')
	switch {
	case filled >= width:
		b.WriteString(strings.Repeat("=", width))
	case filled > 0:
		b.WriteString(strings.Repeat("=", filled-1))
		b.WriteByte('>')
		b.WriteString(strings.Repeat(" ", width-filled))
	default:
		b.WriteString(strings.Repeat(" ", width))
	}
	b.WriteByte(']')
	return b.String()
}

func formatPercent(p *api.Pull) string {
	if !p.TotalKnown && !p.State.Finished() {
		return "?"
	}
	return fmt.Sprintf("%.0f%%", math.Floor(p.Percent))
}

// formatProgress is the PROGRESS column: a bar and the percentage.
func formatProgress(p *api.Pull, width int) string {
	switch p.State {
	case api.PullQueued:
		return "-"
	case api.PullCached:
		return bar(100, width) + " 100%"
	}
	if !p.TotalKnown && !p.State.Finished() {
		return bar(0, width) + " ?"
	}
	return bar(p.Percent, width) + " " + formatPercent(p)
}

// formatSize is downloaded/total, or just the size once nothing more will arrive.
func formatSize(p *api.Pull) string {
	switch {
	case p.State == api.PullQueued:
		return "-"
	case p.State == api.PullCached || (p.State == api.PullCompleted && p.DownloadedBytes == p.TotalBytes):
		return formatBytes(p.TotalBytes)
	case !p.TotalKnown:
		return formatBytes(p.DownloadedBytes) + "/?"
	}
	return formatBytes(p.DownloadedBytes) + "/" + formatBytes(p.TotalBytes)
}

func formatPullSpeed(p *api.Pull) string {
	if p.State != api.PullActive {
		return "-"
	}
	return formatSpeed(p.BytesPerSec)
}

// formatPods lists pods once each (a pod with two containers on one image is one pod).
func formatPods(pods []api.PodRef, limit int) string {
	var names []string
	for _, p := range pods {
		n := p.Namespace + "/" + p.PodName
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "<none>"
	}
	if limit > 0 && len(names) > limit {
		return strings.Join(names[:limit], ",") + fmt.Sprintf(",+%d", len(names)-limit)
	}
	return strings.Join(names, ",")
}

// shortDigest keeps "sha256:" and 12 hex digits, like docker's short ids.
func shortDigest(d string) string {
	algo, hex, ok := strings.Cut(d, ":")
	if !ok {
		if len(d) > 12 {
			return d[:12]
		}
		return d
	}
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return algo + ":" + hex
}

func imageOf(p *api.Pull) string {
	if p.ImageRef != "" {
		return p.ImageRef
	}
	if p.Repository != "" {
		return p.Repository
	}
	return p.ID
}

// truncate cuts s to width display cells (the live view must never wrap a line, or the
// cursor-up count would be off).
func truncate(s string, width int) string {
	if width <= 0 || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	if width == 1 {
		return string(r[:1])
	}
	return string(r[:width-1]) + "~"
}

// EventLine is the one-line text form of an event, for output that is not a terminal.
func EventLine(ev *api.PullEvent) string {
	p := &ev.Pull
	var b strings.Builder
	ts := ev.Timestamp
	if ts.IsZero() {
		ts = time.Now()
	}
	fmt.Fprintf(&b, "%s %-15s %s on %s", ts.Local().Format("15:04:05"), ev.Type, imageOf(p), nodeOf(ev))
	if ev.Layer != nil {
		l := ev.Layer
		fmt.Fprintf(&b, " layer %s %s/%s", shortDigest(l.Digest), formatBytes(l.DownloadedBytes), formatBytes(l.TotalBytes))
		if l.State != "" {
			fmt.Fprintf(&b, " %s", l.State)
		}
	} else {
		fmt.Fprintf(&b, " %s", p.State)
		if p.State != api.PullQueued {
			fmt.Fprintf(&b, " %s %s", formatSize(p), formatPercent(p))
			if p.LayerCount > 0 {
				fmt.Fprintf(&b, " layers %d/%d", p.LayersDone, p.LayerCount)
			}
		}
		if p.State == api.PullActive {
			fmt.Fprintf(&b, " %s", formatSpeed(p.BytesPerSec))
			if p.ETASeconds != nil {
				fmt.Fprintf(&b, " eta %s", formatSeconds(*p.ETASeconds))
			}
		}
		if p.State.Finished() && p.CompletedAt != nil && !p.StartedAt.IsZero() {
			fmt.Fprintf(&b, " in %s", formatSeconds(p.CompletedAt.Sub(p.StartedAt).Seconds()))
		}
	}
	if len(p.Pods) > 0 {
		fmt.Fprintf(&b, " pods=%s", formatPods(p.Pods, 3))
	}
	if p.Error != "" {
		fmt.Fprintf(&b, " error=%q", p.Error)
	}
	return b.String()
}

func nodeOf(ev *api.PullEvent) string {
	if ev.Pull.NodeName != "" {
		return ev.Pull.NodeName
	}
	if ev.NodeName != "" {
		return ev.NodeName
	}
	return "<unknown node>"
}
