package sseclient

import (
	"io"
	"strings"
	"testing"
)

func TestReader(t *testing.T) {
	r := NewReader(strings.NewReader("retry: 3000\n\n: ping\n\nid: 7\nevent: snapshot\ndata: {\"pulls\":[]}\n\n: ping\nid: 8\ndata: a\ndata: b\n\n"))
	ev, err := r.Next()
	if err != nil || ev.ID != "7" || ev.Type != "snapshot" || ev.Data != `{"pulls":[]}` {
		t.Fatalf("%+v %v", ev, err)
	}
	ev, err = r.Next()
	if err != nil || ev.ID != "8" || ev.Type != "" || ev.Data != "a\nb" || r.Comments != 2 || r.LastID != "8" {
		t.Fatalf("%+v %v comments=%d", ev, err, r.Comments)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
}
