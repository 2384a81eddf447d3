package coordinator

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// FuzzAgentBodies sends any body to the endpoints agents call (enroll with
// a join key; netmap and key rotation with a node credential): the answer
// is never a 5xx, and an error always has the API's error body. Bodies
// are decoded before their proof is checked, so any body reaches the
// decoder; the seeds with valid proofs reach past it.
func FuzzAgentBodies(f *testing.F) {
	ts := startServer(f, time.Hour, func(c *Config) { c.EnrollRate = -1 })
	jk := ts.createJoinKey(f, wire.CreateJoinKeyRequest{Reusable: true})
	pub := newPublicKey(f)
	a := ts.enroll(f, jk.JoinKey, wire.EnrollRequest{PublicKey: pub, Name: "a"})
	f.Add(`{"protocol_version": ` + itoa(wire.ProtocolVersion) + `, "public_key": "` + newPublicKey(f) + `", "hostname": "web-1"}`)
	f.Add(`{"protocol_version": ` + itoa(wire.ProtocolVersion) + `, "public_key": "` + pub + `", "listen_port": 51820, "endpoints": ["192.0.2.1:51820"]}`)
	f.Add(`{"public_key": "` + pub + `", "new_public_key": "` + newPublicKey(f) + `"}`)
	f.Add(`{"protocol_version": 99, "public_key": "AAAA"}`)
	// With valid proofs, bodies get past the proof to what follows it: a
	// netmap stream (its proof is good for the fuzzing run's first
	// minutes), and a rotation to the node's own key, which the store
	// refuses (409), so the node keeps its key for the other inputs.
	f.Add(`{"protocol_version": ` + itoa(wire.ProtocolVersion) + `, "public_key": "` + pub + `", "listen_port": 51820, "endpoints": ["192.0.2.1:51820"], "proof": "` + netmapProof(f, ts.c, pub) + `"}`)
	f.Add(`{"public_key": "` + pub + `", "new_public_key": "` + pub + `", "proof": "` + rotationProof(f, ts.c, pub, pub) + `"}`)
	joinSecret := credential.Secret{}
	if b, err := credential.ParseJoinKey(jk.JoinKey); err == nil {
		joinSecret = b.Secret
	} else {
		f.Fatal(err)
	}
	h := ts.c.Handler()
	endpoints := []struct{ method, path, bearer string }{
		{"POST", wire.PathEnroll, joinSecret.String()},
		// The recorder cannot take write deadlines, so a netmap stream
		// that opens ends after its first message.
		{"POST", wire.PathNetmap, a.Credential},
		{"POST", wire.PathRotateKey, a.Credential},
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, e := range endpoints {
			checkAnswer(t, h, e.method, e.path, e.bearer, body)
		}
	})
}

// checkAnswer sends body to method path with bearer and fails t on a 5xx,
// or on an error answer without the API's error body.
func checkAnswer(t *testing.T, h http.Handler, method, path, bearer, body string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+bearer)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code >= 500 {
		t.Fatalf("%s %s %q: %d %s", method, path, body, w.Code, w.Body)
	}
	if w.Code >= 400 {
		var e wire.Error
		if json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error == "" || e.Code == "" {
			t.Fatalf("%s %s %q: %d without an error body and code: %s", method, path, body, w.Code, w.Body)
		}
	}
}
