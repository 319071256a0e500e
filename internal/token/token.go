// Package token reads the shared secret that agents send and the server checks. Both
// daemons read it the same way, so it lives apart from either.
package token

import (
	"fmt"
	"os"
	"strings"
)

// Source returns the token, or "" when none is set. It is called for every report, so a
// rotated Secret is picked up without a restart.
type Source func() (string, error)

// File reads the token from a file (a mounted Secret) at each call, falling back to env
// when no file is named. Tokens never come from flags, which `ps` would show.
func File(path, env string) Source {
	return func() (string, error) {
		if path == "" {
			return strings.TrimSpace(env), nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read token file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
}
