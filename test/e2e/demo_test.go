package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/test/lab"
)

const demoScript = "../../scripts/demo.sh"

// TestDemoHints runs `scripts/demo.sh --detach` (what `make demo` runs,
// without waiting for Ctrl-C) under a prefix of its own, then each command
// it prints to try, as printed; a command that fails fails the test. The
// demo's --cleanup removes it at the end, also when the test fails, and the
// test checks that nothing is left: namespaces, processes, WireGuard
// sockets, the demo's directory.
func TestDemoHints(t *testing.T) {
	lab.Require(t, "ip", "ping", "wg", "dig", "nft", "socat", "curl")
	prefix := demoPrefix(t)
	dir := filepath.Join(t.TempDir(), "demo")
	env := append(os.Environ(), "DEMO_PREFIX="+prefix, "DEMO_DIR="+dir, "DEMO_UI_PORT="+freePort(t))
	t.Cleanup(func() { demoCleanup(t, prefix, dir, env) })

	out, err := runDemo(env, 3*time.Minute, "--detach", bin)
	if err != nil {
		t.Fatalf("demo.sh --detach: %v\n%s", err, out)
	}
	hints := demoHints(out)
	if len(hints) < 10 {
		t.Fatalf("demo.sh printed %d commands to try:\n%s", len(hints), out)
	}
	var exports []string // the variables the hints set, for the later hints
	for _, h := range hints {
		if strings.HasPrefix(h, "export ") {
			exports = append(exports, h)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, "sh", "-ec", strings.Join(append(exports, h), "\n"))
		cmd.WaitDelay = time.Second
		got, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("demo hint %q: %v\n%s", h, err, got)
		}
	}
}

// freePort returns a TCP port on localhost that nothing listens on now,
// for the demo's UI forwarder (the default, 8443, may be taken).
func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// demoPrefix returns "wmdemo" and 4 random hex digits that no namespace
// uses.
func demoPrefix(t *testing.T) string {
	t.Helper()
	for range 16 {
		b := make([]byte, 2)
		rand.Read(b)
		p := "wmdemo" + hex.EncodeToString(b)
		if len(demoNamespaces(t, p)) == 0 {
			return p
		}
	}
	t.Fatal("no unused demo prefix")
	return ""
}

// demoNamespaces lists the namespaces named prefix-*.
func demoNamespaces(t *testing.T, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			names = append(names, e.Name())
		}
	}
	return names
}

// runDemo runs demo.sh with args and returns its output.
func runDemo(env []string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{demoScript}, args...)...)
	cmd.Env = env
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// demoHints returns the commands the demo prints to try: the indented
// lines after "Try, in another shell", up to a blank line.
func demoHints(out string) []string {
	_, after, ok := strings.Cut(out, "Try, in another shell (as root):\n")
	if !ok {
		return nil
	}
	var hints []string
	for _, l := range strings.Split(strings.TrimLeft(after, "\n"), "\n") {
		if strings.TrimSpace(l) == "" {
			break
		}
		hints = append(hints, strings.TrimSpace(l))
	}
	return hints
}

// demoCleanup runs demo.sh --cleanup and checks that it removed the demo:
// it fails the test for anything left, and removes that too.
func demoCleanup(t *testing.T, prefix, dir string, env []string) {
	var pids []int
	for _, ns := range demoNamespaces(t, prefix) {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	if out, err := runDemo(env, time.Minute, "--cleanup"); err != nil {
		t.Errorf("demo.sh --cleanup: %v\n%s", err, out)
	}
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("demo.sh --cleanup left process %d running", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, ns := range demoNamespaces(t, prefix) {
		t.Errorf("demo.sh --cleanup left namespace %s", ns)
		exec.Command("ip", "netns", "del", ns).Run()
	}
	socks, _ := filepath.Glob("/var/run/wireguard/" + prefix + "*.sock")
	for _, s := range socks {
		t.Errorf("demo.sh --cleanup left %s", s)
		os.Remove(s)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("demo.sh --cleanup left %s (%v)", dir, err)
	}
}

// running reports whether the process pid exists and is not a zombie.
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, state, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(state, "Z")
}
