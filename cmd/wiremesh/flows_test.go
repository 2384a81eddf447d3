package main

import (
	"bytes"
	"strings"
	"testing"
)

const flowLines = `{"time":"2026-12-01T07:34:03.961Z","event":"new","src":"100.64.0.1","peer":"web","src_port":53810,"dst":"100.64.0.2","port":8080,"proto":"tcp","rule":0,"policy":1}
{"time":"2026-12-01T07:34:03.965Z","event":"denied","src":"fd77:6d65:7368::1","dst":"fd77:6d65:7368::2","proto":"icmpv6","why":"no rule","policy":1,"suppressed":4}
`

func TestPrintFlows(t *testing.T) {
	t.Setenv("TZ", "UTC")
	var out bytes.Buffer
	if err := printFlows(&out, strings.NewReader(flowLines), false, false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIME") {
		t.Fatalf("table:\n%s", out.String())
	}
	// Columns line up: each header starts where its values start.
	for _, col := range []string{"PEER", "SOURCE", "DESTINATION", "DECISION", "POLICY"} {
		at := strings.Index(lines[0], col)
		for _, l := range lines[1:] {
			if at >= len(l) || l[at] == ' ' || l[at-1] != ' ' {
				t.Errorf("column %s not aligned in %q", col, l)
			}
		}
	}
	for _, s := range []string{"100.64.0.1:53810", "100.64.0.2:8080", "rule 0", "fd77:6d65:7368::2 ", "no rule (+4 not recorded)"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}

	out.Reset()
	if err := printFlows(&out, strings.NewReader(flowLines), true, true); err != nil {
		t.Fatal(err)
	}
	if out.String() != flowLines {
		t.Errorf("--json changed the lines:\n%s", out.String())
	}
	out.Reset()
	if err := printFlows(&out, strings.NewReader(flowLines), false, true); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "\n"); n != 3 || !strings.Contains(out.String(), "rule 0") {
		t.Errorf("--follow output:\n%s", out.String())
	}
	if err := printFlows(&out, strings.NewReader("not json\n"), false, false); err == nil {
		t.Error("a bad line was accepted")
	}
}
