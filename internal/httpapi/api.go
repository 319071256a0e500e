// Package httpapi serves the server's HTTP surface: report intake, the pull list, the SSE
// stream, health and the web UI.
package httpapi

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/d44b/pulltrace/internal/stream"
	"github.com/d44b/pulltrace/pkg/api"
)

// Store is what the handlers need of the aggregate.
type Store interface {
	Apply(r *api.AgentReport) bool
	Pulls(f api.Filter) []api.Pull
	stream.Snapshotter
}

// Config wires the handlers.
type Config struct {
	Store  Store
	Broker *stream.Broker
	// Token returns the shared agent token; "" disables report authentication.
	Token func() (string, error)
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
}

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
	h := &handlers{cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/report", h.report)
	mux.HandleFunc("GET /api/v1/pulls", h.pulls)
	mux.HandleFunc("GET /api/v1/events", h.events)
	mux.HandleFunc("GET /api/v1/version", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, api.ServerVersion{Version: cfg.Version, SchemaVersion: api.SchemaVersion})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, map[string]bool{"ok": true}) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := cfg.Ready()
		code := http.StatusOK
		if !ok {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"ok": ok, "reason": why})
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API endpoint %s %s", r.Method, r.URL.Path))
	})
	if cfg.UI != nil {
		mux.Handle("/", cfg.UI)
	}
	return mux
}

type handlers struct{ cfg Config }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.ErrorResponse{Error: msg})
}

func (h *handlers) report(w http.ResponseWriter, r *http.Request) {
	want, err := h.cfg.Token()
	if err != nil {
		h.cfg.OnReport("error")
		h.cfg.Logger.Error("cannot read the agent token", "error", err)
		writeError(w, http.StatusInternalServerError, "server cannot read its token")
		return
	}
	if want != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		// Constant time, so the token cannot be guessed byte by byte from timings.
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			h.cfg.OnReport("unauthorized")
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxReportBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.cfg.OnReport("too_large")
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("report larger than %d bytes", h.cfg.MaxReportBytes))
			return
		}
		h.cfg.OnReport("error")
		writeError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	var rep api.AgentReport
	// Unmarshal, not a Decoder: no copy of the body, and trailing data is an error too.
	if err := json.Unmarshal(body, &rep); err != nil {
		h.cfg.OnReport("invalid")
		writeError(w, http.StatusBadRequest, "body is not a JSON AgentReport: "+err.Error())
		return
	}
	if err := rep.Validate(); err != nil {
		h.cfg.OnReport("invalid")
		writeError(w, http.StatusBadRequest, "invalid report: "+err.Error())
		return
	}
	resync := h.cfg.Store.Apply(&rep)
	if rep.Heartbeat {
		h.cfg.OnReport("heartbeat")
	} else {
		h.cfg.OnReport("accepted")
	}
	writeJSON(w, http.StatusOK, api.ReportResponse{Resync: resync})
}

func (h *handlers) pulls(w http.ResponseWriter, r *http.Request) {
	f, err := api.ParseFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	pulls := h.cfg.Store.Pulls(f)
	if pulls == nil {
		pulls = []api.Pull{}
	}
	writeJSON(w, http.StatusOK, api.PullList{Pulls: pulls})
}

func (h *handlers) events(w http.ResponseWriter, r *http.Request) {
	f, err := api.ParseFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	h.cfg.Broker.Serve(w, r, f, h.cfg.Store)
}
