// Package structure guards the shape of the module: which package may
// import which.
package structure

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/wiremesh/wiremesh/"

// forbidden maps a package to module packages it must not depend on, even
// indirectly.
var forbidden = map[string][]string{
	"wire":        {"coordinator", "node", "credential", "client", "cmd/wiremesh"},
	"client":      {"coordinator", "node", "acl", "dns", "gossip", "filter", "ui", "cmd/wiremesh"},
	"credential":  {"coordinator", "node", "cmd/wiremesh"},
	"node":        {"coordinator", "cmd/wiremesh", "test/lab"},
	"coordinator": {"node", "cmd/wiremesh", "test/lab"},
	"acl":         {"coordinator", "node", "cmd/wiremesh"},
	"store":       {"coordinator", "node", "acl", "dns", "gossip", "ui", "cmd/wiremesh", "test/lab"},
	"dns":         {"coordinator", "node", "acl", "gossip", "cmd/wiremesh"},
	"gossip":      {"coordinator", "node", "acl", "dns", "cmd/wiremesh"},
	"ui":          {"coordinator", "node", "acl", "dns", "gossip", "filter", "cmd/wiremesh"},
}

func TestDependencies(t *testing.T) {
	for pkg, bad := range forbidden {
		out, err := exec.Command("go", "list", "-json=Deps", mod+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		var p struct{ Deps []string }
		if err := json.Unmarshal(out, &p); err != nil {
			t.Fatal(err)
		}
		for _, d := range p.Deps {
			for _, b := range bad {
				if d == mod+b || strings.HasPrefix(d, mod+b+"/") {
					t.Errorf("%s depends on %s", pkg, d)
				}
			}
		}
	}
}
