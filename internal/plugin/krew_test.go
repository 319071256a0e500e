package plugin_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The krew distribution as users get it: hack/krew-test.sh builds this platform's archive,
// validates plugins/krew.yaml with krew's validator, installs the archive with the real
// krew into a temp KREW_ROOT and runs `kubectl pulltrace version` through a real kubectl.
func TestKrewInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the plugin and runs krew and kubectl; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	script, err := filepath.Abs(filepath.Join("..", "..", "hack", "krew-test.sh"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "bash", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	t.Logf("%s", out)
}
