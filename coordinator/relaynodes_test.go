package coordinator

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/acl"
	"github.com/wiremesh/wiremesh/wire"
)

// relayDesc describes a relay node named name with public key pub.
func relayDesc(ts *testServer, name, pub string) *wire.Relay {
	return &wire.Relay{Name: name, URL: "https://192.0.2.10:443", Pins: ts.c.Pins().Strings(), Key: pub, STUN: []string{"192.0.2.10:3478", "192.0.2.10:3479"}}
}

// A relay join key enrolls relays and no agent; an agent key enrolls
// agents and no relay; each refusal (403) names the flag, and leaves a
// one-time key unused.
func TestRelayJoinKeys(t *testing.T) {
	ts := startServer(t, time.Hour)
	rk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Relay: true})
	if !rk.Key.Relay {
		t.Errorf("relay key described as %+v", rk.Key)
	}
	ak := ts.createJoinKey(t, wire.CreateJoinKeyRequest{})

	secret := func(jk string) string { return mustParseJoinKey(t, jk).String() }
	pub := newPublicKey(t)
	code, body := ts.doJSON(t, "POST", wire.PathEnroll, secret(rk.JoinKey), wire.EnrollRequest{PublicKey: pub, Name: "a"})
	if e := errorOf(t, body); code != http.StatusForbidden || e.Code != wire.CodeForbidden || !strings.Contains(e.Error, "--relay") {
		t.Errorf("agent with a relay key: %d %s, want 403 naming --relay", code, body)
	}
	rpub := newPublicKey(t)
	code, body = ts.doJSON(t, "POST", wire.PathEnroll, secret(ak.JoinKey), wire.EnrollRequest{PublicKey: rpub, Name: "eu-1", Relay: relayDesc(ts, "eu-1", rpub)})
	if e := errorOf(t, body); code != http.StatusForbidden || e.Code != wire.CodeForbidden || !strings.Contains(e.Error, "--relay") {
		t.Errorf("relay with an agent key: %d %s, want 403 naming --relay", code, body)
	}
	// Both one-time keys are still unused: each enrolls its own kind.
	r := ts.enroll(t, rk.JoinKey, wire.EnrollRequest{PublicKey: rpub, Name: "eu-1", Relay: relayDesc(ts, "eu-1", rpub)})
	if r.Node.Relay == nil || r.Node.Relay.URL != "https://192.0.2.10:443" {
		t.Errorf("enrolled relay node %+v, want its description", r.Node)
	}
	if a := ts.enroll(t, ak.JoinKey, wire.EnrollRequest{PublicKey: pub, Name: "a"}); a.Node.Relay != nil {
		t.Errorf("agent enrolled as a relay: %+v", a.Node)
	}

	code, body = ts.doJSON(t, "POST", wire.PathJoinKeys, ts.admin, wire.CreateJoinKeyRequest{Relay: true, Tags: []string{"tag:x"}})
	if code != http.StatusBadRequest {
		t.Errorf("relay key with tags: %d %s, want 400", code, body)
	}
}

// A relay's description is checked: its name is its node name and not the
// embedded relay's, its key its node key, its URL https, its pins pins.
func TestRelayDescriptionRefused(t *testing.T) {
	ts := startServer(t, time.Hour)
	rk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Relay: true, Reusable: true})
	sec := mustParseJoinKey(t, rk.JoinKey).String()
	pub := newPublicKey(t)
	for _, tt := range []struct {
		what string
		name string
		mod  func(*wire.Relay)
		code int
	}{
		{"another name", "eu-1", func(r *wire.Relay) { r.Name = "eu-2" }, http.StatusBadRequest},
		{"the embedded relay's name", DefaultRelayName, func(*wire.Relay) {}, http.StatusConflict},
		{"another key", "eu-1", func(r *wire.Relay) { r.Key = newPublicKey(t) }, http.StatusBadRequest},
		{"an http URL", "eu-1", func(r *wire.Relay) { r.URL = "http://192.0.2.10" }, http.StatusBadRequest},
		{"no pins", "eu-1", func(r *wire.Relay) { r.Pins = nil }, http.StatusBadRequest},
		{"a bad pin", "eu-1", func(r *wire.Relay) { r.Pins = []string{"sha256:zz"} }, http.StatusBadRequest},
		{"a bad STUN server", "eu-1", func(r *wire.Relay) { r.STUN = []string{"192.0.2.10"} }, http.StatusBadRequest},
	} {
		d := relayDesc(ts, tt.name, pub)
		tt.mod(d)
		code, body := ts.doJSON(t, "POST", wire.PathEnroll, sec, wire.EnrollRequest{PublicKey: pub, Name: tt.name, Relay: d})
		if code != tt.code {
			t.Errorf("relay with %s: %d %s, want %d", tt.what, code, body, tt.code)
		}
	}
	ts.enroll(t, rk.JoinKey, wire.EnrollRequest{PublicKey: pub, Name: "eu-1", Relay: relayDesc(ts, "eu-1", pub)})
	// Two relays with one name: the second is refused.
	pub2 := newPublicKey(t)
	code, body := ts.doJSON(t, "POST", wire.PathEnroll, sec, wire.EnrollRequest{PublicKey: pub2, Name: "eu-1", Relay: relayDesc(ts, "eu-1", pub2)})
	if code != http.StatusConflict {
		t.Errorf("a second relay named eu-1: %d %s, want 409", code, body)
	}
}

// A relay node is nobody's peer and in no policy view, its description is
// in every agent's relay map beside the embedded relay (by name), and its
// own netmap carries exactly the keys of the enrolled, unexpired agents:
// a deleted or expired node leaves it. Only a relay describes a relay.
func TestRelayNode(t *testing.T) {
	ts := startServer(t, time.Hour)
	ts.setPolicy(t, allowAll)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	b := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "b"})
	c := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "c"})
	rk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Relay: true})
	rpub := newPublicKey(t)
	r := ts.enroll(t, rk.JoinKey, wire.EnrollRequest{PublicKey: rpub, Name: "aa-relay", Relay: relayDesc(ts, "aa-relay", rpub)})

	sa := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey})
	nm := sa.netmap(t, "a's netmap", func(*wire.Netmap) bool { return true })
	if got := peerNames(nm); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("a's peers %v, want [b c] (never the relay)", got)
	}
	if len(nm.Relays) != 2 || nm.Relays[0].Name != "aa-relay" || nm.Relays[1].Name != DefaultRelayName || nm.Relays[0].Key != rpub {
		t.Errorf("a's relay map %+v, want aa-relay then the embedded one", nm.Relays)
	}
	if nm.RelayClients != nil {
		t.Errorf("an agent's netmap carries relay clients %v", nm.RelayClients)
	}
	s := ts.c.state.Load()
	if slices.ContainsFunc(s.aclNodes, func(n acl.Node) bool { return n.ID == r.Node.ID }) {
		t.Error("the relay node is in the policy's view")
	}
	if _, ok := s.byKey[[32]byte(mustKey(t, rpub))]; ok {
		t.Error("the relay node may attach to the embedded relay")
	}
	code, body := ts.do(t, "GET", wire.PathNodes+"/aa-relay", ts.admin, nil)
	var d wire.NodeDetail
	decodeStrict(t, body, &d)
	if code != http.StatusOK || d.Node.Relay == nil || len(d.Peers) != 0 || len(d.ReachedBy) != 0 {
		t.Errorf("nodes get aa-relay: %d %+v, want a relay with no peers", code, d)
	}

	sr := ts.openStream(t, r.Credential, wire.MapRequest{PublicKey: rpub})
	want := []string{a.Node.PublicKey, b.Node.PublicKey, c.Node.PublicKey}
	nm = sr.netmap(t, "the relay's netmap", func(*wire.Netmap) bool { return true })
	if !slices.Equal(nm.RelayClients, want) || len(nm.Peers) != 0 || len(nm.Rules) != 0 || nm.Gossip != nil || nm.Self.Name != "aa-relay" {
		t.Errorf("the relay's netmap: clients %v peers %v rules %v gossip %v; want clients %v and nothing else", nm.RelayClients, peerNames(nm), nm.Rules, nm.Gossip, want)
	}
	if code, body := ts.do(t, "DELETE", wire.PathNodes+"/b", ts.admin, nil); code != http.StatusNoContent {
		t.Fatalf("delete b: %d %s", code, body)
	}
	sr.netmap(t, "b gone from the relay clients", func(nm *wire.Netmap) bool {
		return slices.Equal(nm.RelayClients, []string{a.Node.PublicKey, c.Node.PublicKey})
	})
	if code, body := ts.do(t, "POST", wire.PathNodes+"/c/expire", ts.admin, nil); code != http.StatusOK {
		t.Fatalf("expire c: %d %s", code, body)
	}
	sr.netmap(t, "c gone from the relay clients", func(nm *wire.Netmap) bool {
		return slices.Equal(nm.RelayClients, []string{a.Node.PublicKey})
	})

	// The relay's new description reaches the agents; an agent's is refused.
	d2 := relayDesc(ts, "aa-relay", rpub)
	d2.URL = "https://198.51.100.7:8443"
	ts.openStream(t, r.Credential, wire.MapRequest{PublicKey: rpub, Relay: d2})
	sa.netmap(t, "the relay's new URL", func(nm *wire.Netmap) bool {
		return len(nm.Relays) == 2 && nm.Relays[0].URL == d2.URL
	})
	code, body = ts.doJSON(t, "POST", wire.PathNetmap, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey, Proof: netmapProof(t, ts.c, a.Node.PublicKey), Relay: relayDesc(ts, "a", a.Node.PublicKey)})
	if code != http.StatusForbidden {
		t.Errorf("an agent describing a relay: %d %s, want 403", code, body)
	}
	bad := relayDesc(ts, "aa-relay", rpub)
	bad.URL = "ftp://x"
	code, body = ts.doJSON(t, "POST", wire.PathNetmap, r.Credential, wire.MapRequest{PublicKey: rpub, Proof: netmapProof(t, ts.c, rpub), Relay: bad})
	if code != http.StatusBadRequest {
		t.Errorf("a relay's bad description: %d %s, want 400", code, body)
	}
}

// mustKey decodes a base64 public key.
func mustKey(t *testing.T, pub string) []byte {
	t.Helper()
	b, err := decodeKey(pub)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad key %q", pub)
	}
	return b
}
