package tracker

import "github.com/d44b/pulltrace/pkg/ingest"

type ingestEvent = ingest.Event
