// Package httpapi serves the server's HTTP surface: report intake, the pull list, the SSE
// stream, health and the web UI.
package httpapi

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/d44b/pulltrace/internal/aggregate"
	"github.com/d44b/pulltrace/internal/group"
	"github.com/d44b/pulltrace/internal/stream"
	"github.com/d44b/pulltrace/pkg/api"
)

// Store is what the handlers need of the aggregate.
type Store interface {
	ApplyReport(r *api.AgentReport, skip []api.PullRejection) aggregate.Result
	List(f api.Filter, limit int, after *api.Pull) ([]api.Pull, int)
	// Refused records a turned-away report from an authenticated sender that named its
	// node, so GET /api/v1/nodes says that node's data is not fresh and why.
	Refused(node, reason string)
	Nodes() []api.NodeStatus
	stream.Store
}

// Config wires the handlers.
type Config struct {
	Store  Store
	Broker *stream.Broker
	// Groups serves /api/v1/groups and its stream; nil leaves them out.
	Groups *group.Index
	// Token returns the shared agent token; "" disables report authentication unless
	// TokenRequired, when it refuses every report instead (fails closed).
	Token         func() (string, error)
	TokenRequired bool
	// MaxReportBytes caps a report body (default 1 MiB).
	MaxReportBytes int64
	// Ready reports whether the server can serve correct answers (informers synced).
	Ready   func() (bool, string)
	Version string
	// UI serves everything that is not the API.
	UI http.Handler
	// OnReport is told each report's outcome, for metrics.
	OnReport func(result string)
	Logger   *slog.Logger
	// WarnEvery is the least interval between two warnings of one kind (rejected,
	// unauthorized, ignored reports); the ones in between are counted in the next.
	WarnEvery time.Duration
}

// Page sizes of GET /api/v1/pulls.
const (
	DefaultLimit = 500
	MaxLimit     = 5000
)

// Handler returns the mux.
func Handler(cfg Config) http.Handler {
	if cfg.MaxReportBytes <= 0 {
		cfg.MaxReportBytes = 1 << 20
	}
	if cfg.OnReport == nil {
		cfg.OnReport = func(string) {}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Ready == nil {
		cfg.Ready = func() (bool, string) { return true, "ok" }
	}
	if cfg.Token == nil {
		cfg.Token = func() (string, error) { return "", nil }
	}
	if cfg.WarnEvery <= 0 {
		cfg.WarnEvery = 10 * time.Second
	}
	h := &handlers{cfg: cfg, warn: newLimiter(cfg.WarnEvery)}
	mux := http.NewServeMux()
	route := func(path string, methods map[string]http.HandlerFunc) {
		allow := make([]string, 0, len(methods)+1)
		for m, fn := range methods {
			mux.HandleFunc(m+" "+path, fn)
			allow = append(allow, m)
			if m == http.MethodGet {
				allow = append(allow, http.MethodHead)
			}
		}
		slices.Sort(allow)
		// Any other method on an API path: 405 naming the ones it takes.
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s takes %s, not %s", path, strings.Join(allow, ", "), truncate(r.Method, 16)))
		})
	}
	route("/api/v1/report", map[string]http.HandlerFunc{http.MethodPost: h.report})
	route("/api/v1/pulls", map[string]http.HandlerFunc{http.MethodGet: h.pulls})
	route("/api/v1/events", map[string]http.HandlerFunc{http.MethodGet: h.events})
	route("/api/v1/nodes", map[string]http.HandlerFunc{http.MethodGet: func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, api.NodeList{Nodes: cfg.Store.Nodes()})
	}})
	if cfg.Groups != nil {
		route("/api/v1/groups", map[string]http.HandlerFunc{http.MethodGet: h.groups})
		route("/api/v1/groups/events", map[string]http.HandlerFunc{http.MethodGet: h.groupEvents})
	}
	route("/api/v1/version", map[string]http.HandlerFunc{http.MethodGet: func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, api.ServerVersion{Version: cfg.Version, SchemaVersion: api.SchemaVersion})
	}})
	route("/healthz", map[string]http.HandlerFunc{http.MethodGet: func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	}})
	route("/readyz", map[string]http.HandlerFunc{http.MethodGet: func(w http.ResponseWriter, _ *http.Request) {
		ok, why := cfg.Ready()
		code := http.StatusOK
		if !ok {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"ok": ok, "reason": why})
	}})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API endpoint %s %s", truncate(r.Method, 16), truncate(r.URL.Path, 256)))
	})
	if cfg.UI != nil {
		mux.Handle("/", cfg.UI)
	}
	return mux
}

type handlers struct {
	cfg  Config
	warn *limiter
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	// Never let a browser sniff an API answer into something it would run.
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.ErrorResponse{Error: msg})
}

// truncate cuts s for an answer or a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// bearer reads an Authorization header: the scheme is case-insensitive (RFC 9110 11.1).
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

func (h *handlers) report(w http.ResponseWriter, r *http.Request) {
	log := h.cfg.Logger
	want, err := h.cfg.Token()
	if err == nil && want == "" && h.cfg.TokenRequired {
		err = errors.New("the token file is empty")
	}
	if err != nil {
		// A configured token that cannot be read, or reads empty, refuses every report:
		// it never turns authentication off.
		h.cfg.OnReport("error")
		h.warn.do("token", func(suppressed int) {
			log.Error("cannot read the agent token: refusing reports until it can be read", "error", err, "suppressed", suppressed)
		})
		writeError(w, http.StatusServiceUnavailable, "server cannot read its agent token; reports are refused until it can")
		return
	}
	if want != "" {
		got, ok := bearer(r.Header.Get("Authorization"))
		// Constant time, so the token cannot be guessed byte by byte from timings.
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			h.cfg.OnReport("unauthorized")
			h.warn.do("unauthorized", func(suppressed int) {
				log.Warn("report refused: missing or wrong bearer token", "remote", r.RemoteAddr, "suppressed", suppressed)
			})
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxReportBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.cfg.OnReport("too_large")
			h.warn.do("rejected", func(suppressed int) {
				log.Warn("report rejected", "remote", r.RemoteAddr, "reason", "body too large", "limit", h.cfg.MaxReportBytes, "suppressed", suppressed)
			})
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("report larger than %d bytes", h.cfg.MaxReportBytes))
			return
		}
		h.cfg.OnReport("error")
		writeError(w, http.StatusBadRequest, "reading body: "+truncate(err.Error(), 200))
		return
	}
	out := Intake(h.cfg.Store, body)
	h.cfg.OnReport(out.Result)
	switch {
	case out.Code != http.StatusOK:
		// Only authenticated senders get here: a stranger cannot mark a node.
		h.cfg.Store.Refused(out.Node, out.Error)
		h.warn.do("rejected", func(suppressed int) {
			log.Warn("report rejected", "remote", r.RemoteAddr, "node", truncate(out.Node, 253), "reason", truncate(out.Error, 512), "suppressed", suppressed)
		})
		writeError(w, out.Code, out.Error)
		return
	case out.Response.RejectedCount > 0:
		h.warn.do("rejected", func(suppressed int) {
			log.Warn("report applied without its invalid pulls", "remote", r.RemoteAddr, "node", out.Node,
				"rejectedPulls", out.Response.RejectedCount, "first", out.Response.Rejected[0].Error, "suppressed", suppressed)
		})
	case out.Response.Ignored != "":
		h.warn.do("ignored", func(suppressed int) {
			log.Warn("report ignored", "remote", r.RemoteAddr, "node", out.Node, "reason", out.Response.Ignored, "suppressed", suppressed)
		})
	}
	writeJSON(w, http.StatusOK, out.Response)
}

// Outcome is what became of one report body.
type Outcome struct {
	Code     int    // HTTP status
	Result   string // metrics label: accepted, partial, heartbeat, ignored, invalid
	Error    string // for a refused report
	Node     string
	Response api.ReportResponse
}

// Intake decodes, validates and applies one report body. A report is refused (400) only
// for what makes all of it unusable; invalid pulls are left out and named, the rest is
// applied. Every answer is bounded, whatever the body.
func Intake(store Store, body []byte) Outcome {
	var rep api.AgentReport
	// Unmarshal, not a Decoder: no copy of the body, and trailing data is an error too.
	if err := json.Unmarshal(body, &rep); err != nil {
		return Outcome{Code: http.StatusBadRequest, Result: "invalid", Error: "body is not a JSON AgentReport: " + truncate(err.Error(), 200)}
	}
	node := truncate(rep.NodeName, 253)
	if err := rep.ValidateHeader(); err != nil {
		return Outcome{Code: http.StatusBadRequest, Result: "invalid", Node: node, Error: "invalid report: " + err.Error()}
	}
	rejected := rep.ValidatePulls()
	heartbeat := rep.Heartbeat
	res := store.ApplyReport(&rep, rejected)
	out := Outcome{Code: http.StatusOK, Node: node, Response: api.ReportResponse{Resync: res.Resync, Ignored: res.Ignored}}
	switch {
	case res.Ignored != "":
		out.Result = "ignored"
	case heartbeat:
		out.Result = "heartbeat"
	case len(rejected) > 0:
		out.Result = "partial"
	default:
		out.Result = "accepted"
	}
	if len(rejected) > 0 {
		out.Response.Rejected = rejected[:min(len(rejected), api.MaxReportErrors)]
		out.Response.RejectedCount = len(rejected)
	}
	return out
}

func (h *handlers) pulls(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, err := api.ParseFilter(q)
	if err != nil {
		writeError(w, http.StatusBadRequest, truncate(err.Error(), 512))
		return
	}
	limit := DefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: want a positive number (at most %d)", truncate(v, 32), MaxLimit))
			return
		}
		limit = min(n, MaxLimit)
	}
	var after *api.Pull
	if v := q.Get("continue"); v != "" {
		p, err := decodeContinue(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "continue: not a token this server gave out")
			return
		}
		after = &p
	}
	pulls, remaining := h.cfg.Store.List(f, limit, after)
	if pulls == nil {
		pulls = []api.Pull{}
	}
	list := api.PullList{SchemaVersion: api.SchemaVersion, Metadata: &api.ListMeta{}, Pulls: pulls}
	if remaining > 0 {
		n := int64(remaining)
		list.Metadata.RemainingItemCount = &n
		list.Metadata.Continue = encodeContinue(&pulls[len(pulls)-1])
	}
	writeJSON(w, http.StatusOK, list)
}

// A continue token is where the page ended, in list order: the last pull's start and id.
// Pulls that arrive or leave meanwhile shift nothing: the next page starts after it.
type continueToken struct {
	StartedAt time.Time `json:"s"`
	ID        string    `json:"i"`
}

func encodeContinue(p *api.Pull) string {
	b, _ := json.Marshal(continueToken{StartedAt: p.StartedAt, ID: p.ID})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeContinue(s string) (api.Pull, error) {
	if len(s) > 1024 {
		return api.Pull{}, errors.New("too long")
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return api.Pull{}, err
	}
	var t continueToken
	if err := json.Unmarshal(b, &t); err != nil {
		return api.Pull{}, err
	}
	if t.ID == "" {
		return api.Pull{}, errors.New("no position")
	}
	return api.Pull{StartedAt: t.StartedAt, ID: t.ID}, nil
}

func (h *handlers) events(w http.ResponseWriter, r *http.Request) {
	f, err := api.ParseFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, truncate(err.Error(), 512))
		return
	}
	if r.Method == http.MethodHead {
		// The headers a GET would get; no stream, no follower slot.
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		return
	}
	h.cfg.Broker.Serve(w, r, f)
}

func (h *handlers) groups(w http.ResponseWriter, r *http.Request) {
	q, err := api.ParseGroupQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, truncate(err.Error(), 512))
		return
	}
	writeJSON(w, http.StatusOK, api.GroupList{SchemaVersion: api.SchemaVersion, By: q.By, Groups: h.cfg.Groups.List(q)})
}

func (h *handlers) groupEvents(w http.ResponseWriter, r *http.Request) {
	q, err := api.ParseGroupQuery(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, truncate(err.Error(), 512))
		return
	}
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		return
	}
	h.cfg.Groups.Serve(w, r, q, group.StreamConfig{})
}
