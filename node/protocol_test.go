package node

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// TestProtocolRefusalStops: a coordinator that refuses the agent's
// protocol, at enrollment or at the netmap stream, stops the agent at once
// with the coordinator's message: it does not retry, since only another
// agent (or coordinator) version can help.
func TestProtocolRefusalStops(t *testing.T) {
	refusal := wire.Error{Code: wire.CodeProtocolTooOld, Error: "agent protocol 3 is too old: upgrade the agent (wiremesh v9.9.9 works)"}
	for _, at := range []string{wire.PathEnroll, wire.PathNetmap} {
		t.Run(at, func(t *testing.T) {
			var refused atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				switch {
				case r.URL.Path == at:
					refused.Add(1)
					w.WriteHeader(http.StatusBadRequest)
					json.NewEncoder(w).Encode(refusal)
				case r.URL.Path == wire.PathEnroll:
					var req wire.EnrollRequest
					json.NewDecoder(r.Body).Decode(&req)
					json.NewEncoder(w).Encode(wire.EnrollResponse{
						Node:       wire.Node{ID: 1, Name: "x", PublicKey: req.PublicKey, Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.1/32")}},
						Credential: credential.NewSecret("nd").String(),
						Prefixes:   []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")},
					})
				default: // no proof key: a coordinator that asks for no proofs
					w.WriteHeader(http.StatusNotFound)
					json.NewEncoder(w).Encode(wire.Error{Code: wire.CodeNotFound, Error: "no such endpoint"})
				}
			}))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.StartTLS()
			defer srv.Close()
			jk := credential.Bundle{URL: srv.URL, Pins: credential.Pins{credential.CAPin(srv.Certificate())}, Secret: credential.NewSecret("jk")}.Encode(credential.JoinKeyPrefix)
			a, err := New(testAgentConfig(t, "x", filepath.Join(t.TempDir(), "s"), jk, newFakeEngine()))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			err = a.Run(ctx)
			if ctx.Err() != nil {
				t.Fatalf("Run kept retrying a protocol refusal until the test's deadline (%d requests): %v", refused.Load(), err)
			}
			if err == nil || !strings.Contains(err.Error(), refusal.Error) || !errors.Is(err, ErrRefused) {
				t.Fatalf("Run: %v; want the refusal with the coordinator's message", err)
			}
			// Not the advice for a deleted node: re-enrolling cannot help.
			if !strings.Contains(err.Error(), "refused this agent's protocol") || strings.Contains(err.Error(), "re-enroll") {
				t.Errorf("Run: %v; want it to say the agent's protocol was refused, and nothing about re-enrolling", err)
			}
			if n := refused.Load(); n != 1 {
				t.Errorf("%d requests refused; want the agent to stop after the first", n)
			}
		})
	}
}
