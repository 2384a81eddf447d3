package coordinator

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// connectivityProof proves report r for the node with public key pub,
// made now (later than every report proof made before in this process).
func connectivityProof(t testing.TB, c *Coordinator, pub string, r wire.ConnectivityReport) string {
	t.Helper()
	content, err := wire.ConnectivityContent(r)
	if err != nil {
		t.Fatal(err)
	}
	p, err := credential.ConnectivityProof(privateKeyOf(t, pub), c.PublicProofKey(), time.Unix(0, nextReportTime()), content)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// An agent's connectivity report puts its candidates into its peers'
// netmaps and its NAT type and paths into the admin views; a report whose
// proof covers other content, or replays an older one, changes nothing.
func TestConnectivityReport(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	b := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "b"})
	ts.setPolicy(t, `{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}`)
	sa := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey})
	sa.netmap(t, "b as a peer", func(nm *wire.Netmap) bool { return len(nm.Peers) == 1 })

	r := wire.ConnectivityReport{
		PublicKey: b.Node.PublicKey,
		Endpoints: []string{"192.0.2.34:51820", "203.0.113.2:51820"},
		Connectivity: wire.Connectivity{NAT: wire.NATEasy, HomeRelay: "eu-1", Paths: []wire.PeerPath{
			{Peer: "a", Kind: wire.PathKindRelay, Relay: "eu-1", RTT: wire.Duration(3 * time.Millisecond), Why: "no answer from 2 candidates"},
		}},
	}
	r.ContentProof = connectivityProof(t, ts.c, b.Node.PublicKey, r)
	if code, body := ts.doJSON(t, "PUT", wire.PathConnectivity, b.Credential, r); code != http.StatusNoContent {
		t.Fatalf("report: %d %s", code, body)
	}
	nm := sa.netmap(t, "b's candidates", func(nm *wire.Netmap) bool {
		return len(nm.Peers) == 1 && slices.Equal(nm.Peers[0].Endpoints, r.Endpoints)
	})
	if nm.Peers[0].Name != "b" {
		t.Fatalf("a's peer is %q", nm.Peers[0].Name)
	}
	got := adminNodeOf(t, ts, "b")
	if got.Connectivity == nil || got.Connectivity.NAT != wire.NATEasy || got.Connectivity.HomeRelay != "eu-1" ||
		len(got.Connectivity.Paths) != 1 || got.Connectivity.Paths[0].Why != "no answer from 2 candidates" || got.Connectivity.Reported.IsZero() {
		t.Fatalf("b's connectivity in the admin view: %+v", got.Connectivity)
	}

	// A proof for other content, and a replay, are refused and change
	// nothing.
	forged := r
	forged.Connectivity.NAT = wire.NATHard
	if code, body := ts.doJSON(t, "PUT", wire.PathConnectivity, b.Credential, forged); code != http.StatusForbidden || errorOf(t, body).Code != wire.CodeProofInvalid {
		t.Errorf("report with another content's proof: %d %s, want 403 %s", code, body, wire.CodeProofInvalid)
	}
	if code, body := ts.doJSON(t, "PUT", wire.PathConnectivity, b.Credential, r); code != http.StatusForbidden || errorOf(t, body).Code != wire.CodeProofTime {
		t.Errorf("replayed report: %d %s, want 403 %s", code, body, wire.CodeProofTime)
	}
	// Another node's credential cannot report for b.
	r.ContentProof = connectivityProof(t, ts.c, b.Node.PublicKey, r)
	if code, body := ts.doJSON(t, "PUT", wire.PathConnectivity, a.Credential, r); code != http.StatusForbidden || errorOf(t, body).Code != wire.CodeKeyMismatch {
		t.Errorf("report for b with a's credential: %d %s, want 403 %s", code, body, wire.CodeKeyMismatch)
	}
	if got := adminNodeOf(t, ts, "b"); got.Connectivity.NAT != wire.NATEasy {
		t.Errorf("refused reports changed b's NAT type to %q", got.Connectivity.NAT)
	}
}

// Bad reports get a 400 naming the field.
func TestConnectivityReportRefused(t *testing.T) {
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{})
	b := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "b"})
	for _, tc := range []struct {
		name string
		r    wire.ConnectivityReport
		want string
	}{
		{"nat", wire.ConnectivityReport{Connectivity: wire.Connectivity{NAT: "cone"}}, `nat: "cone" is not one of`},
		{"endpoint", wire.ConnectivityReport{Endpoints: []string{"example.net:1"}, Connectivity: wire.Connectivity{NAT: wire.NATNone}}, `endpoints: bad endpoint "example.net:1"`},
		{"kind", wire.ConnectivityReport{Connectivity: wire.Connectivity{NAT: wire.NATNone, Paths: []wire.PeerPath{{Peer: "a", Kind: "carrier pigeon"}}}}, `paths[0]: kind: "carrier pigeon"`},
		{"addr", wire.ConnectivityReport{Connectivity: wire.Connectivity{NAT: wire.NATNone, Paths: []wire.PeerPath{{Peer: "a", Kind: wire.PathKindDirect, Addr: "nowhere"}}}}, `paths[0]: addr:`},
		{"peer", wire.ConnectivityReport{Connectivity: wire.Connectivity{NAT: wire.NATNone, Paths: []wire.PeerPath{{Peer: "A B", Kind: wire.PathKindNone}}}}, `paths[0]: peer:`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.r.PublicKey = b.Node.PublicKey
			tc.r.ContentProof = connectivityProof(t, ts.c, b.Node.PublicKey, tc.r)
			code, body := ts.doJSON(t, "PUT", wire.PathConnectivity, b.Credential, tc.r)
			if e := errorOf(t, body); code != http.StatusBadRequest || !strings.Contains(e.Error, tc.want) {
				t.Errorf("got %d %q, want 400 containing %q", code, e.Error, tc.want)
			}
		})
	}
}

func adminNodeOf(t *testing.T, ts *testServer, name string) wire.Node {
	t.Helper()
	code, body := ts.do(t, "GET", wire.PathNodes+"/"+name, ts.admin, nil)
	if code != http.StatusOK {
		t.Fatalf("GET node %s: %d %s", name, code, body)
	}
	var d wire.NodeDetail
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatal(err)
	}
	return d.Node
}
