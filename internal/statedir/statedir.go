// Package statedir makes and locks the state directory of a daemon (an
// agent, a standalone relay): private to its owner, since it holds a
// private key, and used by one process at a time.
package statedir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Make creates dir (0700) or checks that it is a directory that group and
// others cannot access.
func Make(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state dir %s is not a directory", dir)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("state dir %s has mode %#o: it holds a private key, so it must not be accessible to group or others (chmod 700 %s)", dir, m, dir)
	}
	return nil
}

// Lock takes the exclusive lock of dir: an flock on the file name in it,
// which then holds this process's pid. Another process holding it is an
// error naming who (what runs there) and its pid. Closing the file
// releases the lock; so does the process's exit.
func Lock(dir, name, who string) (*os.File, error) {
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(p)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state dir %s is in use by another %s (pid %s)", dir, who, strings.TrimSpace(string(b)))
		}
		return nil, fmt.Errorf("lock state dir %s: %w", dir, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}
