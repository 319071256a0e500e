package agent

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	versionapi "github.com/containerd/containerd/api/services/version/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/d44b/pulltrace/internal/report"
)

func TestCheckContainerdVersion(t *testing.T) {
	for v, ok := range map[string]bool{
		"v2.4.2": true, "2.0.14": true, "v2.2.9+unknown": true, "v3.0.0-rc.1": true, "v2.1.0-beta.0": true,
		"dev": true, "": true, // unparseable vendor builds are let through
		"v1.7.35": false, "1.6.38": false, "v1.7.0-rc.2": false, "v0.2.0": false,
	} {
		err := CheckContainerdVersion(v)
		if (err == nil) != ok {
			t.Errorf("%q: %v", v, err)
		}
		var u *UnsupportedContainerdError
		if !ok && (!errors.As(err, &u) || !strings.Contains(err.Error(), v) || !strings.Contains(err.Error(), "2.0 and later")) {
			t.Errorf("%q: the error must name the version found and the ones supported: %v", v, err)
		}
	}
}

type oldContainerd struct {
	versionapi.UnimplementedVersionServer
}

func (oldContainerd) Version(context.Context, *emptypb.Empty) (*versionapi.VersionResponse, error) {
	return &versionapi.VersionResponse{Version: "v1.7.35", Revision: "test"}, nil
}

// An agent started against containerd 1.7 (its version API answering over the real
// client) stops at once with an error naming both versions, rather than retrying forever.
func TestAgentRefusesContainerd17(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	versionapi.RegisterVersionServer(srv, oldContainerd{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	sender, err := report.New(report.Config{Servers: []string{"http://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Socket: sock, Namespace: "k8s.io", NodeName: "n", Sender: sender,
		PollInterval: time.Second, ReportInterval: time.Second, HeartbeatInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = a.Run(ctx)
	var u *UnsupportedContainerdError
	if !errors.As(err, &u) || u.Found != "v1.7.35" {
		t.Fatalf("Run against containerd 1.7: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the agent kept retrying instead of refusing")
	}
	if ok, why := a.Health(); ok || !strings.Contains(why, "v1.7.35") {
		t.Fatalf("health: %v %q", ok, why)
	}
}
