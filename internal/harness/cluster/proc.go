package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// spawner starts every child from one OS thread that stays alive for the cluster's lifetime.
// Pdeathsig fires when the *thread* that forked the child exits, not the process; Go may
// retire the thread behind a goroutine that locked it, which would kill our children early.
// A dedicated locked thread makes the signal mean "the test process died", which is the
// guarantee we want: nothing outlives a crashed or timed-out test binary.
type spawner struct {
	reqs chan spawnReq
	once sync.Once
	done chan struct{}
}

type spawnReq struct {
	cmd *exec.Cmd
	res chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		// Unlock before returning so the runtime keeps the thread instead of killing it,
		// which would SIGKILL any child started by a caller that raced with stop.
		defer runtime.UnlockOSThread()
		for {
			select {
			case r := <-s.reqs:
				r.res <- r.cmd.Start()
			case <-s.done:
				return
			}
		}
	}()
	return s
}

// start starts cmd as its own process group with Pdeathsig set.
func (s *spawner) start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	res := make(chan error, 1)
	select {
	case s.reqs <- spawnReq{cmd: cmd, res: res}:
	case <-s.done:
		return errors.New("cluster is stopped")
	}
	return <-res
}

func (s *spawner) stop() { s.once.Do(func() { close(s.done) }) }

// Process is a long-running child of the cluster: its output goes to LogPath, and it is
// stopped (SIGTERM, then SIGKILL to its whole process group) by Stop or by Cluster.Stop.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
}

// startProcess runs bin with args, logging to logPath (appended, so a restart keeps the
// previous run's lines for diagnosis).
func (s *spawner) startProcess(name, logPath, bin string, args, env []string, extra []*os.File) (*Process, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log for %s: %w", name, err)
	}
	fmt.Fprintf(lf, "=== %s start %s: %s %s\n", time.Now().Format(time.RFC3339Nano), name, bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.Env = env
	cmd.ExtraFiles = extra
	if err := s.start(cmd); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		fmt.Fprintf(lf, "=== %s exit %s: %v\n", time.Now().Format(time.RFC3339Nano), name, p.err)
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the child's process id (also its process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and its wait error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *Process) Stop(grace time.Duration) {
	if p == nil {
		return
	}
	if done, _ := p.Exited(); done {
		return
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGTERM)
	select {
	case <-p.done:
		// The leader is gone; members of its group (if any) must not linger either.
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
		return
	case <-time.After(grace):
	}
	p.Kill()
}

// Kill sends SIGKILL to the process group and waits for the leader to be reaped.
func (p *Process) Kill() {
	if p == nil {
		return
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	<-p.done
}

// logTail returns the last n lines of a log file, for error messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// procStat reads a process's state and start time (clock ticks since boot) from /proc;
// the start time tells a recorded pid apart from an unrelated process that reused it.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name is in parentheses and may contain spaces; fields resume after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed stat for %d", pid)
	}
	f := strings.Fields(s[i+1:])
	// After ')' the first field is field 3 (state); starttime is field 22.
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("short stat for %d", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], start, err
}

func procStartTime(pid int) (uint64, error) {
	_, st, err := procStat(pid)
	return st, err
}

// procAlive reports whether pid is running and is still the process that started at
// start. A zombie counts as dead: it holds nothing and only waits for its parent.
func procAlive(pid int, start uint64) bool {
	state, st, err := procStat(pid)
	return err == nil && st == start && state != 'Z' && state != 'X'
}
