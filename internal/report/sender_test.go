package report

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d44b/pulltrace/internal/token"
	"github.com/d44b/pulltrace/pkg/api"
)

type fakeServer struct {
	mu      sync.Mutex
	got     []api.AgentReport
	auth    []string
	hosts   []string
	resync  bool
	failing bool
}

func (f *fakeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing {
		http.Error(w, `{"error":"down for maintenance"}`, http.StatusServiceUnavailable)
		return
	}
	var rep api.AgentReport
	_ = json.NewDecoder(r.Body).Decode(&rep)
	f.got = append(f.got, rep)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	f.hosts = append(f.hosts, r.Host)
	_ = json.NewEncoder(w).Encode(api.ReportResponse{Resync: f.resync})
}

func report(seq uint64) *api.AgentReport {
	return &api.AgentReport{SchemaVersion: "v1", NodeName: "n", AgentID: "a", Sequence: seq, Timestamp: time.Now(), Pulls: []api.Pull{}}
}

func TestTokenFromFileAndHeartbeats(t *testing.T) {
	f := &fakeServer{}
	hs := httptest.NewServer(f)
	defer hs.Close()
	tokenPath := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenPath, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Servers: []string{hs.URL + "/"}, Token: token.File(tokenPath, "ignored")})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	s.Send(context.Background(), report(1), false, now)
	s.Send(context.Background(), report(1), false, now) // unchanged, no heartbeat due: nothing sent
	s.Send(context.Background(), report(1), true, now)  // heartbeat
	s.Send(context.Background(), report(2), false, now) // changed: full
	if len(f.got) != 3 {
		t.Fatalf("sent %d reports, want 3", len(f.got))
	}
	if f.got[0].Heartbeat || !f.got[1].Heartbeat || f.got[1].Pulls != nil || f.got[2].Heartbeat || f.got[2].Sequence != 2 {
		t.Fatalf("kinds: %+v", f.got)
	}
	for _, a := range f.auth {
		if a != "Bearer s3cret" {
			t.Fatalf("authorization %q", a)
		}
	}
	// The Secret is rotated: the next report carries the new token without a restart.
	_ = os.WriteFile(tokenPath, []byte("rotated"), 0o600)
	s.Send(context.Background(), report(3), false, now)
	if f.auth[len(f.auth)-1] != "Bearer rotated" {
		t.Fatalf("rotated token not used: %q", f.auth[len(f.auth)-1])
	}
}

func TestFailureBacksOffAndResendsFull(t *testing.T) {
	f := &fakeServer{failing: true}
	hs := httptest.NewServer(f)
	defer hs.Close()
	s, _ := New(Config{Servers: []string{hs.URL}, MaxBackoff: 4 * time.Second})
	now := time.Now()
	outs := s.Send(context.Background(), report(1), false, now)
	if len(outs) != 1 || outs[0].Err == nil || !strings.Contains(outs[0].Err.Error(), "down for maintenance") {
		t.Fatalf("outcome %+v", outs)
	}
	if outs := s.Send(context.Background(), report(1), true, now.Add(100*time.Millisecond)); len(outs) != 0 {
		t.Fatal("retried inside the backoff")
	}
	f.mu.Lock()
	f.failing = false
	f.mu.Unlock()
	s.Send(context.Background(), report(1), true, now.Add(5*time.Second))
	if len(f.got) != 1 || f.got[0].Heartbeat {
		t.Fatalf("after a failure the server must get a full report, got %+v", f.got)
	}
	// A server that restarted asks for a resync: the next send is full even if unchanged.
	f.resync = true
	s.Send(context.Background(), report(1), true, now.Add(6*time.Second))
	f.resync = false
	s.Send(context.Background(), report(1), true, now.Add(7*time.Second))
	if last := f.got[len(f.got)-1]; last.Heartbeat {
		t.Fatal("resync request ignored")
	}
}

type fixedResolver []string

func (r fixedResolver) LookupHost(context.Context, string) ([]string, error) { return r, nil }

// A headless Service resolves to every replica: each gets every report, with the Service
// name kept as the Host.
func TestEveryReplicaGetsReports(t *testing.T) {
	f1, f2 := &fakeServer{}, &fakeServer{}
	ln1, _ := net.Listen("tcp", "127.0.0.1:0")
	port := ln1.Addr().(*net.TCPAddr).Port
	ln2, err := net.Listen("tcp", "127.0.0.2:"+strings.Split(ln1.Addr().String(), ":")[1])
	if err != nil {
		t.Skipf("no second loopback address here: %v", err)
	}
	go func() { _ = http.Serve(ln1, f1) }()
	go func() { _ = http.Serve(ln2, f2) }()
	defer ln1.Close()
	defer ln2.Close()
	s, _ := New(Config{Servers: []string{"http://pulltrace-server-headless:" + strconv.Itoa(port)}, Resolver: fixedResolver{"127.0.0.1", "127.0.0.2"}})
	outs := s.Send(context.Background(), report(1), false, time.Now())
	if len(outs) != 2 || outs[0].Err != nil || outs[1].Err != nil {
		t.Fatalf("outcomes %+v", outs)
	}
	if len(f1.got) != 1 || len(f2.got) != 1 || f1.hosts[0] != "pulltrace-server-headless:"+strconv.Itoa(port) {
		t.Fatalf("replica 1 got %d (host %v), replica 2 got %d", len(f1.got), f1.hosts, len(f2.got))
	}
}

func TestBadServerURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "pulltrace-server:8080"} {
		if _, err := New(Config{Servers: []string{u}}); err == nil {
			t.Errorf("accepted %q", u)
		}
	}
}

// A server that reads a report and turns it down (400 with a reason) is asked again after
// RefusedRetry every time, without the exponential back-off an unreachable server gets.
func TestRefusedReportsRetrySoon(t *testing.T) {
	var mu sync.Mutex
	code, calls := http.StatusBadRequest, 0
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if code != http.StatusOK {
			w.WriteHeader(code)
			_, _ = w.Write([]byte(`{"error":"invalid report: pulls[6].id: duplicate id \"438cea3b1b930e5c\""}`))
			return
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	defer hs.Close()
	s, err := New(Config{Servers: []string{hs.URL}, RefusedRetry: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := range 6 {
		outs := s.Send(context.Background(), report(uint64(i+1)), false, now)
		var refused *RefusedError
		if len(outs) != 1 || !errors.As(outs[0].Err, &refused) {
			t.Fatalf("round %d: %+v", i, outs)
		}
		if refused.Status != http.StatusBadRequest || !strings.Contains(refused.Reason, "duplicate id") {
			t.Fatalf("refusal: %+v", refused)
		}
		if outs := s.Send(context.Background(), report(uint64(i+1)), false, now.Add(2900*time.Millisecond)); len(outs) != 0 {
			t.Fatalf("round %d: retried before RefusedRetry", i)
		}
		now = now.Add(3 * time.Second)
	}
	mu.Lock()
	code = http.StatusOK
	mu.Unlock()
	if outs := s.Send(context.Background(), report(9), false, now); len(outs) != 1 || outs[0].Err != nil {
		t.Fatalf("accepted after refusals: %+v", outs)
	}
	mu.Lock()
	code = http.StatusServiceUnavailable
	mu.Unlock()
	// An unavailable server is an outage, not a refusal: it backs off.
	var waits []time.Duration
	at := now
	if outs := s.Send(context.Background(), report(10), false, at); len(outs) != 1 || outs[0].Err == nil {
		t.Fatalf("503: %+v", outs)
	}
	for range 5 {
		next := at
		var outs []Outcome
		for len(outs) == 0 {
			next = next.Add(100 * time.Millisecond)
			outs = s.Send(context.Background(), report(10), false, next)
		}
		var refused *RefusedError
		if outs[0].Err == nil || errors.As(outs[0].Err, &refused) {
			t.Fatalf("503 is not a refusal: %+v", outs)
		}
		waits = append(waits, next.Sub(at))
		at = next
	}
	if waits[len(waits)-1] < 4*time.Second {
		t.Fatalf("503s do not back off: %v", waits)
	}
}

// The server applied a report but left pulls out: the outcome names them for the agent.
func TestRejectedPullsReachTheOutcome(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"rejected":[{"index":2,"id":"abc","error":"pulls[2].id: duplicate id \"abc\""}],"rejectedCount":4}`))
	}))
	defer hs.Close()
	s, err := New(Config{Servers: []string{hs.URL}})
	if err != nil {
		t.Fatal(err)
	}
	outs := s.Send(context.Background(), report(1), false, time.Now())
	if len(outs) != 1 || outs[0].Err != nil || outs[0].RejectedCount != 4 || len(outs[0].Rejected) != 1 || outs[0].Rejected[0].ID != "abc" {
		t.Fatalf("outcome: %+v", outs)
	}
}
