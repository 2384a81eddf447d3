package coordinator

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/wiremesh/wiremesh/wire"
)

// metricValue returns the value of the series of name whose labels
// include labels (name=value pairs), summed over matches; a histogram
// gives its count.
func metricValue(t *testing.T, c *Coordinator, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := c.metrics.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				sum += value(m)
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
		}
		if !found {
			return false
		}
	}
	return true
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

// eventually polls cond until it holds or the test's patience ends.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMetrics(t *testing.T) {
	ts := startServer(t, time.Hour)
	c := ts.c
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	if code, _ := ts.doJSON(t, "POST", wire.PathEnroll, "nope", wire.EnrollRequest{PublicKey: newPublicKey(t)}); code != http.StatusUnauthorized {
		t.Fatalf("enroll with a bad key: %d", code)
	}
	if code, _ := ts.do(t, "POST", wire.PathEnroll, mustParseJoinKey(t, jk.JoinKey).String(), strings.NewReader("{")); code != http.StatusBadRequest {
		t.Fatalf("enroll with a malformed body: %d", code)
	}
	ts.do(t, "GET", "/no/such/path", "", nil)

	ts.setPolicy(t, allowAll) // so that b's enrollment changes a's netmap
	s := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey})
	s.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })
	ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "b"})
	s.netmap(t, "b's enrollment", func(nm *wire.Netmap) bool { return nm.Version > 0 })
	eventually(t, "a pushed change", func() bool {
		return metricValue(t, c, "wiremesh_coordinator_netmap_pushes_total", "trigger", "change") >= 1
	})

	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"wiremesh_coordinator_nodes", []string{"state", "online"}, 1},
		{"wiremesh_coordinator_nodes", []string{"state", "offline"}, 1},
		{"wiremesh_coordinator_netmap_streams", nil, 1},
		{"wiremesh_coordinator_enrollments_total", []string{"result", "ok"}, 2},
		{"wiremesh_coordinator_enrollments_total", []string{"result", "refused"}, 1},
		{"wiremesh_coordinator_enrollments_total", []string{"result", "invalid"}, 1},
		{"wiremesh_coordinator_api_requests_total", []string{"route", "POST /v1/enroll", "code", "200"}, 2},
		{"wiremesh_coordinator_api_requests_total", []string{"route", "POST /v1/join-keys", "code", "201"}, 1},
		{"wiremesh_coordinator_api_requests_total", []string{"route", "/", "code", "404"}, 1},
		{"wiremesh_coordinator_api_request_duration_seconds", []string{"route", "POST /v1/enroll"}, 4},
		{"wiremesh_coordinator_netmap_pushes_total", []string{"trigger", "connect"}, 1},
		{"wiremesh_coordinator_services", nil, 0},
	} {
		if got := metricValue(t, c, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if n := metricValue(t, c, "wiremesh_coordinator_netmap_push_latency_seconds"); n < 1 {
		t.Errorf("push latency observed %v times, want at least 1", n)
	}
	if n := metricValue(t, c, "wiremesh_coordinator_policy_compile_seconds"); n < 3 {
		t.Errorf("policy compile observed %v times, want one per publish (at least 3)", n)
	}
	if n := metricValue(t, c, "wiremesh_coordinator_api_request_duration_seconds", "route", "POST "+wire.PathNetmap); n != 0 {
		t.Errorf("the netmap stream was timed (%v observations); streams are not", n)
	}
	if v := metricValue(t, c, "wiremesh_coordinator_state_version"); v == 0 {
		t.Error("state version is 0")
	}
	problems, err := testutil.GatherAndLint(c.metrics.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// TestMetricsEndpoint: Run serves the metrics on their own plain-HTTP
// listener, and an empty address serves none.
func TestMetricsEndpoint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := mln.Addr().String()
	mln.Close()
	c, _, err := New(Config{DataDir: filepath.Join(t.TempDir(), "data"), Listen: addr, MetricsListen: maddr, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var body string
	eventually(t, "the metrics endpoint", func() bool {
		resp, err := http.Get("http://" + maddr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	})
	for _, want := range []string{`wiremesh_coordinator_nodes{state="online"} 0`, "go_goroutines", "process_open_fds"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}
