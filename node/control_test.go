package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// fakeCoordinator serves h over TLS and returns a control client pinned
// to it.
func fakeCoordinator(t *testing.T, h http.HandlerFunc) *controlClient {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	c, err := newControlClient([]string{srv.URL}, func() credential.Pins { return credential.Pins{credential.CAPin(srv.Certificate())} }, testLogger(t, "control"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.close()
		srv.Close()
	})
	return c
}

func TestControlErrors(t *testing.T) {
	for _, tc := range []struct {
		name        string
		code        int
		body        string
		wantRefused bool
		wantErr     string
		wantCode    wire.ErrorCode
	}{
		{"unauthorized", 401, `{"code":"revoked","error":"join key jk1 was revoked"}`, true, "join key jk1 was revoked", wire.CodeRevoked},
		{"unauthorized, no code", 401, `{"error":"unknown join key"}`, true, "unknown join key", wire.CodeUnauthorized},
		{"forbidden", 403, `{"code":"key_mismatch","error":"public key does not match"}`, true, "public key does not match", wire.CodeKeyMismatch},
		{"forbidden, no code", 403, `{"error":"public key does not match"}`, true, "public key does not match", ""},
		{"conflict", 409, `{"code":"conflict","error":"node name \"a\" is taken"}`, true, `node name "a" is taken`, wire.CodeConflict},
		{"bad request", 400, `{"code":"protocol_too_old","error":"upgrade"}`, true, "upgrade", wire.CodeProtocolTooOld},
		{"server error", 500, `{"code":"internal","error":"internal error"}`, false, "internal error", wire.CodeInternal},
		{"unavailable, not JSON", 503, "upstream down", false, "upstream down (HTTP 503)", wire.CodeUnavailable},
		{"not found, empty", 404, "", false, "HTTP 404", wire.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeCoordinator(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.code)
				io.WriteString(w, tc.body)
			})
			_, err := c.enroll(context.Background(), credential.NewSecret("jk"), wire.EnrollRequest{})
			if err == nil {
				t.Fatal("enroll succeeded")
			}
			if got := errors.Is(err, ErrRefused); got != tc.wantRefused {
				t.Errorf("error %v: wraps ErrRefused %v, want %v", err, got, tc.wantRefused)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q, want it to contain %q", err, tc.wantErr)
			}
			if got := client.CodeOf(err); got != tc.wantCode {
				t.Errorf("error %v: code %q, want %q", err, got, tc.wantCode)
			}
		})
	}
}

func TestControlSendsBearerAndBody(t *testing.T) {
	key := credential.NewSecret("jk")
	want := wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: "pk", Name: "a", Hostname: "h"}
	c := fakeCoordinator(t, func(w http.ResponseWriter, r *http.Request) {
		var got wire.EnrollRequest
		json.NewDecoder(r.Body).Decode(&got)
		if r.URL.Path != wire.PathEnroll || r.Header.Get("Authorization") != "Bearer "+key.String() || got != want {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"unexpected request"}`)
			return
		}
		json.NewEncoder(w).Encode(wire.EnrollResponse{Credential: "nd1.AAAA", Node: wire.Node{Name: "a"}})
	})
	resp, err := c.enroll(context.Background(), key, want)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Credential != "nd1.AAAA" || resp.Node.Name != "a" {
		t.Errorf("enroll answer %+v", resp)
	}
}

// A stream that goes silent for three keep-alive intervals is given up,
// so that the agent reconnects instead of waiting forever.
func TestStreamSilenceEndsIt(t *testing.T) {
	c := fakeCoordinator(t, func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(wire.MapMessage{Netmap: &wire.Netmap{Version: 1, KeepAliveInterval: wire.Duration(20 * time.Millisecond)}})
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	var got []uint64
	done := make(chan error, 1)
	go func() {
		done <- c.stream(context.Background(), "nd1.AAAA", wire.MapRequest{}, nil, func(nm *wire.Netmap) { got = append(got, nm.Version) })
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "silent") {
			t.Errorf("stream returned %v, want it to report silence", err)
		}
		if len(got) != 1 || got[0] != 1 {
			t.Errorf("netmaps %v, want the one sent", got)
		}
	case <-time.After(waitFor):
		t.Fatal("a silent stream was not given up")
	}
}

// Keep-alives keep a stream open; the stream ends when its context does.
func TestStreamKeepAlivesAndCancel(t *testing.T) {
	// Generous, so that a slow machine does not starve the watchdog.
	const interval = 100 * time.Millisecond
	c := fakeCoordinator(t, func(w http.ResponseWriter, r *http.Request) {
		enc := json.NewEncoder(w)
		enc.Encode(wire.MapMessage{Netmap: &wire.Netmap{Version: 1, KeepAliveInterval: wire.Duration(interval)}})
		w.(http.Flusher).Flush()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for n := uint64(2); ; n++ {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
			m := wire.MapMessage{KeepAlive: true}
			if n%3 == 0 { // a netmap now and then shows the stream is alive
				m = wire.MapMessage{Netmap: &wire.Netmap{Version: n, KeepAliveInterval: wire.Duration(interval)}}
			}
			enc.Encode(m)
			w.(http.Flusher).Flush()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	seen := make(chan uint64, 100)
	done := make(chan error, 1)
	go func() {
		done <- c.stream(ctx, "nd1.AAAA", wire.MapRequest{}, nil, func(nm *wire.Netmap) { seen <- nm.Version })
	}()
	// Nine keep-alive intervals pass without the watchdog firing.
	timeout := time.After(waitFor)
	for v := uint64(0); v < 9; {
		select {
		case v = <-seen:
		case err := <-done:
			t.Fatalf("stream ended with keep-alives flowing: %v", err)
		case <-timeout:
			t.Fatalf("stream stuck at version %d", v)
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("stream after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(waitFor):
		t.Fatal("stream did not end with its context")
	}
}

// TestStreamAppliesDeltas: the stream hands on each netmap with the
// deltas after it applied; a delta before any netmap, or one that removes
// a peer the netmap lacks, ends the stream (the agent opens a new one, which
// starts whole).
func TestStreamAppliesDeltas(t *testing.T) {
	nm := wire.Netmap{Version: 1, Self: wire.Node{ID: 1, Name: "a"}, Peers: []wire.Node{{ID: 2, Name: "b"}}}
	serve := func(msgs ...wire.MapMessage) *controlClient {
		return fakeCoordinator(t, func(w http.ResponseWriter, r *http.Request) {
			enc := json.NewEncoder(w)
			for _, m := range msgs {
				enc.Encode(m)
			}
		})
	}
	delta := wire.MapMessage{Delta: &wire.NetmapDelta{Version: 2, Peers: []wire.Node{{ID: 2, Name: "b", Endpoints: []string{"192.0.2.2:1"}}}}}
	var got []*wire.Netmap
	err := serve(wire.MapMessage{Netmap: &nm}, delta).stream(context.Background(), "cred", wire.MapRequest{}, nil, func(nm *wire.Netmap) { got = append(got, nm) })
	if len(got) != 2 || got[1].Version != 2 || len(got[1].Peers[0].Endpoints) != 1 || len(got[0].Peers[0].Endpoints) != 0 {
		t.Fatalf("netmaps %+v (stream ended: %v); want the first, then it with the delta", got, err)
	}
	for name, msgs := range map[string][]wire.MapMessage{
		"a delta first":           {delta},
		"an unknown peer removed": {{Netmap: &nm}, {Delta: &wire.NetmapDelta{Version: 2, Removed: []int64{9}}}},
	} {
		err := serve(msgs...).stream(context.Background(), "cred", wire.MapRequest{}, nil, func(*wire.Netmap) {})
		if err == nil || !strings.Contains(err.Error(), "netmap stream: ") || strings.Contains(err.Error(), "EOF") {
			t.Errorf("%s: stream ended with %v, want the delta refused", name, err)
		}
	}
}
