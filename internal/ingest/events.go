package ingest

import (
	"context"
	"fmt"
	"time"

	eventsapi "github.com/containerd/containerd/api/events"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/go-digest"
)

// Event is the part of containerd's event stream a pull tracker cares about.
type Event struct {
	Time time.Time
	// Commit is set for /content/create: a blob finished downloading.
	Commit digest.Digest
	Size   int64
	// Image is set for /images/create and /images/update: an image record now names a
	// target. It is the only place the tagged name appears.
	Image string
}

// Topics the tracker subscribes to; everything else (snapshots, tasks) is noise here.
var Topics = []string{
	`topic=="/content/create"`,
	`topic=="/images/create"`,
	`topic=="/images/update"`,
}

// Decode turns an envelope into an Event; ok is false for envelopes of no interest or
// from another namespace.
func Decode(env *events.Envelope, namespace string) (Event, bool, error) {
	if env == nil || env.Event == nil || (namespace != "" && env.Namespace != namespace) {
		return Event{}, false, nil
	}
	v, err := typeurl.UnmarshalAny(env.Event)
	if err != nil {
		return Event{}, false, fmt.Errorf("decode %s event: %w", env.Topic, err)
	}
	ev := Event{Time: env.Timestamp}
	switch e := v.(type) {
	case *eventsapi.ContentCreate:
		d, err := digest.Parse(e.Digest)
		if err != nil {
			return Event{}, false, fmt.Errorf("content create event digest %q: %w", e.Digest, err)
		}
		ev.Commit, ev.Size = d, e.Size
	case *eventsapi.ImageCreate:
		ev.Image = e.Name
	case *eventsapi.ImageUpdate:
		ev.Image = e.Name
	default:
		return Event{}, false, nil
	}
	return ev, true, nil
}

// Subscriber is satisfied by the containerd client.
type Subscriber interface {
	Subscribe(ctx context.Context, filters ...string) (ch <-chan *events.Envelope, errs <-chan error)
}
