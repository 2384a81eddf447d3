package coordinator

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// TestServicesCatalog: reported services reach peers' netmaps only where
// the policy lets them reach the service; svc: selectors follow the
// catalog; health alone changes no netmap but shows in the admin listings.
func TestServicesCatalog(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	providers := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Tags: []string{"tag:web", "tag:db"}})
	b := ts.enroll(t, providers.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "b"})
	ts.setPolicy(t, `{"acls": [{"action": "accept", "src": ["*"], "dst": ["svc:web"], "proto": "tcp"}]}`)
	sa := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey})
	first := sa.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })
	if len(first.Peers) != 0 {
		t.Fatalf("before b runs web, a's peers are %v", peerNames(first))
	}

	report := func(cred, key string, svcs ...wire.Service) (int, []byte) {
		return ts.doJSON(t, "PUT", wire.PathServicesReport, cred, wire.ServicesReport{PublicKey: key, Services: svcs, ContentProof: servicesProof(t, ts.c, key, svcs)})
	}
	web := wire.Service{Name: "web", Port: 8080, Tags: []string{"v2"}, Health: "passing",
		Checks: []wire.CheckStatus{{ID: "web:1", Status: "passing", Output: "HTTP 200"}}}
	db := wire.Service{Name: "db", Port: 5432, Proto: "tcp", Health: "critical"}
	if code, body := report(b.Credential, b.Node.PublicKey, web, db); code != http.StatusNoContent {
		t.Fatalf("report: %d %s", code, body)
	}
	nm := sa.netmap(t, "b running web", func(nm *wire.Netmap) bool { return len(nm.Peers) == 1 })
	want := []wire.Service{{Name: "web", Port: 8080, Tags: []string{"v2"}}} // db is not reachable; no health in netmaps
	if d := cmp.Diff(want, nm.Peers[0].Services); d != "" {
		t.Errorf("a's view of b's services (-want +got):\n%s", d)
	}
	if len(nm.Rules) != 0 {
		t.Errorf("a runs nothing, yet has inbound rules %v", nm.Rules)
	}

	// Health alone does not bump the version.
	ver, _ := ts.c.store.Version(context.Background())
	web.Health, web.Checks[0].Status = "critical", "critical"
	if code, body := report(b.Credential, b.Node.PublicKey, web, db); code != http.StatusNoContent {
		t.Fatalf("report: %d %s", code, body)
	}
	if v, _ := ts.c.store.Version(context.Background()); v != ver {
		t.Errorf("a health report changed the state version %d → %d", ver, v)
	}
	code, body := ts.do(t, "GET", wire.PathServices, ts.admin, nil)
	if code != http.StatusOK {
		t.Fatalf("services list: %d %s", code, body)
	}
	var cat []wire.CatalogService
	decodeStrict(t, body, &cat)
	if len(cat) != 2 || cat[0].Name != "db" || cat[1].Name != "web" || cat[1].Instances[0].Node != "b" ||
		cat[1].Instances[0].Health != "critical" || cat[1].Instances[0].Checks[0].Output != "HTTP 200" || cat[1].Instances[0].Online {
		t.Errorf("services list: %+v", cat)
	}
	code, body = ts.do(t, "GET", wire.PathNodes, ts.admin, nil)
	var nodes []wire.Node
	decodeStrict(t, body, &nodes)
	if code != http.StatusOK || len(nodes) != 2 || len(nodes[1].Services) != 2 || nodes[1].Services[1].Health != "critical" {
		t.Errorf("nodes list: %d %+v", code, nodes)
	}

	// Deregistering web removes b from a's peers: svc:web matches nothing.
	if code, body := report(b.Credential, b.Node.PublicKey, db); code != http.StatusNoContent {
		t.Fatalf("report: %d %s", code, body)
	}
	sa.netmap(t, "b without web", func(nm *wire.Netmap) bool { return len(nm.Peers) == 0 })
}

func TestServicesReportRefusals(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	many := make([]wire.Service, 65) // one over the limit
	for i := range many {
		many[i] = wire.Service{Name: fmt.Sprintf("s%d", i), Port: 1}
	}
	// rep is a report of svcs with its proof; reports are made in the order
	// they are sent, so that each proof's time is later than the last.
	rep := func(svcs ...wire.Service) wire.ServicesReport {
		return wire.ServicesReport{PublicKey: a.Node.PublicKey, ContentProof: servicesProof(t, ts.c, a.Node.PublicKey, svcs), Services: svcs}
	}
	var refused refusals
	for _, tt := range []struct {
		name string
		cred string
		body any
		code int
		msg  string
	}{
		{"no credential", "", wire.ServicesReport{PublicKey: a.Node.PublicKey}, 401, "node credential required"},
		{"admin token", ts.admin, wire.ServicesReport{PublicKey: a.Node.PublicKey}, 401, ""},
		{"other key", a.Credential, wire.ServicesReport{PublicKey: newPublicKey(t)}, 403, "public key does not match"},
		{"no proof", a.Credential, wire.ServicesReport{PublicKey: a.Node.PublicKey}, 403, "proof of the node's private key missing or wrong"},
		{"a netmap proof", a.Credential, wire.ServicesReport{PublicKey: a.Node.PublicKey, ContentProof: netmapProof(t, ts.c, a.Node.PublicKey)}, 403, "proof of the node's private key missing or wrong"},
		{"bad name", a.Credential, rep(wire.Service{Name: "Web", Port: 1}), 400, `service 1: bad name "Web"`},
		{"port 0", a.Credential, rep(wire.Service{Name: "web"}), 400, `service "web": port 0`},
		{"bad proto", a.Credential, rep(wire.Service{Name: "web", Port: 1, Proto: "sctp"}), 400, `bad protocol "sctp"`},
		{"twice", a.Credential, rep(wire.Service{Name: "web", Port: 1}, wire.Service{Name: "web", Port: 2}), 400, "listed twice"},
		{"bad tag", a.Credential, rep(wire.Service{Name: "web", Port: 1, Tags: []string{"a b"}}), 400, `bad tag "a b"`},
		{"bad health", a.Credential, rep(wire.Service{Name: "web", Port: 1, Health: "ok"}), 400, `bad health "ok"`},
		{"bad check", a.Credential, rep(wire.Service{Name: "web", Port: 1, Checks: []wire.CheckStatus{{ID: "x"}}}), 400, "check 1"},
		{"too many", a.Credential, rep(many...), 400, "the limit is 64"},
		{"malformed", a.Credential, `{"public_key": x}`, 400, "malformed JSON at byte 16"},
	} {
		var code int
		var body []byte
		if s, ok := tt.body.(string); ok {
			code, body = ts.do(t, "PUT", wire.PathServicesReport, tt.cred, strings.NewReader(s))
		} else {
			code, body = ts.doJSON(t, "PUT", wire.PathServicesReport, tt.cred, tt.body)
		}
		if !refused.add(code == tt.code && strings.Contains(errorOf(t, body).Error, tt.msg)) {
			t.Errorf("%s: %d %s, want %d with %q", tt.name, code, body, tt.code, tt.msg)
		}
	}
	refused.report(t, "services report: no credential, the admin token, a node's credential with another node's key, without a proof of its private key or with a netmap proof, 9 kinds of bad report",
		"401 / 403 (no impersonation, no proof) / 400 and the error wanted")
	// Nothing was stored.
	nodes, _, _ := ts.c.store.Nodes(context.Background())
	if len(nodes[0].Services) != 0 {
		t.Errorf("refused reports stored services %v", nodes[0].Services)
	}
}

// TestGossipKeys: netmaps carry the keyring; rotate makes a new primary
// and keeps the old key; retire drops it.
func TestGossipKeys(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	s := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey})
	nm := s.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })
	if nm.Gossip == nil || nm.Gossip.Port != wire.GossipPort || len(nm.Gossip.Keys) != 1 || len(nm.Gossip.Keys[0]) != 44 {
		t.Fatalf("gossip settings %+v", nm.Gossip)
	}
	old := nm.Gossip.Keys[0]

	if code, _ := ts.do(t, "POST", wire.PathGossipRotate, "", nil); code != http.StatusUnauthorized {
		t.Errorf("rotate without a token: %d", code)
	}
	code, body := ts.do(t, "POST", wire.PathGossipRotate, ts.admin, nil)
	var info wire.GossipKeys
	decodeStrict(t, body, &info)
	if code != http.StatusOK || info.Count != 2 || info.PrimaryCreated.IsZero() {
		t.Fatalf("rotate: %d %s", code, body)
	}
	nm = s.netmap(t, "two keys", func(nm *wire.Netmap) bool { return len(nm.Gossip.Keys) == 2 })
	if nm.Gossip.Keys[1] != old || nm.Gossip.Keys[0] == old {
		t.Errorf("after rotate: keys %v, want a new primary before %s", nm.Gossip.Keys, old)
	}
	primary := nm.Gossip.Keys[0]
	code, body = ts.do(t, "POST", wire.PathGossipRetire, ts.admin, nil)
	if code != http.StatusOK {
		t.Fatalf("retire: %d %s", code, body)
	}
	nm = s.netmap(t, "one key", func(nm *wire.Netmap) bool { return len(nm.Gossip.Keys) == 1 })
	if !slices.Equal(nm.Gossip.Keys, []string{primary}) {
		t.Errorf("after retire: keys %v, want [%s]", nm.Gossip.Keys, primary)
	}
}

// FuzzAdminBodies sends any body to the admin endpoints that take one: the
// answer is never a 5xx, and an error always has the API's error body.
func FuzzAdminBodies(f *testing.F) {
	f.Add(`{"reusable": true, "tags": ["tag:web"]}`)
	ts := startServer(f, time.Hour)
	jk := ts.createJoinKey(f, wire.CreateJoinKeyRequest{Reusable: true})
	ts.enroll(f, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(f), Name: "a"})
	h := ts.c.Handler()
	endpoints := []struct{ method, path string }{
		{"POST", wire.PathJoinKeys}, {"PUT", wire.PathPolicy}, {"POST", wire.PathPolicy + "/check"},
		{"POST", wire.PathPolicy + "/rollback"}, {"PUT", wire.PathNodes + "/a/tags"}, {"POST", wire.PathAdminTokens},
		{"POST", wire.PathNodes + "/a/expire"},
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, e := range endpoints {
			checkAnswer(t, h, e.method, e.path, ts.admin, body)
		}
	})
}

// TestServicesReportReplay: a services report's proof covers its content
// and its time: a replayed report, or a proof with other services, is
// refused (403) and changes nothing; the agent's successive reports, each
// with a later time, pass (204).
func TestServicesReportReplay(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	pub := a.Node.PublicKey
	web := []wire.Service{{Name: "web", Port: 8080, Health: "passing"}}
	db := []wire.Service{{Name: "db", Port: 5432, Health: "passing"}}
	put := func(what string, r wire.ServicesReport, wantCode int, wantErr string) {
		t.Helper()
		code, body := ts.doJSON(t, "PUT", wire.PathServicesReport, a.Credential, r)
		if code != wantCode || (wantErr != "" && !strings.Contains(errorOf(t, body).Error, wantErr)) {
			t.Errorf("%s: %d %s, want %d %q", what, code, body, wantCode, wantErr)
		}
	}
	stored := func() []string {
		var names []string
		for _, sv := range mustNodes(t, ts.c.Store())[0].Services {
			names = append(names, sv.Name)
		}
		return names
	}
	first := wire.ServicesReport{PublicKey: pub, Services: web, ContentProof: servicesProof(t, ts.c, pub, web)}
	early := servicesProof(t, ts.c, pub, db) // made before the next, sent after it
	put("the agent's first report", first, 204, "")
	put("the same report again", first, 403, "a replayed report")
	put("the first report's proof with other services", wire.ServicesReport{PublicKey: pub, Services: db, ContentProof: first.ContentProof}, 403, "proof of the node's private key missing or wrong")
	put("a fresh proof for web with db", wire.ServicesReport{PublicKey: pub, Services: db, ContentProof: servicesProof(t, ts.c, pub, web)}, 403, "proof of the node's private key missing or wrong")
	legacy, err := credential.LegacyServicesProof(privateKeyOf(t, pub), ts.c.PublicProofKey(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	put("a protocol 3 proof (no content)", wire.ServicesReport{PublicKey: pub, Services: db, Proof: legacy}, 403, "proof of the node's private key missing or wrong")
	if got := stored(); !slices.Equal(got, []string{"web"}) {
		t.Fatalf("after refused reports the node runs %v, want [web]", got)
	}
	put("the agent's second report", wire.ServicesReport{PublicKey: pub, Services: db, ContentProof: servicesProof(t, ts.c, pub, db)}, 204, "")
	put("a proof made before the second report, sent after it", wire.ServicesReport{PublicKey: pub, Services: db, ContentProof: early}, 403, "a replayed report")
	put("the agent's third report", wire.ServicesReport{PublicKey: pub, Services: append(web, db...), ContentProof: servicesProof(t, ts.c, pub, append(web, db...))}, 204, "")
	if got := stored(); !slices.Equal(got, []string{"web", "db"}) && !slices.Equal(got, []string{"db", "web"}) {
		t.Errorf("after the third report the node runs %v, want web and db", got)
	}
}
