package main

// The mixed-load figures of issue #12: intake with followers attached, delivery p99 under
// 1,000 agents and 200 followers, and the server's RSS at its caps with followers and
// paginated GETs. The server runs with its default caps (--memory-budget 256 MiB, the
// chart's limit), on one core.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/d44b/pulltrace/internal/harness/stack"
	"github.com/d44b/pulltrace/pkg/api"
	"github.com/d44b/pulltrace/pkg/sseclient"
)

func runMixed(ctx context.Context) error {
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
	return mixed(ctx, dir)
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func mixed(ctx context.Context, dir string) error {
	fmt.Printf("== mixed load (issue #12); load average before: %s\n", loadavg())
	var base0 float64
	for _, followers := range []int{0, 200, 1000} {
		srv, base, err := startServer(ctx, dir, "--max-followers=1100")
		if err != nil {
			return err
		}
		rate, p50, p99, failed, got := intakeWithFollowers(ctx, base, 1000, followers, 6*time.Second)
		_ = srv.Process.Kill()
		_ = srv.Wait()
		if followers == 0 {
			base0 = rate
		}
		fmt.Printf("intake, 1000 agents, %4d unfiltered followers reading: %.0f reports/s (%.0f%% of without followers), POST p50 %s p99 %s, %d failed; followers received %s\n",
			followers, rate, 100*rate/base0, p50, p99, failed, mb(got))
	}
	srv, base, err := startServer(ctx, dir, "--max-followers=1100")
	if err != nil {
		return err
	}
	if err := deliveryUnderLoad(ctx, base, 1000, 200); err != nil {
		return err
	}
	_ = srv.Process.Kill()
	_ = srv.Wait()
	for _, layers := range []int{10, 50} {
		srv, base, err := startServer(ctx, dir, "--max-followers=1100")
		if err != nil {
			return err
		}
		if err := memoryAtCaps(ctx, base, srv.Process.Pid, layers, 100, 10); err != nil {
			return err
		}
		_ = srv.Process.Kill()
		_ = srv.Wait()
	}
	fmt.Printf("load average after: %s\n", loadavg())
	return nil
}

func mb(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// followersReading opens n unfiltered event streams that read and discard everything.
func followersReading(ctx context.Context, base string, n int) *atomic.Int64 {
	var got atomic.Int64
	tr := &http.Transport{MaxIdleConnsPerHost: n + 10}
	client := &http.Client{Transport: tr}
	var ready sync.WaitGroup
	for range n {
		ready.Add(1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/events", nil)
			resp, err := client.Do(req)
			ready.Done()
			if err != nil {
				return
			}
			defer resp.Body.Close()
			buf := make([]byte, 32<<10)
			for {
				k, err := resp.Body.Read(buf)
				got.Add(int64(k))
				if err != nil {
					return
				}
			}
		}()
	}
	ready.Wait()
	return &got
}

// intakeWithFollowers posts prebuilt reports of agents agents as fast as 32 connections
// take them, with followers attached, and returns reports/s.
func intakeWithFollowers(ctx context.Context, base string, agents, followers int, d time.Duration) (float64, time.Duration, time.Duration, int64, int64) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := followersReading(cctx, base, followers)
	rounds := max(2, int(8000*d.Seconds())/agents+1)
	bodies := make([][]byte, 0, rounds*agents)
	for round := 1; round <= rounds; round++ {
		for i := range agents {
			node := fmt.Sprintf("node-%05d", i)
			r := api.AgentReport{SchemaVersion: "v1", NodeName: node, AgentID: "a-" + node, Sequence: uint64(round),
				Timestamp: time.Now().UTC(), ContainerdConnected: true}
			for p := range i % 4 {
				r.Pulls = append(r.Pulls, pullOf(node, p, int64(round)*65536))
			}
			b, _ := json.Marshal(&r)
			bodies = append(bodies, b)
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
	var next atomic.Int64
	var failed atomic.Int64
	var mu sync.Mutex
	var lats []time.Duration
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			var local []time.Duration
			for time.Now().Before(deadline) {
				n := int(next.Add(1) - 1)
				if n >= len(bodies) {
					break
				}
				start := time.Now()
				resp, err := client.Post(base+"/api/v1/report", "application/json", bytes.NewReader(bodies[n]))
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
	return float64(len(lats)) / d.Seconds(), percentile(lats, .5).Round(time.Microsecond), percentile(lats, .99).Round(time.Microsecond), failed.Load(), got.Load()
}

// deliveryUnderLoad runs agents agents at one report a second each (0-3 pulls of 10
// layers) and measures, at followers followers of one node, the delay from that node's
// POST to each follower's receipt of its pull.progress.
func deliveryUnderLoad(ctx context.Context, base string, agents, followers int) error {
	const reports = 30
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Background: every agent reports once a second, spread evenly.
	go func() {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
		sem := make(chan struct{}, 32)
		tick := time.NewTicker(time.Second / time.Duration(agents))
		defer tick.Stop()
		for seq := 1; ; seq++ {
			for i := range agents {
				select {
				case <-cctx.Done():
					return
				case <-tick.C:
				}
				node := fmt.Sprintf("load-%05d", i)
				r := api.AgentReport{SchemaVersion: "v1", NodeName: node, AgentID: "a-" + node, Sequence: uint64(seq), Timestamp: time.Now().UTC(), ContainerdConnected: true}
				for p := range i % 4 {
					r.Pulls = append(r.Pulls, pullOf(node, p, int64(seq)*65536))
				}
				b, _ := json.Marshal(&r)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem }()
					if resp, err := client.Post(base+"/api/v1/report", "application/json", bytes.NewReader(b)); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}()
			}
		}
	}()
	time.Sleep(3 * time.Second)

	sent := make([]atomic.Int64, reports+1)
	var mu sync.Mutex
	var lats []time.Duration
	var ready, done sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: followers + 10}}
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
				if ev.Type != "" || !strings.Contains(ev.Data, `"type":"pull.progress"`) && !strings.Contains(ev.Data, `"type":"pull.started"`) {
					continue
				}
				const key = `"downloadedBytes":`
				at := strings.Index(ev.Data, key)
				if at < 0 {
					continue
				}
				rest := ev.Data[at+len(key):]
				n, _ := strconv.ParseInt(rest[:strings.IndexAny(rest, ",}")], 10, 64)
				i := int(n / 3000)
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
		r := api.AgentReport{SchemaVersion: "v1", NodeName: "lat-node", AgentID: "lat", Sequence: uint64(i), Timestamp: time.Now().UTC(), Pulls: []api.Pull{pullOf("lat-node", 0, int64(i)*1000)}}
		body, _ := json.Marshal(&r)
		sent[i].Store(time.Now().UnixNano())
		resp, err := pc.Post(base+"/api/v1/report", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		resp.Body.Close()
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	cancel()
	done.Wait()
	fmt.Printf("delivery, %d agents at 1 report/s each + %d followers of one node: %d of %d events, p50 %s, p99 %s (target < 100ms)\n",
		agents, followers, len(lats), followers*reports, percentile(lats, .5).Round(time.Microsecond), percentile(lats, .99).Round(time.Microsecond))
	return nil
}

// memoryAtCaps fills the store past its caps with finished pulls of layers layers, then
// attaches followers unfiltered followers (each gets the full snapshot) and getters loops
// of paginated GET /api/v1/pulls, while reports keep arriving, and reads the server's RSS.
func memoryAtCaps(ctx context.Context, base string, pid, layers, followers, getters int) error {
	perReport := max(1, min(200, (700<<10)/(layers*200+600)))
	nodes := 0
	client := &http.Client{Timeout: 30 * time.Second}
	post := func(node string, seq int, n int, state api.PullState) error {
		r := api.AgentReport{SchemaVersion: "v1", NodeName: node, AgentID: "a-" + node, Sequence: uint64(seq), Timestamp: time.Now().UTC(), ContainerdConnected: true}
		for p := range n {
			pl := api.Pull{ID: fmt.Sprintf("%s-%d-%d", node, seq, p), NodeName: node, ImageRef: "registry.local/team/app-" + strconv.Itoa(p) + ":v1", State: state,
				TotalKnown: true, StartedAt: time.Now().Add(-time.Minute).UTC(), Pods: []api.PodRef{}}
			for l := range layers {
				pl.Layers = append(pl.Layers, api.Layer{Digest: fmt.Sprintf("sha256:%032d%032d", p, l), MediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
					TotalBytes: 32 << 20, DownloadedBytes: 32 << 20, State: api.LayerDone})
			}
			if state == api.PullCompleted {
				t := time.Now().UTC()
				pl.CompletedAt = &t
			}
			pl.Summarize()
			r.Pulls = append(r.Pulls, pl)
		}
		b, _ := json.Marshal(&r)
		resp, err := client.Post(base+"/api/v1/report", "application/json", bytes.NewReader(b))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("fill report: %s", resp.Status)
		}
		return nil
	}
	// Fill until the count of held pulls stops growing: new pulls push old ones out, the
	// caps hold.
	for prev := -1; nodes < 2000; {
		for range 20 {
			if err := post(fmt.Sprintf("fill-%04d", nodes), 1, perReport, api.PullCompleted); err != nil {
				return err
			}
			nodes++
		}
		n := countPulls(base)
		if n <= prev {
			break
		}
		prev = n
	}
	held := countPulls(base)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := followersReading(cctx, base, followers)
	var pages atomic.Int64
	var wg sync.WaitGroup
	for range getters {
		wg.Go(func() {
			for cctx.Err() == nil {
				q := url.Values{"limit": {"500"}}
				for {
					req, _ := http.NewRequestWithContext(cctx, http.MethodGet, base+"/api/v1/pulls?"+q.Encode(), nil)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						return
					}
					var l api.PullList
					err = json.NewDecoder(resp.Body).Decode(&l)
					resp.Body.Close()
					if err != nil {
						return
					}
					pages.Add(1)
					if l.Metadata == nil || l.Metadata.Continue == "" {
						break
					}
					q.Set("continue", l.Metadata.Continue)
				}
			}
		})
	}
	// Reports keep coming: every node's pulls are replaced by new ones, so the store stays
	// at its caps and followers get events and snapshots.
	end := time.Now().Add(10 * time.Second)
	for seq := 2; time.Now().Before(end); seq++ {
		for i := range 10 {
			if err := post(fmt.Sprintf("fill-%04d", (seq*10+i)%nodes), seq, perReport, api.PullCompleted); err != nil {
				cancel()
				wg.Wait()
				return err
			}
		}
	}
	cancel()
	wg.Wait()
	rss, hwm := procMem(pid)
	fmt.Printf("memory at the caps, %d layers per pull: %d pulls held, %d followers (received %s), %d paginated GET loops (%d pages): RSS %s, peak RSS %s (chart limit 256 MiB)\n",
		layers, held, followers, mb(got.Load()), getters, pages.Load(), mb(rss), mb(hwm))
	return nil
}

func countPulls(base string) int {
	n := 0
	q := url.Values{"limit": {"5000"}}
	for {
		resp, err := http.Get(base + "/api/v1/pulls?" + q.Encode())
		if err != nil {
			return n
		}
		var l api.PullList
		err = json.NewDecoder(resp.Body).Decode(&l)
		resp.Body.Close()
		if err != nil {
			return n
		}
		n += len(l.Pulls)
		if l.Metadata == nil || l.Metadata.Continue == "" {
			return n
		}
		q.Set("continue", l.Metadata.Continue)
	}
}

// procMem reads a process's resident set and its peak, in bytes.
func procMem(pid int) (rss, hwm int64) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v << 10
		case "VmHWM:":
			hwm = v << 10
		}
	}
	return rss, hwm
}
