package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Files in the cluster folder that let a later process clean up after one that died
// without running Stop (test binary killed by -timeout, SIGKILL, OOM).
const (
	ownerFile = "owner"    // "<pid> <starttime>" of the process that owns the folder
	pidsFile  = "children" // one "<pid> <starttime> <name>" line per child started
	netnsFile = "netns"    // one network namespace name per line
	tempGlob  = "pulltrace-cluster-*"
)

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// unescapeMountPath undoes mountinfo's octal escaping of space, tab, newline and backslash.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountAll unmounts everything at or below dir. Overlay mounts can stack, so it loops
// until mountinfo shows none, falling back to a lazy detach for busy mounts.
func unmountAll(dir string) error {
	var lastErr error
	for round := 0; round < 10; round++ {
		mps, err := mountsUnder(dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		for _, mp := range mps {
			if err := unix.Unmount(mp, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				if err2 := unix.Unmount(mp, unix.MNT_DETACH); err2 != nil && !errors.Is(err2, unix.EINVAL) {
					lastErr = fmt.Errorf("unmount %s: %w", mp, err2)
				}
			}
		}
	}
	mps, _ := mountsUnder(dir)
	if len(mps) > 0 {
		return fmt.Errorf("mounts left under %s: %v (last error: %w)", dir, mps, lastErr)
	}
	return nil
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func readLines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func writeOwner(dir string) error {
	st, err := procStartTime(os.Getpid())
	if err != nil {
		return fmt.Errorf("own start time: %w", err)
	}
	// Written whole and renamed into place: a sweeper in another process must never read
	// a half-written owner and take a live cluster for a dead one.
	tmp := filepath.Join(dir, ownerFile+".tmp")
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", os.Getpid(), st), 0o644); err != nil {
		return fmt.Errorf("owner file: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, ownerFile)); err != nil {
		return fmt.Errorf("owner file: %w", err)
	}
	return nil
}

// Owner returns the pid recorded as owning a cluster folder and whether that process is
// still alive (same pid and start time).
func Owner(dir string) (pid int, alive bool) {
	lines := readLines(filepath.Join(dir, ownerFile))
	if len(lines) == 0 {
		return 0, false
	}
	var st uint64
	if _, err := fmt.Sscanf(lines[0], "%d %d", &pid, &st); err != nil {
		return 0, false
	}
	return pid, procAlive(pid, st)
}

// Teardown removes what a cluster left in dir when its owner could not run Stop: it kills
// recorded children still alive (matched by pid and start time, so a reused pid is never
// hit), deletes recorded network namespaces, unmounts everything under dir and removes it.
// It refuses to touch a folder whose owner is still running, unless the owner is us.
func Teardown(ctx context.Context, dir string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	if pid, alive := Owner(dir); alive && pid != os.Getpid() {
		return fmt.Errorf("teardown %s: owner process %d is still running", dir, pid)
	}
	var errs []error
	for _, l := range readLines(filepath.Join(dir, pidsFile)) {
		var pid int
		var st uint64
		var name string
		if _, err := fmt.Sscanf(l, "%d %d %s", &pid, &st, &name); err != nil {
			continue
		}
		if procAlive(pid, st) {
			log.Info("killing leftover child", "name", name, "pid", pid)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
			waitGone(ctx, pid, st)
		}
	}
	// What real nodes forked outside the recorded children (shims, pod processes) is in
	// the cluster's cgroup; killing it drops the nodes' mount namespaces and pod netns too.
	for _, cg := range readLines(filepath.Join(dir, cgroupsFile)) {
		if err := removeCgroup(ctx, cg); err != nil {
			errs = append(errs, err)
		}
	}
	for _, br := range readLines(filepath.Join(dir, bridgesFile)) {
		if err := deleteBridge(ctx, br); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range readLines(filepath.Join(dir, netnsFile)) {
		if err := deleteNetns(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unmountAll(dir); err != nil {
		errs = append(errs, err)
	} else if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	return errors.Join(errs...)
}

// waitGone waits briefly for a killed process that is not our child to disappear.
func waitGone(ctx context.Context, pid int, st uint64) {
	deadline := time.Now().Add(5 * time.Second)
	for procAlive(pid, st) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

// sweepStale tears down cluster folders in the temp dir whose owner died, so a killed test
// run does not leave overlay mounts and namespaces behind for the next one.
func sweepStale(ctx context.Context, log *slog.Logger) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempGlob))
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, ownerFile)); err != nil {
			// A folder without an owner file is one being created right now, or not ours.
			continue
		}
		if _, alive := Owner(d); alive {
			continue
		}
		log.Info("removing stale cluster folder", "dir", d)
		if err := Teardown(ctx, d, log); err != nil {
			log.Warn("stale cluster folder", "dir", d, "err", err)
		}
	}
}

// deleteNetns removes a network namespace; the veth pair goes with it.
func deleteNetns(ctx context.Context, name string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "delete", name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns delete %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
