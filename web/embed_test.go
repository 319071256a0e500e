package web

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// The real embedded files: the placeholder on a clean clone, the UI after npm run build.
func TestHandlerIndexAndUnknownAsset(t *testing.T) {
	h := Handler()
	rec := get(t, h, http.MethodGet, "/", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET / = %d, want 200", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET / Content-Type = %q, want text/html", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("GET / Cache-Control = %q, want no-cache", cc)
	}
	body := rec.Body.String()
	if !strings.Contains(strings.ToLower(body), "<html") {
		t.Errorf("GET / body is not HTML: %.200q", body)
	}
	if Built() != !strings.Contains(body, "UI not built") {
		t.Errorf("Built() = %v but the page says otherwise", Built())
	}
	// Relative asset URLs only: the UI is also served under the apiserver proxy prefix.
	if strings.Contains(body, `src="/`) || strings.Contains(body, `href="/`) {
		t.Errorf("index.html has an absolute URL")
	}

	for _, p := range []string{"/assets/nope-12345678.js", "/nope", "/assets/", "/../../etc/passwd"} {
		if rec := get(t, h, http.MethodGet, p, nil); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", p, rec.Code)
		}
	}
}

func TestHandlerServesBuild(t *testing.T) {
	fsys := fstest.MapFS{
		"dist-placeholder/index.html":  {Data: []byte("<html>UI not built</html>")},
		"dist/index.html":              {Data: []byte(`<!doctype html><html><script src="./assets/index-abc123.js"></script></html>`)},
		"dist/assets/index-abc123.js":  {Data: []byte("console.log(1)")},
		"dist/assets/index-abc123.css": {Data: []byte("body{}")},
	}
	h, err := newHandler(fsys)
	if err != nil {
		t.Fatal(err)
	}
	rec := get(t, h, http.MethodGet, "/", nil)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "index-abc123.js") {
		t.Fatalf("GET / = %d %q, want the built index", rec.Code, rec.Body.String())
	}
	if rec := get(t, h, http.MethodGet, "/index.html", nil); rec.Code != 200 || rec.Header().Get("Cache-Control") != "no-cache" {
		t.Errorf("GET /index.html = %d, Cache-Control %q", rec.Code, rec.Header().Get("Cache-Control"))
	}

	for p, want := range map[string]string{
		"/assets/index-abc123.js":  "text/javascript",
		"/assets/index-abc123.css": "text/css",
	} {
		rec := get(t, h, http.MethodGet, p, nil)
		if rec.Code != 200 {
			t.Fatalf("GET %s = %d", p, rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, want) {
			t.Errorf("GET %s Content-Type = %q, want %s", p, ct, want)
		}
		if cc := rec.Header().Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("GET %s Cache-Control = %q, want long-lived", p, cc)
		}
		etag := rec.Header().Get("ETag")
		if etag == "" {
			t.Fatalf("GET %s has no ETag", p)
		}
		if rec := get(t, h, http.MethodGet, p, map[string]string{"If-None-Match": etag}); rec.Code != http.StatusNotModified {
			t.Errorf("GET %s with its ETag = %d, want 304", p, rec.Code)
		}
	}

	if rec := get(t, h, http.MethodHead, "/", nil); rec.Code != 200 || rec.Body.Len() != 0 {
		t.Errorf("HEAD / = %d with %d body bytes", rec.Code, rec.Body.Len())
	}
	if rec := get(t, h, http.MethodPost, "/", nil); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d, want 405", rec.Code)
	}
	if rec := get(t, h, http.MethodGet, "/assets/missing-0000.js", nil); rec.Code != http.StatusNotFound {
		t.Errorf("GET missing asset = %d, want 404", rec.Code)
	}
}

func TestHandlerPlaceholderWithoutBuild(t *testing.T) {
	h, err := newHandler(fstest.MapFS{
		"dist-placeholder/index.html": {Data: []byte("<html>UI not built</html>")},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := get(t, h, http.MethodGet, "/", nil)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "UI not built") {
		t.Fatalf("GET / = %d %q, want the placeholder", rec.Code, rec.Body.String())
	}
}
