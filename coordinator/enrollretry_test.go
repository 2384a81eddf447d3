package coordinator

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// TestEnrollAnswerLost: an agent whose enrollment committed but whose
// answer was lost (its coordinator killed before answering) asks again
// with a proof of its key and gets its node back with a new credential,
// with which it streams, while the lost one no longer works. Without a
// proof, or with a wrong one, it is refused as before (here, its one-time
// key counts as used); once the node has streamed, a proof no longer
// brings it back.
func TestEnrollAnswerLost(t *testing.T) {
	ts := startServer(t, time.Hour)
	once := ts.createJoinKey(t, wire.CreateJoinKeyRequest{})
	key := mustParseJoinKey(t, once.JoinKey).String()
	pub := newPublicKey(t)
	req := wire.EnrollRequest{PublicKey: pub, Hostname: "web"}
	lost := ts.enroll(t, once.JoinKey, req) // the answer the agent never read
	proof := func(priv [32]byte, at time.Time) string {
		p, err := credential.EnrollProof(priv, ts.c.PublicProofKey(), at)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Now()
	var refused refusals
	for _, tc := range []struct {
		name   string
		proof  string
		status int
		code   wire.ErrorCode
	}{
		{"no proof", "", 401, wire.CodeKeyUsed},
		{"a proof with another private key", proof(privateKeyOf(t, newPublicKey(t)), now), 403, wire.CodeProofInvalid},
		{"a netmap proof", netmapProof(t, ts.c, pub), 403, wire.CodeProofInvalid},
		{"a proof made 6 minutes ago", proof(privateKeyOf(t, pub), now.Add(-6*time.Minute)), 403, wire.CodeProofTime},
	} {
		r := req
		r.Proof = tc.proof
		status, body := ts.doJSON(t, "POST", wire.PathEnroll, key, r)
		if !refused.add(status == tc.status && errorOf(t, body).Code == tc.code) {
			t.Errorf("retry with %s: %d %s, want %d %s", tc.name, status, body, tc.status, tc.code)
		}
	}
	refused.report(t, "retry of an enrollment whose answer was lost, without a proof of its key, with a wrong or stale one", "401 key_used / 403")

	req.Proof = proof(privateKeyOf(t, pub), now)
	again := ts.enroll(t, once.JoinKey, req)
	if again.Node.ID != lost.Node.ID || again.Node.Name != lost.Node.Name || !slices.Equal(again.Node.Addresses, lost.Node.Addresses) {
		t.Errorf("the retry was answered with node %+v, want %+v", again.Node, lost.Node)
	}
	if again.Credential == lost.Credential {
		t.Error("the retry was answered with the lost credential, want a new one")
	}
	if status, body := ts.doJSON(t, "POST", wire.PathNetmap, lost.Credential, wire.MapRequest{PublicKey: pub, Proof: netmapProof(t, ts.c, pub)}); status != http.StatusUnauthorized {
		t.Errorf("netmap stream with the lost credential: %d %s, want 401", status, body)
	}
	s := ts.openStream(t, again.Credential, wire.MapRequest{PublicKey: pub})
	s.netmap(t, "the node's netmap", func(nm *wire.Netmap) bool { return nm.Self.ID == lost.Node.ID })

	// The node has streamed: its enrollment was answered.
	req.Proof = proof(privateKeyOf(t, pub), time.Now())
	if status, body := ts.doJSON(t, "POST", wire.PathEnroll, key, req); status != http.StatusUnauthorized || errorOf(t, body).Code != wire.CodeKeyUsed {
		t.Errorf("proven enrollment of a node that streamed: %d %s, want 401 %s", status, body, wire.CodeKeyUsed)
	}
	if n := len(mustNodes(t, ts.c.Store())); n != 1 {
		t.Errorf("%d nodes, want 1", n)
	}
}
