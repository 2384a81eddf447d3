package node

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestReloadDuringRun: SIGHUP (Reload) may come at any time, also while
// Run is still setting the agent up; `go test -race` flags a Reload that
// reads the services Run is writing. Once up, a Reload applies the file.
func TestReloadDuringRun(t *testing.T) {
	co := startCoordinator(t)
	dir := filepath.Join(t.TempDir(), "s")
	file := filepath.Join(t.TempDir(), "services.hujson")
	writeServices := func(name string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(`{"services": [{"name": "`+name+`", "port": 8080}]}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeServices("web")
	eng := newFakeEngine()
	cfg := testAgentConfig(t, "r", dir, co.joinKey(t, false), eng)
	cfg.ServicesFile = file
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop, reloading := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(reloading)
		for {
			select {
			case <-stop:
				return
			default:
				a.Reload() // "agent is not running" until Run has its services
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{Agent: a, name: "r", eng: eng, dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(func() { ra.stop(t) })
	ra.waitUp(t)
	close(stop)
	<-reloading

	writeServices("api")
	if err := a.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if st := status(t, dir); len(st.Services) != 1 || st.Services[0].Name != "api" {
		t.Errorf("services after Reload: %+v, want api alone", st.Services)
	}
}
