// Package agent runs the node side of Pulltrace: it keeps a connection to containerd
// (reconnecting with backoff, since a DaemonSet pod may start before containerd or outlive
// a restart of it), polls the tracker, follows containerd's events and sends reports.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/d44b/pulltrace/internal/ingest"
	"github.com/d44b/pulltrace/internal/report"
	"github.com/d44b/pulltrace/internal/tracker"
	"github.com/d44b/pulltrace/pkg/api"
)

// Config is everything the agent's flags set.
type Config struct {
	Socket            string
	Namespace         string
	NodeName          string
	Version           string
	PollInterval      time.Duration
	ReportInterval    time.Duration
	HeartbeatInterval time.Duration
	Tracker           tracker.Config
	Sender            *report.Sender
	Logger            *slog.Logger
	Metrics           *Metrics
}

// Agent is one node's agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	src     *source
	tracker *tracker.Tracker
	id      string

	// changed is poked after a poll that changed a pull.
	changed chan struct{}

	mu        sync.Mutex
	connected bool
	lastErr   string
	seq       uint64
	sentVer   uint64

	// reportLogs spaces report-failure logs per endpoint and kind (reportLoop only).
	reportLogs map[string]logState
}

type logState struct {
	last       time.Time
	suppressed int
}

// reportLogEvery: a node whose reports are refused says so, with the reason, once a minute.
const reportLogEvery = time.Minute

// New builds an agent; Run starts it.
func New(cfg Config) (*Agent, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("node name is required (--node-name or NODE_NAME)")
	}
	if cfg.Sender == nil {
		return nil, errors.New("no report sender")
	}
	if cfg.PollInterval < 100*time.Millisecond {
		return nil, fmt.Errorf("poll interval %s is below the 100ms minimum", cfg.PollInterval)
	}
	if cfg.ReportInterval <= 0 || cfg.HeartbeatInterval <= 0 {
		return nil, errors.New("report and heartbeat intervals must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	cfg.Tracker.NodeName = cfg.NodeName
	if cfg.Tracker.Logger == nil {
		cfg.Tracker.Logger = cfg.Logger
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	src := &source{}
	return &Agent{
		cfg:     cfg,
		log:     cfg.Logger,
		src:     src,
		tracker: tracker.New(cfg.Tracker, src, src),
		id:      hex.EncodeToString(b),
		changed: make(chan struct{}, 1),

		reportLogs: map[string]logState{},
	}, nil
}

// Health says whether containerd is reachable, and why not.
func (a *Agent) Health() (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.connected {
		return true, "containerd reachable at " + a.cfg.Socket
	}
	if a.lastErr == "" {
		return false, "connecting to containerd at " + a.cfg.Socket
	}
	return false, a.lastErr
}

// Snapshot returns the tracker's current pulls.
func (a *Agent) Snapshot() []api.Pull { return a.tracker.Snapshot() }

// Run works until ctx ends. It returns nil on a clean shutdown, and an
// *UnsupportedContainerdError at once when containerd is a version the agent cannot read.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(ctx, a.cfg.Namespace))
	defer cancel()
	var wg sync.WaitGroup
	var err error
	wg.Go(func() {
		err = a.connectLoop(ctx)
		cancel()
	})
	wg.Go(func() { a.reportLoop(ctx) })
	wg.Wait()
	a.src.set(nil)
	return err
}

// SupportedContainerd says which containerd releases the agent reads (the v2 content,
// image and event APIs in namespace k8s.io) and which were tested.
const SupportedContainerd = "containerd 2.0 and later (tested: 2.0.14, 2.2.9 and 2.4.2, CRI pulls through the transfer service and the local client)"

// UnsupportedContainerdError is a containerd the agent cannot work with.
type UnsupportedContainerdError struct {
	Found string
}

func (e *UnsupportedContainerdError) Error() string {
	return fmt.Sprintf("containerd %s is not supported: the agent needs %s; upgrade containerd on this node, or do not schedule the agent here", e.Found, SupportedContainerd)
}

// CheckContainerdVersion refuses containerd 1.x (and anything older): its CRI keeps
// ingests and image records differently, and the agent was never tested against it. A
// version string the agent cannot parse (a vendor build) is let through.
func CheckContainerdVersion(v string) error {
	s := strings.TrimPrefix(strings.TrimSpace(v), "v")
	major, _, ok := strings.Cut(s, ".")
	if !ok {
		return nil
	}
	n, err := strconv.Atoi(major)
	if err != nil || n >= 2 {
		return nil
	}
	return &UnsupportedContainerdError{Found: v}
}

func (a *Agent) setState(connected bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	was := a.connected
	a.connected = connected
	if err != nil {
		a.lastErr = err.Error()
	} else {
		a.lastErr = ""
	}
	a.cfg.Metrics.connected(connected)
	switch {
	case connected && !was:
		a.log.Info("connected to containerd", "socket", a.cfg.Socket, "namespace", a.cfg.Namespace)
	case !connected && was:
		a.log.Warn("lost containerd; retrying", "socket", a.cfg.Socket, "error", a.lastErr)
	}
}

// connectLoop owns the containerd connection: one session (poll + events) at a time,
// a fresh one after any failure, with capped exponential backoff in between. It returns
// only when ctx ends or containerd is a version the agent does not support.
func (a *Agent) connectLoop(ctx context.Context) error {
	failures := 0
	for ctx.Err() == nil {
		connected, err := a.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		a.setState(false, err)
		if unsupported := (*UnsupportedContainerdError)(nil); errors.As(err, &unsupported) {
			a.log.Error("refusing to start", "socket", a.cfg.Socket, "error", err)
			return err
		}
		if connected {
			// A working session ended (containerd restarted): setState said so; retry soon,
			// from the bottom of the backoff.
			failures = 0
		} else if failures == 0 || failures%10 == 0 {
			a.log.Warn("containerd unavailable; the agent keeps running and retries", "socket", a.cfg.Socket, "error", err)
		}
		failures++
		wait := min(time.Duration(200*(1<<min(failures, 6)))*time.Millisecond, 10*time.Second)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

// session connects, then polls and follows events until either fails. connected says
// whether containerd answered at all, which decides the backoff.
func (a *Agent) session(ctx context.Context) (connected bool, err error) {
	c, err := containerd.New(a.cfg.Socket, containerd.WithTimeout(5*time.Second), containerd.WithDefaultNamespace(a.cfg.Namespace))
	if err != nil {
		return false, fmt.Errorf("connect to containerd at %s: %w", a.cfg.Socket, err)
	}
	defer c.Close()
	v, err := c.Version(ctx)
	if err != nil {
		return false, fmt.Errorf("containerd at %s does not answer: %w", a.cfg.Socket, err)
	}
	if err := CheckContainerdVersion(v.Version); err != nil {
		return true, err
	}
	a.src.set(c)
	defer a.src.set(nil)

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- a.follow(sctx, c) }()
	go func() { errc <- a.pollLoop(sctx) }()
	err = <-errc
	cancel()
	<-errc //nolint:errcheck // the other loop ends with sctx; the first error is the one that counts
	return true, err
}

func (a *Agent) follow(ctx context.Context, c *containerd.Client) error {
	envs, errs := c.Subscribe(ctx, ingest.Topics...)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			if err == nil {
				err = errors.New("event stream closed")
			}
			return fmt.Errorf("containerd event stream: %w", err)
		case env := <-envs:
			ev, ok, err := ingest.Decode(env, a.cfg.Namespace)
			if err != nil {
				a.log.Debug("skipping undecodable event", "error", err)
				continue
			}
			if ok {
				a.tracker.Notify(ev)
			}
		}
	}
}

func (a *Agent) pollLoop(ctx context.Context) error {
	t := time.NewTicker(a.cfg.PollInterval)
	defer t.Stop()
	for {
		start := time.Now()
		before := a.tracker.Version()
		err := a.tracker.Poll(ctx)
		if a.tracker.Version() != before {
			select {
			case a.changed <- struct{}{}:
			default:
			}
		}
		a.cfg.Metrics.polled(time.Since(start), err)
		if err != nil {
			return fmt.Errorf("poll containerd: %w", err)
		}
		a.setState(true, nil)
		a.cfg.Metrics.pulls(a.tracker.Len())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// reportLoop sends a full snapshot when the tracker changed and a heartbeat otherwise
// (every heartbeat interval). A change is sent as soon as the poll that saw it ends, so
// the delay from a byte landing in containerd to the server is one poll, not a poll plus a
// report tick; sends are still spaced by at least the report interval.
func (a *Agent) reportLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.ReportInterval)
	defer t.Stop()
	var lastBeat, lastSend time.Time
	for {
		now := time.Now()
		r := a.build(now)
		beat := now.Sub(lastBeat) >= a.cfg.HeartbeatInterval
		outs := a.cfg.Sender.Send(ctx, r, beat, now)
		if beat {
			lastBeat = now
		}
		if len(outs) > 0 {
			lastSend = now
		}
		for _, o := range outs {
			a.outcome(ctx, o, now)
		}
		wait := time.Until(lastSend.Add(a.cfg.ReportInterval))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.changed:
			// Keep the spacing: a change right after a send waits out the interval.
			if wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		}
	}
}

// outcome counts one endpoint's answer and logs a failure, each kind at most once a
// minute per endpoint with the number left out in between: a refused node must never go
// dark silently, nor flood the log at the report rate.
func (a *Agent) outcome(ctx context.Context, o report.Outcome, now time.Time) {
	var refused *report.RefusedError
	isRefused := errors.As(o.Err, &refused)
	a.cfg.Metrics.reported(o.Err, isRefused)
	a.cfg.Metrics.rejected(o.RejectedCount)
	if ctx.Err() != nil {
		return
	}
	switch {
	case isRefused:
		a.logLimited(now, o.Endpoint, "refused", "the server refused the report; sending the next snapshot in a few seconds",
			"endpoint", o.Endpoint, "error", o.Err, "status", refused.Status, "reason", refused.Reason)
	case o.Err != nil:
		a.logLimited(now, o.Endpoint, "failed", "report failed; retrying with backoff", "endpoint", o.Endpoint, "error", o.Err)
	case o.RejectedCount > 0:
		// The server applied the rest; these pulls stay invisible there until they change.
		a.logLimited(now, o.Endpoint, "rejected", "the server left invalid pulls out of the report",
			"endpoint", o.Endpoint, "rejected", o.RejectedCount, "first", rejections(o.Rejected))
	case o.Ignored != "":
		a.logLimited(now, o.Endpoint, "ignored", "the server ignored the report", "endpoint", o.Endpoint, "reason", o.Ignored)
	}
}

// rejections renders the server's named pulls for a log line.
func rejections(rs []api.PullRejection) string {
	parts := make([]string, 0, min(len(rs), 3))
	for _, r := range rs[:min(len(rs), 3)] {
		parts = append(parts, fmt.Sprintf("pulls[%d] %s: %s", r.Index, r.ID, r.Error))
	}
	return strings.Join(parts, "; ")
}

// logLimited logs one kind of report trouble per endpoint at most once a minute, with the
// number of occurrences left out since the last line.
func (a *Agent) logLimited(now time.Time, endpoint, kind, msg string, args ...any) {
	key := endpoint + "\x00" + kind
	st := a.reportLogs[key]
	if !st.last.IsZero() && now.Sub(st.last) < reportLogEvery {
		st.suppressed++
		a.reportLogs[key] = st
		return
	}
	if st.suppressed > 0 {
		args = append(args, "sinceLastLog", st.suppressed)
	}
	a.log.Warn(msg, args...)
	a.reportLogs[key] = logState{last: now}
}

func (a *Agent) build(now time.Time) *api.AgentReport {
	pulls, ver := a.tracker.SnapshotVersion()
	a.mu.Lock()
	if ver != a.sentVer || a.seq == 0 {
		a.seq++
		a.sentVer = ver
	}
	seq, connected := a.seq, a.connected
	a.mu.Unlock()
	return &api.AgentReport{
		SchemaVersion:       api.SchemaVersion,
		NodeName:            a.cfg.NodeName,
		AgentVersion:        a.cfg.Version,
		AgentID:             a.id,
		Sequence:            seq,
		Timestamp:           now.UTC(),
		ContainerdConnected: connected,
		Pulls:               pulls,
	}
}
