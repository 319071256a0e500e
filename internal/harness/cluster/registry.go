package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// chunkSize is the proxy's pacing unit. containerd reports ingest offsets in 1 MiB steps,
// so anything well below that keeps the observed progress smooth.
const chunkSize = 64 * 1024

func (c *Cluster) startRegistry(ctx context.Context) error {
	dir := filepath.Join(c.Dir, "registry")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return fmt.Errorf("registry folder: %w", err)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	env := append(os.Environ(),
		// The registry exports traces to an OTLP collector by default and logs every failed
		// attempt; there is none here, and the tests must not dial anything off loopback.
		"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none", "OTEL_SDK_DISABLED=true")
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: pulltrace-test-cluster
health:
  storagedriver:
    enabled: false
`, filepath.Join(dir, "data"), addr)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			return fmt.Errorf("registry config: %w", err)
		}
		p, err := c.startChild("registry", c.bin("registry", "registry"), []string{"serve", cfgPath}, env, nil)
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.registry = p
		c.mu.Unlock()
		lastErr = waitReady(ctx, p, 30*time.Second, func(ctx context.Context) error {
			return httpOK(ctx, "http://"+addr+"/v2/")
		})
		if lastErr == nil {
			c.RegistryAddr = addr
			break
		}
		p.Kill()
		if !addrInUse(p) {
			return lastErr
		}
	}
	if lastErr != nil {
		return lastErr
	}

	target, _ := url.Parse("http://" + c.RegistryAddr)
	c.proxy = newThrottleProxy(target, c.opts.PullRate, c.LogPath("proxy"))
	if err := c.proxy.start(); err != nil {
		return err
	}
	c.ProxyAddr = c.proxy.addr
	c.log.Info("registry ready", "registry", c.RegistryAddr, "proxy", c.ProxyAddr)
	return nil
}

func httpOK(ctx context.Context, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

// SetPullRate changes the proxy's rate in bytes per second for all connections together,
// taking effect for pulls in flight; 0 means unthrottled.
func (c *Cluster) SetPullRate(bytesPerSec int64) {
	if c.proxy != nil {
		c.proxy.lim.set(bytesPerSec)
		c.log.Info("pull rate", "bytesPerSec", bytesPerSec)
	}
}

// StopProxy closes the proxy's listener and cuts every connection in flight, so a pull
// that is downloading fails the way it would when a registry goes away.
func (c *Cluster) StopProxy() {
	if c.proxy != nil {
		c.proxy.stop()
		c.log.Info("proxy stopped")
	}
}

// StartProxy starts the proxy again on the same address after StopProxy.
func (c *Cluster) StartProxy() error {
	if c.proxy == nil {
		return errors.New("cluster runs without a registry")
	}
	if err := c.proxy.start(); err != nil {
		return err
	}
	c.log.Info("proxy started", "addr", c.proxy.addr)
	return nil
}

// throttleProxy is a reverse proxy to the registry that paces response bodies.
type throttleProxy struct {
	target  *url.URL
	lim     *limiter
	logPath string

	mu        sync.Mutex
	addr      string // fixed by the first start, so refs stay valid across restarts
	srv       *http.Server
	transport *http.Transport
	logFile   *os.File
}

func newThrottleProxy(target *url.URL, rate int64, logPath string) *throttleProxy {
	p := &throttleProxy{target: target, lim: &limiter{wake: make(chan struct{})}, logPath: logPath}
	p.lim.set(rate)
	return p
}

func (p *throttleProxy) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv != nil {
		return nil
	}
	addr := p.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("proxy listen %s: %w", addr, err)
	}
	p.addr = ln.Addr().String()
	if p.logFile == nil {
		if p.logFile, err = os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			ln.Close()
			return fmt.Errorf("proxy log: %w", err)
		}
	}
	log := slog.New(slog.NewTextHandler(p.logFile, nil))
	// A transport of its own, so stop can drop its upstream connections without touching
	// anything else in the process.
	p.transport = &http.Transport{
		Proxy:               nil,
		DisableCompression:  true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(p.target)
			// Keep the client's Host so URLs the registry builds point back at the proxy.
			r.Out.Host = r.In.Host
		},
		Transport: p.transport,
		// Flush every write: buffering would turn the paced stream back into bursts.
		FlushInterval: -1,
		BufferPool:    chunkPool{},
		ModifyResponse: func(resp *http.Response) error {
			resp.Body = &pacedBody{rc: resp.Body, ctx: resp.Request.Context(), lim: p.lim}
			return nil
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			log.Info("request", "method", r.Method, "path", r.URL.Path)
			rp.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv := p.srv
	go func() { _ = srv.Serve(ln) }()
	return nil
}

func (p *throttleProxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.srv == nil {
		return
	}
	// Close, not Shutdown: active connections are cut mid-body, which is the point.
	_ = p.srv.Close()
	p.transport.CloseIdleConnections()
	p.srv = nil
}

func (p *throttleProxy) closeLog() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.logFile != nil {
		p.logFile.Close()
		p.logFile = nil
	}
}

type chunkPool struct{}

func (chunkPool) Get() []byte  { return make([]byte, chunkSize) }
func (chunkPool) Put(b []byte) {}

// limiter is a shared byte-rate budget: each chunk reserves the next slot of time and
// sleeps until its slot ends, so concurrent streams split the rate between them.
type limiter struct {
	mu   sync.Mutex
	rate int64
	next time.Time
	wake chan struct{} // closed on a rate change, so sleepers stop waiting on the old rate
}

func (l *limiter) set(rate int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate = rate
	l.next = time.Time{}
	close(l.wake)
	l.wake = make(chan struct{})
}

func (l *limiter) wait(ctx context.Context, n int) error {
	l.mu.Lock()
	if l.rate <= 0 {
		l.mu.Unlock()
		return nil
	}
	now := time.Now()
	start := l.next
	if start.Before(now) {
		start = now
	}
	end := start.Add(time.Duration(float64(n) / float64(l.rate) * float64(time.Second)))
	l.next = end
	wake := l.wake
	l.mu.Unlock()
	d := time.Until(end)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type pacedBody struct {
	rc  io.ReadCloser
	ctx context.Context
	lim *limiter
}

func (b *pacedBody) Read(p []byte) (int, error) {
	if len(p) > chunkSize {
		p = p[:chunkSize]
	}
	// Whole chunks keep the pacing unit fixed whatever the upstream read sizes are.
	n, err := io.ReadFull(b.rc, p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	if n > 0 {
		if werr := b.lim.wait(b.ctx, n); werr != nil {
			return 0, werr
		}
	}
	return n, err
}

func (b *pacedBody) Close() error { return b.rc.Close() }
