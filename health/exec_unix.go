//go:build unix

package health

import (
	"os/exec"
	"syscall"
)

// setGroup makes cmd the leader of a new process group, and has a
// cancelled context kill the whole group rather than cmd alone.
func setGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// killGroup kills what is left of cmd's process group after cmd exited.
// The kernel keeps the group's ID reserved while any member lives; once none
// does, only a new process that made itself a group leader with that very
// ID in the instant since could be hit.
func killGroup(cmd *exec.Cmd) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}
