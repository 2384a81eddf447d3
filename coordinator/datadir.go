package coordinator

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockFile is flock'd by the running coordinator in its data dir; it holds
// its pid.
const lockFile = "coordinator.lock"

// checkDataDir refuses a data dir that group or others can access; a
// missing one is fine (openDataDir creates it). It writes nothing.
func checkDataDir(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data dir %s is not a directory", path)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return fmt.Errorf("data dir %s has mode %#o: it holds the CA and proof keys and the database with the gossip keyring, "+
			"so it must not be accessible to group or others (chmod 700 %s)", path, m, path)
	}
	return nil
}

// dataDir is a coordinator's data dir, locked while the coordinator runs.
type dataDir struct {
	path string
	lock *os.File
}

// openDataDir checks the data dir (checkDataDir) or creates it 0700, locks
// it so that a second coordinator cannot use it at the same time, and
// makes every file in it 0600. A file that group or others could read is
// fixed, with a warning, rather than refused: in a dir closed to them, as
// checked, they could not reach it (older versions made the database
// 0644 under a usual umask).
func openDataDir(path string, log *slog.Logger) (_ *dataDir, err error) {
	if err := checkDataDir(path); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	if err := os.Chmod(path, 0o700); err != nil { // whatever the umask
		return nil, fmt.Errorf("data dir: %w", err)
	}
	lp := filepath.Join(path, lockFile)
	f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(lp)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("data dir %s is in use by another coordinator (pid %s holds %s); stop it first, or give this one another --data-dir",
				path, strings.TrimSpace(string(b)), lp)
		}
		return nil, fmt.Errorf("lock data dir %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			if err := makePrivate(filepath.Join(path, e.Name()), log); err != nil {
				return nil, err
			}
		}
	}
	return &dataDir{path: path, lock: f}, nil
}

// Close releases the lock.
func (d *dataDir) Close() error { return d.lock.Close() }

// makePrivate makes the file at path 0600 if it exists with another mode,
// and warns when group or others could access it.
func makePrivate(path string, log *slog.Logger) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	m := fi.Mode().Perm()
	if !fi.Mode().IsRegular() || m == 0o600 {
		return nil
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("make %s 0600: %w", path, err)
	}
	if m&0o077 != 0 {
		log.Warn("a data dir file was accessible to group or others; made it 0600", "file", path, "mode", fmt.Sprintf("%#o", m))
	}
	return nil
}

// Listeners are the coordinator's bound sockets.
type Listeners struct {
	// API is the HTTPS API's, at Config.Listen.
	API net.Listener
	// Metrics is the Prometheus endpoint's, at Config.MetricsListen; nil
	// without one.
	Metrics net.Listener
	// STUN are the STUN server's, at Config.STUNListen and the next port;
	// nil without one.
	STUN []net.PacketConn
}

// listen binds cfg's addresses.
func listen(cfg Config) (Listeners, error) {
	api, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return Listeners{}, fmt.Errorf("listen on %s: %w (choose another with --listen)", cfg.Listen, err)
	}
	ls := Listeners{API: api}
	if cfg.MetricsListen != "" {
		if ls.Metrics, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			api.Close()
			return Listeners{}, fmt.Errorf("metrics: %w (choose another with --metrics-listen, or \"\" for none)", err)
		}
	}
	if cfg.STUNListen != "" && !cfg.NoRelay {
		if ls.STUN, err = listenSTUN(cfg.STUNListen); err != nil {
			ls.close()
			return Listeners{}, err
		}
	}
	return ls, nil
}

// close closes the listeners.
func (ls Listeners) close() {
	if ls.API != nil {
		ls.API.Close()
	}
	if ls.Metrics != nil {
		ls.Metrics.Close()
	}
	for _, pc := range ls.STUN {
		pc.Close()
	}
}

// Start starts a coordinator process: it checks the data dir's permissions
// and binds Config.Listen and Config.MetricsListen before New writes
// anything, so that a busy port or an open data dir leaves it as it was.
// Run serves on those listeners.
func Start(cfg Config) (*Coordinator, Files, error) {
	if err := cfg.Validate(); err != nil {
		return nil, Files{}, err
	}
	if err := checkDataDir(cfg.DataDir); err != nil {
		return nil, Files{}, err
	}
	ls, err := listen(cfg)
	if err != nil {
		return nil, Files{}, err
	}
	c, f, err := New(cfg)
	if err != nil {
		ls.close()
		return nil, f, err
	}
	c.ls = ls
	return c, f, nil
}
