package envflag

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

func TestApplyPrefersCommandLine(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	poll := fs.Duration("poll-interval", time.Second, "")
	node := fs.String("node-name", "", "")
	var servers List
	fs.Var(&servers, "server", "")
	if err := fs.Parse([]string{"--node-name=cli"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"P_POLL_INTERVAL": "250ms", "P_NODE_NAME": "env", "P_SERVER": "http://a:1, http://b:2"}
	if err := Apply(fs, "P", func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if *poll != 250*time.Millisecond || *node != "cli" || strings.Join(servers, " ") != "http://a:1 http://b:2" {
		t.Fatalf("poll=%s node=%s servers=%v", *poll, *node, servers)
	}
}

func TestApplyNamesBadVariable(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Duration("poll-interval", time.Second, "")
	_ = fs.Parse(nil)
	err := Apply(fs, "P", func(k string) (string, bool) { return "soon", k == "P_POLL_INTERVAL" })
	if err == nil || !strings.Contains(err.Error(), "P_POLL_INTERVAL") || !strings.Contains(err.Error(), "--poll-interval") {
		t.Fatalf("error %v", err)
	}
}

func TestLevel(t *testing.T) {
	if _, err := Level("loud"); err == nil {
		t.Fatal("accepted a bad level")
	}
	if l, err := Level("warn"); err != nil || l.String() != "WARN" {
		t.Fatalf("%v %v", l, err)
	}
}
