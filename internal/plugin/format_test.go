package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func samplePull(state api.PullState, got, total int64) api.Pull {
	p := api.Pull{
		ID: "p1", NodeName: "node-1", ImageRef: "registry.local/shop/web:v1", Repository: "registry.local/shop/web",
		ManifestDigest: "sha256:" + strings.Repeat("ab", 32), State: state, TotalBytes: total, DownloadedBytes: got,
		TotalKnown: true, StartedAt: t0.Add(-90 * time.Second), LayerCount: 3, LayersDone: 1,
		Pods: []api.PodRef{{Namespace: "shop", PodName: "web-1", Container: "app"}, {Namespace: "shop", PodName: "web-1", Container: "sidecar"}},
		Layers: []api.Layer{
			{Digest: "sha256:" + strings.Repeat("1", 64), TotalBytes: total / 3, DownloadedBytes: total / 3, State: api.LayerDone},
			{Digest: "sha256:" + strings.Repeat("2", 64), TotalBytes: total / 3, DownloadedBytes: got - total/3, State: api.LayerDownloading},
			{Digest: "sha256:" + strings.Repeat("3", 64), TotalBytes: total / 3, State: api.LayerWaiting},
		},
	}
	if total > 0 {
		p.Percent = float64(got) / float64(total) * 100
	}
	if state == api.PullActive {
		p.BytesPerSec = 2 << 20
		eta := float64(total-got) / p.BytesPerSec
		p.ETASeconds = &eta
	}
	if state.Finished() {
		c := t0.Add(-30 * time.Second)
		p.CompletedAt = &c
	}
	return p
}

func TestFormatBytes(t *testing.T) {
	for in, want := range map[int64]string{0: "0B", 512: "512B", 1536: "1.5KiB", 12 << 20: "12.0MiB", 300 << 20: "300MiB", 5 << 30: "5.0GiB", -1: "0B"} {
		if got := formatBytes(in); got != want {
			t.Errorf("formatBytes(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[float64]string{0: "-", 8: "8s", 80: "1m20s", 3725: "1h02m", -3: "-"} {
		if got := formatSeconds(in); got != want && !(in == 0 && got == "0s") {
			t.Errorf("formatSeconds(%v) = %q, want %q", in, got, want)
		}
	}
	if formatSpeed(0) != "-" || formatSpeed(2<<20) != "2.0MiB/s" {
		t.Errorf("formatSpeed: %q %q", formatSpeed(0), formatSpeed(2<<20))
	}
}

func TestBar(t *testing.T) {
	for _, c := range []struct {
		pct  float64
		want string
	}{{0, "[          ]"}, {45, "[===>      ]"}, {100, "[==========]"}, {130, "[==========]"}, {10, "[>         ]"}} {
		if got := bar(c.pct, 10); got != c.want {
			t.Errorf("bar(%v) = %q, want %q", c.pct, got, c.want)
		}
	}
}

func TestEventLine(t *testing.T) {
	p := samplePull(api.PullActive, 6<<20, 12<<20)
	line := EventLine(&api.PullEvent{Type: api.EventPullProgress, Timestamp: t0, Pull: p})
	for _, want := range []string{"pull.progress", "registry.local/shop/web:v1 on node-1", "active 6.0MiB/12.0MiB 50%", "layers 1/3", "2.0MiB/s", "eta 3s", "pods=shop/web-1"} {
		if !strings.Contains(line, want) {
			t.Errorf("progress line %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "\n") {
		t.Errorf("not one line: %q", line)
	}
	l := p.Layers[1]
	line = EventLine(&api.PullEvent{Type: api.EventLayerProgress, Timestamp: t0, Pull: p, Layer: &l})
	if !strings.Contains(line, "layer sha256:222222222222 2.0MiB/4.0MiB downloading") {
		t.Errorf("layer line %q", line)
	}
	f := samplePull(api.PullFailed, 1<<20, 12<<20)
	f.Error = "unexpected EOF"
	line = EventLine(&api.PullEvent{Type: api.EventPullFailed, Timestamp: t0, Pull: f})
	if !strings.Contains(line, `error="unexpected EOF"`) || !strings.Contains(line, "failed") || !strings.Contains(line, "in 1m00s") {
		t.Errorf("failed line %q", line)
	}
	q := api.Pull{ID: "queued-1", NodeName: "node-2", ImageRef: "nginx:1", State: api.PullQueued}
	line = EventLine(&api.PullEvent{Type: api.EventPullStarted, Timestamp: t0, Pull: q})
	if !strings.HasSuffix(line, "nginx:1 on node-2 queued") {
		t.Errorf("queued line %q", line)
	}
}

func TestRenderTable(t *testing.T) {
	pulls := []api.Pull{samplePull(api.PullActive, 6<<20, 12<<20), samplePull(api.PullCompleted, 12<<20, 12<<20)}
	pulls[1].ImageRef, pulls[1].Pods = "docker.io/library/nginx:1.27", nil
	var b bytes.Buffer
	if err := RenderTable(&b, pulls, false, t0); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"IMAGE                          NODE     PODS         STATE       PROGRESS            SIZE             SPEED      ETA   AGE\n" +
		"registry.local/shop/web:v1     node-1   shop/web-1   active      [====>     ] 50%    6.0MiB/12.0MiB   2.0MiB/s   3s    90s\n" +
		"docker.io/library/nginx:1.27   node-1   <none>       completed   [==========] 100%   12.0MiB          -          -     90s\n"
	if b.String() != want {
		t.Fatalf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := RenderTable(&b, pulls[:1], true, t0); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], "AGE   LAYERS   DIGEST") || !strings.HasSuffix(lines[1], "1/3      sha256:"+strings.Repeat("ab", 32)) {
		t.Fatalf("wide table:\n%s", b.String())
	}
	for _, l := range lines {
		if strings.HasSuffix(l, " ") {
			t.Fatalf("trailing blank in %q", l)
		}
	}
}

func TestTableCells(t *testing.T) {
	q := api.Pull{State: api.PullQueued, ImageRef: "nginx", NodeName: "n", StartedAt: t0}
	row := TableRow(&q, false, t0)
	if row[4] != "-" || row[5] != "-" || row[6] != "-" || row[7] != "-" {
		t.Errorf("queued row %q", row)
	}
	u := samplePull(api.PullActive, 3<<20, 0)
	u.TotalKnown, u.Percent = false, 0
	row = TableRow(&u, false, t0)
	if row[4] != "[          ] ?" || row[5] != "3.0MiB/?" {
		t.Errorf("unknown total row %q", row)
	}
	many := []api.PodRef{{Namespace: "a", PodName: "1"}, {Namespace: "a", PodName: "2"}, {Namespace: "a", PodName: "3"}, {Namespace: "a", PodName: "4"}}
	if got := formatPods(many, 2); got != "a/1,a/2,+2" {
		t.Errorf("formatPods = %q", got)
	}
}

func TestLiveRedraw(t *testing.T) {
	var b bytes.Buffer
	l := NewLive(&b, 30)
	l.SetLines([]string{"pull a  [=>   ] 20%", "pull b  [     ] 0%"})
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	first := b.String()
	if first != "\x1b[2Kpull a  [=>   ] 20%\n\x1b[2Kpull b  [     ] 0%\n" {
		t.Fatalf("first frame %q", first)
	}
	b.Reset()
	// Nothing changed: nothing is written (the 10 fps tick is free when idle).
	l.SetLines([]string{"pull a  [=>   ] 20%", "pull b  [     ] 0%"})
	_ = l.Flush()
	if b.Len() != 0 {
		t.Fatalf("idle frame wrote %q", b.String())
	}
	l.Commit("pull a: pull complete")
	l.SetLines([]string{"pull b  [==>  ] 40%"})
	_ = l.Flush()
	want := "\r\x1b[2A\x1b[2Kpull a: pull complete\n\x1b[2Kpull b  [==>  ] 40%\n"
	if b.String() != want {
		t.Fatalf("second frame %q, want %q", b.String(), want)
	}
	b.Reset()
	l.SetLines(nil)
	_ = l.Flush()
	if b.String() != "\r\x1b[1A\x1b[J" {
		t.Fatalf("shrinking frame %q", b.String())
	}
	b.Reset()
	l.SetLines([]string{strings.Repeat("x", 100)})
	_ = l.Flush()
	if b.String() != "\x1b[2K"+strings.Repeat("x", 28)+"~\n" {
		t.Fatalf("long line not cut to the width: %q", b.String())
	}
}

func TestTTYPrinterNeverClearsTheScreen(t *testing.T) {
	var b bytes.Buffer
	pr := newTTYPrinter(&b, 120, true)
	st := newFollowState(&target{kind: "node", node: "node-1"})
	for i, got := range []int64{0, 2 << 20, 4 << 20, 8 << 20, 12 << 20} {
		p := samplePull(api.PullActive, got, 12<<20)
		typ := api.EventPullProgress
		if i == 0 {
			typ = api.EventPullStarted
		}
		if got == 12<<20 {
			p = samplePull(api.PullCompleted, got, 12<<20)
			typ = api.EventPullCompleted
		}
		ev := api.PullEvent{Type: typ, Timestamp: t0, Pull: p}
		st.apply(&ev)
		pr.Event(&ev, "")
		pr.Frame(st)
	}
	pr.Close()
	out := b.String()
	if strings.Count(out, "\x1b[4A") < 3 {
		t.Fatalf("expected redraws moving up over 4 lines (pull + 3 layers): %q", out)
	}
	for _, bad := range []string{"\x1b[2J", "\x1b[H", "\x1bc", "\x1b[3J"} {
		if strings.Contains(out, bad) {
			t.Fatalf("screen clear %q in %q", bad, out)
		}
	}
	if !strings.Contains(out, "registry.local/shop/web:v1 on node-1: pull complete, 12.0MiB in 1m00s") {
		t.Fatalf("no completion line: %q", out)
	}
	if !strings.HasSuffix(out, "\x1b[J") {
		t.Fatalf("the finished pull's live lines were not erased: %q", out)
	}
	if done, err := st.outcome(); !done || err != nil {
		t.Fatalf("node follow outcome %v %v", done, err)
	}
}

func TestLiveLines(t *testing.T) {
	p := samplePull(api.PullActive, 6<<20, 12<<20)
	lines := LiveLines([]api.Pull{p}, true, 80)
	want := []string{
		"registry.local/shop/web:v1 on node-1  [====>     ] 50%  6.0MiB/12.0MiB  2.0MiB/s  eta 3s  layers 1/3",
		"  sha256:111111111111  [==========]  4.0MiB  pull complete",
		"  sha256:222222222222  [====>     ]  2.0MiB/4.0MiB  downloading",
		"  sha256:333333333333  waiting",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("live lines:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if got := LiveLines([]api.Pull{p}, false, 80); len(got) != 1 {
		t.Fatalf("without layers: %q", got)
	}
}

func TestExitCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{exitErr(ExitPullFailed, nil, "x"), 1},
		{usageErr("x"), 2},
		{fmt.Errorf("wrapped: %w", exitErr(ExitForbidden, nil, "x")), 4},
		{context.Canceled, 130},
		{errors.New("boom"), 6},
	} {
		if got := ExitCode(c.err); got != c.want {
			t.Errorf("ExitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
	if !isNetworkError(&url.Error{Op: "Get", URL: "https://x", Err: &net.OpError{Op: "dial"}}) {
		t.Error("a dial error is a network error")
	}
}

// A layer event carries the pull's summary; the follower keeps the layers it held (the
// --layers view draws them) and takes the one that changed.
func TestFollowStateKeepsLayersAcrossLayerEvents(t *testing.T) {
	st := newFollowState(&target{node: "node-1"})
	p := api.Pull{ID: "p1", NodeName: "node-1", ImageRef: "r/x:1", State: api.PullActive, TotalBytes: 12 << 20, Pods: []api.PodRef{}}
	p.Layers = []api.Layer{{Digest: "sha256:a", TotalBytes: 4 << 20, State: api.LayerDownloading}, {Digest: "sha256:b", TotalBytes: 8 << 20, State: api.LayerWaiting}}
	st.apply(&api.PullEvent{Type: api.EventPullProgress, Pull: p})
	var wire api.PullEvent
	lev := api.PullEvent{SchemaVersion: "v1", Type: api.EventLayerProgress, NodeName: "node-1", Pull: p,
		Layer: &api.Layer{Digest: "sha256:a", TotalBytes: 4 << 20, DownloadedBytes: 2 << 20, State: api.LayerDownloading}}
	b, _ := json.Marshal(lev)
	if err := json.Unmarshal(b, &wire); err != nil || wire.Pull.Layers != nil {
		t.Fatalf("wire form %s: %v", b, err)
	}
	st.apply(&wire)
	got := st.pulls["p1"].Layers
	if len(got) != 2 || got[0].DownloadedBytes != 2<<20 || got[1].Digest != "sha256:b" {
		t.Fatalf("layers after a layer event: %+v", got)
	}
}
