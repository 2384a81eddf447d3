package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/report"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
)

// testServer is a coordinator serving HTTPS on a loopback port.
type testServer struct {
	c      *Coordinator
	files  Files
	dir    string
	url    string
	client *http.Client
	admin  string // the bearer form of the first admin token
	stop   func() // stops the coordinator before the test ends; idempotent
}

// startServer runs a coordinator on 127.0.0.1 until the test ends. The
// client trusts it by pin only, as agents do.
func startServer(t testing.TB, keepAlive time.Duration, opts ...func(*Config)) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "data")
	cfg := Config{
		DataDir:      dir,
		Listen:       ln.Addr().String(),
		AdvertiseURL: "https://" + ln.Addr().String(),
		KeepAlive:    keepAlive,
		Logger:       slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, files, err := New(cfg)
	if err != nil {
		ln.Close()
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, ln) }()
	tr := &http.Transport{TLSClientConfig: credential.ClientTLS(c.Pins()), ForceAttemptHTTP2: true}
	stop := sync.OnceFunc(func() {
		tr.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		c.Close()
	})
	t.Cleanup(stop)
	ts := &testServer{c: c, files: files, dir: dir, url: "https://" + ln.Addr().String(), client: &http.Client{Transport: tr, Timeout: 10 * time.Second}, stop: stop}
	ts.admin = readAdminToken(t, dir).Secret.String()
	return ts
}

func readAdminToken(t testing.TB, dir string) credential.Bundle {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := credential.ParseAdminToken(string(b))
	if err != nil {
		t.Fatalf("admin.token: %v", err)
	}
	return tok
}

// do sends a request and returns the status and body.
func (ts *testServer) do(t testing.TB, method, path, token string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, ts.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// doJSON sends in as JSON. An EnrollRequest or MapRequest without a
// ProtocolVersion gets this one, as an agent sends it; TestProtocolWindow
// sends others.
func (ts *testServer) doJSON(t testing.TB, method, path, token string, in any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(withProtocol(in))
	if err != nil {
		t.Fatal(err)
	}
	return ts.do(t, method, path, token, bytes.NewReader(b))
}

// errorOf decodes an API error body, failing if it is not one.
func errorOf(t *testing.T, body []byte) wire.Error {
	t.Helper()
	var e wire.Error
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not an API error", body)
	}
	return e
}

// refusals counts the answers of a hostile-input test that were the
// refusal it wants, for the test's row in the reliability report.
type refusals struct{ ok, all int }

// add counts one answer, a wanted refusal if ok, and returns ok.
func (r *refusals) add(ok bool) bool {
	r.all++
	if ok {
		r.ok++
	}
	return ok
}

// report adds the row: fault is what was sent, refusal what it got.
func (r refusals) report(t testing.TB, fault, refusal string) {
	t.Helper()
	report.Add(t, report.Row{Fault: fault, Check: "refused with " + refusal,
		Figure: fmt.Sprintf("%d of %d", r.ok, r.all), Target: "all", Met: r.all > 0 && r.ok == r.all})
}

func decodeStrict(t testing.TB, body []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
}

func (ts *testServer) createJoinKey(t testing.TB, req wire.CreateJoinKeyRequest) wire.CreateJoinKeyResponse {
	t.Helper()
	code, body := ts.doJSON(t, "POST", wire.PathJoinKeys, ts.admin, req)
	if code != http.StatusCreated {
		t.Fatalf("create join key: %d %s", code, body)
	}
	var out wire.CreateJoinKeyResponse
	decodeStrict(t, body, &out)
	return out
}

func (ts *testServer) enroll(t testing.TB, joinKey string, req wire.EnrollRequest) wire.EnrollResponse {
	t.Helper()
	jk, err := credential.ParseJoinKey(joinKey)
	if err != nil {
		t.Fatal(err)
	}
	code, body := ts.doJSON(t, "POST", wire.PathEnroll, jk.Secret.String(), req)
	if code != http.StatusOK {
		t.Fatalf("enroll %+v: %d %s", req, code, body)
	}
	var out wire.EnrollResponse
	decodeStrict(t, body, &out)
	return out
}

func TestAdminAuth(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	jkSecret, _ := credential.ParseJoinKey(jk.JoinKey)
	adm, _ := credential.ParseSecret(ts.admin)
	wrong := credential.Secret{ID: adm.ID, Value: credential.NewSecret("ad").Value}
	var refused refusals

	endpoints := []struct{ method, path string }{
		{"GET", wire.PathNodes},
		{"DELETE", wire.PathNodes + "/a"},
		{"GET", wire.PathJoinKeys},
		{"POST", wire.PathJoinKeys},
		{"DELETE", wire.PathJoinKeys + "/" + jk.Key.ID},
	}
	for _, tok := range []struct{ name, token string }{
		{"no token", ""},
		{"not a secret", "garbage"},
		{"wrong secret", wrong.String()},
		{"unknown token", credential.NewSecret("ad").String()},
		{"join key", jkSecret.Secret.String()},
	} {
		for _, ep := range endpoints {
			code, body := ts.do(t, ep.method, ep.path, tok.token, strings.NewReader("{}"))
			if code != http.StatusUnauthorized {
				refused.add(false)
				t.Errorf("%s %s with %s: %d %s, want 401", ep.method, ep.path, tok.name, code, body)
				continue
			}
			if e := errorOf(t, body); !refused.add(strings.Contains(e.Error, "admin token required")) {
				t.Errorf("%s %s with %s: error %q", ep.method, ep.path, tok.name, e.Error)
			}
		}
	}
	refused.report(t, "admin API: no token, not a secret, wrong secret, unknown token or a join key", "401 “admin token required”")
	// The key is intact after all that.
	code, body := ts.do(t, "GET", wire.PathJoinKeys, ts.admin, nil)
	var keys []wire.JoinKey
	decodeStrict(t, body, &keys)
	if code != http.StatusOK || len(keys) != 1 || !keys[0].Revoked.IsZero() {
		t.Errorf("join keys: %d %s, want the one unrevoked key", code, body)
	}
	if code, body := ts.do(t, "GET", wire.PathNodes, ts.admin, nil); code != http.StatusOK || string(body) != "[]\n" {
		t.Errorf("GET nodes with the admin token: %d %q, want 200 []", code, body)
	}
}

func TestHealthAndUnknownPath(t *testing.T) {
	ts := startServer(t, time.Hour)
	if code, body := ts.do(t, "GET", wire.PathHealth, "", nil); code != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("health: %d %q", code, body)
	}
	code, body := ts.do(t, "GET", "/v1/nope", "", nil)
	if code != http.StatusNotFound || !strings.Contains(errorOf(t, body).Error, "/v1/nope") {
		t.Errorf("unknown path: %d %s, want 404 naming the path", code, body)
	}
}

func TestCreateJoinKey(t *testing.T) {
	ts := startServer(t, time.Hour)
	before := time.Now().Truncate(time.Millisecond)
	out := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true, Expiry: wire.Duration(time.Hour), Tags: []string{"tag:web"}})
	jk, err := credential.ParseJoinKey(out.JoinKey)
	if err != nil {
		t.Fatalf("join_key %q: %v", out.JoinKey, err)
	}
	if jk.URL != ts.url || !jk.Pins.Equal(ts.c.Pins()) || jk.Secret.ID != out.Key.ID {
		t.Errorf("join key carries %s %s %s; want %s %s %s", jk.URL, jk.Pins, jk.Secret.ID, ts.url, ts.c.Pins(), out.Key.ID)
	}
	k := out.Key
	if !k.Reusable || !cmp.Equal(k.Tags, []string{"tag:web"}) || k.Uses != 0 || !k.Revoked.IsZero() {
		t.Errorf("key %+v", k)
	}
	if k.Created.Before(before) || !k.Expires.Equal(k.Created.Add(time.Hour)) {
		t.Errorf("key created %v expires %v; want created now, expiring an hour later", k.Created, k.Expires)
	}

	// Listing shows it without the secret; revoking marks it.
	code, body := ts.do(t, "GET", wire.PathJoinKeys, ts.admin, nil)
	if code != http.StatusOK || bytes.Contains(body, []byte(jk.Secret.Value)) {
		t.Fatalf("list: %d %s", code, body)
	}
	if code, body := ts.do(t, "DELETE", wire.PathJoinKeys+"/"+k.ID, ts.admin, nil); code != http.StatusNoContent {
		t.Errorf("revoke: %d %s", code, body)
	}
	if code, _ := ts.do(t, "DELETE", wire.PathJoinKeys+"/"+k.ID, ts.admin, nil); code != http.StatusNotFound {
		t.Errorf("revoke again: %d, want 404", code)
	}
	code, body = ts.doJSON(t, "POST", wire.PathEnroll, jk.Secret.String(), wire.EnrollRequest{PublicKey: newPublicKey(t)})
	var refused refusals
	if !refused.add(code == http.StatusUnauthorized && strings.Contains(errorOf(t, body).Error, "revoked")) {
		t.Errorf("enroll with revoked key: %d %s, want 401 saying revoked", code, body)
	}
	refused.report(t, "enrollment with a revoked join key", "401 saying revoked")
}

func TestBadRequestBodies(t *testing.T) {
	ts := startServer(t, time.Hour)
	var refused refusals
	big := `{"tags":["` + strings.Repeat("a", 1<<20) + `"]}`
	for _, tc := range []struct {
		name       string
		body       string
		wantCode   int
		wantErr    string
		wantDetail map[string]any
	}{
		{"malformed", `{"reusable": tru}`, 400, "malformed JSON at byte 17", map[string]any{"offset": 17.0}},
		{"malformed later", "{\n  \"tags\": [\"tag:a\",,]}", 400, "malformed JSON at byte 22", map[string]any{"offset": 22.0}},
		{"unknown field", `{"reusabel": true}`, 400, `unknown field "reusabel"`, nil},
		{"wrong type", `{"reusable": "yes"}`, 400, `bad JSON at byte 18: field "reusable": want bool`, map[string]any{"offset": 18.0, "field": "reusable"}},
		{"bad duration", `{"expiry": "soon"}`, 400, `bad duration "soon"`, nil},
		{"negative duration", `{"expiry": "-1h"}`, 400, "negative", nil},
		{"trailing data", `{} {}`, 400, "trailing data", nil},
		{"empty", ``, 400, "empty request body", nil},
		{"bad tag", `{"tags": ["web"]}`, 400, `bad tag "web": want tag:NAME`, nil},
		{"too large", big, 413, "larger than 1048576 bytes", nil},
	} {
		refused.add(t.Run(tc.name, func(t *testing.T) {
			code, body := ts.do(t, "POST", wire.PathJoinKeys, ts.admin, strings.NewReader(tc.body))
			if code != tc.wantCode {
				t.Fatalf("status %d (%s), want %d", code, body, tc.wantCode)
			}
			e := errorOf(t, body)
			if !strings.Contains(e.Error, tc.wantErr) {
				t.Errorf("error %q, want it to contain %q", e.Error, tc.wantErr)
			}
			if tc.wantDetail != nil {
				if diff := cmp.Diff(tc.wantDetail, e.Detail); diff != "" {
					t.Errorf("detail (-want +got):\n%s", diff)
				}
			}
		}))
	}
	refused.report(t, "admin API: malformed JSON, unknown field, wrong type, bad values, empty, trailing data, 1 MiB+ body",
		"400 naming the byte offset and field, or 413")
	if code, body := ts.do(t, "GET", wire.PathJoinKeys, ts.admin, nil); code != 200 || string(body) != "[]\n" {
		t.Errorf("bad requests created keys: %s", body)
	}
}

func TestEnroll(t *testing.T) {
	ts := startServer(t, time.Hour)
	once := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Tags: []string{"tag:db"}})
	onceKey, _ := credential.ParseJoinKey(once.JoinKey)
	var refused refusals

	pub := newPublicKey(t)
	pv := `{"protocol_version":` + itoa(wire.ProtocolVersion) + `,`
	for _, tc := range []struct {
		name     string
		token    string
		body     string
		wantCode int
		wantErr  string
	}{
		{"no join key", "", pv + `"public_key":"` + pub + `"}`, 401, "join key required"},
		{"not a secret", "x", pv + `"public_key":"` + pub + `"}`, 401, "join key required"},
		{"unknown join key", credential.NewSecret("jk").String(), pv + `"public_key":"` + pub + `"}`, 401, "unknown join key"},
		{"no public key", onceKey.Secret.String(), pv[:len(pv)-1] + `}`, 400, "bad public key"},
		{"short public key", onceKey.Secret.String(), pv + `"public_key":"AAAA"}`, 400, "bad public key"},
		{"31-byte public key", onceKey.Secret.String(), pv + `"public_key":"` + pub[:40] + `AA=="}`, 400, "bad public key"},
		{"not base64", onceKey.Secret.String(), pv + `"public_key":"` + strings.Repeat("!", 44) + `"}`, 400, "bad public key"},
		{"bad name", onceKey.Secret.String(), pv + `"public_key":"` + pub + `","name":"Bad_Name"}`, 400, `bad node name "Bad_Name": 'B' at byte 0`},
		{"malformed", onceKey.Secret.String(), pv + `"public_key":`, 400, "JSON"},
	} {
		code, body := ts.do(t, "POST", wire.PathEnroll, tc.token, strings.NewReader(tc.body))
		if code != tc.wantCode {
			refused.add(false)
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.wantCode)
			continue
		}
		if e := errorOf(t, body); !refused.add(strings.Contains(e.Error, tc.wantErr)) {
			t.Errorf("%s: error %q, want it to contain %q", tc.name, e.Error, tc.wantErr)
		}
	}
	refused.report(t, "enrollment without a join key, with an unknown one, a bad public key or name, malformed", "401 / 400 and the error wanted")

	// The agent protocol tolerates fields it does not know (newer agents).
	code, body := ts.do(t, "POST", wire.PathEnroll, onceKey.Secret.String(),
		strings.NewReader(`{"protocol_version":`+itoa(wire.ProtocolVersion)+`,"public_key":"`+pub+`","hostname":"db1.example.com","future":true}`))
	if code != http.StatusOK {
		t.Fatalf("enroll: %d %s", code, body)
	}
	var out wire.EnrollResponse
	decodeStrict(t, body, &out)
	if out.Node.Name != "db1" || out.Node.PublicKey != pub || !cmp.Equal(out.Node.Tags, []string{"tag:db"}) {
		t.Errorf("enrolled node %+v", out.Node)
	}
	if diff := cmp.Diff([]netip.Prefix{store.DefaultPrefix4, store.DefaultPrefix6}, out.Prefixes, cmpNet); diff != "" {
		t.Errorf("prefixes (-want +got):\n%s", diff)
	}
	if _, err := credential.ParseSecret(out.Credential); err != nil {
		t.Errorf("credential %q: %v", out.Credential, err)
	}

	// The key was one-time; a second node is refused.
	code, body = ts.doJSON(t, "POST", wire.PathEnroll, onceKey.Secret.String(), wire.EnrollRequest{PublicKey: newPublicKey(t)})
	var reused refusals
	if !reused.add(code == http.StatusUnauthorized && strings.Contains(errorOf(t, body).Error, "already used")) {
		t.Errorf("second use of a one-time key: %d %s", code, body)
	}
	reused.report(t, "a used one-time join key, again", "401 saying already used")
	// A taken name is a conflict.
	multi := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	multiKey, _ := credential.ParseJoinKey(multi.JoinKey)
	code, body = ts.doJSON(t, "POST", wire.PathEnroll, multiKey.Secret.String(), wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "db1"})
	if code != http.StatusConflict {
		t.Errorf("taken name: %d %s, want 409", code, body)
	}

	// The admin listing shows the node.
	code, body = ts.do(t, "GET", wire.PathNodes, ts.admin, nil)
	var nodes []wire.Node
	decodeStrict(t, body, &nodes)
	if code != 200 || len(nodes) != 1 || nodes[0].Name != "db1" || nodes[0].Online {
		t.Errorf("nodes: %d %s", code, body)
	}
}

// stream is an open netmap stream read by a goroutine.
type stream struct {
	msgs   chan wire.MapMessage
	done   chan struct{} // closed when the stream ended
	err    error         // why it ended; read after done
	cancel context.CancelFunc
}

// enrollTagged enrolls a node called name with a join key that gives it
// tag.
func (ts *testServer) enrollTagged(t *testing.T, name, tag string) wire.EnrollResponse {
	t.Helper()
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Tags: []string{tag}})
	return ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: name})
}

// openStream opens a netmap stream as an agent does: with the proof of
// req.PublicKey's private key (which newPublicKey made), unless req.Proof
// is set.
func (ts *testServer) openStream(t *testing.T, cred string, req wire.MapRequest) *stream {
	t.Helper()
	if req.Proof == "" {
		req.Proof = netmapProof(t, ts.c, req.PublicKey)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b, _ := json.Marshal(withProtocol(req))
	hreq, _ := http.NewRequestWithContext(ctx, "POST", ts.url+wire.PathNetmap, bytes.NewReader(b))
	hreq.Header.Set("Authorization", "Bearer "+cred)
	client := &http.Client{Transport: ts.client.Transport} // no overall timeout
	resp, err := client.Do(hreq)
	if err != nil {
		cancel()
		t.Fatalf("open stream: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("open stream: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type %q", ct)
	}
	s := &stream{msgs: make(chan wire.MapMessage), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		dec := json.NewDecoder(resp.Body)
		for {
			var m wire.MapMessage
			if s.err = dec.Decode(&m); s.err != nil {
				return
			}
			select {
			case s.msgs <- m:
			case <-ctx.Done():
				s.err = ctx.Err()
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-s.done })
	return s
}

const waitFor = 10 * time.Second

// netmap returns the next netmap for which ok is true, skipping others and
// keep-alives.
func (s *stream) netmap(t *testing.T, what string, ok func(*wire.Netmap) bool) *wire.Netmap {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case m := <-s.msgs:
			if m.Netmap != nil && ok(m.Netmap) {
				return m.Netmap
			}
		case <-s.done:
			t.Fatalf("stream ended (%v) before %s", s.err, what)
		case <-timeout:
			t.Fatalf("no netmap with %s within %s", what, waitFor)
		}
	}
}

// ended waits until the server ends the stream.
func (s *stream) ended(t *testing.T) {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case <-s.msgs:
		case <-s.done:
			if !errors.Is(s.err, io.EOF) && !errors.Is(s.err, io.ErrUnexpectedEOF) {
				t.Errorf("stream ended with %v, want the server to end it", s.err)
			}
			return
		case <-timeout:
			t.Fatalf("stream still open after %s", waitFor)
		}
	}
}

func peerNames(nm *wire.Netmap) []string {
	names := []string{}
	for _, p := range nm.Peers {
		names = append(names, p.Name)
	}
	return names
}

// allowAll is a policy that lets every node reach every other.
const allowAll = `{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}`

func (ts *testServer) setPolicy(t *testing.T, text string) wire.Policy {
	t.Helper()
	code, body := ts.doJSON(t, "PUT", wire.PathPolicy, ts.admin, wire.SetPolicyRequest{Text: text})
	if code != http.StatusOK {
		t.Fatalf("set policy: %d %s", code, body)
	}
	var p wire.Policy
	decodeStrict(t, body, &p)
	return p
}

func TestNetmapStream(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})

	sa := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey, ListenPort: 51820, Endpoints: []string{"198.51.100.1:4000"}})
	first := sa.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })
	wantSelf := a.Node
	wantSelf.Endpoints = []string{"198.51.100.1:4000", "127.0.0.1:51820"}
	if diff := cmp.Diff(wantSelf, first.Self, cmpNet); diff != "" {
		t.Errorf("first netmap's Self (-want +got):\n%s", diff)
	}
	if len(first.Peers) != 0 || first.Version == 0 || first.KeepAliveInterval != wire.Duration(time.Hour) || first.PolicyVersion != 0 {
		t.Errorf("first netmap: version %d, peers %v, keep-alive %v, policy %d", first.Version, peerNames(first), time.Duration(first.KeepAliveInterval), first.PolicyVersion)
	}
	if diff := cmp.Diff([]netip.Prefix{store.DefaultPrefix4, store.DefaultPrefix6}, first.Prefixes, cmpNet); diff != "" {
		t.Errorf("prefixes (-want +got):\n%s", diff)
	}

	// With no policy set, a new node is not a's peer: a's netmap does not
	// change, and the next one a gets is the policy's.
	b := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "b"})
	pol := ts.setPolicy(t, allowAll)
	nm := sa.netmap(t, "the next netmap", func(*wire.Netmap) bool { return true })
	if nm.PolicyVersion != pol.Version {
		t.Fatalf("after b enrolled a got netmap v%d with policy %d; want none before the policy's (v%d)", nm.Version, nm.PolicyVersion, pol.Version)
	}

	// The policy allows it: b is a's peer.
	if diff := cmp.Diff([]wire.Node{b.Node}, nm.Peers, cmpNet); diff != "" {
		t.Errorf("a's peers (-want +got):\n%s", diff)
	}
	if nm.PolicyVersion != pol.Version || len(nm.Rules) == 0 {
		t.Errorf("a's netmap has policy %d and %d rules, want policy %d and rules", nm.PolicyVersion, len(nm.Rules), pol.Version)
	}

	// b connects: it sees a with a's endpoints, and a learns b's endpoint.
	sb := ts.openStream(t, b.Credential, wire.MapRequest{PublicKey: b.Node.PublicKey, ListenPort: 51821})
	nmb := sb.netmap(t, "b's first netmap", func(*wire.Netmap) bool { return true })
	if got := peerNames(nmb); !cmp.Equal(got, []string{"a"}) || !cmp.Equal(nmb.Peers[0].Endpoints, wantSelf.Endpoints) {
		t.Errorf("b's peers %v with endpoints %v, want a at %v", got, nmb.Peers, wantSelf.Endpoints)
	}
	sa.netmap(t, "b's endpoint", func(nm *wire.Netmap) bool {
		return len(nm.Peers) == 1 && cmp.Equal(nm.Peers[0].Endpoints, []string{"127.0.0.1:51821"})
	})

	// Both are online in the admin listing.
	_, body := ts.do(t, "GET", wire.PathNodes, ts.admin, nil)
	var nodes []wire.Node
	decodeStrict(t, body, &nodes)
	for _, n := range nodes {
		if !n.Online || n.LastSeen.IsZero() {
			t.Errorf("node %s online %v last seen %v while streaming", n.Name, n.Online, n.LastSeen)
		}
	}

	// Deleting b ends its stream, drops it from a's netmap and revokes its
	// credential.
	if code, body := ts.do(t, "DELETE", wire.PathNodes+"/b", ts.admin, nil); code != http.StatusNoContent {
		t.Fatalf("delete b: %d %s", code, body)
	}
	sb.ended(t)
	sa.netmap(t, "no peers", func(nm *wire.Netmap) bool { return len(nm.Peers) == 0 })
	code, body := ts.doJSON(t, "POST", wire.PathNetmap, b.Credential, wire.MapRequest{PublicKey: b.Node.PublicKey})
	if code != http.StatusUnauthorized {
		t.Errorf("deleted node's credential: %d %s, want 401", code, body)
	}
	if code, _ := ts.do(t, "DELETE", wire.PathNodes+"/b", ts.admin, nil); code != http.StatusNotFound {
		t.Errorf("delete b again: %d, want 404", code)
	}
}

func TestNetmapKeepAlive(t *testing.T) {
	ts := startServer(t, 20*time.Millisecond)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t)})
	s := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey})
	s.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })
	select {
	case m := <-s.msgs:
		if !m.KeepAlive || m.Netmap != nil {
			t.Errorf("message after an idle interval: %+v, want a keep-alive", m)
		}
	case <-time.After(waitFor):
		t.Fatal("no keep-alive")
	}
}

// TestNetmapStreamOutlivesWriteTimeout: a stream idle for longer than the
// write timeout stays open (an expired write deadline used to reset idle
// HTTP/2 streams between keep-alives).
func TestNetmapStreamOutlivesWriteTimeout(t *testing.T) {
	ts := startServer(t, 300*time.Millisecond, func(c *Config) { c.WriteTimeout = 50 * time.Millisecond })
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t)})
	s := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey})
	s.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })
	for i := 0; i < 3; i++ {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				t.Fatalf("stream ended after %d keep-alives", i)
			}
			if !m.KeepAlive {
				t.Fatalf("message %d: %+v, want a keep-alive", i, m)
			}
		case <-time.After(waitFor):
			t.Fatalf("no keep-alive %d", i)
		}
	}
}

func TestNetmapRefusals(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t)})
	cred, _ := credential.ParseSecret(a.Credential)
	pub := a.Node.PublicKey
	proofAt := func(priv [32]byte, at time.Time) string {
		p, err := credential.NetmapProof(priv, ts.c.PublicProofKey(), at)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Now()
	stolen := privateKeyOf(t, newPublicKey(t)) // a key of the thief's own
	good := proofAt(privateKeyOf(t, pub), now)
	var refused refusals
	for _, tc := range []struct {
		name     string
		token    string
		req      wire.MapRequest
		wantCode int
		wantErr  string
	}{
		{"no credential", "", wire.MapRequest{PublicKey: pub, Proof: good}, 401, "node credential required"},
		{"wrong secret", credential.Secret{ID: cred.ID, Value: credential.NewSecret("nd").Value}.String(), wire.MapRequest{PublicKey: pub, Proof: good}, 401, "unknown node credential"},
		{"join key", mustParseJoinKey(t, jk.JoinKey).String(), wire.MapRequest{PublicKey: pub, Proof: good}, 401, "unknown node credential"},
		{"other public key", a.Credential, wire.MapRequest{PublicKey: newPublicKey(t), Proof: good}, 403, "public key does not match"},
		{"credential and public key, no proof", a.Credential, wire.MapRequest{PublicKey: pub}, 403, "proof of the node's private key missing or wrong"},
		{"credential and public key, proof with another private key", a.Credential, wire.MapRequest{PublicKey: pub, Proof: proofAt(stolen, now)}, 403, "proof of the node's private key missing or wrong"},
		{"credential and public key, garbage proof", a.Credential, wire.MapRequest{PublicKey: pub, Proof: "AAAA"}, 403, "proof of the node's private key missing or wrong"},
		{"proof made 6 minutes ago", a.Credential, wire.MapRequest{PublicKey: pub, Proof: proofAt(privateKeyOf(t, pub), now.Add(-6*time.Minute))}, 403, "netmap proof time refused"},
		{"proof made 6 minutes ahead", a.Credential, wire.MapRequest{PublicKey: pub, Proof: proofAt(privateKeyOf(t, pub), now.Add(6*time.Minute))}, 403, "netmap proof time refused"},
		{"bad endpoint", a.Credential, wire.MapRequest{PublicKey: pub, Proof: good, Endpoints: []string{"nonsense"}}, 400, `bad endpoint "nonsense"`},
		{"41 endpoints", a.Credential, wire.MapRequest{PublicKey: pub, Proof: good, Endpoints: slices.Repeat([]string{"192.0.2.1:51820"}, 41)}, 400, "41 endpoints given: at most 8 are allowed"},
		{"host name endpoint", a.Credential, wire.MapRequest{PublicKey: pub, Proof: good, Endpoints: []string{"vpn.example.com:51820"}}, 400, `bad endpoint "vpn.example.com:51820": want an IP:port literal`},
		{"port 0 endpoint", a.Credential, wire.MapRequest{PublicKey: pub, Proof: good, Endpoints: []string{"192.0.2.1:0"}}, 400, `bad endpoint "192.0.2.1:0": port 0`},
		{"multicast endpoint", a.Credential, wire.MapRequest{PublicKey: pub, Proof: good, Endpoints: []string{"224.0.0.1:51820"}}, 400, "multicast address"},
		{"bad port", a.Credential, wire.MapRequest{PublicKey: pub, Proof: good, ListenPort: 70000}, 400, "bad listen port"},
		// The proofs above were accepted at now; an older one is not.
		{"proof older than one accepted", a.Credential, wire.MapRequest{PublicKey: pub, Proof: proofAt(privateKeyOf(t, pub), now.Add(-time.Minute))}, 403, "before one this node already used"},
	} {
		code, body := ts.doJSON(t, "POST", wire.PathNetmap, tc.token, tc.req)
		if code != tc.wantCode {
			refused.add(false)
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.wantCode)
			continue
		}
		if e := errorOf(t, body); !refused.add(strings.Contains(e.Error, tc.wantErr)) {
			t.Errorf("%s: error %q, want it to contain %q", tc.name, e.Error, tc.wantErr)
		}
	}
	refused.report(t, "netmap stream: no or wrong credential, a join key, a node's credential with another public key, "+
		"with its public key but no proof, a wrong or stale proof, bad, too many or non-literal endpoints, bad port",
		"401 / 403 (another node's key, no proof of the node's private key: no netmap, no impersonation) / 400")
	if eps := mustNodes(t, ts.c.Store())[0].Endpoints; len(eps) != 0 {
		t.Errorf("refused requests recorded endpoints %v", eps)
	}
	if ts.c.isOnline(a.Node) {
		t.Error("a refused request left the node online")
	}
}

func mustParseJoinKey(t *testing.T, s string) credential.Secret {
	t.Helper()
	b, err := credential.ParseJoinKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return b.Secret
}

// Closing the coordinator's serve context ends open streams and Serve
// returns promptly.
func TestServeShutdownEndsStreams(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := New(Config{DataDir: filepath.Join(t.TempDir(), "data"), Listen: ln.Addr().String(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Serve(ctx, ln) }()
	tr := &http.Transport{TLSClientConfig: credential.ClientTLS(c.Pins()), ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	ts := &testServer{c: c, url: "https://" + ln.Addr().String(), client: &http.Client{Transport: tr}}
	_, sec, err := c.Store().CreateJoinKey(context.Background(), "test", wire.CreateJoinKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	a := ts.enroll(t, credential.Bundle{URL: ts.url, Pins: c.Pins(), Secret: sec}.Encode(credential.JoinKeyPrefix), wire.EnrollRequest{PublicKey: newPublicKey(t)})
	s := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey})
	s.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Serve did not return")
	}
	select {
	case <-s.done:
	case <-time.After(waitFor):
		t.Fatal("stream still open after shutdown")
	}
	if _, err := ts.client.Get(ts.url + wire.PathHealth); err == nil {
		t.Error("still serving after shutdown")
	}
}
