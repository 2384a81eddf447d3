package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/health"
	"github.com/wiremesh/wiremesh/node"
)

// TestLocalServices: an agent runs the checks of its services file, a ttl
// check follows `wiremesh checks`, SIGHUP reloads the file and a malformed
// one changes nothing, and services register and deregister at runtime.
func TestLocalServices(t *testing.T) {
	m := newMesh(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "services.hujson")
	write := func(text string) {
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{
  // a service that reports in itself
  "services": [
    {"name": "jobs", "port": 9000, "checks": [{"id": "jobs-ttl", "ttl": "30s"}]},
  ],
}`)
	a := m.addAgent("h1", "--config", cfg)
	svc := func(name string) (node.ServiceStatus, bool) {
		for _, s := range a.status(t).Services {
			if s.Name == name {
				return s, true
			}
		}
		return node.ServiceStatus{}, false
	}
	run := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := a.host.Run(ctx, append([]string{bin}, append(args, "--state-dir", a.stateDir)...)...)
		return string(out), err
	}

	if s, ok := svc("jobs"); !ok || s.Health != health.Critical {
		t.Fatalf("jobs before any report: %+v, want critical", s)
	}
	if out, err := run("checks", "pass", "jobs-ttl", "--note", "all done"); err != nil {
		t.Fatalf("checks pass: %v\n%s", err, out)
	}
	if s, _ := svc("jobs"); s.Health != health.Passing || s.Checks[0].Output != "all done" {
		t.Fatalf("jobs after pass: %+v", s)
	}
	if out, err := run("checks", "pass", "nope"); err == nil || !strings.Contains(out, "nope") {
		t.Fatalf("unknown check: err=%v\n%s", err, out)
	}

	// A malformed file on SIGHUP changes nothing and says where it is wrong.
	write(`{"services": [{"name": "jobs", "prot": 9000}]}`)
	a.proc.Signal(syscall.SIGHUP)
	if err := a.proc.WaitLog("reload refused", 5*time.Second); err != nil || !strings.Contains(a.proc.Log(), `services.hujson:1:32: unknown key \"prot\"`) {
		t.Fatalf("malformed reload not reported with its position: %v\n%s", err, a.proc.Log())
	}
	if s, ok := svc("jobs"); !ok || s.Health != health.Passing {
		t.Fatalf("malformed reload changed the services: %+v", s)
	}
	// A good one adds a tcp-checked service; unchanged checks keep state.
	ln, err := a.host.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	write(`{"services": [
  {"name": "jobs", "port": 9000, "checks": [{"id": "jobs-ttl", "ttl": "30s"}]},
  {"name": "web", "port": 8080, "tags": ["v2"], "checks": [{"tcp": "` + ln.Addr().String() + `", "interval": "1s"}]},
]}`)
	a.proc.Signal(syscall.SIGHUP)
	waitFor(t, 5*time.Second, "web passing after reload", func() bool { s, ok := svc("web"); return ok && s.Health == health.Passing })
	if s, _ := svc("jobs"); s.Health != health.Passing {
		t.Fatalf("reload reset the unchanged ttl check: %+v", s)
	}

	// Runtime registration and deregistration.
	reg := filepath.Join(dir, "cache.hujson")
	os.WriteFile(reg, []byte(`{"name": "cache", "port": 6379, "checks": [{"ttl": "10s"}]}`), 0o600)
	if out, err := run("services", "register", reg); err != nil {
		t.Fatalf("services register: %v\n%s", err, out)
	}
	if _, ok := svc("cache"); !ok {
		t.Fatal("registered service not listed")
	}
	if out, err := run("services", "deregister", "web"); err == nil || !strings.Contains(out, "config file") {
		t.Fatalf("deregistering a config-file service: err=%v\n%s", err, out)
	}
	if out, err := run("services", "deregister", "cache"); err != nil {
		t.Fatalf("services deregister: %v\n%s", err, out)
	}
	if _, ok := svc("cache"); ok {
		t.Fatal("deregistered service still listed")
	}
}
