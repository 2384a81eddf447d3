package ui

import (
	"bytes"
	"errors"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
)

// testSecret is the admin token the fake API accepts.
var testSecret = credential.Secret{ID: "ad0123456789ab", Value: "c2VjcmV0LXZhbHVlLW9mLWEtdGVzdC1hZG1pbi10b2tlbg"}

// testToken is testSecret as admin.token holds it.
var testToken = credential.Bundle{URL: "https://coord.example:8443", Pins: credential.Pins{{Kind: credential.PinCA, Sum: [32]byte{1}}}, Secret: testSecret}.Encode(credential.AdminTokenPrefix)

// harness is a UI over a fake API, with a log buffer.
type harness struct {
	t        testing.TB
	ui       *UI
	api      *fakeAPI
	sessions *fakeSessions
	log      *bytes.Buffer
	now      time.Time
}

func newHarness(t testing.TB, nodes int) *harness {
	t.Helper()
	h := &harness{t: t, api: newFakeAPI(testSecret.String()).seed(nodes), log: &bytes.Buffer{}, now: testTime}
	cfg := DefaultConfig()
	cfg.API = h.api
	h.sessions = newFakeSessions(func() time.Time { return h.now })
	cfg.Sessions = h.sessions
	cfg.Logger = slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Now = func() time.Time { return h.now }
	u, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.ui = u
	return h
}

// browser keeps cookies across requests to the UI, as a browser does.
type browser struct {
	h       *harness
	cookies map[string]*http.Cookie
	header  http.Header // added to every request
}

func (h *harness) browser() *browser {
	return &browser{h: h, cookies: map[string]*http.Cookie{}, header: http.Header{}}
}

// response is one answer, read whole.
type response struct {
	*http.Response
	body string
	what string // "METHOD target"
}

func (b *browser) do(method, target string, form url.Values) response {
	b.h.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, "https://coord.example:8443"+target, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range b.header {
		req.Header[k] = v
	}
	for _, c := range b.cookies {
		if strings.HasPrefix(req.URL.Path, c.Path) {
			req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
	}
	rec := httptest.NewRecorder()
	b.h.ui.ServeHTTP(rec, req)
	resp := rec.Result()
	for _, c := range resp.Cookies() {
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c
		}
	}
	return response{resp, rec.Body.String(), method + " " + target}
}

func (b *browser) get(target string) response { b.h.t.Helper(); return b.do("GET", target, nil) }

func (b *browser) post(target string, form url.Values) response {
	b.h.t.Helper()
	return b.do("POST", target, form)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf returns the CSRF token in a page's forms.
func (r response) csrf(t testing.TB) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no csrf field in the page:\n%s", r.body)
	}
	return m[1]
}

// login logs in with token and returns the session's CSRF token.
func (b *browser) login(token string) string {
	b.h.t.Helper()
	page := b.get("/ui/login")
	resp := b.post("/ui/login", url.Values{"csrf": {page.csrf(b.h.t)}, "token": {token}, "next": {"/ui/"}})
	if resp.StatusCode != http.StatusSeeOther {
		b.h.t.Fatalf("login: %s\n%s", resp.Status, resp.body)
	}
	return b.get("/ui/").csrf(b.h.t)
}

func wantStatus(t testing.TB, r response, code int) {
	t.Helper()
	if r.StatusCode != code {
		t.Fatalf("%s: %s, want %d\n%s", r.what, r.Status, code, r.body)
	}
}

func wantBody(t testing.TB, r response, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(r.body, s) {
			t.Errorf("%s: no %q in the page:\n%s", r.what, s, r.body)
		}
	}
}

func TestLoginLogout(t *testing.T) {
	h := newHarness(t, 3)
	b := h.browser()

	r := b.get("/ui/nodes")
	wantStatus(t, r, http.StatusSeeOther)
	if loc := r.Header.Get("Location"); loc != "/ui/login?next=%2Fui%2Fnodes" {
		t.Fatalf("redirect to %q", loc)
	}
	page := b.get("/ui/login?next=%2Fui%2Fnodes")
	wantStatus(t, page, http.StatusOK)
	wantBody(t, page, `name="token"`, `type="password"`, `<label for="token">`)
	lc := b.cookies[loginCookie]
	if lc == nil || !lc.HttpOnly || !lc.Secure || lc.SameSite != http.SameSiteStrictMode {
		t.Fatalf("login cookie %+v", lc)
	}

	// Wrong double-submit token: refused before the token is even looked at.
	r = b.post("/ui/login", url.Values{"csrf": {"nope"}, "token": {testToken}})
	wantStatus(t, r, http.StatusForbidden)
	if h.api.called("GET") {
		t.Fatal("the API was called for a login without its CSRF token")
	}
	// A token the coordinator does not know.
	bad := credential.Secret{ID: "ad99", Value: "d3Jvbmc"}.String()
	r = b.post("/ui/login", url.Values{"csrf": {b.get("/ui/login").csrf(t)}, "token": {bad}})
	wantStatus(t, r, http.StatusUnauthorized)
	wantBody(t, r, "refused this token")
	if b.cookies[sessionCookie] != nil {
		t.Fatal("session cookie after a refused login")
	}

	r = b.post("/ui/login", url.Values{"csrf": {b.get("/ui/login").csrf(t)}, "token": {testToken + "\n"}, "next": {"/ui/nodes"}})
	wantStatus(t, r, http.StatusSeeOther)
	if loc := r.Header.Get("Location"); loc != "/ui/nodes" {
		t.Fatalf("after login: redirect to %q", loc)
	}
	sc := b.cookies[sessionCookie]
	if sc == nil || !sc.HttpOnly || !sc.Secure || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/ui/" || len(sc.Value) < 43 {
		t.Fatalf("session cookie %+v", sc)
	}
	r = b.get("/ui/nodes")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, "node-1", testSecret.ID)

	r = b.post("/ui/logout", url.Values{"csrf": {r.csrf(t)}})
	wantStatus(t, r, http.StatusSeeOther)
	if b.cookies[sessionCookie] != nil {
		t.Fatal("session cookie kept after logout")
	}
	if h.sessions.len() != 0 {
		t.Fatal("session kept after logout")
	}
	// The old cookie no longer works either.
	b.cookies[sessionCookie] = sc
	wantStatus(t, b.get("/ui/"), http.StatusSeeOther)
}

func TestLoginBareSecret(t *testing.T) {
	b := newHarness(t, 1).browser()
	b.login(testSecret.String())
	wantStatus(t, b.get("/ui/"), http.StatusOK)
}

func TestLoginMalformedToken(t *testing.T) {
	h := newHarness(t, 1)
	b := h.browser()
	for _, tok := range []string{"", "wmadmin1-%%%", "hello"} {
		r := b.post("/ui/login", url.Values{"csrf": {b.get("/ui/login").csrf(t)}, "token": {tok}})
		wantStatus(t, r, http.StatusBadRequest)
	}
	if h.api.called("GET") {
		t.Fatal("malformed tokens reached the API")
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/ui/nodes?after=3":        "/ui/nodes?after=3",
		"":                         "/ui/",
		"https://evil.example/ui/": "/ui/",
		"//evil.example/ui/":       "/ui/",
		"/ui/\\evil":               "/ui/",
		"/v1/nodes":                "/ui/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSessionExpiry(t *testing.T) {
	h := newHarness(t, 1)
	b := h.browser()
	b.login(testToken)
	h.now = h.now.Add(11 * time.Hour)
	wantStatus(t, b.get("/ui/"), http.StatusOK)
	h.now = h.now.Add(time.Hour)
	wantStatus(t, b.get("/ui/"), http.StatusSeeOther)
	r := b.get("/ui/nodes?fragment=rows")
	wantStatus(t, r, http.StatusUnauthorized)

	// The store sweeps expired sessions when another one is made.
	h.browser().login(testToken)
	other := h.browser()
	other.login(testToken)
	h.now = h.now.Add(13 * time.Hour)
	h.browser().login(testToken)
	if n := h.sessions.len(); n != 1 {
		t.Fatalf("%d sessions kept, want 1", n)
	}
}

func TestRevokedTokenEndsSession(t *testing.T) {
	h := newHarness(t, 1)
	b := h.browser()
	b.login(testToken)
	h.api.mu.Lock()
	h.api.token = "ad0.other"
	h.api.mu.Unlock()
	r := b.get("/ui/nodes")
	wantStatus(t, r, http.StatusSeeOther)
	if loc := r.Header.Get("Location"); loc != "/ui/login" {
		t.Fatalf("redirect to %q", loc)
	}
	if h.sessions.len() != 0 {
		t.Fatal("session kept after the API refused its token")
	}
}

// TestSessionStoreDown: while the sessions cannot be read or written (the
// database restarting), pages answer 503 instead of sending a logged-in
// browser to the login page, and a logout that did not happen says so.
func TestSessionStoreDown(t *testing.T) {
	h := newHarness(t, 1)
	b := h.browser()
	csrf := b.login(testToken)
	down := errors.New("database unavailable")
	h.sessions.setFail(down)
	wantStatus(t, b.get("/ui/nodes"), http.StatusServiceUnavailable)
	wantStatus(t, b.get("/ui/nodes?fragment=rows"), http.StatusServiceUnavailable)
	r := b.post("/ui/logout", url.Values{"csrf": {csrf}})
	wantStatus(t, r, http.StatusServiceUnavailable)
	if b.cookies[sessionCookie] == nil {
		t.Fatal("session cookie dropped by a logout that failed")
	}
	other := h.browser()
	page := other.get("/ui/login")
	r = other.post("/ui/login", url.Values{"csrf": {page.csrf(t)}, "token": {testToken}})
	wantStatus(t, r, http.StatusServiceUnavailable)
	if other.cookies[sessionCookie] != nil {
		t.Fatal("session cookie for a session that was not kept")
	}
	h.sessions.setFail(nil)
	wantStatus(t, b.get("/ui/nodes"), http.StatusOK)
	if !strings.Contains(h.log.String(), down.Error()) {
		t.Errorf("the store's error is not logged:\n%s", h.log)
	}
}

func TestCSRF(t *testing.T) {
	h := newHarness(t, 3)
	b := h.browser()
	csrf := b.login(testToken)
	deleted := func() bool { return h.api.called("DELETE") }

	for name, tc := range map[string]struct {
		form   url.Values
		header http.Header
	}{
		"no token":                {url.Values{}, nil},
		"wrong token":             {url.Values{"csrf": {"x" + csrf}}, nil},
		"another session's token": {url.Values{"csrf": {h.browser().login(testToken)}}, nil},
		"cross-site fetch":        {url.Values{"csrf": {csrf}}, http.Header{"Sec-Fetch-Site": {"cross-site"}}},
		"foreign origin":          {url.Values{"csrf": {csrf}}, http.Header{"Origin": {"https://evil.example"}}},
	} {
		b.header = tc.header
		r := b.post("/ui/nodes/node-1/delete", tc.form)
		if r.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %s, want 403", name, r.Status)
		}
		if deleted() {
			t.Fatalf("%s: the node was deleted", name)
		}
	}
	b.header = nil
	// No session at all.
	r := h.browser().post("/ui/nodes/node-1/delete", url.Values{"csrf": {csrf}})
	wantStatus(t, r, http.StatusForbidden)
	if deleted() {
		t.Fatal("deleted without a session")
	}

	// The header works for fetch calls, from the same origin.
	b.header = http.Header{"X-Csrf-Token": {csrf}, "Origin": {"https://coord.example:8443"}, "Sec-Fetch-Site": {"same-origin"}}
	r = b.post("/ui/nodes/node-1/delete", url.Values{})
	wantStatus(t, r, http.StatusSeeOther)
	if !deleted() {
		t.Fatal("a POST with the CSRF header did not delete")
	}
}

func TestGetChangesNothing(t *testing.T) {
	h := newHarness(t, 3)
	b := h.browser()
	b.login(testToken)
	for _, p := range []string{"/ui/nodes/node-1/delete", "/ui/nodes/node-1/expire", "/ui/nodes/node-1/tags", "/ui/keys/jk000000000001/revoke", "/ui/policy/rollback/1"} {
		wantStatus(t, b.get(p), http.StatusOK)
	}
	for _, c := range h.api.calls {
		if !strings.HasPrefix(c, "GET ") {
			t.Errorf("a GET page made the API call %s", c)
		}
	}
}

func TestSecurityHeaders(t *testing.T) {
	b := newHarness(t, 1).browser()
	r := b.get("/ui/login")
	for k, want := range map[string]string{
		"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	wantBody(t, b.get("/ui/static/style.css"), "table.stack")
	wantBody(t, b.get("/ui/static/live.js"), "data-live")
}

// TestLoginWrongCredential: a join key or garbage pasted at the login is
// named for what it is, and the API is not asked.
func TestLoginWrongCredential(t *testing.T) {
	h := newHarness(t, 1)
	b := h.browser()
	joinKey := credential.Bundle{URL: "https://c:1", Secret: credential.NewSecret("jk")}.Encode(credential.JoinKeyPrefix)
	for _, tc := range []struct{ token, want string }{
		{joinKey, "this is a join key, not an admin token: admin tokens start with wmadmin1-"},
		{"hunter2", "this is not an admin token (they start with wmadmin1-)"},
		{credential.AdminTokenPrefix + "gICAgICA", "this is not an admin token (they start with wmadmin1-, then its encoded contents)"},
	} {
		r := b.post("/ui/login", url.Values{"csrf": {b.get("/ui/login").csrf(t)}, "token": {tc.token}})
		wantStatus(t, r, http.StatusBadRequest)
		wantBody(t, r, html.EscapeString(tc.want))
	}
	if h.api.called("GET") {
		t.Fatal("the API was called for a credential that is no admin token")
	}
}
