package agent

import (
	"context"
	"errors"
	"sync"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var errNotConnected = errors.New("containerd is not connected")

// source lets one tracker outlive many containerd connections: it forwards to whichever
// client is current and fails fast between connections.
type source struct {
	mu sync.RWMutex
	c  *containerd.Client
}

func (s *source) set(c *containerd.Client) {
	s.mu.Lock()
	s.c = c
	s.mu.Unlock()
}

func (s *source) client() (*containerd.Client, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.c == nil {
		return nil, errNotConnected
	}
	return s.c, nil
}

func (s *source) Info(ctx context.Context, d digest.Digest) (content.Info, error) {
	c, err := s.client()
	if err != nil {
		return content.Info{}, err
	}
	return c.ContentStore().Info(ctx, d)
}

func (s *source) Walk(ctx context.Context, fn content.WalkFunc, filters ...string) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	return c.ContentStore().Walk(ctx, fn, filters...)
}

func (s *source) ReaderAt(ctx context.Context, desc ocispec.Descriptor) (content.ReaderAt, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	return c.ContentStore().ReaderAt(ctx, desc)
}

func (s *source) ListStatuses(ctx context.Context, filters ...string) ([]content.Status, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	return c.ContentStore().ListStatuses(ctx, filters...)
}

func (s *source) Get(ctx context.Context, name string) (images.Image, error) {
	c, err := s.client()
	if err != nil {
		return images.Image{}, err
	}
	return c.ImageService().Get(ctx, name)
}

func (s *source) List(ctx context.Context, filters ...string) ([]images.Image, error) {
	c, err := s.client()
	if err != nil {
		return nil, err
	}
	return c.ImageService().List(ctx, filters...)
}
