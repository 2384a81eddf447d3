package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
)

// ownersPolicy lets only tag:api provide api; svc:api may reach the
// database, and clients may reach svc:api.
const ownersPolicy = `{
  "services": {"api": ["tag:api"]},
  "acls": [
    {"action": "accept", "src": ["svc:api"], "dst": ["tag:db:5432"], "proto": "tcp"},
    {"action": "accept", "src": ["tag:client"], "dst": ["svc:api"], "proto": "tcp"},
  ],
}`

// TestServiceOwners: a rogue node tagged tag:ci says it runs api. It gets
// none of the access svc:api has (it cannot reach the database that only
// svc:api may reach, and clients cannot reach it as api) and is not in
// another node's api.service answer, while the genuine tag:api node is;
// admins see it as not allowed, and the refusal is audited.
func TestServiceOwners(t *testing.T) {
	lab.Require(t, "dig")
	m := newBareMesh(t)
	m.setPolicy(ownersPolicy)
	apiFile := servicesFile(t, `{"services": [{"name": "api", "port": 8443}]}`)
	db := m.addAgent("db", "--join", m.tagKey("tag:db"))
	client := m.addAgent("client", "--join", m.tagKey("tag:client"))
	server(t, db, 5432)

	// The rogue first, and its report taken, so that every netmap that
	// shows the genuine instance below comes after it.
	rogue := m.addAgent("rogue", "--join", m.tagKey("tag:ci"), "--config", apiFile)
	server(t, rogue, 8443)
	var rogueRefused string
	waitFor(t, 15*time.Second, "the rogue's api in the admin listing", func() bool {
		in, ok := m.instance("api", "rogue")
		rogueRefused = in.Refused
		return ok
	})
	if rogueRefused == "" {
		t.Errorf("the rogue's api instance is listed as allowed")
	}
	api := m.addAgent("api", "--join", m.tagKey("tag:api"), "--config", apiFile)
	server(t, api, 8443)

	const name = "api.service.mesh.internal."
	want := []string{api.addr(t, false).String()}
	waitFor(t, 20*time.Second, "the genuine api in the client's answer", func() bool {
		r, err := client.tryDig(name, "A")
		return err == nil && len(r.answer) > 0
	})
	if r := client.dig(t, name, "A"); !slices.Equal(addrs(r.answer), want) {
		t.Errorf("client's %s: %v, want only the genuine instance %v\n%s", name, addrs(r.answer), want, r.raw)
	}
	if r := db.dig(t, name, "A"); slices.Contains(addrs(r.answer), rogue.addr(t, false).String()) {
		t.Errorf("db's %s names the rogue: %v", name, addrs(r.answer))
	}
	if !canTCP(t, api, db, 5432, 10*time.Second) {
		t.Fatal("the genuine api cannot reach db:5432")
	}
	if !canTCP(t, client, api, 8443, 5*time.Second) {
		t.Fatal("the client cannot reach the genuine api:8443")
	}
	// Its own addresses are the only thing the rogue's claim could open.
	if canTCP(t, rogue, db, 5432, 3*time.Second) {
		t.Error("the rogue reached db:5432, which only svc:api may reach")
	}
	if canTCP(t, client, rogue, 8443, 3*time.Second) {
		t.Error("the client reached the rogue's 8443 as if it were api")
	}

	if out := m.cli("services", "list"); !strings.Contains(out, "not allowed") || !strings.Contains(out, "api on rogue: "+rogueRefused) {
		t.Errorf("services list does not show the rogue's api as not allowed:\n%s", out)
	}
	var audit []wire.AuditEntry
	if err := json.Unmarshal([]byte(m.cli("audit", "--json", "--limit", "100")), &audit); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(audit, func(e wire.AuditEntry) bool {
		return e.Actor == "rogue" && e.Action == "service.refused" && e.Target == "api"
	}) {
		t.Errorf("no service.refused entry for the rogue in the audit log: %+v", audit)
	}
}

// instance returns the admin listing's instance of service on node.
func (m *mesh) instance(service, node string) (wire.ServiceInstance, bool) {
	var svcs []wire.CatalogService
	if err := json.Unmarshal([]byte(m.cli("services", "list", "--json")), &svcs); err != nil {
		m.t.Fatal(err)
	}
	for _, cs := range svcs {
		for _, in := range cs.Instances {
			if cs.Name == service && in.Node == node {
				return in, true
			}
		}
	}
	return wire.ServiceInstance{}, false
}
