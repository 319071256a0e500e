// Package eventlog writes one JSON line per lifecycle event in the public v1 log format:
// {"schemaVersion":"v1","timestamp":...,"type":...,"nodeName":...,"pull":{...}}, the
// same object the SSE stream carries, so log pipelines and scripts share one schema.
// layer.* lines carry the pull's summary (no layers) and the layer, as on the stream.
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

// Encode marshals events once, for the log and the SSE stream alike, exactly as
// api.PullEvent.MarshalJSON does (a test holds it to that). One report's events mostly
// carry the same pull (a layer event per moving layer, then the pull's progress), so the
// pull, or for layer events its summary, is encoded once and spliced in.
func Encode(events []api.PullEvent) [][]byte {
	out := make([][]byte, len(events))
	var prev *api.Pull
	var full, summary []byte
	for i := range events {
		ev := &events[i]
		if prev == nil || !prev.Identical(&ev.Pull) {
			prev, full, summary = &ev.Pull, nil, nil
		}
		var err error
		pullJSON := full
		if ev.Type.IsLayer() {
			if summary == nil {
				summary, err = ev.Pull.MarshalSummary()
			}
			pullJSON = summary
		} else if full == nil {
			full, err = json.Marshal(&ev.Pull)
			pullJSON = full
		}
		if err != nil {
			prev = nil
			continue // a Pull always marshals; an empty slot is skipped downstream
		}
		out[i] = encodeEvent(ev, pullJSON)
	}
	return out
}

// encodeEvent writes the PullEvent object in its struct's field order around a ready pull.
func encodeEvent(ev *api.PullEvent, pullJSON []byte) []byte {
	ts, _ := ev.Timestamp.MarshalJSON()
	buf := make([]byte, 0, len(pullJSON)+256)
	buf = append(buf, `{"schemaVersion":`...)
	buf = appendString(buf, ev.SchemaVersion)
	buf = append(buf, `,"timestamp":`...)
	buf = append(buf, ts...)
	buf = append(buf, `,"type":`...)
	buf = appendString(buf, string(ev.Type))
	buf = append(buf, `,"nodeName":`...)
	buf = appendString(buf, ev.NodeName)
	buf = append(buf, `,"pull":`...)
	buf = append(buf, pullJSON...)
	if ev.Layer != nil {
		l, _ := json.Marshal(ev.Layer)
		buf = append(buf, `,"layer":`...)
		buf = append(buf, l...)
	}
	return append(buf, '}')
}

// appendString quotes s as encoding/json does. Names, types and node names are plain
// ASCII almost always; anything json would escape goes through json itself.
func appendString(buf []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return append(buf, b...)
		}
	}
	buf = append(buf, '"')
	buf = append(buf, s...)
	return append(buf, '"')
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
