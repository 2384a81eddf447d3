package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// stopGrace is how long cleanup waits after SIGTERM before SIGKILL.
	stopGrace = 5 * time.Second
	// logTailLines is how much of a process log a failed test prints.
	logTailLines = 200
	// pollInterval is how often WaitLog reads the log.
	pollInterval = 20 * time.Millisecond
)

// Proc is a long-running process started in a host's namespace by
// Host.Start.
type Proc struct {
	host    *Host
	name    string
	cmd     *exec.Cmd
	logPath string

	done     chan struct{} // closed once the process has been waited for
	exitCode int           // valid after done
	waitErr  error         // valid after done

	killOnce sync.Once
}

// Start starts a long-running process in the namespace (exec "ip netns exec
// NS args..."; ip execs the program, so the PID is the program's). The
// process inherits the test's environment plus env, runs in a process group
// of its own, and writes stdout and stderr to a log file under t.TempDir().
//
// A t.Cleanup stops it: SIGTERM, up to 5s to exit, then SIGKILL (to the
// whole process group). If the test failed, the last 200 lines of the log
// are printed with t.Logf, labelled with host and name. Start fails the test
// if the process cannot be started.
func (h *Host) Start(t testing.TB, name string, env []string, args ...string) *Proc {
	t.Helper()
	p, err := h.start(t.TempDir(), name, env, args)
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (h *Host) start(dir, name string, env, args []string) (*Proc, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("%s/%s: start: no command", h.Name, name)
	}
	logPath := filepath.Join(dir, h.Name+"-"+strings.ReplaceAll(name, "/", "_")+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("%s/%s: start: %w", h.Name, name, err)
	}
	defer f.Close() // the child has its own copy

	cmd := exec.Command("ip", append([]string{"netns", "exec", h.NS}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL, // never outlive the test binary
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s/%s: start %s: %w", h.Name, name, strings.Join(args, " "), err)
	}
	p := &Proc{host: h, name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	h.lab.track(p)
	go p.wait()
	return p, nil
}

func (p *Proc) wait() {
	err := p.cmd.Wait()
	p.exitCode = p.cmd.ProcessState.ExitCode()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		p.waitErr = fmt.Errorf("%s: wait: %w", p, err)
	}
	close(p.done)
}

// String returns "host/name".
func (p *Proc) String() string { return p.host.Name + "/" + p.name }

// PID returns the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: signal %v: %w", p, sig, err)
	}
	return nil
}

// Wait waits up to timeout for the process to exit and returns its exit
// code, which is -1 if a signal killed it. It may be called any number of
// times; it returns an error if the process is still running at timeout.
func (p *Proc) Wait(timeout time.Duration) (exitCode int, err error) {
	if p.Exited() {
		return p.exitCode, p.waitErr
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.exitCode, p.waitErr
	case <-timer.C:
		return -1, fmt.Errorf("%s: still running after %v", p, timeout)
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL to the process and its process group and waits for it
// to exit.
func (p *Proc) Kill() {
	p.killOnce.Do(func() {
		// The group outlives its leader while any member lives, so its id
		// cannot have been reused yet if there is anything left to kill.
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		_ = p.cmd.Process.Kill()
	})
	<-p.done
}

// stop is the cleanup of Start: SIGTERM, grace period, SIGKILL, and the log
// tail if the test failed.
func (p *Proc) stop(t testing.TB) {
	if !p.Exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if _, err := p.Wait(stopGrace); err != nil {
			t.Logf("lab: %s did not exit %v after SIGTERM; killing it", p, stopGrace)
		}
	}
	p.Kill()
	if t.Failed() {
		t.Logf("lab: log of %s (last %d lines):\n%s", p, logTailLines, tail(p.Log(), logTailLines))
	}
}

// Log returns the whole log (stdout and stderr) so far.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	return string(b)
}

// LogPath returns the path of the process log file.
func (p *Proc) LogPath() string { return p.logPath }

// WaitLog polls the log until it contains substr. It returns an error at
// timeout, or as soon as the process has exited without writing substr.
func (p *Proc) WaitLog(substr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		exited := p.Exited() // before reading, so the last read sees all output
		if strings.Contains(p.Log(), substr) {
			return nil
		}
		if exited {
			return fmt.Errorf("%s: exited (code %d) without logging %q", p, p.exitCode, substr)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %q not logged within %v", p, substr, timeout)
		}
		<-ticker.C
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
