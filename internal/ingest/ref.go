// Package ingest reads what containerd knows about downloads in flight: ingest statuses,
// the manifests and indexes that name the blobs being fetched, and the events that mark
// commits and new image records. It only reads; it never writes to containerd.
package ingest

import (
	"strings"

	"github.com/opencontainers/go-digest"
)

// Kind is the blob kind containerd encodes in an ingest ref.
type Kind string

const (
	KindLayer    Kind = "layer"
	KindManifest Kind = "manifest"
	KindIndex    Kind = "index"
	KindConfig   Kind = "config"
)

// ParseRef splits a remote-fetch ingest ref ("layer-sha256:<hex>") into kind and digest.
// Refs of other writers (ctr content ingest, imports) do not follow the pattern and are
// reported as not ok, so they are never mistaken for a pull.
func ParseRef(ref string) (Kind, digest.Digest, bool) {
	kind, rest, ok := strings.Cut(ref, "-")
	if !ok {
		return "", "", false
	}
	switch Kind(kind) {
	case KindLayer, KindManifest, KindIndex, KindConfig:
	default:
		return "", "", false
	}
	d, err := digest.Parse(rest)
	if err != nil {
		return "", "", false
	}
	return Kind(kind), d, true
}
