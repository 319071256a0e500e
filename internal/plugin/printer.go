package plugin

import (
	"fmt"
	"io"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

// printer is one of follow's three outputs: a live terminal view, one text line per
// event, or the events' JSON.
type printer interface {
	// Snapshot shows the pulls the stream started (or resynced) with.
	Snapshot(pulls []api.Pull)
	// Event shows one lifecycle event; raw is its JSON exactly as the server sent it.
	Event(ev *api.PullEvent, raw string)
	// Message is a line about the outcome: queued, cached, present, done.
	Message(m string)
	// Notice is a line about the connection (reconnects, hints).
	Notice(m string)
	// Frame is called ~10 times a second; the live view redraws there, if anything changed.
	Frame(st *followState)
	Close()
}

func (f *followOptions) newPrinter() printer {
	switch {
	case f.output == "json":
		return &jsonPrinter{out: f.Streams.Out, errOut: f.Streams.ErrOut}
	case f.IsTerminal(f.Streams.Out):
		return newTTYPrinter(f.Streams.Out, f.TerminalWidth(f.Streams.Out), f.layers)
	}
	return &plainPrinter{out: f.Streams.Out, errOut: f.Streams.ErrOut}
}

// jsonPrinter keeps stdout to PullEvent lines only, so it can be piped to jq; everything
// else goes to stderr.
type jsonPrinter struct{ out, errOut io.Writer }

func (p *jsonPrinter) Snapshot([]api.Pull) {}
func (p *jsonPrinter) Event(_ *api.PullEvent, raw string) {
	fmt.Fprintln(p.out, raw)
}
func (p *jsonPrinter) Message(m string)   { fmt.Fprintln(p.errOut, m) }
func (p *jsonPrinter) Notice(m string)    { fmt.Fprintln(p.errOut, m) }
func (p *jsonPrinter) Frame(*followState) {}
func (p *jsonPrinter) Close()             {}

type plainPrinter struct{ out, errOut io.Writer }

func (p *plainPrinter) Snapshot(pulls []api.Pull) {
	now := time.Now()
	for i := range pulls {
		ev := api.PullEvent{Type: "snapshot", Timestamp: now, NodeName: pulls[i].NodeName, Pull: pulls[i]}
		fmt.Fprintln(p.out, EventLine(&ev))
	}
}
func (p *plainPrinter) Event(ev *api.PullEvent, _ string) { fmt.Fprintln(p.out, EventLine(ev)) }
func (p *plainPrinter) Message(m string)                  { fmt.Fprintln(p.out, m) }
func (p *plainPrinter) Notice(m string)                   { fmt.Fprintln(p.errOut, m) }
func (p *plainPrinter) Frame(*followState)                {}
func (p *plainPrinter) Close()                            {}

// ttyPrinter draws the live view. Everything goes through the Live block, notices
// included: a line written around it would throw its cursor arithmetic off.
type ttyPrinter struct {
	live   *Live
	layers bool
	width  int
}

func newTTYPrinter(w io.Writer, width int, layers bool) *ttyPrinter {
	return &ttyPrinter{live: NewLive(w, width), layers: layers, width: width}
}

func (p *ttyPrinter) Snapshot(pulls []api.Pull) {
	now := time.Now()
	for i := range pulls {
		if pulls[i].State == api.PullCompleted || pulls[i].State == api.PullFailed {
			p.live.Commit(finishedLine(&pulls[i], now))
		}
	}
}

func (p *ttyPrinter) Event(ev *api.PullEvent, _ string) {
	switch {
	case ev.Type == api.EventPullCompleted && ev.Pull.State == api.PullCompleted,
		ev.Type == api.EventPullFailed:
		p.live.Commit(finishedLine(&ev.Pull, time.Time{}))
	}
}

func (p *ttyPrinter) Message(m string) { p.live.Commit(m) }
func (p *ttyPrinter) Notice(m string)  { p.live.Commit("! " + m) }

func (p *ttyPrinter) Frame(st *followState) {
	p.live.SetLines(LiveLines(st.active(), p.layers, p.width))
	_ = p.live.Flush()
}

func (p *ttyPrinter) Close() { _ = p.live.Flush() }

// finishedLine is the permanent line of a finished pull; with now set it says how long ago.
func finishedLine(p *api.Pull, now time.Time) string {
	head := fmt.Sprintf("%s on %s: ", imageOf(p), p.NodeName)
	ago := ""
	if !now.IsZero() && p.CompletedAt != nil {
		ago = ", " + formatAge(*p.CompletedAt, now) + " ago"
	}
	took := ""
	if p.CompletedAt != nil && !p.StartedAt.IsZero() {
		took = " in " + formatSeconds(p.CompletedAt.Sub(p.StartedAt).Seconds())
	}
	switch p.State {
	case api.PullFailed:
		return head + "failed" + took + ago + ": " + lastOr(p.Error, "unknown error")
	case api.PullCached:
		return head + "already present"
	}
	return head + "pull complete, " + formatBytes(p.TotalBytes) + took + ago
}

// LiveLines is the live block: a progress line per unfinished pull and, with layers, a
// line per layer under it.
func LiveLines(pulls []api.Pull, layers bool, width int) []string {
	bw := 10
	switch {
	case width >= 140:
		bw = 30
	case width >= 100:
		bw = 20
	}
	var out []string
	for i := range pulls {
		p := &pulls[i]
		head := fmt.Sprintf("%s on %s", imageOf(p), p.NodeName)
		switch p.State {
		case api.PullQueued:
			out = append(out, head+"  queued: waiting for the kubelet to start pulling")
			continue
		case api.PullStalled:
			out = append(out, fmt.Sprintf("%s  %s  %s  stalled, no bytes since %s", head, formatProgress(p, bw), formatSize(p), p.UpdatedAt.Local().Format("15:04:05")))
		default:
			line := fmt.Sprintf("%s  %s  %s  %s", head, formatProgress(p, bw), formatSize(p), formatSpeed(p.BytesPerSec))
			if p.ETASeconds != nil {
				line += "  eta " + formatSeconds(*p.ETASeconds)
			}
			if p.LayerCount > 0 {
				line += fmt.Sprintf("  layers %d/%d", p.LayersDone, p.LayerCount)
			}
			out = append(out, line)
		}
		if layers {
			for _, l := range p.Layers {
				out = append(out, layerLine(&l))
			}
		}
	}
	return out
}

func layerLine(l *api.Layer) string {
	const bw = 10
	switch l.State {
	case api.LayerExists:
		return fmt.Sprintf("  %s  already exists", shortDigest(l.Digest))
	case api.LayerDone:
		return fmt.Sprintf("  %s  %s  %s  pull complete", shortDigest(l.Digest), bar(100, bw), formatBytes(l.TotalBytes))
	case api.LayerWaiting:
		return fmt.Sprintf("  %s  waiting", shortDigest(l.Digest))
	case api.LayerFailed:
		return fmt.Sprintf("  %s  failed", shortDigest(l.Digest))
	}
	pct := 0.0
	if l.TotalBytes > 0 {
		pct = float64(l.DownloadedBytes) / float64(l.TotalBytes) * 100
	}
	return fmt.Sprintf("  %s  %s  %s/%s  downloading", shortDigest(l.Digest), bar(pct, bw), formatBytes(l.DownloadedBytes), formatBytes(l.TotalBytes))
}
