// Package pgtest starts a private PostgreSQL server for tests: a cluster
// made with initdb in a new temporary directory and run with pg_ctl by an
// unprivileged user (nobody, when the test runs as root, which postgres
// refuses to run as), listening on a Unix socket in that directory only
// (no TCP port), stopped and removed when the test that started it ends,
// whether it passed or not. Each test then makes its own database in the
// one cluster, which is quick.
//
// The binaries are Debian's postgresql package's, the newest version under
// /usr/lib/postgresql, not whatever is on PATH. Without them a test is
// skipped, or fails when the environment variable CI is set: CI must run
// the PostgreSQL tests.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// Root is where Debian installs PostgreSQL's versions, each under
// Root/VERSION/bin.
const Root = "/usr/lib/postgresql"

// Cluster is a running PostgreSQL server of one test.
type Cluster struct {
	dir   string // the data, the log and the socket
	bin   string // the binaries' directory
	cred  *syscall.Credential
	admin *sql.DB // connected to the postgres database, as the superuser
	opts  string  // the server's options
	dbs   atomic.Int64
}

// superuser is the role initdb makes.
const superuser = "postgres"

// Start starts a cluster for t; t.Cleanup stops it and removes its
// directory.
func Start(t testing.TB) *Cluster {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL tests must run under CI: %v (install the postgresql package)", err)
		}
		t.Skipf("skipping the PostgreSQL tests: %v (install the postgresql package)", err)
	}
	c := &Cluster{bin: bin}
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			t.Fatalf("postgres does not run as root, and there is no user nobody to run it: %v", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// Not t.TempDir: its parents are the test's user's alone.
	if c.dir, err = os.MkdirTemp("", "pgtest-"); err != nil {
		t.Fatal(err)
	}
	started := false
	t.Cleanup(func() {
		if c.admin != nil {
			c.admin.Close()
		}
		if started {
			if out, err := c.run("pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop"); err != nil {
				t.Errorf("stop PostgreSQL: %v\n%s", err, out)
			}
		}
		os.RemoveAll(c.dir)
	})
	if err := os.Chown(c.dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	if out, err := c.run("initdb", "-D", c.data(), "-U", superuser, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	c.opts = "-k " + c.dir + " -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB -c max_connections=200"
	out, err := c.run("pg_ctl", "-D", c.data(), "-l", filepath.Join(c.dir, "log"), "-o", c.opts, "-w", "-t", "60", "start")
	started = true // a start that timed out may still be running: stop it
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	if c.admin, err = sql.Open("pgx", c.url("postgres")); err != nil {
		t.Fatal(err)
	}
	return c
}

// Restart restarts the server with pg_ctl restart (fast shutdown: every
// connection is cut), waiting until it accepts connections again.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	if out, err := c.run("pg_ctl", "-D", c.data(), "-l", filepath.Join(c.dir, "log"), "-o", c.opts, "-m", "fast", "-w", "-t", "60", "restart"); err != nil {
		t.Fatalf("pg_ctl restart: %v\n%s", err, out)
	}
}

// Database creates a new, empty database in c for t and returns its URL;
// t.Cleanup drops it.
func (c *Cluster) Database(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", c.dbs.Add(1))
	ctx := context.Background()
	if _, err := c.admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		if _, err := c.admin.ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return c.url(name)
}

// url is the URL of database db, through the socket.
func (c *Cluster) url(db string) string {
	return "postgres://" + superuser + "@/" + db + "?" + url.Values{"host": {c.dir}, "sslmode": {"disable"}}.Encode()
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// run runs PostgreSQL's program name as the cluster's user.
func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	return cmd.CombinedOutput()
}

// binDir returns the binaries' directory of the newest PostgreSQL
// installed under Root.
func binDir() (string, error) {
	entries, err := os.ReadDir(Root)
	if err != nil {
		return "", fmt.Errorf("no PostgreSQL under %s: %w", Root, err)
	}
	newest, best := "", -1.0
	for _, e := range entries {
		v, err := strconv.ParseFloat(e.Name(), 64) // 15, 16, or 9.6 of old
		if err != nil || v <= best {
			continue
		}
		if _, err := os.Stat(filepath.Join(Root, e.Name(), "bin", "pg_ctl")); err == nil {
			newest, best = e.Name(), v
		}
	}
	if newest == "" {
		return "", fmt.Errorf("no PostgreSQL under %s", Root)
	}
	return filepath.Join(Root, newest, "bin"), nil
}
