package ui

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestRefusedServices: an instance the policy does not let its node
// provide shows as not allowed, with the reason, on the services page and
// the node's page, and does not count in the overview's health.
func TestRefusedServices(t *testing.T) {
	h := newHarness(t, 3)
	const why = "not allowed: only tag:api may provide web"
	h.api.services[0].Instances[1].Refused = why // node-2, critical
	b := h.browser()
	csrf := b.login(testToken)

	r := b.get("/ui/services")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, `data-instance="node-2/web" data-health="critical" data-refused class="refused"`, "not allowed", why,
		`data-instance="node-1/web" data-health="passing">`)
	if n := strings.Count(r.body, "data-refused"); n != 1 {
		t.Errorf("services page: %d refused instances, want 1", n)
	}
	wantBody(t, b.get("/ui/services?fragment=list"), `data-instance="node-2/web" data-health="critical" data-refused`)

	wantBody(t, b.get("/ui/"), `id="services-failing">0<`, "1 passing")

	h.api.services[0].Instances[0].Refused = why // the fake's node pages show node-1's instance
	r = b.get("/ui/nodes/node-1")
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, `data-refused="web">not allowed</span>`, why+": in no netmap, no DNS answer and no <code>svc:web</code> rule.")

	// acl check lists the services a policy would allow or refuse.
	r = b.post("/ui/policy", url.Values{"csrf": {csrf}, "action": {"check"}, "text": {`{"services": {"web": ["tag:web"]}}`}})
	wantStatus(t, r, http.StatusOK)
	wantBody(t, r, `id="policy-providers"`, `<li class="lost"><code>- svc:web on node-2</code></li>`)
}
