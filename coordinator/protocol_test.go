package coordinator

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// withProtocol gives an EnrollRequest or MapRequest without a
// ProtocolVersion this one, as an agent sends it.
func withProtocol(in any) any {
	switch r := in.(type) {
	case wire.EnrollRequest:
		if r.ProtocolVersion == 0 {
			r.ProtocolVersion = wire.ProtocolVersion
		}
		return r
	case wire.MapRequest:
		if r.ProtocolVersion == 0 {
			r.ProtocolVersion = wire.ProtocolVersion
		}
		return r
	}
	return in
}

// TestProtocolWindow: an agent below wire.MinProtocolVersion or above
// wire.ProtocolVersion is refused at enrollment and at its netmap stream,
// with the code and a message naming the versions to run; the edges of
// the window are accepted.
func TestProtocolWindow(t *testing.T) {
	ts := startServer(t, time.Hour, func(c *Config) { c.Version = "v9.8.7" })
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	jkSecret := mustParseJoinKey(t, jk.JoinKey).String()
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	for _, tc := range []struct {
		name    string
		version int
		code    wire.ErrorCode
		want    string
	}{
		{"none", -1, wire.CodeProtocolTooOld, "upgrade the agent"},
		{"one below the window", wire.MinProtocolVersion - 1, wire.CodeProtocolTooOld, "upgrade the agent"},
		{"one above", wire.ProtocolVersion + 1, wire.CodeProtocolTooNew, "upgrade the coordinator first"},
	} {
		v := tc.version
		if v < 0 {
			v = 0 // sent as 0 explicitly below, past withProtocol
		}
		check := func(what string, code int, body []byte) {
			t.Helper()
			if code != http.StatusBadRequest {
				t.Fatalf("%s, %s: %d %s, want 400", tc.name, what, code, body)
			}
			e := errorOf(t, body)
			if e.Code != tc.code || !strings.Contains(e.Error, tc.want) || !strings.Contains(e.Error, "wiremesh v9.8.7") {
				t.Errorf("%s, %s: %q %q, want %q naming %q and the coordinator's version", tc.name, what, e.Code, e.Error, tc.code, tc.want)
			}
			var d struct{ Detail wire.ProtocolRefusal }
			json.Unmarshal(body, &d)
			if want := (wire.ProtocolRefusal{Agent: v, Min: wire.MinProtocolVersion, Max: wire.ProtocolVersion, CoordinatorVersion: "v9.8.7"}); d.Detail != want {
				t.Errorf("%s, %s: detail %+v, want %+v", tc.name, what, d.Detail, want)
			}
		}
		enroll := `{"protocol_version": ` + itoa(v) + `, "public_key": "` + newPublicKey(t) + `"}`
		code, body := ts.do(t, "POST", wire.PathEnroll, jkSecret, strings.NewReader(enroll))
		check("enroll", code, body)
		netmap := `{"protocol_version": ` + itoa(v) + `, "public_key": "` + a.Node.PublicKey + `", "proof": "` + netmapProof(t, ts.c, a.Node.PublicKey) + `"}`
		code, body = ts.do(t, "POST", wire.PathNetmap, a.Credential, strings.NewReader(netmap))
		check("netmap", code, body)
	}
	// The edges of the window get through.
	for _, v := range []int{wire.MinProtocolVersion, wire.ProtocolVersion} {
		n := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{ProtocolVersion: v, PublicKey: newPublicKey(t)})
		ts.openStream(t, n.Credential, wire.MapRequest{ProtocolVersion: v, PublicKey: n.Node.PublicKey}).cancel()
	}
	if ts.c.isOnline(a.Node) {
		t.Error("a refused netmap request left the node online")
	}
}

func itoa(v int) string { b, _ := json.Marshal(v); return string(b) }
