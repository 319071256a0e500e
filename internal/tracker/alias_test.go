package tracker

import "github.com/d44b/pulltrace/internal/ingest"

type ingestEvent = ingest.Event
