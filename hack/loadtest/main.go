// Command loadtest measures Pulltrace on this machine and prints the figures `make bench`
// reports: server report intake from 5,000 simulated agents with the server on one core,
// SSE delivery latency to 1,000 followers, the agent's CPU per poll and RSS during a real
// throttled CRI pull, and the end-to-end delay from a byte counted in containerd's ingest to
// the event reaching a follower. Everything runs on loopback.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"

	"github.com/d44b/pulltrace/internal/harness/cluster"
	"github.com/d44b/pulltrace/internal/harness/stack"
	"github.com/d44b/pulltrace/pkg/api"
	"github.com/d44b/pulltrace/pkg/sseclient"
)

func main() {
	agents := flag.Int("agents", 5000, "simulated agents for the intake test")
	followers := flag.Int("followers", 1000, "SSE followers for the latency test")
	duration := flag.Duration("duration", 10*time.Second, "length of the intake test")
	onCluster := flag.Bool("real", true, "also measure the agent and the end-to-end delay on the real local cluster")
	mixedOnly := flag.Bool("mixed-only", false, "run only the mixed-load figures of issue #12 (intake with followers, delivery p99, memory at the caps)")
	flag.Parse()
	if *mixedOnly {
		if err := runMixed(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*agents, *followers, *duration, *onCluster); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// pinToCore moves every thread of this process to one core, leaving core 0 to the server:
// threads the runtime starts later inherit the mask from the thread that starts them.
func pinToCore(core int) {
	var set unix.CPUSet
	set.Set(core)
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			_ = unix.SchedSetaffinity(tid, &set)
		}
	}
}

func run(agents, followers int, duration time.Duration, onCluster bool) error {
	ctx := context.Background()
	if runtime.NumCPU() > 1 {
		pinToCore(runtime.NumCPU() - 1)
	}
	dir, err := os.MkdirTemp("", "pulltrace-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := stack.Build(ctx, dir); err != nil {
		return err
	}
	fmt.Printf("machine: %d cores (%s), %s\n", runtime.NumCPU(), runtime.GOARCH, cpuModel())
	srv, base, err := startServer(ctx, dir)
	if err != nil {
		return err
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	if err := intake(ctx, base, agents, duration); err != nil {
		return err
	}
	if err := sseLatency(ctx, base, followers); err != nil {
		return err
	}
	_ = srv.Process.Kill()
	_ = srv.Wait()
	if err := mixed(ctx, dir); err != nil {
		return err
	}
	if onCluster {
		return realPath(ctx)
	}
	return nil
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			return strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
		}
	}
	return "unknown cpu"
}

// startServer runs the server binary on one core (GOMAXPROCS=1, pinned with taskset when
// present) so the figure is per core and the load generator has the other.
func startServer(ctx context.Context, dir string, extra ...string) (*exec.Cmd, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	mport, _ := freePort()
	args := []string{filepath.Join(dir, "pulltrace-server"), "--listen=127.0.0.1:" + strconv.Itoa(port), "--metrics-addr=127.0.0.1:" + strconv.Itoa(mport),
		"--log-level=error"}
	if extra == nil {
		extra = []string{"--max-pulls=100000", "--max-pulls-per-node=100"}
	}
	args = append(args, extra...)
	if p, err := exec.LookPath("taskset"); err == nil {
		args = append([]string{p, "-c", "0"}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	// Stdout stays nil: /dev/null, with no copying goroutine in this process.
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	for range 100 {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			return cmd, base, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, "", fmt.Errorf("server did not start")
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func pullOf(node string, i int, got int64) api.Pull {
	p := api.Pull{ID: fmt.Sprintf("%s-p%d", node, i), NodeName: node, ImageRef: "registry.local/team/app:v1", State: api.PullActive,
		TotalKnown: true, StartedAt: time.Now().Add(-time.Minute).UTC(), Pods: []api.PodRef{}}
	// Three layers move at a time, as the CRI's max_concurrent_downloads allows; the rest
	// wait. Every report moves all three, so every report produces events.
	for l := range 10 {
		st, b := api.LayerWaiting, int64(0)
		if l < 3 {
			st, b = api.LayerDownloading, min(got, 64<<20)
		}
		p.Layers = append(p.Layers, api.Layer{Digest: fmt.Sprintf("sha256:%064d", l), MediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
			TotalBytes: 64 << 20, DownloadedBytes: b, State: st})
	}
	p.Summarize()
	return p
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// intake posts full reports from agents agents (0-3 active pulls of 10 layers each, bytes
// moving every round) with 32 keep-alive connections for duration.
func intake(ctx context.Context, base string, agents int, duration time.Duration) error {
	// Bodies are built before the clock starts, so the figure is the server's, not the
	// generator's JSON encoding: enough rounds for 8,000 reports/s over the duration.
	rounds := max(2, int(8000*duration.Seconds())/agents+1)
	bodies := make([][]byte, 0, rounds*agents)
	for round := 1; round <= rounds; round++ {
		for i := range agents {
			node := fmt.Sprintf("node-%05d", i)
			r := api.AgentReport{SchemaVersion: "v1", NodeName: node, AgentID: "a-" + node, Sequence: uint64(round),
				Timestamp: time.Now().Add(time.Duration(round) * time.Second).UTC(), ContainerdConnected: true}
			for p := range i % 4 {
				r.Pulls = append(r.Pulls, pullOf(node, p, int64(round)*65536))
			}
			b, _ := json.Marshal(&r)
			bodies = append(bodies, b)
		}
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var next atomic.Int64
	var mu sync.Mutex
	var lats []time.Duration
	var failed atomic.Int64
	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			var local []time.Duration
			for time.Now().Before(deadline) {
				n := int(next.Add(1) - 1)
				if n >= len(bodies) {
					break
				}
				body := bodies[n]
				start := time.Now()
				resp, err := client.Post(base+"/api/v1/report", "application/json", bytes.NewReader(body))
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				local = append(local, time.Since(start))
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	rate := float64(len(lats)) / duration.Seconds()
	fmt.Printf("server intake (server on 1 core, %d agents, 0-3 pulls x 10 layers, 3 moving): %.0f reports/s (target >= 5000: %.2fx), p50 %s, p99 %s, %d failed\n",
		agents, rate, rate/5000, percentile(lats, .5).Round(time.Microsecond), percentile(lats, .99).Round(time.Microsecond), failed.Load())
	return nil
}

// sseLatency connects followers, then posts reports for one node and measures the delay
// from each POST to each follower's receipt of the matching event.
func sseLatency(ctx context.Context, base string, followers int) error {
	const reports = 40
	sent := make([]atomic.Int64, reports+1)
	var mu sync.Mutex
	var lats []time.Duration
	var ready sync.WaitGroup
	var done sync.WaitGroup
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tr := &http.Transport{MaxIdleConnsPerHost: followers + 10, MaxConnsPerHost: 0}
	client := &http.Client{Transport: tr}
	for range followers {
		ready.Add(1)
		done.Go(func() {
			req, _ := http.NewRequestWithContext(cctx, http.MethodGet, base+"/api/v1/events?node=lat-node", nil)
			resp, err := client.Do(req)
			if err != nil {
				ready.Done()
				return
			}
			defer resp.Body.Close()
			rd := sseclient.NewReader(resp.Body)
			first := true
			var local []time.Duration
			for {
				ev, err := rd.Next()
				if first {
					ready.Done()
					first = false
				}
				if err != nil {
					break
				}
				// PullEvents are plain messages; the type is the third field of the JSON.
				if ev.Type != "" || !strings.Contains(ev.Data, `"type":"`+string(api.EventPullProgress)+`"`) && !strings.Contains(ev.Data, `"type":"`+string(api.EventPullStarted)+`"`) {
					continue
				}
				// The pull's own downloadedBytes is the first in the object (three moving
				// layers at i*1000 each): read it without decoding 2 KiB of JSON a thousand
				// times per report on the generator's one core.
				const key = `"downloadedBytes":`
				at := strings.Index(ev.Data, key)
				if at < 0 {
					continue
				}
				rest := ev.Data[at+len(key):]
				got, _ := strconv.ParseInt(rest[:strings.IndexAny(rest, ",}")], 10, 64)
				i := int(got / 3000)
				if i > 0 && i <= reports {
					if t := sent[i].Load(); t > 0 {
						local = append(local, time.Since(time.Unix(0, t)))
					}
				}
				if i == reports {
					break
				}
			}
			mu.Lock()
			lats = append(lats, local...)
			mu.Unlock()
		})
	}
	ready.Wait()
	pc := &http.Client{}
	for i := 1; i <= reports; i++ {
		p := pullOf("lat-node", 0, int64(i)*1000)
		r := api.AgentReport{SchemaVersion: "v1", NodeName: "lat-node", AgentID: "lat", Sequence: uint64(i), Timestamp: time.Now().UTC(), Pulls: []api.Pull{p}}
		body, _ := json.Marshal(&r)
		sent[i].Store(time.Now().UnixNano())
		resp, err := pc.Post(base+"/api/v1/report", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp.Body.Close()
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	cancel()
	done.Wait()
	want := followers * reports
	p99 := percentile(lats, .99)
	fmt.Printf("SSE delivery (%d followers, %d reports): %d of %d events, p50 %s, p99 %s (target < 100ms: %.2fx of budget)\n",
		followers, reports, len(lats), want, percentile(lats, .5).Round(time.Microsecond), p99.Round(time.Microsecond), float64(p99)/float64(100*time.Millisecond))
	return nil
}

// realPath measures the agent on a real throttled CRI pull, and the delay from containerd's
// ingest offset moving to a follower seeing it, through agent and server processes.
func realPath(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	s, err := stack.Start(ctx, stack.Options{Nodes: []string{"bench-node"}, PullRate: 4 << 20})
	if err != nil {
		return err
	}
	defer s.Stop()
	c := s.Nodes[0].Cluster
	im, err := c.PushImage(ctx, cluster.ImageSpec{Repo: "bench/one", Tag: "v1", LayerSizes: []int64{48 << 20}})
	if err != nil {
		return err
	}
	cc, err := containerd.New(c.ContainerdSocket)
	if err != nil {
		return err
	}
	defer cc.Close()
	nctx := namespaces.WithNamespace(ctx, cluster.Namespace)

	// The follower is `kubectl pulltrace follow node/... -o json`, through the apiserver's
	// service proxy, as a user runs it: when did each downloadedBytes value reach it?
	seen := map[int64]time.Time{}
	var mu sync.Mutex
	follow := exec.CommandContext(ctx, filepath.Join(s.Bin, "kubectl-pulltrace"), "follow", "node/bench-node", "-o", "json", "--watch",
		"--kubeconfig", s.Kube.Kubeconfig)
	out, err := follow.StdoutPipe()
	if err != nil {
		return err
	}
	if err := follow.Start(); err != nil {
		return fmt.Errorf("kubectl pulltrace follow: %w", err)
	}
	defer func() { _ = follow.Process.Kill(); _ = follow.Wait() }()
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			at := time.Now()
			var pe api.PullEvent
			if json.Unmarshal(sc.Bytes(), &pe) != nil || pe.Pull.ManifestDigest == "" {
				continue
			}
			mu.Lock()
			if _, ok := seen[pe.Pull.DownloadedBytes]; !ok {
				seen[pe.Pull.DownloadedBytes] = at
			}
			mu.Unlock()
		}
	}()
	// Wait until follow is connected, or the first bytes would have no follower.
	for deadline := time.Now().Add(20 * time.Second); ; {
		b, _ := httpGetBody(ctx, s.MetricsURL)
		if strings.Contains(b, "pulltrace_sse_clients 1\n") {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kubectl pulltrace follow never connected")
		}
		time.Sleep(200 * time.Millisecond)
	}
	agentPid := s.Nodes[0].Agent.Pid()
	cpu0, _ := cpuTime(agentPid)
	start := time.Now()
	pullErr := make(chan error, 1)
	go func() { pullErr <- c.CRIPull(ctx, im.Ref) }()
	// Watch the ingest ourselves every 5 ms: when did containerd count each offset?
	counted := map[int64]time.Time{}
	var maxRSS int64
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case err := <-pullErr:
			if err != nil {
				return err
			}
			break loop
		case <-tick.C:
			sts, err := cc.ContentStore().ListStatuses(nctx)
			if err == nil {
				for _, st := range sts {
					if strings.HasPrefix(st.Ref, "layer-") && st.Offset > 0 {
						if _, ok := counted[st.Offset]; !ok {
							counted[st.Offset] = time.Now()
						}
					}
				}
			}
			if rss, err := rssBytes(agentPid); err == nil && rss > maxRSS {
				maxRSS = rss
			}
		}
	}
	elapsed := time.Since(start)
	cpu1, _ := cpuTime(agentPid)
	time.Sleep(time.Second)
	polls := elapsed.Seconds() / 0.25 // the stack runs agents with --poll-interval=250ms
	var delays []time.Duration
	mu.Lock()
	for off, t0 := range counted {
		if t1, ok := seen[off]; ok && t1.After(t0) {
			delays = append(delays, t1.Sub(t0))
		}
	}
	mu.Unlock()
	fmt.Printf("agent during a real %d MiB CRI pull (%s): max RSS %.1f MiB (target < 40: %.2fx), CPU %.3f ms per 250ms poll (target < 1ms)\n",
		im.TotalSize()>>20, elapsed.Round(time.Millisecond), float64(maxRSS)/(1<<20), float64(maxRSS)/(40<<20), (cpu1-cpu0).Seconds()*1000/polls)
	fmt.Printf("end-to-end delay, byte counted in containerd -> line printed by kubectl pulltrace follow via the service proxy (%d offsets matched): p50 %s, p99 %s, max %s (target: poll interval 250ms + < 50ms)\n",
		len(delays), percentile(delays, .5).Round(time.Millisecond), percentile(delays, .99).Round(time.Millisecond), percentile(delays, 1).Round(time.Millisecond))
	return nil
}

func httpGetBody(ctx context.Context, u string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS")
}

// cpuTime is user+system time of pid from /proc/pid/stat (clock ticks of 10ms).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}
