package server

// Regression tests for the findings of issue #12, one or more per numbered finding, on the
// real HTTP stack. Each asserts a bounded answer, that the server stays up, that earlier
// data is kept and that fresh data still flows (h.stillServes).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d44b/pulltrace/pkg/api"
	"github.com/d44b/pulltrace/pkg/sseclient"
)

// hostile is a harness whose server logs into a buffer and can be configured.
func hostile(t *testing.T, mutate func(*Config)) (*harness, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	h := &harness{t: t, log: &bytes.Buffer{}, clock: time.Now().UTC().Truncate(time.Second)}
	cfg := Config{Version: "test", Token: func() (string, error) { return "", nil }, EventLog: h.log,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))}
	cfg.Aggregate.Now = h.now
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = srv
	h.http = httptest.NewServer(srv.Handler())
	t.Cleanup(h.http.Close)
	return h, logs
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.String()
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

// seed puts one active pull on node-1 that every test expects to survive.
func (h *harness) seed(token string) {
	h.t.Helper()
	if code, body := h.post(token, h.report("node-1", "a1", pull("keep", api.PullActive, layer(1, 1000, 100, api.LayerDownloading)))); code != 200 {
		h.t.Fatalf("seed: %d %s", code, body)
	}
}

// stillServes checks the server is up, still holds the seeded pull, and takes and shows a
// fresh report for it.
func (h *harness) stillServes(token string) {
	h.t.Helper()
	resp, err := http.Get(h.http.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		h.t.Fatalf("healthz: %v %v", err, resp)
	}
	resp.Body.Close()
	before := h.find("keep")
	if before == nil {
		h.t.Fatal("the earlier pull was lost")
	}
	h.advance(time.Second)
	got := before.DownloadedBytes + 1
	if code, body := h.post(token, h.report("node-1", "a1", pull("keep", api.PullActive, layer(1, 1000, got, api.LayerDownloading)))); code != 200 {
		h.t.Fatalf("fresh report: %d %s", code, body)
	}
	if p := h.find("keep"); p == nil || p.DownloadedBytes != got {
		h.t.Fatalf("fresh data does not flow: %+v", p)
	}
}

func (h *harness) find(id string) *api.Pull {
	for _, p := range h.pulls("?node=node-1") {
		if p.ID == id {
			return &p
		}
	}
	return nil
}

func (h *harness) postRaw(token string, body []byte) (int, []byte) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.http.URL+"/api/v1/report", bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// stuckFollowers opens n event streams that never read.
func stuckFollowers(t *testing.T, h *harness, n int) {
	t.Helper()
	for range n {
		c, err := net.Dial("tcp", h.http.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
	}
}

// Finding 1: followers, reading or not, do not hold up intake, and a reading follower gets
// every report's change.
func TestFinding1FollowersDoNotStallIntake(t *testing.T) {
	h, _ := hostile(t, nil)
	h.seed("")
	stuckFollowers(t, h, 100)
	waitFor(t, func() bool { return h.srv.Broker.Clients() == 100 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.http.URL+"/api/v1/events?node=node-2", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := sseclient.NewReader(resp.Body)
	if ev, err := rd.Next(); err != nil || ev.Type != "snapshot" {
		t.Fatalf("first event %+v %v", ev, err)
	}
	const reports = 200
	for i := range reports {
		h.advance(time.Second)
		var ls []api.Layer
		for j := range 20 {
			ls = append(ls, layer(j, 1<<20, int64(i+1)*1000, api.LayerDownloading))
		}
		p := pull("busy", api.PullActive, ls...)
		p.NodeName = "node-2"
		if code, body := h.post("", h.report("node-2", "a2", p)); code != 200 {
			t.Fatalf("report %d: %d %s", i, code, body)
		}
	}
	want := int64(reports) * 1000 * 20
	for {
		ev, err := rd.Next()
		if err != nil {
			t.Fatalf("follower did not get the last report: %v", err)
		}
		var pe api.PullEvent
		if json.Unmarshal([]byte(ev.Data), &pe) == nil && pe.Type == api.EventPullProgress && pe.Pull.DownloadedBytes == want {
			break
		}
	}
	h.stillServes("")
}

// Finding 2: a pull with a thousand moving layers costs a layer per layer event, not the
// pull; more layers than the cap are refused, bounded, and the window stays bounded.
func TestFinding2LayerEventsAreTheLayerNotThePull(t *testing.T) {
	h, _ := hostile(t, func(c *Config) { c.Stream.WindowBytes = 4 << 20 })
	h.seed("")
	mk := func(n int, got int64) api.Pull {
		ls := make([]api.Layer, n)
		for j := range ls {
			ls[j] = layer(j, 1<<20, got, api.LayerDownloading)
		}
		p := pull("wide", api.PullActive, ls...)
		p.NodeName = "node-2"
		return p
	}
	for i := range 5 {
		h.advance(time.Second)
		if code, body := h.post("", h.report("node-2", "a2", mk(api.MaxLayersPerPull, int64(i+1)))); code != 200 || strings.Contains(body, "rejected") {
			t.Fatalf("%d %s", code, body)
		}
	}
	if w := h.srv.Broker.WindowBytes(); w > 4<<20 {
		t.Fatalf("window holds %d bytes, over its bound", w)
	}
	// Every layer event line is one layer's size.
	for _, line := range strings.Split(strings.TrimSpace(h.log.String()), "\n") {
		if strings.Contains(line, `"type":"layer.`) && len(line) > 2048 {
			t.Fatalf("a layer event of %d bytes: %.200s", len(line), line)
		}
	}
	h.advance(time.Second)
	code, body := h.post("", h.report("node-2", "a2", mk(api.MaxLayersPerPull+1, 9)))
	var rr api.ReportResponse
	if code != 200 || json.Unmarshal([]byte(body), &rr) != nil || rr.RejectedCount != 1 || !strings.Contains(rr.Rejected[0].Error, "layers") || len(body) > 1024 {
		t.Fatalf("over the layer cap: %d %.300s", code, body)
	}
	h.stillServes("")
}

// Finding 3: clients that connect together share one snapshot, clients that never read
// cost nothing per event, and the pull list comes in pages.
func TestFinding3SharedSnapshotsAndPages(t *testing.T) {
	h, _ := hostile(t, nil)
	h.seed("")
	var ps []api.Pull
	for i := range 450 {
		p := pull(fmt.Sprintf("p%03d", i), api.PullCompleted, layer(i, 10, 10, api.LayerDone))
		p.StartedAt = p.StartedAt.Add(time.Duration(i) * time.Second)
		p.NodeName = "node-3"
		ps = append(ps, p)
	}
	if code, body := h.post("", h.report("node-3", "a3", ps...)); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	before := h.srv.Broker.SnapshotBuilds()
	stuckFollowers(t, h, 30)
	waitFor(t, func() bool { return h.srv.Broker.Clients() == 30 })
	// Nothing changed in between: one encode serves all 30.
	waitFor(t, func() bool { return h.srv.Broker.SnapshotBuilds() > before })
	if n := h.srv.Broker.SnapshotBuilds() - before; n > 2 {
		t.Fatalf("%d snapshot encodes for 30 clients of one store version", n)
	}
	// Pages: every pull exactly once, in list order, none bigger than the limit.
	seen := map[string]bool{}
	var last *api.Pull
	q := "?limit=100"
	for pages := 0; ; pages++ {
		resp, err := http.Get(h.http.URL + "/api/v1/pulls" + q)
		if err != nil {
			t.Fatal(err)
		}
		var l api.PullList
		err = json.NewDecoder(resp.Body).Decode(&l)
		resp.Body.Close()
		if err != nil || l.Metadata == nil || len(l.Pulls) > 100 || pages > 10 {
			t.Fatalf("page %d: %v %+v", pages, err, l.Metadata)
		}
		for i := range l.Pulls {
			p := &l.Pulls[i]
			if seen[p.ID] || (last != nil && api.ComparePulls(last, p) >= 0) {
				t.Fatalf("page %d repeats or misorders %s", pages, p.ID)
			}
			seen[p.ID], last = true, p
		}
		if l.Metadata.Continue == "" {
			break
		}
		q = "?limit=100&continue=" + l.Metadata.Continue
	}
	if len(seen) != 451 {
		t.Fatalf("pages held %d of 451 pulls", len(seen))
	}
	for _, bad := range []string{"?limit=-1", "?limit=x", "?continue=!!!", "?continue=e30", "?continue=" + strings.Repeat("A", 5000)} {
		resp, _ := http.Get(h.http.URL + "/api/v1/pulls" + bad)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || len(b) > 512 {
			t.Fatalf("%s: %d %.200s", bad, resp.StatusCode, b)
		}
	}
	h.stillServes("")
}

// Finding 4: the store holds what its memory cap allows, and followers beyond their cap get
// 503 with Retry-After (counted).
func TestFinding4CapsHold(t *testing.T) {
	h, _ := hostile(t, func(c *Config) {
		c.Aggregate.MaxBytes = 1 << 20
		c.Stream.MaxClients = 5
	})
	h.seed("")
	for n := range 20 {
		var ps []api.Pull
		for i := range 50 {
			var ls []api.Layer
			for j := range 10 {
				ls = append(ls, layer(j, 10, 10, api.LayerDone))
			}
			p := pull(fmt.Sprintf("n%d-p%d", n, i), api.PullCompleted, ls...)
			p.NodeName = ""
			ps = append(ps, p)
		}
		node := fmt.Sprintf("flood-%d", n)
		if code, body := h.post("", h.report(node, "f", ps...)); code != 200 || strings.Contains(body, "rejected") {
			t.Fatalf("%d %s", code, body)
		}
	}
	if st := h.srv.Store.TakeStats(); st.HeldBytes > 1<<20 || st.Dropped == 0 {
		t.Fatalf("held %d bytes (cap 1 MiB), dropped %d", st.HeldBytes, st.Dropped)
	}
	stuckFollowers(t, h, 5)
	waitFor(t, func() bool { return h.srv.Broker.Clients() == 5 })
	resp, err := http.Get(h.http.URL + "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "cap is 5") {
		t.Fatalf("follower over the cap: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), b)
	}
	if h.srv.Broker.Rejected() != 1 {
		t.Fatalf("rejected followers counted %d", h.srv.Broker.Rejected())
	}
	h.srv.observe()
	if m := h.metrics(); !strings.Contains(m, "pulltrace_sse_rejected_total 1") {
		t.Fatal("rejected followers not in the metrics")
	}
	h.stillServes("")
}

func (h *harness) metrics() string {
	ms := httptest.NewServer(h.srv.MetricsHandler())
	defer ms.Close()
	resp, err := http.Get(ms.URL + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Finding 5: however many pulls are wrong, the answer names ten and counts the rest, and
// echoed values are cut.
func TestFinding5BoundedErrors(t *testing.T) {
	h, _ := hostile(t, nil)
	h.seed("")
	long := strings.Repeat("n", 400)
	var ps []api.Pull
	for i := range api.MaxPullsPerReport {
		p := pull(fmt.Sprintf("x%d", i), api.PullActive, layer(1, 10, 1, api.LayerDownloading))
		p.NodeName = long
		ps = append(ps, p)
	}
	h.advance(time.Second)
	body, _ := json.Marshal(h.report("node-1", "a1", append(ps, pull("keep", api.PullActive, layer(1, 1000, 150, api.LayerDownloading)))...))
	code, out := h.postRaw("", body)
	var e api.ErrorResponse
	// One pull over the per-report cap: refused as a whole, in a few hundred bytes.
	if code != 400 || json.Unmarshal(out, &e) != nil || !strings.Contains(e.Error, "more than") || len(out) > 1024 {
		t.Fatalf("%d bytes of report: %d, %d bytes of answer: %.300s", len(body), code, len(out), out)
	}
	body, _ = json.Marshal(h.report("node-1", "a1", append(ps[:api.MaxPullsPerReport-1], pull("keep", api.PullActive, layer(1, 1000, 150, api.LayerDownloading)))...))
	code, out = h.postRaw("", body)
	var rr api.ReportResponse
	if code != 200 || json.Unmarshal(out, &rr) != nil || rr.RejectedCount != api.MaxPullsPerReport-1 || len(rr.Rejected) != api.MaxReportErrors || len(out) > 4096 {
		t.Fatalf("%d bytes of report: %d, %d bytes of answer: %.300s", len(body), code, len(out), out)
	}
	if p := h.find("keep"); p == nil || p.DownloadedBytes != 150 {
		t.Fatalf("the valid pull of the report was not applied: %+v", p)
	}
	// A refused header with many problems: still bounded.
	bad := h.report(long, long, ps[:10]...)
	bad.SchemaVersion = long
	body, _ = json.Marshal(bad)
	code, out = h.postRaw("", body)
	if code != 400 || len(out) > 1024 {
		t.Fatalf("bad header: %d, %d bytes: %.300s", code, len(out), out)
	}
	h.stillServes("")
}

// Finding 6: a far-future timestamp does not lock the node out: the real agent's next
// report (new agent id) takes over; and a silent agent's pulls go stalled, then fail, then
// expire.
func TestFinding6ClockAndSilentAgents(t *testing.T) {
	h, logs := hostile(t, func(c *Config) {
		c.Aggregate.AgentTimeout = 30 * time.Second
		c.Aggregate.StaleTimeout = 2 * time.Minute
		c.Aggregate.HistoryTTL = 10 * time.Minute
	})
	h.seed("")
	evil := h.report("node-2", "evil", pull("fake", api.PullActive, layer(1, 100, 1, api.LayerDownloading)))
	evil.Timestamp = h.now().Add(10 * 365 * 24 * time.Hour)
	evil.Pulls[0].NodeName = "node-2"
	if code, body := h.post("", evil); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	h.advance(time.Second)
	genuine := h.report("node-2", "real", pull("real", api.PullActive, layer(1, 100, 5, api.LayerDownloading)))
	genuine.Pulls[0].NodeName = "node-2"
	code, body := h.post("", genuine)
	if code != 200 || strings.Contains(body, "ignored") {
		t.Fatalf("the real agent after a far-future report: %d %s", code, body)
	}
	got := map[string]api.PullState{}
	for _, p := range h.pulls("?node=node-2") {
		got[p.ID] = p.State
	}
	if got["real"] != api.PullActive || got["fake"] != api.PullFailed {
		t.Fatalf("node-2 after the takeover: %v", got)
	}
	// A late report of the replaced agent is ignored, said so, and logged.
	late := h.report("node-2", "evil", pull("fake", api.PullActive, layer(1, 100, 2, api.LayerDownloading)))
	late.Pulls[0].NodeName = "node-2"
	late.Timestamp = h.now().Add(-time.Second)
	if code, body := h.post("", late); code != 200 || !strings.Contains(body, `"ignored"`) {
		t.Fatalf("late report of the replaced agent: %d %s", code, body)
	}
	if !strings.Contains(logs.String(), `"msg":"report ignored"`) {
		t.Fatalf("ignored report not logged:\n%s", logs)
	}
	// node-2's agent goes silent.
	state := func() api.PullState {
		for _, p := range h.pulls("?node=node-2") {
			if p.ID == "real" {
				return p.State
			}
		}
		return "gone"
	}
	h.advance(31 * time.Second)
	h.srv.Store.Expire()
	if s := state(); s != api.PullStalled {
		t.Fatalf("after the agent timeout: %s", s)
	}
	h.advance(2 * time.Minute)
	h.srv.Store.Expire()
	if s := state(); s != api.PullFailed {
		t.Fatalf("after the stale timeout: %s", s)
	}
	h.advance(11 * time.Minute)
	h.srv.Store.Expire()
	if s := state(); s != "gone" {
		t.Fatalf("after the history TTL: %s", s)
	}
	// node-1's agent was silent too, so its seeded pull is gone: seed again to check.
	h.seed("")
	h.stillServes("")
}

// Finding 7: node names must be Kubernetes node names, and an expired node's series go.
func TestFinding7NodeNames(t *testing.T) {
	h, _ := hostile(t, func(c *Config) { c.Aggregate.HistoryTTL = time.Minute })
	h.seed("")
	for _, name := range []string{strings.Repeat("a", 254), "Node-1", "bad\nname", "esc\x1b[2J", "nul\x00", "bad\xffutf8", "-lead", "trail.", "a..b", "sp ace"} {
		code, out := h.postRaw("", mustJSON(h.report(name, "a9")))
		if code != 400 || len(out) > 512 || !strings.Contains(string(out), "nodeName") {
			t.Errorf("node name %.40q: %d %s", name, code, out)
		}
	}
	if code, body := h.post("", h.report(strings.Repeat("a", 63)+"."+strings.Repeat("b", 63), "a9")); code != 200 {
		t.Fatalf("a long valid node name: %d %s", code, body)
	}
	done := pull("gone", api.PullActive, layer(1, 10, 5, api.LayerDownloading))
	done.NodeName = "node-x"
	h.post("", h.report("node-x", "ax", done))
	h.advance(time.Second)
	fin := pull("gone", api.PullCompleted, layer(1, 10, 10, api.LayerDone))
	fin.NodeName = "node-x"
	h.post("", h.report("node-x", "ax", fin))
	h.srv.observe()
	if m := h.metrics(); !strings.Contains(m, `node="node-x"`) {
		t.Fatal("node-x has no series to begin with")
	}
	h.advance(2 * time.Minute)
	h.srv.Store.Expire()
	h.srv.observe()
	if m := h.metrics(); strings.Contains(m, `node="node-x"`) {
		t.Fatal("node-x's series outlive the node")
	}
	h.seed("")
	h.stillServes("")
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// Finding 8: a configured token that reads empty refuses reports (fails closed), and the
// Bearer scheme is case-insensitive.
func TestFinding8AuthFailsClosed(t *testing.T) {
	var mu sync.Mutex
	tok := "s3cret"
	h, logs := hostile(t, func(c *Config) {
		c.TokenRequired = true
		c.Token = func() (string, error) { mu.Lock(); defer mu.Unlock(); return tok, nil }
	})
	h.seed("s3cret")
	for _, scheme := range []string{"bearer", "BEARER", "Bearer"} {
		req, _ := http.NewRequest(http.MethodPost, h.http.URL+"/api/v1/report", bytes.NewReader(mustJSON(h.report("node-1", "a1", pull("keep", api.PullActive, layer(1, 1000, 100, api.LayerDownloading))))))
		req.Header.Set("Authorization", scheme+" s3cret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("scheme %q: %v %v", scheme, err, resp)
		}
		resp.Body.Close()
	}
	mu.Lock()
	tok = ""
	mu.Unlock()
	for _, token := range []string{"", "s3cret", "anything"} {
		code, out := h.postRaw(token, mustJSON(h.report("node-1", "a1")))
		if code != 503 || len(out) > 512 {
			t.Fatalf("emptied token file, token %q: %d %s", token, code, out)
		}
	}
	if p := h.find("keep"); p == nil || p.State != api.PullActive {
		t.Fatalf("a refused report changed the node: %+v", p)
	}
	if !strings.Contains(logs.String(), "refusing reports") {
		t.Fatalf("no log line for the empty token:\n%s", logs)
	}
	mu.Lock()
	tok = "s3cret"
	mu.Unlock()
	h.stillServes("s3cret")
}

// Finding 9: slow bodies and idle connections are cut, wrong methods get 405 with Allow,
// HEAD opens no stream, the UI has its security headers and JSON has nosniff.
func TestFinding9HTTPLimits(t *testing.T) {
	h, _ := hostile(t, func(c *Config) {
		c.HTTP = HTTPLimits{ReadTimeout: 300 * time.Millisecond, IdleTimeout: 300 * time.Millisecond}
		c.UI = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ui") })
	})
	// The real listeners' limits, not httptest's defaults.
	h.http.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := h.srv.cfg.HTTP.NewHTTPServer(h.srv.Handler())
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close() })
	h.http = &httptest.Server{URL: "http://" + ln.Addr().String(), Listener: ln}
	h.seed("")

	// A body that trickles in is cut at the read timeout.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /api/v1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
	cut := false
	for range 100 {
		time.Sleep(50 * time.Millisecond)
		if _, err := c.Write([]byte(" ")); err != nil {
			cut = true
			break
		}
	}
	if !cut {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			// an answer (408/400) is a cut too; read until close
			_, err = io.ReadAll(c)
			cut = err == nil
		} else {
			cut = !isTimeout(err)
		}
	}
	if !cut {
		t.Fatal("a trickling body kept its connection for 5 s past a 300 ms read timeout")
	}
	// An idle keep-alive connection is closed.
	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(idle); isTimeout(err) {
		t.Fatal("an idle keep-alive connection stayed open 5 s past a 300 ms idle timeout")
	}

	for _, c := range []struct{ method, path, allow string }{
		{"GET", "/api/v1/report", "POST"},
		{"DELETE", "/api/v1/pulls", "GET, HEAD"},
		{"POST", "/api/v1/events", "GET, HEAD"},
		{"PUT", "/healthz", "GET, HEAD"},
	} {
		req, _ := http.NewRequest(c.method, h.http.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 405 || resp.Header.Get("Allow") != c.allow || resp.Header.Get("X-Content-Type-Options") != "nosniff" || !strings.Contains(string(b), `"error"`) {
			t.Errorf("%s %s: %d Allow=%q %s", c.method, c.path, resp.StatusCode, resp.Header.Get("Allow"), b)
		}
	}
	req, _ := http.NewRequest(http.MethodHead, h.http.URL+"/api/v1/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("HEAD events: %v %+v", err, resp)
	}
	resp.Body.Close()
	if n := h.srv.Broker.Clients(); n != 0 {
		t.Fatalf("HEAD opened a stream: %d clients", n)
	}
	resp, err = http.Get(h.http.URL + "/api/v1/pulls")
	if err != nil || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("JSON without nosniff: %v %+v", err, resp)
	}
	resp.Body.Close()
	h.stillServes("")
}

func isTimeout(err error) bool {
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}

// Finding 10 is TestLifecycleEventsOverSSEAndLog (PullEvents are plain data messages),
// finding 11 TestSSEResumeAndHeartbeat (an id of another epoch gets a snapshot).

// Finding 12: rejected, unauthorized and ignored reports are logged, as JSON warnings, at
// most one of a kind per interval with a count of the ones held back.
func TestFinding12RejectionsAreLogged(t *testing.T) {
	h, logs := hostile(t, func(c *Config) {
		c.Token = func() (string, error) { return "s3cret", nil }
	})
	h.seed("s3cret")
	for range 50 {
		h.postRaw("wrong", mustJSON(h.report("node-1", "a1")))
	}
	h.postRaw("s3cret", []byte("not json"))
	dup := h.report("node-1", "a1")
	dup.Sequence = 1
	h.postRaw("s3cret", mustJSON(dup))
	var unauthorized, rejected, ignored int
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		if m["level"] != "WARN" {
			continue
		}
		switch m["msg"] {
		case "report refused: missing or wrong bearer token":
			unauthorized++
		case "report rejected":
			rejected++
		case "report ignored":
			ignored++
		}
	}
	if unauthorized != 1 || rejected != 1 || ignored != 1 {
		t.Fatalf("warnings: %d unauthorized (of 50, rate-limited to 1), %d rejected, %d ignored:\n%s", unauthorized, rejected, ignored, logs)
	}
	h.stillServes("s3cret")
}
