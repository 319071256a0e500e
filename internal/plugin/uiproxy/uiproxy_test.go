package uiproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// upstream stands in for the API server: it records what reaches it and serves an SSE
// stream that only makes progress when each event is flushed through the proxy.
func upstream(t *testing.T) (*httptest.Server, chan *http.Request) {
	seen := make(chan *http.Request, 16)
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Clone(context.Background())
		if strings.HasSuffix(r.URL.Path, "/api/v1/events") {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := 0; i < 3; i++ {
				fmt.Fprintf(w, "id: %d\nevent: pull.progress\ndata: {}\n\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(20 * time.Millisecond)
			}
			<-r.Context().Done()
			return
		}
		fmt.Fprintf(w, "upstream %s", r.URL.Path)
	}))
	t.Cleanup(s.Close)
	return s, seen
}

func TestProxy(t *testing.T) {
	up, seen := upstream(t)
	p, err := New(Config{REST: &rest.Config{Host: up.URL + "/k8s", BearerToken: "tok"}, Namespace: "pulltrace", Service: "pulltrace-server", Port: "http"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := Start(ctx, "127.0.0.1:0", p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.HasSuffix(s.URL, "/api/v1/namespaces/pulltrace/services/pulltrace-server:http/proxy/") {
		t.Fatalf("URL %s", s.URL)
	}
	req, _ := http.NewRequest(http.MethodGet, s.URL+"assets/app.js?x=1", nil)
	req.Header.Set("Cookie", "session=local")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	got := <-seen
	if resp.StatusCode != 200 || got.URL.Path != "/k8s/api/v1/namespaces/pulltrace/services/pulltrace-server:http/proxy/assets/app.js" ||
		got.URL.RawQuery != "x=1" || got.Header.Get("Authorization") != "Bearer tok" || got.Header.Get("Cookie") != "" {
		t.Fatalf("forwarded %s %s?%s auth=%q cookie=%q; answer %d %s", got.Method, got.URL.Path, got.URL.RawQuery, got.Header.Get("Authorization"), got.Header.Get("Cookie"), resp.StatusCode, body)
	}

	// Events arrive one by one, not when the stream ends.
	resp, err = http.Get(s.URL + "api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	<-seen
	rd := bufio.NewReader(resp.Body)
	deadline := time.AfterFunc(5*time.Second, func() { resp.Body.Close() })
	for n := 0; n < 3; {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d events: %v", n, err)
		}
		if strings.HasPrefix(line, "data:") {
			n++
		}
	}
	deadline.Stop()
	resp.Body.Close()

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := "http://" + s.Addr.String()
	for _, c := range []struct {
		method, path, host string
		code               int
	}{
		{"GET", "/", "", http.StatusFound},
		{"POST", "/api/v1/namespaces/pulltrace/services/pulltrace-server:http/proxy/api/v1/report", "", http.StatusMethodNotAllowed},
		{"GET", "/api/v1/namespaces/kube-system/secrets", "", http.StatusNotFound},
		{"GET", "/api/v1/namespaces/pulltrace/services/pulltrace-server:http/proxy/", "attacker.example:8001", http.StatusForbidden},
		{"GET", "/api/v1/namespaces/pulltrace/services/pulltrace-server:http/proxy/", "localhost:8001", http.StatusOK},
	} {
		req, _ := http.NewRequest(c.method, base+c.path, nil)
		if c.host != "" {
			req.Host = c.host
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s (Host %q): %d, want %d", c.method, c.path, c.host, resp.StatusCode, c.code)
		}
		if c.code == http.StatusFound && resp.Header.Get("Location") != p.Prefix {
			t.Errorf("/ redirects to %q", resp.Header.Get("Location"))
		}
		if c.code == http.StatusOK {
			<-seen
		}
	}
	cancel()
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("server did not stop with its context")
	}
}
