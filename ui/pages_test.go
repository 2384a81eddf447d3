package ui

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

func TestPagesRender(t *testing.T) {
	h := newHarness(t, 5)
	b := h.browser()
	b.login(testToken)
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/ui/", []string{"<h1>Overview</h1>", `id="nodes-online">4<`, `id="nodes-offline">1<`, `id="services-failing">1<`, "1 passing", "1 critical", `id="policy-version">2<`, "node.enroll", "node-30", `data-live="/ui/?fragment=summary"`}},
		{"/ui/nodes", []string{`<tr data-node="node-1">`, "100.64.0.2", "fd77:6d65:7368::1", "tag:web", "badge online", "badge offline", "10.77.0.2:51820", "0.5.0", "1m ago", `href="/ui/nodes/node-1/delete"`, `data-label="Endpoint"`}},
		{"/ui/nodes/node-1", []string{"<h1>node-1</h1>", `href="/ui/nodes/node-2"`, "web-http", "HTTP GET http://127.0.0.1:8080/: 200 OK", "tcp/8080", "<code>8080</code>", "node-3", "icmp", "cHVibGljLWtleS0w", `action="/ui/nodes/node-1/expiry"`, `<option value="168h">in 7 days</option>`, `id="node-expiry">never<`, `<dd id="node-nat">hard</dd>`, `<dd id="node-home-relay">eu-1</dd>`, `<td data-label="Path">direct <code>203.0.113.7:41641</code></td>`, `<td data-label="Path">relay eu-1</td>`, "no answer from 2 candidates", "1.2ms"}},
		{"/ui/map", []string{`data-node="node-1"`, `data-node="node-3"`, `<line class="path-direct" data-pair="node-1 node-2"`, `<line class="path-relay" data-pair="node-1 node-3"`, `id="map-direct">1<`, `id="map-relayed">1<`, `>hard</text>`, `aria-current="page">Mesh map`}},
		{"/ui/nodes/node-1/tags", []string{`name="tags" value="tag:web"`, `<label for="tags">`}},
		{"/ui/nodes/node-1/delete", []string{"Delete node-1?", `action="/ui/nodes/node-1/delete"`, "credential"}},
		{"/ui/nodes/node-1/expire", []string{"Expire node-1?", `action="/ui/nodes/node-1/expire"`}},
		{"/ui/services", []string{`<h2 id="svc-web">web`, "2 instances", `data-instance="node-2/web" data-health="critical"`, "connection refused", "tcp/8080", "v1"}},
		{"/ui/policy", []string{`<textarea id="policy-text"`, "svc:web", `value="validate"`, `value="check"`, `value="save"`, `id="active-version">2<`}},
		{"/ui/policy/history", []string{`href="/ui/policy/history/2"`, `href="/ui/policy/rollback/1"`, "active"}},
		{"/ui/policy/history/2", []string{`<tr class="add">`, `<tr class="del">`, "svc:web", "+3", "−1", "badge online"}},
		{"/ui/policy/history/1", []string{`<tr class="add">`, "no policy", `href="/ui/policy/rollback/1"`}},
		{"/ui/policy/rollback/1", []string{`action="/ui/policy/rollback/1"`, "Roll back to version 1"}},
		{"/ui/keys", []string{"jk000000000001", "badge valid", "badge revoked", "reusable", "one-time", `href="/ui/keys/jk000000000001/revoke"`, `<label for="expiry">`, `<label for="node-expiry">`, `<option value="none" selected>`, `id="ephemeral" name="ephemeral">`}},
		{"/ui/keys/jk000000000001/revoke", []string{`action="/ui/keys/jk000000000001/revoke"`}},
		{"/ui/audit?limit=10", []string{"node-30", "node.enroll", "<code>ad0001</code> (ops laptop)", `rel="next"`, "after=21"}},
	} {
		r := b.get(tc.path)
		wantStatus(t, r, http.StatusOK)
		wantBody(t, r, tc.want...)
		if strings.Contains(r.body, "ZgotmplZ") {
			t.Errorf("%s: a value the template refused (ZgotmplZ)", tc.path)
		}
		if ct := r.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("%s: Content-Type %q", tc.path, ct)
		}
	}
}

func TestFragments(t *testing.T) {
	h := newHarness(t, 3)
	b := h.browser()
	b.login(testToken)
	for path, want := range map[string]string{
		"/ui/nodes?fragment=rows":    `<tr data-node="node-3">`,
		"/ui/services?fragment=list": `data-instance="node-1/web"`,
		"/ui/?fragment=summary":      `id="nodes-online"`,
	} {
		r := b.get(path)
		wantStatus(t, r, http.StatusOK)
		wantBody(t, r, want)
		if strings.Contains(r.body, "<html") {
			t.Errorf("%s: a whole page, not a fragment", path)
		}
	}
}

func TestNodesPagination(t *testing.T) {
	h := newHarness(t, 250)
	b := h.browser()
	b.login(testToken)
	r := b.get("/ui/nodes")
	wantBody(t, r, "node-100<", `href="/ui/nodes?after=100&amp;limit=100"`)
	if strings.Contains(r.body, "node-101<") {
		t.Fatal("the first page lists node-101")
	}
	r = b.get("/ui/nodes?after=200&limit=100")
	wantBody(t, r, "node-250<", `data-live="/ui/nodes?after=200&amp;fragment=rows&amp;limit=100"`, "First page")
	if strings.Contains(r.body, `rel="next"`) {
		t.Fatal("the last page links a next one")
	}
}

func TestNodeActions(t *testing.T) {
	h := newHarness(t, 3)
	b := h.browser()
	csrf := b.login(testToken)

	// Tags: the first POST only shows the change.
	r := b.post("/ui/nodes/node-1/tags", url.Values{"csrf": {csrf}, "tags": {"db, tag:prod"}})
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, "tag:db", "tag:prod", `name="confirm" value="yes"`)
	if h.api.called("PUT") {
		t.Fatal("tags set before confirmation")
	}
	r = b.post("/ui/nodes/node-1/tags", url.Values{"csrf": {csrf}, "tags": {"db, tag:prod"}, "confirm": {"yes"}})
	wantStatus(t, r, http.StatusSeeOther)
	if got := h.api.nodes[0].Tags; len(got) != 2 || got[0] != "tag:db" || got[1] != "tag:prod" {
		t.Fatalf("tags %v", got)
	}
	wantBody(t, b.get("/ui/nodes/node-1"), "Tags of node-1 set to tag:db tag:prod.")
	if r := b.get("/ui/nodes/node-1"); strings.Contains(r.body, "Tags of node-1 set") {
		t.Error("the message is shown again on the next page")
	}
	// A tag the API refuses is shown in the form.
	r = b.post("/ui/nodes/node-1/tags", url.Values{"csrf": {csrf}, "tags": {"<b>"}, "confirm": {"yes"}})
	wantStatus(t, r, http.StatusBadRequest)
	wantBody(t, r, "bad tag", `class="error"`)

	r = b.post("/ui/nodes/node-2/expire", url.Values{"csrf": {csrf}})
	wantStatus(t, r, http.StatusSeeOther)
	wantBody(t, b.get("/ui/nodes/node-2"), "badge expired", "Node node-2 expired")

	r = b.post("/ui/nodes/node-3/delete", url.Values{"csrf": {csrf}})
	wantStatus(t, r, http.StatusSeeOther)
	r = b.get("/ui/nodes")
	wantBody(t, r, "Node node-3 deleted")
	if strings.Contains(r.body, `data-node="node-3"`) {
		t.Fatal("deleted node still listed")
	}
	wantStatus(t, b.post("/ui/nodes/node-1/reboot", url.Values{"csrf": {csrf}}), http.StatusNotFound)
}

func TestAPIErrorsShown(t *testing.T) {
	h := newHarness(t, 1)
	b := h.browser()
	b.login(testToken)
	r := b.get("/ui/nodes/ghost")
	wantStatus(t, r, http.StatusNotFound)
	wantBody(t, r, `node &#34;ghost&#34;: not found`, `role="alert"`)

	h.api.fail = http.StatusInternalServerError
	r = b.get("/ui/services")
	wantStatus(t, r, http.StatusBadGateway)
	wantBody(t, r, "the fake fails (HTTP 500)")
	r = b.get("/ui/services?fragment=list")
	wantStatus(t, r, http.StatusBadGateway)
	if strings.Contains(r.body, "<html") {
		t.Fatal("a fragment's error is a whole page")
	}
	// The overview shows what it can.
	r = b.get("/ui/")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, "the fake fails")
	wantStatus(t, b.get("/ui/nope"), http.StatusNotFound)
}

func TestPolicyErrorsAtTheirLine(t *testing.T) {
	h := newHarness(t, 2)
	b := h.browser()
	csrf := b.login(testToken)
	text := "{\r\n  \"acls\": [],\r\n  \"oops\": 1,\r\n}\r\n"
	for _, action := range []string{"validate", "check", "save"} {
		r := b.post("/ui/policy", url.Values{"csrf": {csrf}, "action": {action}, "text": {text}})
		wantStatus(t, r, http.StatusOK)
		wantBody(t, r, `<a href="#L3">line 3, column 4</a>: unknown key &#34;oops&#34;`,
			`<li id="L3" class="bad"><span class="ln" aria-hidden="true">3</span><code>  &#34;oops&#34;: 1,</code><span class="msg">3:4: unknown key &#34;oops&#34;</span>`,
			`<li id="L2"><span class="ln"`)
		if !strings.Contains(r.body, "\n{\n  &#34;acls&#34;: [],\n  &#34;oops&#34;: 1,\n}\n</textarea>") {
			t.Errorf("%s: the textarea does not keep the text:\n%s", action, r.body)
		}
	}
	if h.api.called("PUT") {
		t.Fatal("an invalid policy was sent to be saved")
	}
	// A save the API refuses (its tests fail against the nodes) shows
	// the API's problems the same way.
	h.api.failPut = true
	r := b.post("/ui/policy", url.Values{"csrf": {csrf}, "action": {"save"}, "text": {"{}"}})
	wantStatus(t, r, http.StatusBadRequest)
	wantBody(t, r, `<a href="#L1">line 1, column 1</a>: test failed`, `<li id="L1" class="bad">`, "not saved")
}

func TestPolicyCheckAndSave(t *testing.T) {
	h := newHarness(t, 2)
	b := h.browser()
	csrf := b.login(testToken)
	text := `{"acls": [{"action": "accept", "src": ["*"], "dst": ["svc:web"]}]}`
	r := b.post("/ui/policy", url.Values{"csrf": {csrf}, "action": {"validate"}, "text": {text}})
	wantBody(t, r, `id="policy-valid"`)
	if strings.Contains(r.body, "policy-changes") {
		t.Error("validate lists access changes")
	}
	r = b.post("/ui/policy", url.Values{"csrf": {csrf}, "action": {"check"}, "text": {text}})
	wantBody(t, r, `id="policy-changes"`, "&#43; node-1 → node-2 tcp/8080", "a save would change")
	if h.api.called("PUT") {
		t.Fatal("check saved the policy")
	}
	r = b.post("/ui/policy", url.Values{"csrf": {csrf}, "action": {"save"}, "text": {text}})
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, `id="policy-saved">Saved as version 3.`, "&#43; node-1 → node-2 tcp/8080", "this change made", `id="active-version">3<`)
	if got := h.api.versions[2].Text; got != text {
		t.Fatalf("saved %q", got)
	}

	r = b.post("/ui/policy/rollback/1", url.Values{"csrf": {csrf}})
	wantStatus(t, r, http.StatusSeeOther)
	wantBody(t, b.get("/ui/policy"), "Rolled back to version 1: the active policy is now version 4.", "rollback to 1")
	wantStatus(t, b.post("/ui/policy", url.Values{"csrf": {csrf}, "action": {"delete"}}), http.StatusBadRequest)
}

func TestVersionWithoutTextEndpoint(t *testing.T) {
	h := newHarness(t, 1)
	b := h.browser()
	b.login(testToken)
	// A coordinator that ignores ?version= answers the active version.
	h.api.versions[0].Version = 2
	r := b.get("/ui/policy/history/2")
	wantStatus(t, r, http.StatusBadGateway)
	wantBody(t, r, "cannot show older versions")
}

func TestCreateJoinKeyShowsCommandOnce(t *testing.T) {
	h := newHarness(t, 1)
	b := h.browser()
	csrf := b.login(testToken)
	r := b.post("/ui/keys", url.Values{"csrf": {csrf}, "reusable": {"on"}, "expiry": {"168h"}, "tags": {"web prod"}, "node_expiry": {"none"}})
	wantStatus(t, r, http.StatusCreated)
	wantBody(t, r, `<code id="join-command">wiremesh agent --join wmjoin1-SECRETJOINKEYjk000000000003</code>`, "Reusable", "2026-12-08 12:00:00Z", "tag:web tag:prod")
	k := h.api.keys[2]
	if !k.Reusable || len(k.Tags) != 2 || k.Expires.Sub(testTime).Hours() != 168 {
		t.Fatalf("key %+v", k)
	}
	r = b.get("/ui/keys")
	wantBody(t, r, "jk000000000003")
	if strings.Contains(r.body, "SECRETJOINKEY") {
		t.Fatal("the join key is shown again")
	}
	if strings.Contains(h.log.String(), "SECRETJOINKEY") {
		t.Fatal("the join key is in the log")
	}
	r = b.post("/ui/keys", url.Values{"csrf": {csrf}, "expiry": {"forever"}})
	wantStatus(t, r, http.StatusBadRequest)
	wantBody(t, r, "choose an expiry")

	r = b.post("/ui/keys/jk000000000001/revoke", url.Values{"csrf": {csrf}})
	wantStatus(t, r, http.StatusSeeOther)
	if !h.api.called("DELETE /v1/join-keys/jk000000000001") {
		t.Fatal("revoke did not reach the API")
	}
	wantStatus(t, b.get("/ui/keys/jk999/revoke"), http.StatusNotFound)
}

func TestCreateJoinKeyNodeLifetime(t *testing.T) {
	h := newHarness(t, 1)
	b := h.browser()
	csrf := b.login(testToken)
	r := b.post("/ui/keys", url.Values{"csrf": {csrf}, "expiry": {"24h"}, "node_expiry": {"168h"}, "ephemeral": {"on"}})
	wantStatus(t, r, http.StatusCreated)
	wantBody(t, r, "Each node it admits expires 7 days after it enrolls.", "They are ephemeral")
	if k := h.api.keys[2]; time.Duration(k.NodeExpiry) != 168*time.Hour || !k.Ephemeral {
		t.Fatalf("key %+v: want node expiry 168h, ephemeral", k)
	}
	r = b.post("/ui/keys", url.Values{"csrf": {csrf}, "expiry": {"24h"}, "node_expiry": {"none"}})
	wantStatus(t, r, http.StatusCreated)
	wantBody(t, r, "The nodes it admits do not expire.")
	if k := h.api.keys[3]; k.NodeExpiry != 0 || k.Ephemeral {
		t.Fatalf("key %+v: want no node expiry, not ephemeral", k)
	}

	body := b.get("/ui/keys").body
	wantIn(t, rowOf(t, body, `data-key="jk000000000003"`), "expire 7 days after enrolling", "badge ephemeral")
	wantIn(t, rowOf(t, body, `data-key="jk000000000004"`), "no lifetime")
	if strings.Contains(rowOf(t, body, `data-key="jk000000000004"`), "ephemeral") {
		t.Error("a key without ephemeral nodes is marked ephemeral")
	}

	// A lifetime that is not in the list reaches no API; the form keeps
	// what was chosen.
	for _, v := range []string{"1000h", ""} {
		r = b.post("/ui/keys", url.Values{"csrf": {csrf}, "expiry": {"24h"}, "node_expiry": {v}, "ephemeral": {"on"}})
		wantStatus(t, r, http.StatusBadRequest)
		wantBody(t, r, "choose a node lifetime", `id="ephemeral" name="ephemeral" checked>`)
	}
	if len(h.api.keys) != 4 {
		t.Fatalf("%d keys, want 4", len(h.api.keys))
	}
}

func TestLifetimeText(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "none", time.Hour: "1 hour", 36 * time.Hour: "36 hours", 24 * time.Hour: "1 day", 2160 * time.Hour: "90 days", 90 * time.Minute: "1h30m0s"} {
		if got := lifetimeText(wire.Duration(d)); got != want {
			t.Errorf("lifetimeText(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestNodeExpiryShown(t *testing.T) {
	h := newHarness(t, 3)
	h.api.nodes[0].Ephemeral = true
	h.api.nodes[0].Expires = testTime.Add(3 * time.Hour)
	h.api.nodes[1].Expires = testTime.Add(-time.Hour)
	b := h.browser()
	b.login(testToken)
	soon := `expires in 3h (<time datetime="2026-12-01 15:00:00Z">2026-12-01 15:00:00Z</time>)`
	for _, path := range []string{"/ui/nodes", "/ui/nodes?fragment=rows"} {
		body := b.get(path).body
		wantIn(t, rowOf(t, body, `data-node="node-1"`), "badge online", "badge ephemeral", soon)
		for _, n := range []string{"node-2", "node-3"} {
			row := rowOf(t, body, `data-node="`+n+`"`)
			if strings.Contains(row, "ephemeral") || strings.Contains(row, "expires") {
				t.Errorf("%s: %s's row says ephemeral or expires:\n%s", path, n, row)
			}
		}
		wantIn(t, rowOf(t, body, `data-node="node-2"`), "badge expired")
	}

	wantBody(t, b.get("/ui/nodes/node-1"), "badge ephemeral", `id="node-expiry">`+soon, `id="set-expiry"`, `id="never-expire"`)
	r := b.get("/ui/nodes/node-2")
	wantBody(t, r, `id="node-expiry"><span class="badge expired">expired</span> at <time datetime="2026-12-01 11:00:00Z">`, "it must enroll again")
	for _, id := range []string{`id="set-expiry"`, `id="never-expire"`, "badge ephemeral"} {
		if strings.Contains(r.body, id) {
			t.Errorf("the expired node-2's page has %s", id)
		}
	}
	r = b.get("/ui/nodes/node-3")
	wantBody(t, r, `id="node-expiry">never<`, `id="set-expiry"`)
	if strings.Contains(r.body, `id="never-expire"`) {
		t.Error("a node without expiry offers to clear it")
	}
}

func TestScheduleExpiry(t *testing.T) {
	h := newHarness(t, 2)
	b := h.browser()
	csrf := b.login(testToken)

	r := b.post("/ui/nodes/node-1/expiry", url.Values{"csrf": {csrf}, "in": {"24h"}})
	wantStatus(t, r, http.StatusSeeOther)
	if loc := r.Header.Get("Location"); loc != "/ui/nodes/node-1" {
		t.Errorf("redirect to %q", loc)
	}
	if got := h.api.expires; len(got) != 1 || !got[0].At.Equal(testTime.Add(24*time.Hour)) || got[0].Never {
		t.Fatalf("expire requests %+v: want at %s", got, testTime.Add(24*time.Hour))
	}
	wantBody(t, b.get("/ui/nodes/node-1"), "Node node-1 expires in 24h (2026-12-02 12:00:00Z)", `id="never-expire"`)

	r = b.post("/ui/nodes/node-1/expiry", url.Values{"csrf": {csrf}, "in": {"never"}})
	wantStatus(t, r, http.StatusSeeOther)
	if got := h.api.expires; len(got) != 2 || got[1] != (wire.ExpireRequest{Never: true}) {
		t.Fatalf("expire requests %+v: want never", got)
	}
	if !h.api.nodes[0].Expires.IsZero() {
		t.Fatalf("node-1 still expires at %s", h.api.nodes[0].Expires)
	}
	wantBody(t, b.get("/ui/nodes/node-1"), "Node node-1 no longer expires.", `id="node-expiry">never<`)

	// A choice not in the list, or none, reaches no API.
	for _, in := range []string{"2h", ""} {
		r = b.post("/ui/nodes/node-1/expiry", url.Values{"csrf": {csrf}, "in": {in}})
		wantStatus(t, r, http.StatusBadRequest)
		wantBody(t, r, "choose when the node expires", "<h1>node-1</h1>")
	}
	// Nor does a POST without the CSRF token.
	wantStatus(t, b.post("/ui/nodes/node-1/expiry", url.Values{"in": {"1h"}}), http.StatusForbidden)
	if len(h.api.expires) != 2 {
		t.Fatalf("expire requests %+v: want 2", h.api.expires)
	}

	// Expire now goes through its confirmation and sends no body.
	wantBody(t, b.get("/ui/nodes/node-2/expire"), "Expire node-2?", "now cuts it off")
	wantStatus(t, b.post("/ui/nodes/node-2/expire", url.Values{"csrf": {csrf}}), http.StatusSeeOther)
	if got := h.api.expires; len(got) != 3 || got[2] != (wire.ExpireRequest{}) {
		t.Fatalf("expire requests %+v: want an empty one", got)
	}
	// An expired node cannot be made not to expire: the API's 409 is
	// shown at the form.
	r = b.post("/ui/nodes/node-2/expiry", url.Values{"csrf": {csrf}, "in": {"never"}})
	wantStatus(t, r, http.StatusConflict)
	wantBody(t, r, `<p class="error" role="alert">node &#34;node-2&#34; expired at 2026-12-01T12:00:00Z; it must enroll again (HTTP 409)</p>`, "<h1>node-2</h1>", "badge expired")
	if !h.api.nodes[1].Expires.Equal(testTime) {
		t.Fatalf("node-2 expires at %s, want %s", h.api.nodes[1].Expires, testTime)
	}
}

// rowOf returns the table row of body whose opening tag has attr.
func rowOf(t *testing.T, body, attr string) string {
	t.Helper()
	_, row, ok := strings.Cut(body, "<tr "+attr+">")
	if !ok {
		t.Fatalf("no row with %s", attr)
	}
	row, _, _ = strings.Cut(row, "</tr>")
	return row
}

// wantIn fails t unless s holds each of want.
func wantIn(t *testing.T, s string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("missing %q in:\n%s", w, s)
		}
	}
}

// TestNoTokenInHTML walks every page and checks that neither the admin
// token nor its secret appears in any page or in the log.
func TestNoTokenInHTML(t *testing.T) {
	h := newHarness(t, 3)
	b := h.browser()
	csrf := b.login(testToken)
	pages := []response{
		b.get("/ui/"), b.get("/ui/nodes"), b.get("/ui/nodes/node-1"), b.get("/ui/nodes/node-1/tags"),
		b.get("/ui/nodes/node-1/delete"), b.get("/ui/services"), b.get("/ui/policy"),
		b.get("/ui/policy/history"), b.get("/ui/policy/history/2"), b.get("/ui/keys"), b.get("/ui/audit"),
		b.get("/ui/nodes?fragment=rows"), b.get("/ui/?fragment=summary"),
		b.post("/ui/policy", url.Values{"csrf": {csrf}, "action": {"check"}, "text": {"{}"}}),
		b.post("/ui/keys", url.Values{"csrf": {csrf}, "expiry": {"1h"}, "node_expiry": {"none"}}),
		b.get("/ui/login"), h.browser().get("/ui/login"), b.get("/ui/nodes/ghost"),
	}
	for _, p := range pages {
		for _, secret := range []string{testSecret.Value, testToken} {
			if strings.Contains(p.body, secret) {
				t.Errorf("%s shows the admin token", p.what)
			}
		}
	}
	if strings.Contains(h.log.String(), testSecret.Value) {
		t.Errorf("the log holds the admin token:\n%s", h.log)
	}
}

// TestEscaping puts hostile text where outside input ends up: check
// output, tags, service tags, audit details.
func TestEscaping(t *testing.T) {
	h := newHarness(t, 2)
	evil := `<script>alert("x")</script><img src=x onerror=alert(1)>`
	h.api.services[0].Instances[0].Checks[0].Output = evil
	h.api.services[0].Instances[0].Tags = []string{evil}
	h.api.nodes[0].Tags = []string{"tag:" + evil}
	h.api.nodes[0].Version = evil
	h.api.audit[0].Detail = evil
	h.api.keys[0].Tags = []string{evil}
	b := h.browser()
	b.login(testToken)
	for _, p := range []string{"/ui/services", "/ui/nodes", "/ui/nodes/node-1", "/ui/audit", "/ui/keys", "/ui/services?fragment=list"} {
		r := b.get(p)
		wantStatus(t, r, http.StatusOK)
		if strings.Contains(r.body, "<script>alert") || strings.Contains(r.body, "<img src=x") {
			t.Errorf("%s: hostile text not escaped:\n%s", p, r.body)
		}
		wantBody(t, r, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;")
	}
}

func TestParseTags(t *testing.T) {
	got := parseTags(" web,tag:db  web\nprod ")
	want := []string{"tag:web", "tag:db", "tag:prod"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("parseTags = %v, want %v", got, want)
	}
	if got := parseTags(""); got == nil || len(got) != 0 {
		t.Fatalf("parseTags(\"\") = %#v, want empty and non-nil", got)
	}
}

func TestNextCursor(t *testing.T) {
	for link, want := range map[string]string{
		`</v1/nodes?after=100&limit=100>; rel="next"`:                        "100",
		`</v1/audit?limit=5&after=42>; rel="prev", </x?after=7>; rel="next"`: "7",
		`</v1/nodes?after=1>; rel="prev"`:                                    "",
		``:                                                                   "",
	} {
		h := http.Header{}
		if link != "" {
			h.Set("Link", link)
		}
		if got := nextCursor(h); got != want {
			t.Errorf("nextCursor(%q) = %q, want %q", link, got, want)
		}
	}
}

func TestNumberLines(t *testing.T) {
	lines := numberLines("a\nb\n", []wire.PolicyError{{Line: 2, Column: 1, Message: "bad b"}, {Line: 9, Column: 1, Message: "unexpected end"}, {Message: "no line"}})
	if len(lines) != 2 || len(lines[0].Errors) != 0 || len(lines[1].Errors) != 2 || lines[1].Errors[0] != "2:1: bad b" {
		t.Fatalf("numberLines = %+v", lines)
	}
}

func TestConfigValidate(t *testing.T) {
	var c Config
	if err := c.Validate(); err == nil {
		t.Fatal("a config without API validated")
	}
	c = Config{API: http.NotFoundHandler()}
	if err := c.Validate(); err == nil {
		t.Fatal("a config without sessions validated")
	}
	c = Config{API: http.NotFoundHandler(), Sessions: newFakeSessions(time.Now)}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.SessionTTL == 0 || c.PageSize == 0 || c.MaxSessions == 0 || c.Now == nil || c.Logger == nil {
		t.Fatalf("defaults not filled in: %+v", c)
	}
	c.SessionTTL = -1
	if err := c.Validate(); err == nil {
		t.Fatal("a negative TTL validated")
	}
}
