//go:build !unix

package health

import "os/exec"

// setGroup does nothing where there are no process groups; a cancelled
// context kills the process alone.
func setGroup(*exec.Cmd) {}

func killGroup(*exec.Cmd) {}
