package ui

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies guards the design: the UI reaches the coordinator only
// through the admin API, so of the module's packages it imports client,
// wire and credential alone.
func TestDependencies(t *testing.T) {
	const mod = "github.com/wiremesh/wiremesh/"
	out, err := exec.Command("go", "list", "-json=Deps", mod+"ui").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var p struct{ Deps []string }
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	for _, d := range p.Deps {
		if strings.HasPrefix(d, mod) && d != mod+"client" && d != mod+"wire" && d != mod+"credential" {
			t.Errorf("ui depends on %s", d)
		}
	}
}
