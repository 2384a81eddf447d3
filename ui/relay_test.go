package ui

import (
	"strings"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

// A relay node is marked as a relay in the node list and on its page,
// which shows its URL and pins; an agent is not.
func TestRelayNodeShown(t *testing.T) {
	h := newHarness(t, 2)
	h.api.nodes[0].Relay = &wire.Relay{Name: "node-1", URL: "https://192.0.2.9:443", Pins: []string{"sha256:0123"}, STUN: []string{"192.0.2.9:3478"}}
	b := h.browser()
	b.login(testToken)
	body := b.get("/ui/nodes").body
	wantIn(t, rowOf(t, body, `data-node="node-1"`), "badge relay")
	if row := rowOf(t, body, `data-node="node-2"`); strings.Contains(row, "relay") {
		t.Errorf("an agent's row says relay:\n%s", row)
	}
	wantBody(t, b.get("/ui/nodes/node-1"), "badge relay", "<code>https://192.0.2.9:443</code>", "sha256:0123", "<code>192.0.2.9:3478</code>")
}
