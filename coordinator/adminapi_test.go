package coordinator

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// doHeader is do with the response headers.
func (ts *testServer) doHeader(t *testing.T, method, path, token string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, ts.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, resp.Header, b.Bytes()
}

func TestNodeDetailAndExpire(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	b := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "b"})
	ts.setPolicy(t, `{"acls": [
  {"action": "accept", "src": ["node:a"], "dst": ["node:b:443,8000-8010"], "proto": "tcp"},
  {"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "icmp"},
]}`)
	sa := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey, Version: "v1.2.3"})
	sa.netmap(t, "peer b", func(nm *wire.Netmap) bool { return len(nm.Peers) == 1 })

	code, body := ts.do(t, "GET", wire.PathNodes+"/a", ts.admin, nil)
	var d wire.NodeDetail
	decodeStrict(t, body, &d)
	if code != http.StatusOK || d.Node.Name != "a" || !d.Node.Online || d.Node.Version != "v1.2.3" || !slices.Equal(d.Peers, []string{"b"}) {
		t.Fatalf("GET /v1/nodes/a: %d %+v", code, d)
	}
	text := func(acc []wire.Access) []string {
		var out []string
		for _, x := range acc {
			out = append(out, x.Text)
		}
		return out
	}
	if got := text(d.Reaches); !slices.Equal(got, []string{"b icmp", "b tcp/443,8000-8010", "b icmpv6"}) {
		t.Errorf("a reaches %v", got)
	}
	if got := text(d.ReachedBy); !slices.Equal(got, []string{"b icmp", "b icmpv6"}) {
		t.Errorf("a is reached by %v", got)
	}
	if code, body := ts.do(t, "GET", wire.PathNodes+"/nope", ts.admin, nil); code != http.StatusNotFound || !strings.Contains(errorOf(t, body).Error, `no node named "nope"`) {
		t.Errorf("unknown node: %d %s", code, body)
	}

	// Expire b: a's netmap drops it, b's credential is refused, and the
	// listing says when it expired.
	code, body = ts.do(t, "POST", wire.PathNodes+"/b/expire", ts.admin, nil)
	var n wire.Node
	decodeStrict(t, body, &n)
	if code != http.StatusOK || n.Expires.IsZero() {
		t.Fatalf("expire: %d %s", code, body)
	}
	sa.netmap(t, "no peers", func(nm *wire.Netmap) bool { return len(nm.Peers) == 0 })
	code, body = ts.doJSON(t, "POST", wire.PathNetmap, b.Credential, wire.MapRequest{PublicKey: b.Node.PublicKey})
	if code != http.StatusUnauthorized || !strings.Contains(errorOf(t, body).Error, "expired") {
		t.Errorf("expired node's stream: %d %s", code, body)
	}
	if code, _ := ts.do(t, "POST", wire.PathNodes+"/b/expire", ts.admin, nil); code != http.StatusOK {
		t.Errorf("expire again: %d, want 200 (no change)", code)
	}
	if code, _ := ts.do(t, "POST", wire.PathNodes+"/nope/expire", ts.admin, nil); code != http.StatusNotFound {
		t.Errorf("expire unknown: %d", code)
	}
}

func TestPagination(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	for _, name := range []string{"n1", "n2", "n3"} {
		ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: name})
	}
	var names []string
	path := wire.PathNodes + "?limit=2"
	pages := 0
	for path != "" {
		code, h, body := ts.doHeader(t, "GET", path, ts.admin)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		var nodes []wire.Node
		decodeStrict(t, body, &nodes)
		for _, n := range nodes {
			names = append(names, n.Name)
		}
		path = ""
		if l := h.Get("Link"); l != "" {
			path = l[1:strings.Index(l, ">")]
		}
		pages++
	}
	if !slices.Equal(names, []string{"n1", "n2", "n3"}) || pages != 2 {
		t.Errorf("paged nodes %v in %d pages, want n1..n3 in 2", names, pages)
	}
	for _, q := range []string{"?limit=0", "?limit=x", "?limit=10001", "?after=-1", "?after=y"} {
		if code, body := ts.do(t, "GET", wire.PathNodes+q, ts.admin, nil); code != http.StatusBadRequest {
			t.Errorf("GET nodes%s: %d %s, want 400", q, code, body)
		}
	}

	// The audit log: newest first, paginated the same way.
	code, h, body := ts.doHeader(t, "GET", wire.PathAudit+"?limit=2", ts.admin)
	var entries []wire.AuditEntry
	decodeStrict(t, body, &entries)
	if code != http.StatusOK || len(entries) != 2 || entries[0].Action != "node.enroll" || entries[0].Target != "n3" || h.Get("Link") == "" {
		t.Fatalf("audit page 1: %d %+v %q", code, entries, h.Get("Link"))
	}
	next := h.Get("Link")
	_, _, body = ts.doHeader(t, "GET", next[1:strings.Index(next, ">")], ts.admin)
	var rest []wire.AuditEntry
	decodeStrict(t, body, &rest)
	if len(rest) == 0 || rest[0].ID >= entries[1].ID {
		t.Errorf("audit page 2 %+v does not follow %+v", rest, entries)
	}
}

func TestAdminTokens(t *testing.T) {
	ts := startServer(t, time.Hour)
	code, body := ts.doJSON(t, "POST", wire.PathAdminTokens, ts.admin, wire.CreateAdminTokenRequest{Comment: "ci"})
	var created wire.CreateAdminTokenResponse
	decodeStrict(t, body, &created)
	if code != http.StatusCreated || created.Token.Comment != "ci" {
		t.Fatalf("create: %d %s", code, body)
	}
	tok, err := credential.ParseAdminToken(created.AdminToken)
	if err != nil || tok.URL != ts.url || !tok.Pins.Equal(ts.c.Pins()) {
		t.Fatalf("new token %q: %v", created.AdminToken, err)
	}
	if code, _ := ts.do(t, "GET", wire.PathNodes, tok.Secret.String(), nil); code != http.StatusOK {
		t.Errorf("the new token does not work: %d", code)
	}
	code, body = ts.do(t, "GET", wire.PathAdminTokens, ts.admin, nil)
	var toks []wire.AdminToken
	decodeStrict(t, body, &toks)
	if code != http.StatusOK || len(toks) != 2 {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, body := ts.do(t, "DELETE", wire.PathAdminTokens+"/"+created.Token.ID, ts.admin, nil); code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", code, body)
	}
	var revoked refusals
	if code, _ := ts.do(t, "GET", wire.PathNodes, tok.Secret.String(), nil); !revoked.add(code == http.StatusUnauthorized) {
		t.Errorf("revoked token: %d, want 401", code)
	}
	revoked.report(t, "admin API: a revoked admin token", "401")
	first := strings.SplitN(ts.admin, ".", 2)[0]
	code, body = ts.do(t, "DELETE", wire.PathAdminTokens+"/"+first, ts.admin, nil)
	if code != http.StatusConflict || !strings.Contains(errorOf(t, body).Error, "last valid admin token") {
		t.Errorf("revoking the last token: %d %s, want 409", code, body)
	}
	if code, _ := ts.do(t, "DELETE", wire.PathAdminTokens+"/adnope", ts.admin, nil); code != http.StatusNotFound {
		t.Errorf("revoking an unknown token: %d", code)
	}
	if code, body := ts.do(t, "POST", wire.PathAdminTokens, ts.admin, strings.NewReader(`{"comment": 1}`)); code != http.StatusBadRequest {
		t.Errorf("bad body: %d %s", code, body)
	}
}

// TestAdminEndpointsRefuse: every admin endpoint refuses a missing or
// wrong token (401) and a node credential (403), and bodies that are too
// large (413) or malformed (400).
func TestAdminEndpointsRefuse(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	endpoints := []struct{ method, path string }{
		{"GET", wire.PathNodes}, {"GET", wire.PathNodes + "/a"}, {"DELETE", wire.PathNodes + "/a"},
		{"PUT", wire.PathNodes + "/a/tags"}, {"POST", wire.PathNodes + "/a/expire"},
		{"GET", wire.PathJoinKeys}, {"POST", wire.PathJoinKeys}, {"DELETE", wire.PathJoinKeys + "/x"},
		{"GET", wire.PathPolicy}, {"PUT", wire.PathPolicy}, {"POST", wire.PathPolicy + "/check"},
		{"GET", wire.PathPolicy + "/history"}, {"POST", wire.PathPolicy + "/rollback"},
		{"GET", wire.PathServices}, {"GET", wire.PathAudit},
		{"GET", wire.PathAdminTokens}, {"POST", wire.PathAdminTokens}, {"DELETE", wire.PathAdminTokens + "/x"},
		{"POST", wire.PathGossipRotate}, {"POST", wire.PathGossipRetire},
	}
	byCode := map[int]*refusals{401: {}, 403: {}, 413: {}, 400: {}}
	for _, e := range endpoints {
		for _, tt := range []struct {
			who   string
			token string
			code  int
		}{
			{"no token", "", http.StatusUnauthorized},
			{"wrong token", credential.NewSecret("ad").String(), http.StatusUnauthorized},
			{"garbage", "x", http.StatusUnauthorized},
			{"node credential", a.Credential, http.StatusForbidden},
		} {
			if code, body := ts.do(t, e.method, e.path, tt.token, strings.NewReader("{}")); !byCode[tt.code].add(code == tt.code) {
				t.Errorf("%s %s with %s: %d %s, want %d", e.method, e.path, tt.who, code, body, tt.code)
			}
		}
	}
	for _, e := range []struct{ method, path string }{
		{"POST", wire.PathJoinKeys}, {"PUT", wire.PathPolicy}, {"POST", wire.PathPolicy + "/check"},
		{"PUT", wire.PathNodes + "/a/tags"}, {"POST", wire.PathAdminTokens}, {"POST", wire.PathPolicy + "/rollback"},
	} {
		big := `{"text": "` + strings.Repeat("x", maxBody) + `"}`
		if code, body := ts.do(t, e.method, e.path, ts.admin, strings.NewReader(big)); !byCode[413].add(code == http.StatusRequestEntityTooLarge) {
			t.Errorf("%s %s with %d bytes: %d %.100s, want 413", e.method, e.path, len(big), code, body)
		}
		code, body := ts.do(t, e.method, e.path, ts.admin, strings.NewReader(`{"x": `))
		if !byCode[400].add(code == http.StatusBadRequest) {
			t.Errorf("%s %s malformed: %d %s, want 400", e.method, e.path, code, body)
		}
	}
	n := len(endpoints)
	byCode[401].report(t, fmt.Sprintf("admin API, all %d endpoints: no token, a wrong token, garbage", n), "401")
	byCode[403].report(t, fmt.Sprintf("admin API, all %d endpoints: a node credential", n), "403")
	byCode[413].report(t, "admin API, every endpoint with a body: a body over 1 MiB", "413")
	byCode[400].report(t, "admin API, every endpoint with a body: a truncated JSON body", "400")
}

func TestGetPolicyVersion(t *testing.T) {
	ts := startServer(t, time.Hour)
	first := ts.setPolicy(t, allowAll)
	ts.setPolicy(t, `{"acls": []}`)
	code, body := ts.do(t, "GET", wire.PathPolicy+"?version=1", ts.admin, nil)
	var p wire.Policy
	decodeStrict(t, body, &p)
	if code != http.StatusOK || p.Version != first.Version || p.Text != allowAll {
		t.Errorf("version 1: %d %+v", code, p)
	}
	for q, want := range map[string]int{"?version=0": 400, "?version=x": 400, "?version=9": 404} {
		if code, body := ts.do(t, "GET", wire.PathPolicy+q, ts.admin, nil); code != want {
			t.Errorf("GET policy%s: %d %s, want %d", q, code, body, want)
		}
	}
}

func TestRotateKey(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	b := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "b"})
	ts.setPolicy(t, allowAll)
	sb := ts.openStream(t, b.Credential, wire.MapRequest{PublicKey: b.Node.PublicKey})
	sb.netmap(t, "peer a", func(nm *wire.Netmap) bool { return len(nm.Peers) == 1 })

	// A stolen credential with the node's public key, which is no secret,
	// but without its private key: refused, and nothing changes.
	next := newPublicKey(t)
	stolen := newPublicKey(t)
	var refused refusals
	for _, tt := range []struct{ name, proof string }{
		{"no proof", ""},
		{"proof with another private key", rotationProof(t, ts.c, stolen, next)},
		{"proof for another new key", rotationProof(t, ts.c, a.Node.PublicKey, newPublicKey(t))},
		{"a netmap proof", netmapProof(t, ts.c, a.Node.PublicKey)},
	} {
		code, body := ts.doJSON(t, "POST", wire.PathRotateKey, a.Credential, wire.RotateKeyRequest{PublicKey: a.Node.PublicKey, NewPublicKey: next, Proof: tt.proof})
		if !refused.add(code == http.StatusForbidden && strings.Contains(errorOf(t, body).Error, "proof of the node's private key missing or wrong")) {
			t.Errorf("rotate with the credential, %s: %d %s, want 403", tt.name, code, body)
		}
	}
	refused.report(t, "key rotation with the node's credential and public key, without a proof of its private key", "403 “proof … missing or wrong”")
	if n := mustNodes(t, ts.c.Store()); n[0].PublicKey != a.Node.PublicKey {
		t.Fatalf("a refused rotation changed a's key to %s", n[0].PublicKey)
	}
	// Nor does a stream open with a's key and a bad proof.
	if code, body := ts.doJSON(t, "POST", wire.PathNetmap, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey, Proof: "x"}); code != http.StatusForbidden || !strings.Contains(string(body), "proof") {
		t.Errorf("stream with a's key and a bad proof: %d %s, want 403 for the proof", code, body)
	}

	code, body := ts.doJSON(t, "POST", wire.PathRotateKey, a.Credential, wire.RotateKeyRequest{PublicKey: a.Node.PublicKey, NewPublicKey: next, Proof: rotationProof(t, ts.c, a.Node.PublicKey, next)})
	if code != http.StatusOK {
		t.Fatalf("rotate: %d %s", code, body)
	}
	sb.netmap(t, "a's new key", func(nm *wire.Netmap) bool { return len(nm.Peers) == 1 && nm.Peers[0].PublicKey == next })
	// The credential is bound to the new key now.
	if code, _ := ts.doJSON(t, "POST", wire.PathNetmap, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey, Proof: netmapProof(t, ts.c, a.Node.PublicKey)}); code != http.StatusForbidden {
		t.Errorf("stream with the old key: %d, want 403", code)
	}
	ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: next}).netmap(t, "a's netmap with the new key", func(nm *wire.Netmap) bool { return nm.Self.PublicKey == next })
	again := newPublicKey(t)
	for _, tt := range []struct {
		name string
		req  wire.RotateKeyRequest
		code int
	}{
		{"old key again", wire.RotateKeyRequest{PublicKey: a.Node.PublicKey, NewPublicKey: again, Proof: rotationProof(t, ts.c, a.Node.PublicKey, again)}, http.StatusForbidden},
		{"another node's key", wire.RotateKeyRequest{PublicKey: next, NewPublicKey: b.Node.PublicKey, Proof: rotationProof(t, ts.c, next, b.Node.PublicKey)}, http.StatusConflict},
		{"bad key", wire.RotateKeyRequest{PublicKey: next, NewPublicKey: "short"}, http.StatusBadRequest},
	} {
		if code, body := ts.doJSON(t, "POST", wire.PathRotateKey, a.Credential, tt.req); code != tt.code {
			t.Errorf("%s: %d %s, want %d", tt.name, code, body, tt.code)
		}
	}
	if code, _ := ts.doJSON(t, "POST", wire.PathRotateKey, b.Credential, wire.RotateKeyRequest{PublicKey: next, NewPublicKey: again, Proof: rotationProof(t, ts.c, next, again)}); code != http.StatusForbidden {
		t.Errorf("b rotating a's key: %d, want 403", code)
	}
}
