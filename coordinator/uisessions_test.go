package coordinator

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

// browser talks to the web UI of any coordinator as one browser behind a
// load balancer would: one cookie jar for all of them, the Origin of the
// coordinator it sends a form to, redirects not followed.
type browser struct {
	t       *testing.T
	cookies map[string]string // by name
}

// uiPage is one answer of the UI.
type uiPage struct {
	code     int
	location string
	body     string
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf returns the CSRF token in the page's forms.
func (p uiPage) csrf(t *testing.T) string {
	t.Helper()
	m := csrfInput.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no CSRF token in the page (%d):\n%s", p.code, p.body)
	}
	return m[1]
}

// do sends one request to ts's UI: a form if form is non-nil.
func (b *browser) do(ts *testServer, method, path string, form url.Values) uiPage {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, ts.url+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", ts.url)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	for name, value := range b.cookies {
		req.AddCookie(&http.Cookie{Name: name, Value: value})
	}
	c := *ts.client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	for _, ck := range resp.Cookies() {
		if ck.MaxAge < 0 {
			delete(b.cookies, ck.Name)
		} else {
			b.cookies[ck.Name] = ck.Value
		}
	}
	return uiPage{resp.StatusCode, resp.Header.Get("Location"), string(text)}
}

// want checks p's status, and that its body holds each of subs.
func (b *browser) want(what string, p uiPage, code int, subs ...string) {
	b.t.Helper()
	if p.code != code {
		b.t.Fatalf("%s: %d (location %q), want %d\n%s", what, p.code, p.location, code, p.body)
	}
	for _, s := range subs {
		if !strings.Contains(p.body, s) {
			b.t.Errorf("%s: no %q in the page:\n%s", what, s, p.body)
		}
	}
}

// TestUISessionsAcrossCoordinators: two coordinators on one PostgreSQL
// behind a load balancer without stickiness. A browser logs in on the
// first; its cookie opens pages and makes changes on the second, a
// message left by a change on one shows on the other, and a logout on the
// second ends the session on the first. Revoking an admin token on one
// ends its session on the other.
func TestUISessionsAcrossCoordinators(t *testing.T) {
	ts := startCluster(t, 2)
	b := &browser{t: t, cookies: map[string]string{}}

	login := b.do(ts[0], "GET", "/ui/login", nil)
	b.want("login page", login, http.StatusOK)
	r := b.do(ts[0], "POST", "/ui/login", url.Values{"csrf": {login.csrf(t)}, "token": {ts[0].admin}, "next": {"/ui/keys"}})
	b.want("login on the first", r, http.StatusSeeOther)
	session := b.cookies["wiremesh_session"]
	if session == "" {
		t.Fatalf("no session cookie after login; cookies %v", b.cookies)
	}

	keys := b.do(ts[1], "GET", "/ui/keys", nil)
	b.want("join keys page on the second", keys, http.StatusOK, "Join keys")
	r = b.do(ts[1], "POST", "/ui/keys", url.Values{"csrf": {keys.csrf(t)}, "expiry": {"1h"}, "node_expiry": {"none"}, "tags": {"tag:web"}})
	b.want("join key made on the second", r, http.StatusCreated, "wiremesh agent --join wmjoin1-")
	var made []wire.JoinKey
	code, body := ts[0].do(t, "GET", wire.PathJoinKeys, ts[0].admin, nil)
	decodeStrict(t, body, &made)
	if code != http.StatusOK || len(made) != 1 || len(made[0].Tags) != 1 || made[0].Tags[0] != "tag:web" {
		t.Fatalf("join keys: %d %s; want the one made through the UI", code, body)
	}

	// A change on the first leaves a message that the second shows.
	id := made[0].ID
	confirm := b.do(ts[0], "GET", "/ui/keys/"+id+"/revoke", nil)
	b.want("revoke confirmation on the first", confirm, http.StatusOK)
	r = b.do(ts[0], "POST", "/ui/keys/"+id+"/revoke", url.Values{"csrf": {confirm.csrf(t)}})
	b.want("revoke on the first", r, http.StatusSeeOther)
	keys = b.do(ts[1], "GET", "/ui/keys", nil)
	b.want("join keys page on the second after the revocation", keys, http.StatusOK, "Join key "+id+" revoked")

	r = b.do(ts[1], "POST", "/ui/logout", url.Values{"csrf": {keys.csrf(t)}})
	b.want("logout on the second", r, http.StatusSeeOther)
	if _, ok := b.cookies["wiremesh_session"]; ok {
		t.Error("session cookie kept after logout")
	}
	// The cookie, replayed on the first, opens nothing and changes nothing.
	b.cookies["wiremesh_session"] = session
	r = b.do(ts[0], "GET", "/ui/keys", nil)
	if r.code != http.StatusSeeOther || !strings.HasPrefix(r.location, "/ui/login") {
		t.Errorf("the logged-out cookie on the first: %d to %q, want a redirect to the login page", r.code, r.location)
	}
	r = b.do(ts[0], "POST", "/ui/keys", url.Values{"csrf": {keys.csrf(t)}, "expiry": {"1h"}, "node_expiry": {"none"}})
	b.want("join key with the logged-out cookie on the first", r, http.StatusForbidden)

	// A session of an admin token revoked through the first ends on the
	// second.
	code, body = ts[0].doJSON(t, "POST", wire.PathAdminTokens, ts[0].admin, wire.CreateAdminTokenRequest{Comment: "ui"})
	if code != http.StatusCreated {
		t.Fatalf("create admin token: %d %s", code, body)
	}
	var tok wire.CreateAdminTokenResponse
	decodeStrict(t, body, &tok)
	login = b.do(ts[1], "GET", "/ui/login", nil)
	r = b.do(ts[1], "POST", "/ui/login", url.Values{"csrf": {login.csrf(t)}, "token": {tok.AdminToken}})
	b.want("login on the second with the new token", r, http.StatusSeeOther)
	b.want("overview on the second", b.do(ts[1], "GET", "/ui/", nil), http.StatusOK, tok.Token.ID)
	if code, body := ts[0].do(t, "DELETE", wire.PathAdminTokens+"/"+tok.Token.ID, ts[0].admin, nil); code != http.StatusNoContent {
		t.Fatalf("revoke admin token: %d %s", code, body)
	}
	r = b.do(ts[1], "GET", "/ui/", nil)
	if r.code != http.StatusSeeOther || !strings.HasPrefix(r.location, "/ui/login") {
		t.Errorf("the session of a revoked token on the second: %d to %q, want a redirect to the login page", r.code, r.location)
	}
}
