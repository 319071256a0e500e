// Package eventlog writes one JSON line per lifecycle event in the public v1 log format:
// {"schemaVersion":"v1","timestamp":...,"type":...,"nodeName":...,"pull":{...}}, the
// same object the SSE stream carries, so log pipelines and scripts share one schema.
package eventlog

import (
	"context"
	"io"
	"log/slog"

	"github.com/d44b/pulltrace/pkg/api"
)

// Logger writes lifecycle lines through log/slog with the handler's own keys (time, level,
// msg) removed, leaving exactly the v1 event object.
type Logger struct {
	log *slog.Logger
}

// New writes to w. Lines are at info level; level filters apply as usual.
func New(w io.Writer, level slog.Leveler) *Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey) {
				return slog.Attr{}
			}
			return a
		},
	})
	return &Logger{log: slog.New(h)}
}

// Log writes the events, one line each.
func (l *Logger) Log(events []api.PullEvent) {
	for i := range events {
		ev := &events[i]
		attrs := []slog.Attr{
			slog.String("schemaVersion", ev.SchemaVersion),
			slog.Time("timestamp", ev.Timestamp),
			slog.String("type", string(ev.Type)),
			slog.String("nodeName", ev.NodeName),
			slog.Any("pull", ev.Pull),
		}
		if ev.Layer != nil {
			attrs = append(attrs, slog.Any("layer", *ev.Layer))
		}
		l.log.LogAttrs(context.Background(), slog.LevelInfo, "", attrs...)
	}
}
