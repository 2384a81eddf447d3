package coordinator

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// ownersMesh is a coordinator with api-1 (tag:api), ci-1 (tag:ci), db-1
// (tag:db) and web-1 (tag:web); api-1 reports api on 443 and ci-1, which
// the policy does not let provide it, api on 8443.
type ownersMesh struct {
	ts               *testServer
	api, ci, db, web wire.EnrollResponse
	ciStream, dbSt   *stream
	webStream        *stream
	apiSvc, rogueSvc wire.Service
}

const ownersTestPolicy = `{
  "services": {"api": ["tag:api"]},
  "acls": [
    {"action": "accept", "src": ["svc:api"], "dst": ["tag:db:5432"], "proto": "tcp"},
    {"action": "accept", "src": ["tag:web"], "dst": ["svc:api"], "proto": "tcp"},
  ],
}`

func newOwnersMesh(t *testing.T, policy string) *ownersMesh {
	ts := startServer(t, time.Hour)
	m := &ownersMesh{ts: ts, apiSvc: wire.Service{Name: "api", Port: 443}, rogueSvc: wire.Service{Name: "api", Port: 8443}}
	m.api, m.ci, m.db, m.web = ts.enrollTagged(t, "api-1", "tag:api"), ts.enrollTagged(t, "ci-1", "tag:ci"), ts.enrollTagged(t, "db-1", "tag:db"), ts.enrollTagged(t, "web-1", "tag:web")
	ts.setPolicy(t, policy)
	m.report(t, m.api, m.apiSvc)
	m.report(t, m.ci, m.rogueSvc)
	m.ciStream = ts.openStream(t, m.ci.Credential, wire.MapRequest{PublicKey: m.ci.Node.PublicKey})
	m.dbSt = ts.openStream(t, m.db.Credential, wire.MapRequest{PublicKey: m.db.Node.PublicKey})
	m.webStream = ts.openStream(t, m.web.Credential, wire.MapRequest{PublicKey: m.web.Node.PublicKey})
	return m
}

func (m *ownersMesh) report(t *testing.T, n wire.EnrollResponse, svcs ...wire.Service) {
	t.Helper()
	code, body := m.ts.doJSON(t, "PUT", wire.PathServicesReport, n.Credential, wire.ServicesReport{PublicKey: n.Node.PublicKey, Services: svcs, ContentProof: servicesProof(t, m.ts.c, n.Node.PublicKey, svcs)})
	if code != http.StatusNoContent {
		t.Fatalf("report of %s: %d %s", n.Node.Name, code, body)
	}
}

// servicesOf returns what the netmap lists of node name's services: its
// own (Self) or a peer's.
func servicesOf(nm *wire.Netmap, name string) []wire.Service {
	if nm.Self.Name == name {
		return nm.Self.Services
	}
	for _, p := range nm.Peers {
		if p.Name == name {
			return p.Services
		}
	}
	return nil
}

// TestServiceOwners: a node tagged tag:ci that reports api, which the
// policy lets only tag:api provide, gets no right of svc:api (as a
// source: db-1 does not peer with it; as a destination: web-1 neither),
// is in no netmap, is listed to admins as not allowed, and is audited.
func TestServiceOwners(t *testing.T) {
	for _, tt := range []struct{ name, policy string }{
		{"services section", ownersTestPolicy},
		// Migration: without a section, a node provides the services named
		// like its tags: tag:api provides api, tag:ci does not.
		{"tag rule", `{"acls": [
    {"action": "accept", "src": ["svc:api"], "dst": ["tag:db:5432"], "proto": "tcp"},
    {"action": "accept", "src": ["tag:web"], "dst": ["svc:api"], "proto": "tcp"},
  ]}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newOwnersMesh(t, tt.policy)
			ts := m.ts
			for _, st := range []*stream{m.dbSt, m.webStream} {
				nm := st.netmap(t, "api-1 as the only peer", func(nm *wire.Netmap) bool {
					return slices.Equal(peerNames(nm), []string{"api-1"})
				})
				if got := servicesOf(nm, "api-1"); nm.Self.Name == "web-1" && (len(got) != 1 || got[0].Port != 443) {
					t.Errorf("%s sees api-1's services %v, want %v", nm.Self.Name, got, []wire.Service{m.apiSvc})
				}
			}
			nm := m.ciStream.netmap(t, "ci-1's netmap", func(*wire.Netmap) bool { return true })
			if len(nm.Peers) != 0 || len(nm.Rules) != 0 || len(nm.Self.Services) != 0 {
				t.Errorf("ci-1's netmap: peers %v, rules %v, own services %v; want none", peerNames(nm), nm.Rules, nm.Self.Services)
			}
			if got, _ := ts.c.state.Load().compiled.Allows(m.ci.Node.ID, m.db.Node.ID, wire.ProtoTCP, 5432); got {
				t.Error("ci-1 may reach db-1 on tcp/5432 (a right of svc:api)")
			}

			// Admins see the refused instance, marked.
			code, body := ts.do(t, "GET", wire.PathServices, ts.admin, nil)
			var cat []wire.CatalogService
			decodeStrict(t, body, &cat)
			if code != http.StatusOK || len(cat) != 1 || len(cat[0].Instances) != 2 {
				t.Fatalf("services list: %d %+v", code, cat)
			}
			for _, in := range cat[0].Instances {
				if refused := in.Refused != ""; refused != (in.Node == "ci-1") {
					t.Errorf("instance on %s: refused %q", in.Node, in.Refused)
				}
			}
			code, body = ts.do(t, "GET", wire.PathNodes+"/ci-1", ts.admin, nil)
			var d wire.NodeDetail
			decodeStrict(t, body, &d)
			if code != http.StatusOK || len(d.Node.Services) != 1 || d.Node.Services[0].Refused == "" || len(d.Peers) != 0 {
				t.Errorf("ci-1's detail: %d services %+v peers %v; want api refused, no peers", code, d.Node.Services, d.Peers)
			}
			code, body = ts.do(t, "GET", wire.PathNodes, ts.admin, nil)
			var nodes []wire.Node
			decodeStrict(t, body, &nodes)
			if i := slices.IndexFunc(nodes, func(n wire.Node) bool { return n.Name == "ci-1" }); code != http.StatusOK || i < 0 || nodes[i].Services[0].Refused == "" {
				t.Errorf("nodes list: %d %+v", code, nodes)
			}

			// Audited: the genuine instance added, the rogue one refused;
			// its withdrawal removed.
			m.report(t, m.ci)
			want := []string{"api-1 service.add api tcp/443", "ci-1 service.refused api tcp/8443: " + cat[0].Instances[1].Refused, "ci-1 service.remove api tcp/8443"}
			if got := serviceAudit(t, ts); !slices.Equal(got, want) {
				t.Errorf("audit:\n%q\nwant:\n%q", got, want)
			}
		})
	}
}

// serviceAudit returns the service.* audit entries, oldest first, as
// "actor action target detail".
func serviceAudit(t *testing.T, ts *testServer) []string {
	t.Helper()
	code, body := ts.do(t, "GET", wire.PathAudit+"?limit=100", ts.admin, nil)
	var entries []wire.AuditEntry
	decodeStrict(t, body, &entries)
	if code != http.StatusOK {
		t.Fatalf("audit: %d %s", code, body)
	}
	var out []string
	for _, e := range slices.Backward(entries) {
		if len(e.Action) > 8 && e.Action[:8] == "service." {
			out = append(out, e.Actor+" "+e.Action+" "+e.Target+" "+e.Detail)
		}
	}
	return out
}

// TestServiceOwnersPolicyChange: a policy change re-evaluates who
// provides what; acl check lists it with the access that moves.
func TestServiceOwnersPolicyChange(t *testing.T) {
	m := newOwnersMesh(t, ownersTestPolicy)
	ts := m.ts
	next := `{
  "services": {"api": ["tag:api", "tag:ci"]},
  "acls": [
    {"action": "accept", "src": ["svc:api"], "dst": ["tag:db:5432"], "proto": "tcp"},
    {"action": "accept", "src": ["tag:web"], "dst": ["svc:api"], "proto": "tcp"},
  ],
}`
	code, body := ts.doJSON(t, "POST", wire.PathPolicy+"/check", ts.admin, wire.SetPolicyRequest{Text: next})
	var check wire.PolicyCheck
	decodeStrict(t, body, &check)
	if code != http.StatusOK || !check.Valid || len(check.Providers) != 1 || check.Providers[0].Text != "+ svc:api on ci-1" {
		t.Fatalf("check: %d %+v", code, check)
	}
	var changes []string
	for _, ch := range check.Changes {
		changes = append(changes, ch.Text)
	}
	if want := []string{"+ ci-1 → db-1 tcp/5432", "+ web-1 → ci-1 tcp/8443"}; !slices.Equal(changes, want) {
		t.Errorf("check's access changes %q, want %q", changes, want)
	}
	ts.setPolicy(t, next)
	nm := m.webStream.netmap(t, "ci-1 providing api", func(nm *wire.Netmap) bool { return len(servicesOf(nm, "ci-1")) == 1 })
	if got := servicesOf(nm, "ci-1"); got[0].Port != m.rogueSvc.Port {
		t.Errorf("web-1 sees ci-1's services %v", got)
	}
	// And back: ci-1 leaves the netmaps again.
	ts.setPolicy(t, ownersTestPolicy)
	m.webStream.netmap(t, "ci-1 gone", func(nm *wire.Netmap) bool { return slices.Equal(peerNames(nm), []string{"api-1"}) })
	// Both changes are audited, the admin as the actor.
	var got []string
	for _, e := range serviceAudit(t, ts) {
		if _, rest, ok := strings.Cut(e, " service.allowed "); ok {
			got = append(got, "allowed "+rest)
		} else if _, rest, ok := strings.Cut(e, " service.refused api on "); ok {
			got = append(got, "refused api on "+rest)
		}
	}
	if want := []string{"allowed api on ci-1, by policy version 2", "refused api on ci-1, by policy version 3"}; !slices.Equal(got, want) {
		t.Errorf("audit of the policy changes: %q, want %q", got, want)
	}
}

// TestServiceOwnersTests: a candidate policy's tests see the services as
// its owners allow them, not as the active policy does; and a report
// cannot add an instance that a test would see, beyond the owners.
func TestServiceOwnersTests(t *testing.T) {
	m := newOwnersMesh(t, ownersTestPolicy)
	ts := m.ts
	// Every svc:api instance must be reachable from web-1 on its port.
	// With ci-1 an owner, its 8443 is an instance, and rule 2 opens it.
	tests := `"tests": [{"src": "tag:web", "accept": ["svc:api"]}, {"src": "tag:ci", "deny": ["tag:db:5432"]}],`
	withTests := `{"services": {"api": ["tag:api"]}, ` + tests + ` "acls": [
    {"action": "accept", "src": ["svc:api"], "dst": ["tag:db:5432"], "proto": "tcp"},
    {"action": "accept", "src": ["tag:web"], "dst": ["svc:api:443"], "proto": "tcp"},
  ]}`
	ts.setPolicy(t, withTests) // passes: ci-1's report is not an instance
	// The same tests with ci-1 an owner fail: the candidate's owners apply.
	code, body := ts.doJSON(t, "PUT", wire.PathPolicy, ts.admin, wire.SetPolicyRequest{Text: `{"services": {"api": ["tag:api", "tag:ci"]}, ` + tests + ` "acls": [
    {"action": "accept", "src": ["tag:web"], "dst": ["svc:api:443"], "proto": "tcp"},
  ]}`})
	if code != http.StatusBadRequest {
		t.Fatalf("a policy whose tests fail with ci-1 an owner: %d %s", code, body)
	}
	// Reports from ci-1 cannot make the active tests false: it is no
	// instance whatever port it names.
	m.report(t, m.ci, wire.Service{Name: "api", Port: 9999})
	if err := ts.c.state.Load().compiled.RunTests(); err != nil {
		t.Errorf("the active policy's tests after ci-1's report: %v", err)
	}
	if got := testsAudit(t, ts); got != nil {
		t.Errorf("audit after ci-1's report: %q, want no policy.tests-failing", got)
	}
	// api-1, an owner, may move api to a port rule 2 does not open: the
	// report is taken, and the failing test is audited, not silent.
	m.report(t, m.api, wire.Service{Name: "api", Port: 9999})
	want := []string{`api-1 policy.tests-failing 2 policy v2:1:46: test 1 failed: web-1 → api-1 on tcp/9999 is denied, but "svc:api" is in "accept"`}
	if got := testsAudit(t, ts); !slices.Equal(got, want) {
		t.Errorf("audit after api-1's report:\n%q\nwant:\n%q", got, want)
	}
}

// testsAudit returns the policy.tests-failing audit entries as "actor
// action target detail".
func testsAudit(t *testing.T, ts *testServer) []string {
	t.Helper()
	code, body := ts.do(t, "GET", wire.PathAudit+"?limit=100", ts.admin, nil)
	var entries []wire.AuditEntry
	decodeStrict(t, body, &entries)
	if code != http.StatusOK {
		t.Fatalf("audit: %d %s", code, body)
	}
	var out []string
	for _, e := range entries {
		if e.Action == "policy.tests-failing" {
			out = append(out, e.Actor+" "+e.Action+" "+e.Target+" "+e.Detail)
		}
	}
	return out
}

// TestPolicyComment: a comment given with a policy is kept with its version,
// in the history and in the audit log; a long one is refused.
func TestPolicyComment(t *testing.T) {
	ts := startServer(t, time.Hour)
	code, body := ts.doJSON(t, "PUT", wire.PathPolicy, ts.admin, wire.SetPolicyRequest{Text: "{}", Comment: "open nothing yet"})
	if code != http.StatusOK {
		t.Fatalf("set policy: %d %s", code, body)
	}
	code, body = ts.do(t, "GET", wire.PathPolicy+"/history", ts.admin, nil)
	var h []wire.Policy
	decodeStrict(t, body, &h)
	if code != http.StatusOK || len(h) != 1 || h[0].Comment != "open nothing yet" {
		t.Errorf("history: %d %+v", code, h)
	}
	code, body = ts.do(t, "GET", wire.PathAudit, ts.admin, nil)
	var entries []wire.AuditEntry
	decodeStrict(t, body, &entries)
	if code != http.StatusOK || !slices.ContainsFunc(entries, func(e wire.AuditEntry) bool { return e.Action == "policy.set" && e.Detail == "open nothing yet" }) {
		t.Errorf("audit: %d %+v; want policy.set with the comment", code, entries)
	}
	code, body = ts.doJSON(t, "PUT", wire.PathPolicy, ts.admin, wire.SetPolicyRequest{Text: "{}", Comment: strings.Repeat("x", 201)})
	if code != http.StatusBadRequest || !strings.Contains(string(body), "comment longer than 200 bytes") {
		t.Errorf("long comment: %d %s", code, body)
	}
}
