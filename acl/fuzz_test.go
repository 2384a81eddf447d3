package acl

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary text to Parse. It must not panic; its errors
// must carry a position inside the text (or none, for whole-file errors),
// in text order; a policy it accepts must compile, run its tests and diff
// without panicking, and parse again to the same thing.
func FuzzParse(f *testing.F) {
	f.Add([]byte(examplePolicy))
	f.Add([]byte(testsPolicy))
	f.Add([]byte(diffOld))
	f.Add([]byte(diffNew))
	f.Add([]byte(servicesPolicy))
	f.Add([]byte(servicesTestsPolicy))
	files, _ := filepath.Glob("testdata/compile/*.hujson")
	for _, file := range files {
		if text, err := os.ReadFile(file); err == nil {
			f.Add(text)
		}
	}
	nodes := smallInventory()
	empty := Compile(nil, nodes)
	f.Fuzz(func(t *testing.T, text []byte) {
		p, err := Parse("fuzz.hujson", text)
		if err != nil {
			checkErrors(t, text, err)
			return
		}
		if p == nil {
			t.Fatal("Parse returned neither a policy nor an error")
		}
		c := Compile(p, nodes)
		_ = c.RunTests()
		for _, n := range nodes {
			peers := map[int64]bool{}
			c.Peers(n.ID, func(i int) {
				if nodes[i].ID == n.ID {
					t.Errorf("%s is its own peer", n.Name)
				}
				peers[nodes[i].ID] = true
			})
			for _, m := range nodes {
				if c.IsPeer(n.ID, m.ID) != peers[m.ID] || c.IsPeer(m.ID, n.ID) != peers[m.ID] {
					t.Errorf("IsPeer(%s, %s) = %v, IsPeer(%s, %s) = %v; Peers(%s) has %s: %v", n.Name, m.Name, c.IsPeer(n.ID, m.ID), m.Name, n.Name, c.IsPeer(m.ID, n.ID), n.Name, m.Name, peers[m.ID])
				}
			}
			// A rule has sources, and names as sources only nodes its
			// netmap holds: the node and its peers.
			for _, r := range c.Rules(n.ID) {
				if len(r.Srcs) == 0 && len(r.SrcPeers) == 0 {
					t.Errorf("%s has a rule with no sources", n.Name)
				}
				for _, id := range r.SrcPeers {
					if id != n.ID && !peers[id] {
						t.Errorf("%s has a rule from node %d, which is not its peer", n.Name, id)
					}
				}
			}
		}
		for _, n := range nodes {
			if !c.SamePeers(c, n.ID) {
				t.Errorf("SamePeers(%s) of a compilation with itself is false", n.Name)
			}
			if c.SamePeers(empty, n.ID) != (len(peersOf(c, n.ID)) == 0) {
				t.Errorf("SamePeers(%s) with the empty compilation: %v, but it has %d peers", n.Name, c.SamePeers(empty, n.ID), len(peersOf(c, n.ID)))
			}
		}
		_ = Diff(empty, c)
		_ = Diff(c, empty)
		again, err := Parse("fuzz.hujson", text)
		if err != nil || describe(again) != describe(p) {
			t.Fatalf("parsing the same text again gave another result: %v", err)
		}
	})
}

func checkErrors(t *testing.T, text []byte, err error) {
	t.Helper()
	var list ErrorList
	if !errors.As(err, &list) || len(list) == 0 {
		t.Fatalf("error %v (%T) is not a non-empty ErrorList", err, err)
	}
	lines := bytes.Split(text, []byte("\n"))
	var prev Pos
	for _, e := range list {
		if e.File != "fuzz.hujson" || e.Msg == "" {
			t.Errorf("error %q: file %q, message %q", e, e.File, e.Msg)
		}
		switch {
		case e.Pos.Line == 0:
			// A whole-file error stands alone.
			if e.Pos.Col != 0 || len(list) != 1 {
				t.Errorf("error %q: no line, column %d, among %d errors", e, e.Pos.Col, len(list))
			}
		case e.Pos.Line > len(lines):
			t.Errorf("error %q: line %d, but the text has %d lines", e, e.Pos.Line, len(lines))
		case e.Pos.Col < 1 || e.Pos.Col > len(lines[e.Pos.Line-1])+1:
			t.Errorf("error %q: column %d, but line %d is %d bytes", e, e.Pos.Col, e.Pos.Line, len(lines[e.Pos.Line-1]))
		}
		if e.Pos.Line < prev.Line || e.Pos.Line == prev.Line && e.Pos.Col < prev.Col {
			t.Errorf("errors out of order: %q after %d:%d", e, prev.Line, prev.Col)
		}
		prev = e.Pos
	}
}

func peersOf(c *Compiled, id int64) []int {
	var out []int
	c.Peers(id, func(i int) { out = append(out, i) })
	return out
}
