package coordinator

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// TestEveryErrorHasACode parses the coordinator's sources and checks that
// every writeError call passes a code that is a wire.Code* constant or a
// variable holding one (never "" or a converted string), and that no
// other code writes a wire.Error: clients branch on codes, so an error
// without one is a bug.
func TestEveryErrorHasACode(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	calls := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		var inWriteError bool
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			inWriteError = ok && fd.Name.Name == "writeError"
			ast.Inspect(d, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CallExpr:
					if id, ok := n.Fun.(*ast.Ident); ok && id.Name == "writeError" {
						calls++
						if len(n.Args) != 5 || !isCode(n.Args[2]) {
							t.Errorf("%s: writeError without a wire.Code* constant or a code variable", fset.Position(n.Pos()))
						}
					}
				case *ast.CompositeLit:
					if sel, ok := n.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Error" && isIdent(sel.X, "wire") && !inWriteError {
						t.Errorf("%s: a wire.Error written outside writeError", fset.Position(n.Pos()))
					}
				}
				return true
			})
		}
	}
	if calls < 20 {
		t.Fatalf("found %d writeError calls: the test no longer sees them", calls)
	}
}

// isCode reports whether e is wire.CodeX or a plain variable (code,
// ce.code).
func isCode(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name == "code"
	case *ast.SelectorExpr:
		return (isIdent(e.X, "wire") && strings.HasPrefix(e.Sel.Name, "Code")) || e.Sel.Name == "code"
	}
	return false
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// TestErrorCodes: each kind of refusal carries its own code, which is
// what the agent, the CLI and the UI branch on.
func TestErrorCodes(t *testing.T) {
	ts := startServer(t, time.Hour)
	multi := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	once := ts.createJoinKey(t, wire.CreateJoinKeyRequest{})
	revoked := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	if code, body := ts.do(t, "DELETE", wire.PathJoinKeys+"/"+revoked.Key.ID, ts.admin, nil); code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", code, body)
	}
	a := ts.enroll(t, multi.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	ts.enroll(t, once.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "b"})
	gone := ts.enroll(t, multi.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "gone"})
	if code, body := ts.do(t, "POST", wire.PathNodes+"/gone/expire", ts.admin, nil); code != http.StatusOK {
		t.Fatalf("expire: %d %s", code, body)
	}
	pub := a.Node.PublicKey
	old, err := credential.NetmapProof(privateKeyOf(t, pub), ts.c.PublicProofKey(), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	enroll := func() wire.EnrollRequest {
		return wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: newPublicKey(t)}
	}
	for _, tc := range []struct {
		name                string
		method, path, token string
		body                any
		status              int
		code                wire.ErrorCode
	}{
		{"revoked join key", "POST", wire.PathEnroll, mustParseJoinKey(t, revoked.JoinKey).String(), enroll(), 401, wire.CodeRevoked},
		{"used one-time join key", "POST", wire.PathEnroll, mustParseJoinKey(t, once.JoinKey).String(), enroll(), 401, wire.CodeKeyUsed},
		{"unknown join key", "POST", wire.PathEnroll, credential.NewSecret("jk").String(), enroll(), 401, wire.CodeUnauthorized},
		{"name taken", "POST", wire.PathEnroll, mustParseJoinKey(t, multi.JoinKey).String(), wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: newPublicKey(t), Name: "a"}, 409, wire.CodeConflict},
		{"bad public key", "POST", wire.PathEnroll, mustParseJoinKey(t, multi.JoinKey).String(), wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: "x"}, 400, wire.CodeBadRequest},
		{"other public key", "POST", wire.PathNetmap, a.Credential, wire.MapRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: newPublicKey(t)}, 403, wire.CodeKeyMismatch},
		{"no proof", "POST", wire.PathNetmap, a.Credential, wire.MapRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: pub}, 403, wire.CodeProofInvalid},
		{"proof an hour old", "POST", wire.PathNetmap, a.Credential, wire.MapRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: pub, Proof: old}, 403, wire.CodeProofTime},
		{"expired node", "POST", wire.PathNetmap, gone.Credential, wire.MapRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: gone.Node.PublicKey}, 401, wire.CodeExpired},
		{"node credential on the admin API", "GET", wire.PathNodes, a.Credential, nil, 403, wire.CodeForbidden},
		{"no admin token", "GET", wire.PathNodes, "", nil, 401, wire.CodeUnauthorized},
		{"no such node", "GET", wire.PathNodes + "/nope", ts.admin, nil, 404, wire.CodeNotFound},
		{"no such endpoint", "GET", "/v1/nope", ts.admin, nil, 404, wire.CodeNotFound},
		{"policy with errors", "PUT", wire.PathPolicy, ts.admin, wire.SetPolicyRequest{Text: `{"nope": 1}`}, 400, wire.CodePolicyInvalid},
		{"body too large", "PUT", wire.PathPolicy, ts.admin, wire.SetPolicyRequest{Text: strings.Repeat("x", maxBody)}, 413, wire.CodeTooLarge},
	} {
		var code int
		var body []byte
		if tc.body == nil {
			code, body = ts.do(t, tc.method, tc.path, tc.token, nil)
		} else {
			code, body = ts.doJSON(t, tc.method, tc.path, tc.token, tc.body)
		}
		if code != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.status)
			continue
		}
		if e := errorOf(t, body); e.Code != tc.code {
			t.Errorf("%s: code %q (%s), want %q", tc.name, e.Code, e.Error, tc.code)
		}
	}
}

// TestEndedRequestIsUnavailable: a store call that fails because the
// request's context ended (the coordinator shutting down under an agent's
// netmap request, as in a CI run of TestPinRoll) is a 503 the agent
// retries, not a 400 it takes for a refusal and exits on.
func TestEndedRequestIsUnavailable(t *testing.T) {
	ts := startServer(t, time.Hour)
	for _, err := range []error{
		fmt.Errorf("read endpoints: %w", context.Canceled),
		fmt.Errorf("read credential: %w", context.DeadlineExceeded),
	} {
		rec := httptest.NewRecorder()
		ts.c.writeStoreError(rec, err)
		if rec.Code != http.StatusServiceUnavailable {
			t.Errorf("%v: status %d, want 503", err, rec.Code)
		}
		if e := errorOf(t, rec.Body.Bytes()); e.Code != wire.CodeUnavailable {
			t.Errorf("%v: code %q, want %q", err, e.Code, wire.CodeUnavailable)
		}
	}
}
