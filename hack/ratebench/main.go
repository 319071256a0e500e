// Command ratebench measures how truthful the speed and ETA that Pulltrace shows are, against
// the known rate of the harness's throttling registry proxy: real containerd pulling through
// the CRI, the real agent and server binaries with their default poll (1 s) and report (2 s)
// intervals, read from GET /api/v1/pulls as a user's UI or plugin would. It prints figures
// and asserts nothing: accuracy is measured, never a test verdict.
//
//	go run ./hack/ratebench
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/internal/harness/stack"
	"github.com/d44b/pulltrace/pkg/api"
)

var (
	verbose = flag.Bool("v", false, "print every sample")
	runs    = flag.Int("runs", 3, "repetitions of each scenario (a loaded machine makes single runs noisy)")
)

func main() {
	seconds := flag.Float64("seconds", 10, "length of each steady pull at its rate")
	flag.Parse()
	if err := run(*seconds); err != nil {
		fmt.Fprintln(os.Stderr, "ratebench:", err)
		os.Exit(1)
	}
}

type rig struct {
	node   *cluster.Cluster
	server string
	n      int
}

func run(seconds float64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "pulltrace-ratebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	if err := stack.Build(ctx, bin); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	node, err := cluster.Start(ctx, cluster.Options{Containerd: true, PullRate: 1 << 20, Dir: filepath.Join(dir, "node"), Logger: log})
	if err != nil {
		return err
	}
	defer node.Close()
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	maddr, err := freeAddr()
	if err != nil {
		return err
	}
	srv, err := node.StartProcess(ctx, "pulltrace-server", filepath.Join(bin, "pulltrace-server"),
		[]string{"--listen=" + addr, "--metrics-addr=" + maddr}, os.Environ())
	if err != nil {
		return err
	}
	defer srv.Stop(5 * time.Second)
	r := &rig{node: node, server: "http://" + addr}
	if err := waitOK(ctx, r.server+"/healthz"); err != nil {
		return err
	}
	// The chart's defaults: a poll every second, a changed snapshot at most every 2 s.
	agent, err := node.StartProcess(ctx, "pulltrace-agent", filepath.Join(bin, "pulltrace-agent"), []string{
		"--containerd-socket=" + node.ContainerdSocket, "--node-name=bench", "--server=" + r.server,
		"--poll-interval=1s", "--report-interval=2s", "--health-addr=127.0.0.1:0",
	}, os.Environ())
	if err != nil {
		return err
	}
	defer agent.Stop(5 * time.Second)

	fmt.Println("Speed and ETA as served by GET /api/v1/pulls (sampled every 100 ms), against the throttle's rate.")
	fmt.Println("Agent: poll 1 s, report 2 s (chart defaults). Rate: bytes over a 3 s window of agent-timed samples.")
	fmt.Println()
	for _, rate := range []int64{3_000_000, 12_000_000} {
		for range *runs {
			if err := r.steady(ctx, rate, seconds); err != nil {
				return err
			}
		}
	}
	for range *runs {
		if err := r.change(ctx); err != nil {
			return err
		}
	}
	return nil
}

// sample is what GET /api/v1/pulls said at one moment.
type sample struct {
	at   time.Time
	pull api.Pull
}

// pull pushes an image of size bytes, starts a CRI pull at rate, and samples the server's
// view of it every 100 ms, calling during(s) for each, until it completes.
func (r *rig) pull(ctx context.Context, size, rate int64, during func(s sample)) ([]sample, error) {
	r.n++
	im, err := r.node.PushImage(ctx, cluster.ImageSpec{Repo: fmt.Sprintf("bench/r%d", r.n), Tag: "v1",
		LayerSizes: []int64{size / 3, size / 3, size - 2*(size/3)}})
	if err != nil {
		return nil, err
	}
	r.node.SetPullRate(rate)
	pulled := make(chan error, 1)
	go func() { pulled <- r.node.CRIPull(ctx, im.Ref) }()
	var out []sample
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-pulled:
			if err != nil {
				return nil, err
			}
			pulled = nil
		case <-tick.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		p, ok, err := r.find(ctx, im.Repo)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		s := sample{time.Now(), p}
		out = append(out, s)
		if during != nil {
			during(s)
		}
		if p.State.Finished() {
			if p.State != api.PullCompleted {
				return nil, fmt.Errorf("pull of %s ended %s: %s", im.Ref, p.State, p.Error)
			}
			return out, nil
		}
	}
}

func (r *rig) find(ctx context.Context, repo string) (api.Pull, bool, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.server+"/api/v1/pulls?image="+repo, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return api.Pull{}, false, err
	}
	defer resp.Body.Close()
	var l api.PullList
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		return api.Pull{}, false, err
	}
	if len(l.Pulls) == 0 {
		return api.Pull{}, false, nil
	}
	return l.Pulls[0], true, nil
}

// allIn is when the server first showed every byte: the end of the download as the user
// sees it (the same report delay as every other sample, so it cancels out of the ETA).
func allIn(ss []sample) time.Time {
	for _, s := range ss {
		if s.pull.TotalBytes > 0 && s.pull.DownloadedBytes >= s.pull.TotalBytes {
			return s.at
		}
	}
	return ss[len(ss)-1].at
}

// firstBytes is when the server first showed any byte of the pull.
func firstBytes(ss []sample) (time.Time, int) {
	for i, s := range ss {
		if s.pull.DownloadedBytes > 0 {
			return s.at, i
		}
	}
	return ss[0].at, 0
}

func pct(got, want float64) string { return fmt.Sprintf("%+.1f%%", (got-want)/want*100) }

func mb(v float64) string { return fmt.Sprintf("%.2f MB/s", v/1e6) }

func (r *rig) steady(ctx context.Context, rate int64, seconds float64) error {
	size := int64(float64(rate) * seconds)
	ss, err := r.pull(ctx, size, rate, nil)
	if err != nil {
		return err
	}
	t0, i0 := firstBytes(ss)
	end := allIn(ss)
	if *verbose {
		for _, s := range ss {
			eta := -1.0
			if s.pull.ETASeconds != nil {
				eta = *s.pull.ETASeconds
			}
			fmt.Printf("   %6.2fs %5.1f%% %10d/%d %s eta %.1f %s\n", s.at.Sub(t0).Seconds(), s.pull.Percent, s.pull.DownloadedBytes, s.pull.TotalBytes, mb(s.pull.BytesPerSec), eta, s.pull.State)
		}
	}
	fmt.Printf("== steady %s, %.1f MB image (%d samples, bytes visible for %.1f s)\n", mb(float64(rate)), float64(size)/1e6, len(ss), end.Sub(t0).Seconds())
	for _, after := range []time.Duration{2 * time.Second, 3 * time.Second, 5 * time.Second} {
		for _, s := range ss[i0:] {
			if s.at.Sub(t0) >= after {
				fmt.Printf("   speed %s after first bytes: %s (%s)\n", after, mb(s.pull.BytesPerSec), pct(s.pull.BytesPerSec, float64(rate)))
				break
			}
		}
	}
	for _, at := range []float64{20, 50} {
		for _, s := range ss {
			if s.pull.Percent >= at && s.pull.ETASeconds != nil && s.pull.DownloadedBytes < s.pull.TotalBytes {
				left := end.Sub(s.at).Seconds()
				fmt.Printf("   ETA at %.0f%% (shown %.1f%%): %.1f s, actually remained %.1f s (%s)\n", at, s.pull.Percent, *s.pull.ETASeconds, left, pct(*s.pull.ETASeconds, left))
				break
			}
		}
	}
	// Worst error once the first window is full, until the last byte.
	worst := 0.0
	for _, s := range ss[i0:] {
		if s.at.Sub(t0) < 3*time.Second || !s.at.Before(end) || s.pull.DownloadedBytes >= s.pull.TotalBytes {
			continue
		}
		worst = max(worst, math.Abs(s.pull.BytesPerSec-float64(rate))/float64(rate))
	}
	fmt.Printf("   worst speed error from 3 s after first bytes to the last byte: %.1f%%\n\n", worst*100)
	return nil
}

// change: 8 MB/s, then 2 MB/s at 25%, then 1 B/s (no bytes) for 12 s at 50%, then 8 MB/s.
func (r *rig) change(ctx context.Context) error {
	const fast, slow = 8_000_000, 2_000_000
	size := int64(60_000_000)
	phase := 0
	var tSlow, tStop, tResume time.Time
	ss, err := r.pull(ctx, size, fast, func(s sample) {
		switch {
		case phase == 0 && s.pull.Percent >= 25:
			r.node.SetPullRate(slow)
			tSlow, phase = time.Now(), 1
		case phase == 1 && s.pull.Percent >= 50:
			r.node.SetPullRate(1)
			tStop, phase = time.Now(), 2
		case phase == 2 && time.Since(tStop) >= 12*time.Second:
			r.node.SetPullRate(fast)
			tResume, phase = time.Now(), 3
		}
	})
	if err != nil {
		return err
	}
	if phase < 3 {
		return fmt.Errorf("the pull ended in phase %d", phase)
	}
	fmt.Printf("== rate change: %s, %s from 25%%, no bytes for 12 s from 50%%, then %s\n", mb(fast), mb(slow), mb(fast))
	settle := func(from, until time.Time, want float64) {
		for _, s := range ss {
			if s.at.Before(from) || !s.at.Before(until) {
				continue
			}
			if math.Abs(s.pull.BytesPerSec-want)/want <= 0.10 {
				fmt.Printf("   within 10%% of %s %.1f s after the change\n", mb(want), s.at.Sub(from).Seconds())
				return
			}
		}
		fmt.Printf("   never within 10%% of %s\n", mb(want))
	}
	settle(tSlow, tStop, slow)
	for _, after := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second} {
		for _, s := range ss {
			if s.at.Sub(tSlow) >= after {
				fmt.Printf("   %s after the drop to %s: %s\n", after, mb(slow), mb(s.pull.BytesPerSec))
				break
			}
		}
	}
	var zeroAt, etaGoneAt time.Time
	for _, s := range ss {
		if s.at.Before(tStop) || !s.at.Before(tResume) {
			continue
		}
		if zeroAt.IsZero() && s.pull.BytesPerSec == 0 {
			zeroAt = s.at
		}
		if etaGoneAt.IsZero() && s.pull.ETASeconds == nil {
			etaGoneAt = s.at
		}
	}
	if zeroAt.IsZero() {
		fmt.Println("   no bytes: the speed never reached 0")
	} else {
		fmt.Printf("   no bytes: speed 0 after %.1f s, ETA absent after %.1f s\n", zeroAt.Sub(tStop).Seconds(), etaGoneAt.Sub(tStop).Seconds())
	}
	last := ss[len(ss)-1]
	for _, s := range ss {
		if !s.at.Before(tResume) && s.pull.State == api.PullActive && s.pull.BytesPerSec > 0 {
			fmt.Printf("   bytes again: speed shown %.1f s after the rate came back (state %s)\n", s.at.Sub(tResume).Seconds(), last.pull.State)
			break
		}
	}
	settle(tResume, allIn(ss), fast)
	fmt.Println()
	return nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitOK(ctx context.Context, u string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within 30s", u)
}
