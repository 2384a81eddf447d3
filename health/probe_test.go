package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/service"
)

func probe(t *testing.T, c service.CheckDef, timeout time.Duration) (Status, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	st, out := Probes{}.Probe(ctx, c)
	return st, trimOutput(out)
}

func TestProbeHTTP(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/302":
			http.Redirect(w, r, "/500", http.StatusFound)
			return
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-stop:
			}
			return
		}
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.WriteHeader(code)
		w.Write([]byte("body of " + r.URL.Path + "\n"))
	}))
	defer srv.Close()
	defer close(stop)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	tests := []struct {
		url     string
		want    Status
		wantOut string
	}{
		{srv.URL + "/200", Passing, "HTTP GET " + srv.URL + "/200: 200 OK Output: body of /200"},
		{srv.URL + "/204", Passing, ""},
		{srv.URL + "/302", Passing, "302 Found"},
		{srv.URL + "/429", Warning, "429 Too Many Requests"},
		{srv.URL + "/404", Critical, "404 Not Found"},
		{srv.URL + "/500", Critical, "500 Internal Server Error Output: body of /500"},
		{srv.URL + "/503", Critical, ""},
		{srv.URL + "/slow", Critical, "context deadline exceeded"},
		{closed.URL + "/", Critical, "connection refused"},
	}
	for _, tc := range tests {
		t.Run(strings.TrimPrefix(tc.url, "http://"), func(t *testing.T) {
			st, out := probe(t, service.CheckDef{Kind: service.KindHTTP, Target: tc.url}, 300*time.Millisecond)
			if st != tc.want || !strings.Contains(out, tc.wantOut) {
				t.Errorf("got %s %q; want %s containing %q", st, out, tc.want, tc.wantOut)
			}
		})
	}
}

func TestProbeHTTPOutputBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 100<<10)))
	}))
	defer srv.Close()
	st, out := probe(t, service.CheckDef{Kind: service.KindHTTP, Target: srv.URL}, time.Second)
	if st != Passing || len(out) > MaxOutput {
		t.Errorf("got %s with %d bytes of output", st, len(out))
	}
}

func TestProbeHTTPNoProxy(t *testing.T) {
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	if st, out := probe(t, service.CheckDef{Kind: service.KindHTTP, Target: srv.URL}, time.Second); st != Passing {
		t.Errorf("with HTTP_PROXY set: %s %q", st, out)
	}
}

func TestProbeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	gone, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone.Close()
	for _, tc := range []struct {
		addr    string
		want    Status
		wantOut string
	}{
		{ln.Addr().String(), Passing, "TCP connect " + ln.Addr().String() + ": success"},
		{gone.Addr().String(), Critical, "connection refused"},
	} {
		st, out := probe(t, service.CheckDef{Kind: service.KindTCP, Target: tc.addr}, time.Second)
		if st != tc.want || !strings.Contains(out, tc.wantOut) {
			t.Errorf("%s: got %s %q; want %s containing %q", tc.addr, st, out, tc.want, tc.wantOut)
		}
	}
}

func TestProbeExec(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		want    Status
		wantOut string
	}{
		{"exit 0", "echo all good; exit 0", Passing, "all good"},
		{"exit 1", "echo slow >&2; exit 1", Warning, "slow"},
		{"exit 2", "echo broken; exit 2", Critical, "broken"},
		{"exit 2 silent", "exit 2", Critical, "exit status 2"},
		{"killed", "kill -9 $$", Critical, "signal: killed"},
		{"timeout", "echo started; sleep 10", Critical, "timed out after"},
		{"long output", "i=0; while [ $i -lt 300 ]; do echo 0123456789012345678901234567890123456789; i=$((i+1)); done", Passing, truncated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, out := probe(t, service.CheckDef{Kind: service.KindExec, Args: []string{"/bin/sh", "-c", tc.script}}, 300*time.Millisecond)
			if st != tc.want || !strings.Contains(out, tc.wantOut) || len(out) > MaxOutput {
				t.Errorf("got %s %q; want %s containing %q", st, out, tc.want, tc.wantOut)
			}
		})
	}
	st, out := probe(t, service.CheckDef{Kind: service.KindExec, Args: []string{"/nonexistent/check"}}, time.Second)
	if st != Critical || !strings.Contains(out, "no such file") {
		t.Errorf("missing program: %s %q", st, out)
	}
}

// TestProbeExecKillsGroup checks that nothing a script started outlives
// it: not on timeout, and not when the script exits leaving a child behind.
func TestProbeExecKillsGroup(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string
		want   Status
	}{
		{"timeout", "sleep 30 & echo $! > %s; wait", Critical},
		{"left behind", "sleep 30 >/dev/null 2>&1 & echo $! > %s; exit 0", Passing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			script := strings.Replace(tc.script, "%s", pidFile, 1)
			start := time.Now()
			st, out := probe(t, service.CheckDef{Kind: service.KindExec, Args: []string{"/bin/sh", "-c", script}}, 300*time.Millisecond)
			if st != tc.want {
				t.Errorf("got %s %q, want %s", st, out, tc.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the probe took %s", d)
			}
			b, err := os.ReadFile(pidFile)
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			waitGone(t, pid)
		})
	}
}

// waitGone waits for process pid to be gone (or a zombie: dead, waiting
// for a parent that does not reap it).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := syscall.Kill(pid, 0)
		if errors.Is(err, syscall.ESRCH) {
			return
		}
		stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d of the script is still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
