package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/internal/stream"
	"github.com/d44b/pulltrace/pkg/api"
	"github.com/d44b/pulltrace/pkg/sseclient"
)

type harness struct {
	t     *testing.T
	srv   *Server
	http  *httptest.Server
	log   *bytes.Buffer
	clock time.Time
	mu    sync.Mutex
	seq   uint64
}

type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func newHarness(t *testing.T, token string, sc stream.Config, ac aggregate.Config) *harness {
	t.Helper()
	h := &harness{t: t, log: &bytes.Buffer{}, clock: time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)}
	ac.Now = func() time.Time { h.mu.Lock(); defer h.mu.Unlock(); return h.clock }
	srv, err := New(Config{Version: "test", Token: func() (string, error) { return token, nil }, Aggregate: ac, Stream: sc, EventLog: h.log})
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	h.http = httptest.NewServer(srv.Handler())
	t.Cleanup(h.http.Close)
	return h
}

func (h *harness) advance(d time.Duration) {
	h.mu.Lock()
	h.clock = h.clock.Add(d)
	h.mu.Unlock()
}

func (h *harness) now() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.clock
}

func layer(i int, total, got int64, st api.LayerState) api.Layer {
	return api.Layer{Digest: fmt.Sprintf("sha256:%064d", i), MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", TotalBytes: total, DownloadedBytes: got, State: st}
}

func pull(id string, state api.PullState, layers ...api.Layer) api.Pull {
	p := api.Pull{ID: id, NodeName: "node-1", ImageRef: "registry.local/team/app", State: state, TotalKnown: true,
		StartedAt: time.Date(2026, 1, 1, 9, 59, 0, 0, time.UTC), Pods: []api.PodRef{}, Layers: layers}
	p.Summarize()
	if state.Finished() {
		t := time.Date(2026, 1, 1, 10, 5, 0, 0, time.UTC)
		p.CompletedAt = &t
	}
	return p
}

func (h *harness) report(node, agent string, pulls ...api.Pull) api.AgentReport {
	h.seq++
	return api.AgentReport{SchemaVersion: "v1", NodeName: node, AgentID: agent, Sequence: h.seq, Timestamp: h.now(), ContainerdConnected: true, Pulls: pulls}
}

func (h *harness) post(token string, body any) (int, string) {
	h.t.Helper()
	var b []byte
	switch v := body.(type) {
	case []byte:
		b = v
	default:
		b, _ = json.Marshal(v)
	}
	req, _ := http.NewRequest(http.MethodPost, h.http.URL+"/api/v1/report", bytes.NewReader(b))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

func (h *harness) pulls(query string) []api.Pull {
	h.t.Helper()
	resp, err := http.Get(h.http.URL + "/api/v1/pulls" + query)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var l api.PullList
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		h.t.Fatal(err)
	}
	return l.Pulls
}

func TestReportRejectionsLoseNothing(t *testing.T) {
	h := newHarness(t, "s3cret", stream.Config{}, aggregate.Config{})
	good := h.report("node-1", "a1", pull("p1", api.PullActive, layer(1, 100, 40, api.LayerDownloading)))
	if code, body := h.post("s3cret", good); code != 200 {
		t.Fatalf("good report: %d %s", code, body)
	}
	bad := func(r api.AgentReport, mutate func(*api.AgentReport)) api.AgentReport {
		b, _ := json.Marshal(r)
		var c api.AgentReport
		_ = json.Unmarshal(b, &c)
		h.seq++
		c.Sequence = h.seq
		mutate(&c)
		return c
	}
	cases := []struct {
		name, token string
		body        any
		code        int
		want        string
	}{
		{"no token", "", good, 401, "bearer token"},
		{"wrong token", "guess", good, 401, "bearer token"},
		{"too large", "s3cret", append([]byte(`{"pad":"`), append(bytes.Repeat([]byte("x"), 2<<20), '"', '}')...), 413, "larger than"},
		{"not json", "s3cret", []byte("hello"), 400, "not a JSON AgentReport"},
		{"schema", "s3cret", bad(good, func(r *api.AgentReport) { r.SchemaVersion = "v9" }), 400, "schemaVersion"},
		{"node", "s3cret", bad(good, func(r *api.AgentReport) { r.NodeName = "" }), 400, "nodeName"},
		// A bad pull is left out and named; the report is applied without it.
		{"negative", "s3cret", bad(good, func(r *api.AgentReport) { r.Pulls[0].DownloadedBytes = -5 }), 200, "pulls[0].downloadedBytes"},
		{"offset above total", "s3cret", bad(good, func(r *api.AgentReport) { r.Pulls[0].Layers[0].DownloadedBytes = 500 }), 200, "pulls[0].layers[0].downloadedBytes"},
	}
	for _, c := range cases {
		code, body := h.post(c.token, c.body)
		var e api.ErrorResponse
		var rr api.ReportResponse
		switch {
		case code != c.code:
			t.Errorf("%s: got %d %s, want %d with %q", c.name, code, body, c.code, c.want)
		case code == 200 && (json.Unmarshal([]byte(body), &rr) != nil || rr.RejectedCount != 1 || !strings.Contains(rr.Rejected[0].Error, c.want) || rr.Rejected[0].ID != "p1"):
			t.Errorf("%s: got %s, want the pull named with %q", c.name, body, c.want)
		case code != 200 && (json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, c.want)):
			t.Errorf("%s: got %d %s, want %d with %q", c.name, code, body, c.code, c.want)
		}
	}
	ps := h.pulls("")
	if len(ps) != 1 || ps[0].DownloadedBytes != 40 || ps[0].State != api.PullActive {
		t.Fatalf("state after rejections: %+v", ps)
	}
}

func TestSnapshotsReplaceAndStaleOnesAreIgnored(t *testing.T) {
	h := newHarness(t, "", stream.Config{}, aggregate.Config{})
	r1 := h.report("node-1", "a1", pull("p1", api.PullActive, layer(1, 100, 10, api.LayerDownloading)))
	h.advance(time.Second)
	r2 := h.report("node-1", "a1", pull("p1", api.PullActive, layer(1, 100, 60, api.LayerDownloading)))
	h.post("", r2)
	h.post("", r1) // late and older
	h.post("", r2) // duplicate
	if ps := h.pulls(""); len(ps) != 1 || ps[0].DownloadedBytes != 60 {
		t.Fatalf("stale report rolled back state: %+v", ps)
	}
	// A heartbeat for the applied sequence is fine; one the server cannot place asks for a resync.
	hb := r2
	hb.Heartbeat, hb.Pulls = true, nil
	if _, body := h.post("", hb); strings.Contains(body, "resync") {
		t.Fatalf("heartbeat of current sequence asked to resync: %s", body)
	}
	hb.AgentID = "restarted"
	if _, body := h.post("", hb); !strings.Contains(body, `"resync":true`) {
		t.Fatalf("unknown agent's heartbeat did not ask for a resync: %s", body)
	}
}

// readEvents collects SSE events until n events or the timeout.
func readEvents(t *testing.T, url string, header http.Header, n int, timeout time.Duration) ([]sseclient.Event, *sseclient.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	r := sseclient.NewReader(resp.Body)
	var out []sseclient.Event
	for len(out) < n {
		ev, err := r.Next()
		if err != nil {
			break
		}
		out = append(out, ev)
	}
	return out, r
}

// types names each event: the SSE event name for named events (the snapshot), else the
// type inside the JSON of a plain message.
func types(evs []sseclient.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, typeOf(e))
	}
	return strings.Join(s, " ")
}

func typeOf(e sseclient.Event) string {
	if e.Type != "" {
		return e.Type
	}
	var pe api.PullEvent
	if err := json.Unmarshal([]byte(e.Data), &pe); err != nil {
		return "?"
	}
	return string(pe.Type)
}

func TestLifecycleEventsOverSSEAndLog(t *testing.T) {
	h := newHarness(t, "", stream.Config{}, aggregate.Config{})
	done := make(chan []sseclient.Event)
	go func() {
		evs, _ := readEvents(t, h.http.URL+"/api/v1/events", nil, 11, 10*time.Second)
		done <- evs
	}()
	waitFor(t, func() bool { return h.srv.Broker.Clients() == 1 })
	steps := []api.Pull{
		pull("p1", api.PullActive, layer(1, 1000, 0, api.LayerWaiting), layer(2, 500, 100, api.LayerDownloading)),
		pull("p1", api.PullActive, layer(1, 1000, 200, api.LayerDownloading), layer(2, 500, 300, api.LayerDownloading)),
		pull("p1", api.PullActive, layer(1, 1000, 600, api.LayerDownloading), layer(2, 500, 500, api.LayerDone)),
		pull("p1", api.PullCompleted, layer(1, 1000, 1000, api.LayerDone), layer(2, 500, 500, api.LayerDone)),
	}
	for _, p := range steps {
		h.advance(2 * time.Second)
		if code, body := h.post("", h.report("node-1", "a1", p)); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
	}
	evs := <-done
	// Layer events come before the pull event of the same report.
	want := "snapshot pull.started layer.started layer.started layer.progress pull.progress layer.progress layer.completed pull.progress layer.completed pull.completed"
	if got := types(evs); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	var last uint64
	for _, e := range evs {
		id, ok := api.ParseEventID(e.ID)
		if !ok || id.Epoch != h.srv.Broker.Epoch() {
			t.Fatalf("id %q lacks this process's epoch %q", e.ID, h.srv.Broker.Epoch())
		}
		if e.Type != "snapshot" && id.Seq <= last {
			t.Fatalf("ids not increasing: %s after %d", e.ID, last)
		}
		last = id.Seq
		// PullEvents are plain messages, so EventSource.onmessage receives them (finding 10).
		if e.Type != "" && e.Type != "snapshot" {
			t.Fatalf("named event %q: PullEvents must be plain data messages", e.Type)
		}
	}
	var snap api.PullList
	if err := json.Unmarshal([]byte(evs[0].Data), &snap); err != nil || snap.SchemaVersion != "v1" || snap.Pulls == nil {
		t.Fatalf("snapshot %v: %s", err, evs[0].Data)
	}
	var mid api.PullEvent
	_ = json.Unmarshal([]byte(evs[5].Data), &mid)
	if mid.Pull.BytesPerSec <= 0 || mid.Pull.ETASeconds == nil || mid.Pull.Percent <= 0 {
		t.Fatalf("no rate/ETA mid-pull: %+v", mid.Pull)
	}
	var fin api.PullEvent
	_ = json.Unmarshal([]byte(evs[len(evs)-1].Data), &fin)
	if fin.Pull.Percent != 100 || fin.Pull.CompletedAt == nil || fin.Pull.ETASeconds != nil {
		t.Fatalf("completed event: %+v", fin.Pull)
	}
	lines := strings.Split(strings.TrimSpace(h.log.String()), "\n")
	if len(lines) != len(evs)-1 {
		t.Fatalf("want one log line per event (%d), got %d", len(evs)-1, len(lines))
	}
	for i, l := range lines {
		var ev api.PullEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.SchemaVersion != "v1" || string(ev.Type) != typeOf(evs[i+1]) {
			t.Fatalf("log line %d: %v %s", i, err, l)
		}
	}
}

func TestVanishedPullFailsAndHistoryExpires(t *testing.T) {
	h := newHarness(t, "", stream.Config{}, aggregate.Config{HistoryTTL: time.Minute})
	h.post("", h.report("node-1", "a1", pull("p1", api.PullActive, layer(1, 100, 10, api.LayerDownloading))))
	h.advance(time.Second)
	h.post("", h.report("node-1", "a1"))
	ps := h.pulls("")
	if len(ps) != 1 || ps[0].State != api.PullFailed || ps[0].Error == "" || ps[0].CompletedAt == nil {
		t.Fatalf("a pull that vanished unfinished must fail: %+v", ps)
	}
	h.advance(2 * time.Minute)
	h.srv.Store.Expire()
	if ps := h.pulls(""); len(ps) != 0 {
		t.Fatalf("history not expired: %d", len(ps))
	}
}

func TestFiltersAndCaps(t *testing.T) {
	h := newHarness(t, "", stream.Config{}, aggregate.Config{MaxPerNode: 3})
	var ps []api.Pull
	for i := range 3 {
		p := pull(fmt.Sprintf("done-%d", i), api.PullCompleted, layer(i, 10, 10, api.LayerDone))
		p.StartedAt = p.StartedAt.Add(time.Duration(i) * time.Second)
		ps = append(ps, p)
	}
	h.post("", h.report("node-1", "a1", ps...))
	active := pull("live", api.PullActive, layer(9, 10, 5, api.LayerDownloading))
	active.ImageRef = "registry.local/other/thing:v1"
	h.post("", h.report("node-1", "a1", append(ps, active)...))
	got := h.pulls("")
	if len(got) != 3 {
		t.Fatalf("cap of 3 per node holds %d", len(got))
	}
	for _, p := range got {
		if p.ID == "done-0" {
			t.Fatal("the oldest finished pull should have been dropped first")
		}
	}
	if st := h.srv.Store.TakeStats(); st.Dropped != 1 {
		t.Fatalf("dropped %d", st.Dropped)
	}
	if f := h.pulls("?image=other&state=active"); len(f) != 1 || f[0].ID != "live" {
		t.Fatalf("filter: %+v", f)
	}
	if f := h.pulls("?node=node-2"); len(f) != 0 {
		t.Fatalf("node filter: %d", len(f))
	}
	resp, _ := http.Get(h.http.URL + "/api/v1/pulls?state=exploded")
	if resp.StatusCode != 400 {
		t.Fatalf("bad state filter: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

func TestSSEResumeAndHeartbeat(t *testing.T) {
	h := newHarness(t, "", stream.Config{Heartbeat: 50 * time.Millisecond, Window: 8}, aggregate.Config{})
	for i := range 3 {
		h.advance(time.Second)
		h.post("", h.report("node-1", "a1", pull("p1", api.PullActive, layer(1, 100, int64(10*(i+1)), api.LayerDownloading))))
	}
	last := h.srv.Broker.LastID()
	back := func(n uint64) string { return api.EventID{Epoch: last.Epoch, Seq: last.Seq - n}.String() }
	// Resume from two events back: exactly the missed ones, no snapshot.
	hdr := http.Header{"Last-Event-ID": {back(2)}}
	evs, _ := readEvents(t, h.http.URL+"/api/v1/events", hdr, 2, 3*time.Second)
	if len(evs) != 2 || evs[0].ID != back(1) || evs[1].ID != back(0) {
		t.Fatalf("resume: %+v", evs)
	}
	// The same sequence number from another process (a restart, another replica) is no
	// place in this stream: a snapshot (finding 11).
	for _, foreign := range []string{"0123456789ab-" + fmt.Sprint(last.Seq-2), fmt.Sprint(last.Seq - 2), "garbage"} {
		evs, _ = readEvents(t, h.http.URL+"/api/v1/events", http.Header{"Last-Event-ID": {foreign}}, 1, 3*time.Second)
		if len(evs) != 1 || evs[0].Type != "snapshot" || evs[0].ID != last.String() {
			t.Fatalf("resume from %q: %+v", foreign, evs)
		}
	}
	// Far outside the window: a fresh snapshot.
	for i := range 10 {
		h.advance(time.Second)
		h.post("", h.report("node-1", "a1", pull("p1", api.PullActive, layer(1, 100, int64(40+i), api.LayerDownloading))))
	}
	evs, _ = readEvents(t, h.http.URL+"/api/v1/events?lastEventId="+last.Epoch+"-1", nil, 1, 3*time.Second)
	if len(evs) != 1 || evs[0].Type != "snapshot" || !strings.Contains(evs[0].Data, `"id":"p1"`) {
		t.Fatalf("stale resume: %+v", evs)
	}
	// Idle stream: heartbeats arrive as comments.
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.http.URL+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := strings.Count(string(b), ": ping"); n < 3 {
		t.Fatalf("want heartbeats every 50ms, got %d in 400ms", n)
	}
}

// A client that stops reading must not delay others; when it reads again it is resynced
// with a snapshot instead of silently missing events.
func TestSlowClientDoesNotDelayOthers(t *testing.T) {
	h := newHarness(t, "", stream.Config{WindowBytes: 256 << 10, WriteTimeout: 2 * time.Second}, aggregate.Config{})
	conn, err := net.Dial("tcp", h.http.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
	waitFor(t, func() bool { return h.srv.Broker.Clients() == 1 })

	// The fast client reads until the last report's state arrives (progress it is behind
	// on may come coalesced into the latest).
	fast := make(chan int)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.http.URL+"/api/v1/events", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fast <- 0
			return
		}
		defer resp.Body.Close()
		rd := sseclient.NewReader(resp.Body)
		for n := 1; ; n++ {
			ev, err := rd.Next()
			if err != nil {
				fast <- 0
				return
			}
			// The state comes as an event, or in a snapshot if it fell out of the window.
			var pe api.PullEvent
			var snap api.PullList
			switch {
			case ev.Type == "" && json.Unmarshal([]byte(ev.Data), &pe) == nil && pe.Type == api.EventPullProgress && pe.Pull.DownloadedBytes == 300*30,
				ev.Type == "snapshot" && json.Unmarshal([]byte(ev.Data), &snap) == nil && len(snap.Pulls) == 1 && snap.Pulls[0].DownloadedBytes == 300*30:
				fast <- n
				return
			}
		}
	}()
	waitFor(t, func() bool { return h.srv.Broker.Clients() == 2 })
	start := time.Now()
	big := strings.Repeat("x", 1900) // fills socket buffers of the stuck client quickly
	for i := range 300 {
		h.advance(time.Second)
		// 30 moving layers: 31 events of 2 KB per report, some 18 MB in all, more than
		// loopback socket buffers take from a client that does not read.
		var ls []api.Layer
		for j := range 30 {
			ls = append(ls, layer(j, 1_000_000, int64(i+1), api.LayerDownloading))
		}
		p := pull("p1", api.PullActive, ls...)
		p.ImageRef = "registry.local/team/app-" + big
		h.post("", h.report("node-1", "a1", p))
	}
	if n := <-fast; n == 0 {
		t.Fatal("the fast client never got the last report's state")
	}
	if w := h.srv.Broker.WindowBytes(); w > 256<<10 {
		t.Fatalf("replay window holds %d bytes, over its 256 KiB bound", w)
	}
	t.Logf("300 reports delivered to the fast client in %s while another client was stuck", time.Since(start))
	// The stuck client now reads: it must find a snapshot after the overflow.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	snapshots := 0
	for snapshots < 2 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stuck client after %d snapshots: %v", snapshots, err)
		}
		if strings.HasPrefix(line, "event: snapshot") {
			snapshots++
		}
	}
}

func TestMetricsExposition(t *testing.T) {
	h := newHarness(t, "", stream.Config{}, aggregate.Config{})
	h.post("", h.report("node-1", "a1", pull("p1", api.PullActive, layer(1, 100, 10, api.LayerDownloading))))
	h.advance(time.Second)
	h.post("", h.report("node-1", "a1", pull("p1", api.PullCompleted, layer(1, 100, 100, api.LayerDone))))
	h.srv.observe()
	// Bytes count from the first report on: the 10 the pull had before it are not traffic
	// this server saw move, so pull_bytes_total holds 90.
	ms := httptest.NewServer(h.srv.MetricsHandler())
	defer ms.Close()
	resp, err := http.Get(ms.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`pulltrace_pulls_active{node="node-1"} 0`, `pulltrace_pulls_total{node="node-1",state="completed"} 1`, "pulltrace_pull_duration_seconds_count 1",
		`pulltrace_pull_bytes_total{node="node-1"} 90`, "pulltrace_agents_connected 1", `pulltrace_reports_total{result="accepted"} 2`,
		"pulltrace_sse_clients 0", `pulltrace_build_info{schema="v1",version="test"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The UI owns every path the API does not; unknown API paths still answer JSON.
func TestUIAndAPIRoutes(t *testing.T) {
	srv, err := New(Config{Version: "test", UI: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ui") })})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	for path, want := range map[string]string{"/": "ui", "/assets/x.js": "ui", "/api/v1/nope": `"error"`, "/healthz": `"ok":true`, "/readyz": `"ok":true`, "/api/v1/version": `"version":"test"`} {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), want) {
			t.Errorf("%s: %d %s, want %s", path, resp.StatusCode, b, want)
		}
	}
}
