// Package sseclient reads a text/event-stream: the plugin's follow command and the tests
// use it to consume the server's SSE stream.
package sseclient

import (
	"bufio"
	"io"
	"strings"
)

// Event is one dispatched SSE event.
type Event struct {
	ID string
	// Type is the `event:` field; empty for a plain message (SSE's "message"), which is
	// how the server sends PullEvents. Only the snapshot is named.
	Type string
	Data string
	// Retry is the reconnect delay in milliseconds the server suggested, if any.
	Retry string
}

// Reader parses events from a stream.
type Reader struct {
	sc *bufio.Scanner
	// Comments counts comment lines (heartbeats) seen so far.
	Comments int
	// LastID is the id of the last event read, for Last-Event-ID on reconnect.
	LastID string
}

// NewReader reads from r. Lines may be up to 16 MiB: a snapshot of many pulls is one line.
func NewReader(r io.Reader) *Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	return &Reader{sc: sc}
}

// Next returns the next event with data; io.EOF when the stream ends.
func (r *Reader) Next() (Event, error) {
	var ev Event
	var data []string
	for r.sc.Scan() {
		line := r.sc.Text()
		if line == "" {
			if len(data) == 0 {
				ev = Event{Retry: ev.Retry}
				continue
			}
			ev.Data = strings.Join(data, "\n")
			if ev.ID != "" {
				r.LastID = ev.ID
			}
			return ev, nil
		}
		if strings.HasPrefix(line, ":") {
			r.Comments++
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.ID = value
		case "event":
			ev.Type = value
		case "data":
			data = append(data, value)
		case "retry":
			ev.Retry = value
		}
	}
	if err := r.sc.Err(); err != nil {
		return Event{}, err
	}
	return Event{}, io.EOF
}
