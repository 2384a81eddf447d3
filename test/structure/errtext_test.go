package structure

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// errTextAllowed names the functions (DIR/FILE:FUNC) that may look at an
// error's text, and why. None of them reads an answer of the coordinator.
var errTextAllowed = map[string]string{
	// wireguard-go's device hands a bind failure back as text.
	"node/engine.go:isAddrInUse": "kernel errno passed on as text by wgctrl",
}

// TestNoErrorTextMatching fails if the coordinator's clients (the agent,
// the CLI, the UI and the client package) branch on an error's message:
// strings.Contains(err.Error(), …) and the like, or err.Error() == ….
// Messages are for people and change; programs branch on wire codes
// (client.CodeOf) and sentinel errors.
func TestNoErrorTextMatching(t *testing.T) {
	fset := token.NewFileSet()
	files := 0
	for _, dir := range []string{"node", "cmd/wiremesh", "ui", "client"} {
		paths, err := filepath.Glob(filepath.Join("..", "..", dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			if strings.HasSuffix(p, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, p, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files++
			for _, d := range f.Decls {
				fn := ""
				if fd, ok := d.(*ast.FuncDecl); ok {
					fn = fd.Name.Name
				}
				if _, ok := errTextAllowed[dir+"/"+filepath.Base(p)+":"+fn]; ok {
					continue
				}
				ast.Inspect(d, func(n ast.Node) bool {
					if pos, ok := matchesErrorText(n); ok {
						t.Errorf("%s: branches on an error's text; branch on its wire code (client.CodeOf) or a sentinel instead", fset.Position(pos))
					}
					return true
				})
			}
		}
	}
	if files < 30 {
		t.Fatalf("read %d files: the test no longer finds the sources", files)
	}
}

// matchesErrorText reports whether n compares an Error() result:
// strings.Contains/HasPrefix/HasSuffix/EqualFold/Index(x.Error(), …) or
// x.Error() ==/!= ….
func matchesErrorText(n ast.Node) (token.Pos, bool) {
	switch n := n.(type) {
	case *ast.CallExpr:
		sel, ok := n.Fun.(*ast.SelectorExpr)
		if !ok || !isIdent(sel.X, "strings") {
			return 0, false
		}
		switch sel.Sel.Name {
		case "Contains", "HasPrefix", "HasSuffix", "EqualFold", "Index", "ContainsAny":
			for _, a := range n.Args {
				if isErrorCall(a) {
					return n.Pos(), true
				}
			}
		}
	case *ast.BinaryExpr:
		if (n.Op == token.EQL || n.Op == token.NEQ) && (isErrorCall(n.X) || isErrorCall(n.Y)) {
			return n.Pos(), true
		}
	case *ast.SwitchStmt:
		if n.Tag != nil && isErrorCall(n.Tag) {
			return n.Pos(), true
		}
	}
	return 0, false
}

// isErrorCall reports whether e is a call x.Error().
func isErrorCall(e ast.Expr) bool {
	c, ok := e.(*ast.CallExpr)
	if !ok || len(c.Args) != 0 {
		return false
	}
	sel, ok := c.Fun.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "Error"
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}
