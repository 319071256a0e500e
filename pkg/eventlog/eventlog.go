// Package eventlog writes one JSON line per lifecycle event in the public v1 log format:
// {"schemaVersion":"v1","timestamp":...,"type":...,"nodeName":...,"pull":{...}}, the
// same object the SSE stream carries, so log pipelines and scripts share one schema.
package eventlog

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"

	"github.com/d44b/pulltrace/pkg/api"
)

// Logger writes lifecycle lines through log/slog. Its handler prints the event's own JSON
// and nothing else (no time, level or msg keys): the line is the v1 event, byte for byte
// what SSE clients get, encoded once for both.
type Logger struct {
	log *slog.Logger
}

// eventKey is the one attribute the handler prints.
const eventKey = "event"

type handler struct {
	mu    sync.Mutex
	w     io.Writer
	level slog.Leveler
}

func (h *handler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level.Level() }
func (h *handler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *handler) WithGroup(string) slog.Handler                { return h }

func (h *handler) Handle(_ context.Context, r slog.Record) error {
	var line []byte
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == eventKey {
			if raw, ok := a.Value.Any().(json.RawMessage); ok {
				line = raw
			}
			return false
		}
		return true
	})
	if line == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	buf := make([]byte, 0, len(line)+1)
	buf = append(append(buf, line...), '\n')
	_, err := h.w.Write(buf)
	return err
}

// New writes to w at info level; level filters apply as usual.
func New(w io.Writer, level slog.Leveler) *Logger {
	return &Logger{log: slog.New(&handler{w: w, level: level})}
}

// Encode marshals events once, for the log and the SSE stream alike.
func Encode(events []api.PullEvent) [][]byte {
	out := make([][]byte, len(events))
	for i := range events {
		b, err := json.Marshal(&events[i])
		if err != nil {
			continue // a PullEvent always marshals; an empty slot is skipped downstream
		}
		out[i] = b
	}
	return out
}

// Log writes one line per event; data[i] is events[i] encoded by Encode.
func (l *Logger) Log(events []api.PullEvent, data [][]byte) {
	for i := range events {
		if data[i] == nil {
			continue
		}
		l.log.LogAttrs(context.Background(), slog.LevelInfo, string(events[i].Type), slog.Any(eventKey, json.RawMessage(data[i])))
	}
}
