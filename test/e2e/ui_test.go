package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
)

// uiBadPolicy has two problems on line 3.
const uiBadPolicy = `{
  "acls": [
    {"action": "accept", "src": ["*"], "dts": ["svc:web"]},
  ],
}
`

// uiPolicy opens web to every node, and ping.
const uiPolicy = `{
  // web1 provides web; everyone may use it; everyone may ping.
  "services": {"web": ["node:web1"]},
  "acls": [
    {"action": "accept", "src": ["*"], "dst": ["svc:web"], "proto": "tcp"},
    {"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "icmp"},
  ],
}
`

// TestUI drives the web UI with headless chromium: log in, create a join
// key and start an agent with the command the UI shows, see the node
// appear without a reload, see a policy error at its line, save a valid
// policy and see the access it changes, see a check turn critical without
// a reload, see a POST without the CSRF token refused, delete the node,
// log out.
func TestUI(t *testing.T) {
	lab.Require(t, "ip", "ping", "wg", "chromium")
	m := newBareMesh(t)
	web, stopWeb := uiWebAgent(t, m)
	b := newUIBrowser(t, m, "nodes", "node", "policy-error", "policy-saved", "services-critical", "nodes-phone")

	uiLogin(t, b, m)
	app := uiJoin(t, b, m)
	uiPolicyEditor(t, b, web, app)
	uiServices(t, b, stopWeb)
	uiCSRF(t, b, m)
	uiDelete(t, b, m, app)
	uiLogout(t, b)
	m.assertNoSecrets(t)
}

// uiWebAgent starts agent web1 with a web service whose HTTP check asks a
// server on its host; the returned func stops that server.
func uiWebAgent(t *testing.T, m *mesh) (*agent, func()) {
	t.Helper()
	f := servicesFile(t, `{"services": [
  {"name": "web", "port": 8080, "tags": ["v1"], "checks": [{"id": "web-http", "http": "http://127.0.0.1:8080/healthz", "interval": "1s", "timeout": "500ms"}]},
]}`)
	a := m.addAgent("web1", "--config", f)
	ln, err := a.host.Listen("tcp", "0.0.0.0:8080")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }), ReadHeaderTimeout: time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	stop := func() { srv.Close(); <-done }
	t.Cleanup(stop)
	return a, func() { srv.Close() }
}

func uiLogin(t *testing.T, b *uiBrowser, m *mesh) {
	b.open("/")
	b.step("login page", 20*time.Second, chromedp.WaitVisible(chromedp.ID("token")))
	if loc := b.location(); !strings.Contains(loc, "/ui/login") {
		t.Fatalf("/ without a session went to %s, want the login page", loc)
	}
	b.shot("login")
	tok, err := os.ReadFile(m.tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	b.step("log in", 20*time.Second,
		chromedp.SetValue(chromedp.ID("token"), strings.TrimSpace(string(tok))),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("nodes-online")),
	)
	if got := b.text("#nodes-online"); got != "1" {
		t.Errorf("overview: %s nodes online, want 1 (web1)", got)
	}
	b.shot("overview")
}

// uiJoin creates a one-time join key in the UI, starts agent app1 with
// the command the UI shows, and waits for it on the nodes page without a
// reload.
func uiJoin(t *testing.T, b *uiBrowser, m *mesh) *agent {
	b.open("/ui/keys")
	b.step("create a join key", 20*time.Second,
		chromedp.SetValue(chromedp.ID("key-tags"), "app"),
		chromedp.Click(chromedp.ID("create-key")),
		chromedp.WaitVisible(chromedp.ID("join-command")),
	)
	b.shot("join-key")
	cmd := b.text("#join-command")
	key, ok := strings.CutPrefix(cmd, "wiremesh agent --join ")
	if !ok {
		t.Fatalf("join command %q", cmd)
	}
	if _, err := credential.ParseJoinKey(key); err != nil {
		t.Fatalf("the UI's join key: %v", err)
	}

	b.open("/ui/nodes")
	b.step("nodes page", 20*time.Second, chromedp.WaitVisible(chromedp.CSS(`tr[data-node="web1"]`)))
	b.markPage()
	app := m.agentWithKey("app1", key)
	start := time.Now()
	b.step("app1 appears on the nodes page", 15*time.Second, chromedp.WaitVisible(chromedp.CSS(`tr[data-node="app1"]`)))
	b.samePage("app1 appeared")
	t.Logf("app1 on the nodes page %s after its agent was up, without a reload", time.Since(start).Round(10*time.Millisecond))
	if row := b.text(`tr[data-node="app1"]`); !strings.Contains(row, "tag:app") || !strings.Contains(row, "online") {
		t.Errorf("app1's row %q: want tag:app, online", row)
	}
	b.shot("nodes")
	b.step("phone viewport", 10*time.Second, chromedp.EmulateViewport(390, 844))
	b.shot("nodes-phone")
	b.step("laptop viewport", 10*time.Second, chromedp.EmulateViewport(1280, 900))
	return app
}

// uiPolicyEditor checks a policy with an error and saves a valid one.
func uiPolicyEditor(t *testing.T, b *uiBrowser, web, app *agent) {
	b.open("/ui/policy")
	b.step("check a bad policy", 20*time.Second,
		chromedp.SetValue(chromedp.ID("policy-text"), uiBadPolicy),
		chromedp.Click(chromedp.ID("check")),
		chromedp.WaitVisible(chromedp.ID("policy-errors")),
	)
	errs := b.text("#policy-errors")
	if !strings.Contains(errs, "line 3, column") || !strings.Contains(errs, `unknown key "dts"`) {
		t.Errorf("policy errors %q: want line 3 and the unknown key", errs)
	}
	if bad := b.text("#L3.bad"); !strings.Contains(bad, `"dts"`) {
		t.Errorf("marked line 3: %q", bad)
	}
	b.shot("policy-error")

	b.step("save a good policy", 20*time.Second,
		chromedp.SetValue(chromedp.ID("policy-text"), uiPolicy),
		chromedp.Click(chromedp.ID("save")),
		chromedp.WaitVisible(chromedp.ID("policy-saved")),
	)
	changes := b.text("#policy-changes")
	if want := "+ app1 → web1 tcp/8080"; !strings.Contains(changes, want) {
		t.Errorf("access changes %q: want %q", changes, want)
	}
	b.shot("policy-saved")
	waitFor(t, 5*time.Second, "app1 and web1 peers", func() bool { return app.hasPeer(web.publicKey(t)) })

	b.open("/ui/nodes/web1")
	b.step("node detail", 20*time.Second, chromedp.WaitVisible(chromedp.ID("reached")))
	if body := eval[string](b, `document.body.innerText`); !strings.Contains(body, "app1") || !strings.Contains(body, "8080") {
		t.Errorf("web1's detail does not say that app1 may reach it on 8080:\n%s", body)
	}
	b.shot("node")
}

// uiServices stops web1's health server and waits for the check to turn
// critical on the services page, without a reload.
func uiServices(t *testing.T, b *uiBrowser, stopWeb func()) {
	b.open("/ui/services")
	passing := `tr[data-instance="web1/web"][data-health="passing"]`
	b.step("web passing", 20*time.Second, chromedp.WaitVisible(chromedp.CSS(passing)))
	b.shot("services")
	b.markPage()
	stopWeb()
	start := time.Now()
	b.step("web critical", 15*time.Second, chromedp.WaitVisible(chromedp.CSS(`tr[data-instance="web1/web"][data-health="critical"]`)))
	b.samePage("the check turned critical")
	t.Logf("web1's check critical on the services page %s after its server stopped, without a reload", time.Since(start).Round(10*time.Millisecond))
	if row := b.text(`tr[data-instance="web1/web"]`); !strings.Contains(row, "web-http") {
		t.Errorf("web1's row %q does not name its check", row)
	}
	b.shot("services-critical")
}

// uiCSRF sends POSTs without the session's CSRF token from the page: they
// are refused and change nothing.
func uiCSRF(t *testing.T, b *uiBrowser, m *mesh) {
	b.open("/ui/nodes")
	for _, body := range []string{"", "csrf=forged"} {
		if code := b.postStatus("/ui/nodes/app1/delete", body); code != http.StatusForbidden {
			t.Errorf("POST delete with body %q: %d, want 403", body, code)
		}
	}
	if !slices.ContainsFunc(m.nodes(), func(n wire.Node) bool { return n.Name == "app1" }) {
		t.Fatal("a POST without the CSRF token deleted app1")
	}
}

// uiDelete deletes app1 through its confirmation page.
func uiDelete(t *testing.T, b *uiBrowser, m *mesh, app *agent) {
	b.open("/ui/nodes")
	b.step("delete app1", 20*time.Second,
		chromedp.Click(chromedp.CSS(`tr[data-node="app1"] a.danger`)),
		chromedp.WaitVisible(chromedp.ID("confirm")),
	)
	b.shot("delete-confirm")
	b.step("confirm", 20*time.Second,
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.WaitVisible(chromedp.CSS(".flash")),
	)
	if !b.hasText("Node app1 deleted") {
		t.Error("no message after the delete")
	}
	if slices.ContainsFunc(m.nodes(), func(n wire.Node) bool { return n.Name == "app1" }) {
		t.Fatal("app1 is still a node")
	}
	b.shot("deleted")
	waitFor(t, 15*time.Second, "app1's agent to stop on its refused credential", app.proc.Exited)
}

func uiLogout(t *testing.T, b *uiBrowser) {
	b.step("log out", 20*time.Second,
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("token")),
	)
	b.open("/ui/nodes")
	b.step("login page", 20*time.Second, chromedp.WaitVisible(chromedp.ID("token")))
	if loc := b.location(); !strings.Contains(loc, "/ui/login?next=%2Fui%2Fnodes") {
		t.Errorf("after logout /ui/nodes went to %s, want the login page", loc)
	}
	b.shot("logged-out")
}

// agentWithKey adds a host and starts an agent there that enrolls with
// key, as `wiremesh agent --join KEY` does.
func (m *mesh) agentWithKey(name, key string) *agent {
	m.t.Helper()
	a := &agent{name: name, host: m.lab.AddHost(name), iface: m.lab.Prefix() + name, stateDir: filepath.Join(m.t.TempDir(), "state")}
	m.agents[name] = a
	a.start(m.t, "--join", key)
	return a
}
