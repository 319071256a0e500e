package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupsFile names the cluster's top cgroup (one a line), for Teardown.
const cgroupsFile = "cgroups"

const cgroupFS = "/sys/fs/cgroup"

// cgroupHierarchies lists the mounted cgroup hierarchies: on a v1 (or hybrid) host, one
// folder per controller set plus "unified"; on a pure v2 host, the root itself.
func cgroupHierarchies() []string {
	if _, err := os.Stat(filepath.Join(cgroupFS, "cgroup.controllers")); err == nil {
		return []string{cgroupFS}
	}
	entries, err := os.ReadDir(cgroupFS)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for _, e := range entries {
		p := filepath.Join(cgroupFS, e.Name())
		resolved, err := filepath.EvalSymlinks(p)
		if err != nil || seen[resolved] {
			continue
		}
		if fi, err := os.Stat(resolved); err != nil || !fi.IsDir() {
			continue
		}
		seen[resolved] = true
		out = append(out, p)
	}
	return out
}

// v1Hierarchies are the hierarchies a kubelet's cgroupRoot must exist in.
func v1Hierarchies() []string {
	var out []string
	for _, h := range cgroupHierarchies() {
		if filepath.Base(h) != "unified" {
			out = append(out, h)
		}
	}
	return out
}

// makeCgroup creates /name in every v1 hierarchy (or the v2 root). A new cpuset cgroup
// starts with no cpus and mems, so it copies its parent's.
func makeCgroup(name string) error {
	for _, h := range v1Hierarchies() {
		p := filepath.Join(h, name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", p, err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if err := copyCpuset(h, name, f); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func copyCpuset(h, name, file string) error {
	parts := strings.Split(strings.Trim(name, "/"), "/")
	for i := range parts {
		rel := filepath.Join(parts[:i+1]...)
		parent := filepath.Dir(filepath.Join(h, rel))
		v, err := os.ReadFile(filepath.Join(parent, file))
		if err != nil {
			return fmt.Errorf("cpuset: %w", err)
		}
		cur, _ := os.ReadFile(filepath.Join(h, rel, file))
		if strings.TrimSpace(string(cur)) != "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(h, rel, file), v, 0o644); err != nil {
			return fmt.Errorf("cpuset %s: %w", rel, err)
		}
	}
	return nil
}

// trackingHierarchy is where the harness puts the node processes it starts (containerd,
// kubelet), so that the shims containerd forks are found there too; "pids" has no limits
// that could get in the way.
func trackingHierarchy() string {
	hs := cgroupHierarchies()
	for _, h := range hs {
		if filepath.Base(h) == "pids" {
			return h
		}
	}
	if len(hs) > 0 {
		return hs[0]
	}
	return ""
}

// joinCgroup moves pid into /name of the tracking hierarchy.
func joinCgroup(name string, pid int) error {
	h := trackingHierarchy()
	if h == "" {
		return errors.New("no cgroup hierarchy mounted")
	}
	p := filepath.Join(h, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return fmt.Errorf("cgroup %s: %w", p, err)
	}
	if err := os.WriteFile(filepath.Join(p, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("join cgroup %s: %w", p, err)
	}
	return nil
}

// cgroupPids lists every process in /name or below, in any hierarchy.
func cgroupPids(name string) []int {
	seen := map[int]bool{}
	var out []int
	for _, h := range cgroupHierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, name), func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			for _, l := range readLines(filepath.Join(p, "cgroup.procs")) {
				if pid, err := strconv.Atoi(l); err == nil && !seen[pid] {
					seen[pid] = true
					out = append(out, pid)
				}
			}
			return nil
		})
	}
	return out
}

// removeCgroup kills every process left in /name (pods, shims, anything a node forked)
// and removes the cgroup folders deepest first in every hierarchy.
func removeCgroup(ctx context.Context, name string) error {
	if strings.Trim(name, "/") == "" {
		return errors.New("refusing to remove the root cgroup")
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		pids := cgroupPids(name)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("cgroup %s: processes %v do not die", name, pids)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var errs []error
	for _, h := range cgroupHierarchies() {
		root := filepath.Join(h, name)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			var err error
			// A cgroup whose last process just died can report busy for a moment.
			for try := 0; try < 50; try++ {
				if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}
