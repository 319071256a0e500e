// Package report delivers an agent's snapshots to every server replica. Reports are full
// snapshots, so nothing is queued: each attempt sends the latest state, which keeps memory
// flat however long a server is down.
package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/d44b/pulltrace/internal/token"
	"github.com/d44b/pulltrace/pkg/api"
)

// Resolver looks up every address of a host; a headless Service gives one per replica.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Config configures a Sender.
type Config struct {
	Servers []string
	Token   token.Source
	Client  *http.Client
	// Resolver, when set, fans each server URL out to every address its host resolves to.
	Resolver Resolver
	// MaxBackoff caps the wait between attempts to a failing endpoint.
	MaxBackoff time.Duration
	// RefusedRetry is the wait after a server refused a report (4xx). The next snapshot
	// may well be accepted (the offending pull finished or expired), and while reports are
	// refused the node is dark on that server, so this does not back off.
	RefusedRetry time.Duration
}

// RefusedError is a report the server answered with a 4xx: it was read and turned down
// (invalid, unauthorised, too large), as opposed to a server that could not be reached.
type RefusedError struct {
	Endpoint string
	Status   int
	// Reason is the server's own explanation (its {"error": ...} body).
	Reason string
}

func (e *RefusedError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("server %s refused the report: %d %s", e.Endpoint, e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("server %s refused the report: %d %s: %s", e.Endpoint, e.Status, http.StatusText(e.Status), e.Reason)
}

// Outcome is what one endpoint made of a report.
type Outcome struct {
	Endpoint string
	Resync   bool
	Err      error
	// Rejected names pulls the server left out of an applied report (invalid), the first
	// few of RejectedCount; Ignored says why a valid report was not applied at all.
	Rejected      []api.PullRejection
	RejectedCount int
	Ignored       string
}

// Sender posts reports to every endpoint and backs off per endpoint on failure.
type Sender struct {
	cfg     Config
	targets []*url.URL

	mu        sync.Mutex
	endpoints map[string]*endpoint
}

type endpoint struct {
	failures  int
	nextTry   time.Time
	needsFull bool
	lastSeq   uint64
}

// New validates the server URLs.
func New(cfg Config) (*Sender, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("no server URL given")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Token == nil {
		cfg.Token = token.File("", "")
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.RefusedRetry <= 0 {
		cfg.RefusedRetry = 3 * time.Second
	}
	s := &Sender{cfg: cfg, endpoints: map[string]*endpoint{}}
	for _, raw := range cfg.Servers {
		u, err := url.Parse(strings.TrimRight(raw, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("server %q: want an http(s)://host[:port] URL", raw)
		}
		s.targets = append(s.targets, u)
	}
	return s, nil
}

// Endpoint is one address to send to; Host is the configured name, kept for virtual
// hosting and TLS when URL holds a resolved address.
type Endpoint struct {
	URL  *url.URL
	Host string
}

// Endpoints expands the configured servers to the addresses to send to now.
func (s *Sender) Endpoints(ctx context.Context) []Endpoint {
	var out []Endpoint
	for _, u := range s.targets {
		host := u.Hostname()
		if s.cfg.Resolver == nil || net.ParseIP(host) != nil {
			out = append(out, Endpoint{URL: u, Host: u.Host})
			continue
		}
		addrs, err := s.cfg.Resolver.LookupHost(ctx, host)
		if err != nil || len(addrs) <= 1 {
			out = append(out, Endpoint{URL: u, Host: u.Host})
			continue
		}
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
		for _, a := range addrs {
			c := *u
			c.Host = net.JoinHostPort(a, port)
			out = append(out, Endpoint{URL: &c, Host: u.Host})
		}
	}
	return out
}

// Send delivers a report to every endpoint that is due. full builds the snapshot; it is
// called only for endpoints that need one (changed state, or a server that asked for a
// resync or failed before), the others get heartbeat when heartbeat is true.
func (s *Sender) Send(ctx context.Context, full *api.AgentReport, heartbeat bool, now time.Time) []Outcome {
	var outs []Outcome
	eps := s.Endpoints(ctx)
	for _, e := range eps {
		key := e.URL.String()
		s.mu.Lock()
		ep := s.endpoints[key]
		if ep == nil {
			ep = &endpoint{needsFull: true}
			s.endpoints[key] = ep
		}
		due := !now.Before(ep.nextTry)
		sendFull := ep.needsFull || ep.lastSeq != full.Sequence
		s.mu.Unlock()
		if !due || (!sendFull && !heartbeat) {
			continue
		}
		r := full
		if !sendFull {
			hb := *full
			hb.Heartbeat, hb.Pulls = true, nil
			r = &hb
		}
		rr, err := s.post(ctx, e, r)
		resync := rr.Resync
		var refused *RefusedError
		s.mu.Lock()
		switch {
		case errors.As(err, &refused):
			ep.failures = 0
			ep.needsFull = true
			ep.nextTry = now.Add(s.cfg.RefusedRetry)
		case err != nil:
			ep.failures++
			ep.needsFull = true
			ep.nextTry = now.Add(backoff(ep.failures, s.cfg.MaxBackoff))
		default:
			ep.failures, ep.nextTry = 0, time.Time{}
			ep.needsFull = resync
			if !resync {
				ep.lastSeq = full.Sequence
			}
		}
		s.mu.Unlock()
		outs = append(outs, Outcome{Endpoint: key, Resync: resync, Err: err,
			Rejected: rr.Rejected, RejectedCount: max(rr.RejectedCount, len(rr.Rejected)), Ignored: rr.Ignored})
	}
	s.forget(eps)
	return outs
}

// forget drops state of endpoints that no longer resolve (scaled-down replicas).
func (s *Sender) forget(eps []Endpoint) {
	live := map[string]bool{}
	for _, e := range eps {
		live[e.URL.String()] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.endpoints {
		if !live[k] {
			delete(s.endpoints, k)
		}
	}
}

// backoff doubles from 1s to max, with jitter so a fleet of agents does not retry in step
// after a server restart.
func backoff(failures int, ceiling time.Duration) time.Duration {
	d := time.Second << min(failures-1, 10)
	if d > ceiling {
		d = ceiling
	}
	return d/2 + rand.N(d/2+1)
}

func (s *Sender) post(ctx context.Context, e Endpoint, r *api.AgentReport) (api.ReportResponse, error) {
	var none api.ReportResponse
	u := e.URL
	body, err := json.Marshal(r)
	if err != nil {
		return none, fmt.Errorf("encode report: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String()+"/api/v1/report", bytes.NewReader(body))
	if err != nil {
		return none, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Host = e.Host
	tok, err := s.cfg.Token()
	if err != nil {
		return none, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return none, fmt.Errorf("post report to %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		var e api.ErrorResponse
		reason := ""
		if json.Unmarshal(b, &e) == nil {
			reason = e.Error
		}
		// 408 and 429 ask the agent to slow down: those back off like an outage.
		if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests {
			return none, &RefusedError{Endpoint: u.Host, Status: resp.StatusCode, Reason: reason}
		}
		if reason != "" {
			return none, fmt.Errorf("server %s failed the report: %s: %s", u.Host, resp.Status, reason)
		}
		return none, fmt.Errorf("server %s failed the report: %s", u.Host, resp.Status)
	}
	var rr api.ReportResponse
	if err := json.Unmarshal(b, &rr); err != nil {
		return none, fmt.Errorf("server %s: bad response: %w", u.Host, err)
	}
	return rr, nil
}
