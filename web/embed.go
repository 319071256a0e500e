// Package web serves the Pulltrace web UI, a React app built by Vite into web/dist and
// embedded in the server binary.
//
// The Go build never needs Node: the embed pattern "dist*" always matches the committed
// dist-placeholder directory, and also matches dist once `npm run build` has made it. The
// handler serves dist when it holds an index.html and the placeholder page otherwise.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"
)

//go:embed all:dist*
var embedded embed.FS

// Built reports whether the embedded UI is the real build rather than the placeholder page.
func Built() bool {
	_, err := fs.Stat(embedded, "dist/index.html")
	return err == nil
}

var (
	defaultOnce    sync.Once
	defaultHandler http.Handler
)

// Handler serves the UI at the root of its mount point: "/" is index.html, every other
// path is a file of the build or 404. Mount it with http.StripPrefix under a prefix; the
// UI uses only relative URLs, so it also works behind the apiserver's service proxy.
func Handler() http.Handler {
	defaultOnce.Do(func() {
		h, err := newHandler(embedded)
		if err != nil {
			// The files are compiled in; failing to read them is a broken build.
			panic("web: " + err.Error())
		}
		defaultHandler = h
	})
	return defaultHandler
}

type asset struct {
	data        []byte
	etag        string
	contentType string
	cache       string
}

type handler struct {
	assets map[string]*asset
	csp    string
}

// inlineScript finds the scripts written into index.html (the trailing-slash fix-up);
// the CSP allows exactly these by hash, and no other inline script.
var inlineScript = regexp.MustCompile(`(?s)<script>(.*?)</script>`)

// contentSecurityPolicy allows what the built UI uses and nothing more: its own scripts,
// styles and API (same origin, relative URLs, so it also holds behind the apiserver's
// service proxy), the favicon's data: URL, and no framing by anyone.
func contentSecurityPolicy(index []byte) string {
	scripts := "'self'"
	for _, m := range inlineScript.FindAllSubmatch(index, -1) {
		sum := sha256.Sum256(m[1])
		scripts += " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return "default-src 'none'; script-src " + scripts + "; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
		"font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// CSP is the Content-Security-Policy the UI is served with.
func CSP() string {
	h, ok := Handler().(*handler)
	if !ok {
		return ""
	}
	return h.csp
}

const (
	// index.html names the current hashed assets, so browsers must revalidate it (cheap,
	// by ETag) or they would keep loading the previous release's bundle.
	cacheRevalidate = "no-cache"
	// Vite puts a content hash in every file name under assets/: they never change.
	cacheImmutable = "public, max-age=31536000, immutable"
)

// newHandler reads the whole UI into memory once (a few hundred KiB), with an ETag and
// content type per file, from dist when it has an index.html, else dist-placeholder.
func newHandler(fsys fs.FS) (*handler, error) {
	root := "dist-placeholder"
	if _, err := fs.Stat(fsys, "dist/index.html"); err == nil {
		root = "dist"
	}
	sub, err := fs.Sub(fsys, root)
	if err != nil {
		return nil, err
	}
	h := &handler{assets: map[string]*asset{}}
	err = fs.WalkDir(sub, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(sub, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		ct := mime.TypeByExtension(path.Ext(name))
		if ct == "" {
			ct = http.DetectContentType(data)
		}
		cache := cacheRevalidate
		if strings.HasPrefix(name, "assets/") {
			cache = cacheImmutable
		}
		h.assets[name] = &asset{
			data:        data,
			etag:        `"` + hex.EncodeToString(sum[:12]) + `"`,
			contentType: ct,
			cache:       cache,
		}
		return nil
	})
	if idx, ok := h.assets["index.html"]; ok {
		h.csp = contentSecurityPolicy(idx.data)
	}
	return h, err
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "" {
		name = "index.html"
	}
	a, ok := h.assets[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.contentType)
	hd.Set("Cache-Control", a.cache)
	hd.Set("ETag", a.etag)
	hd.Set("X-Content-Type-Options", "nosniff")
	if h.csp != "" {
		hd.Set("Content-Security-Policy", h.csp)
	}
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	// ServeContent answers If-None-Match with 304 and handles HEAD and Range.
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.data))
}
