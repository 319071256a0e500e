package token

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("  s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := File(path, "from-env")
	if got, err := src(); err != nil || got != "s3cret" {
		t.Fatalf("got %q, %v; want the file's token, trimmed", got, err)
	}
	// A rotated Secret is read at the next call.
	if err := os.WriteFile(path, []byte("rotated"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := src(); got != "rotated" {
		t.Fatalf("after rotation got %q", got)
	}
	if got, err := File("", " env-token\n")(); err != nil || got != "env-token" {
		t.Fatalf("no file: got %q, %v; want the env token", got, err)
	}
	if got, err := File("", "")(); err != nil || got != "" {
		t.Fatalf("nothing set: got %q, %v; want no token", got, err)
	}
	_, err := File(filepath.Join(t.TempDir(), "missing"), "from-env")()
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a missing file must fail (not fall back to env) with fs.ErrNotExist, got %v", err)
	}
}
