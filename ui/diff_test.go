package ui

import (
	"strings"
	"testing"
)

// render writes a diff as "OP TEXT" lines with line numbers, for tests.
func renderDiff(d []diffLine) string {
	var b strings.Builder
	for _, l := range d {
		b.WriteByte(l.Op)
		b.WriteString(" " + l.Text + "\n")
	}
	return b.String()
}

func TestDiffLines(t *testing.T) {
	for _, tt := range []struct {
		name, a, b, want string
	}{
		{"same", "a\nb\n", "a\nb\n", "  a\n  b\n"},
		{"empty to text", "", "a\nb", "+ a\n+ b\n"},
		{"text to empty", "a\n", "", "- a\n"},
		{"both empty", "", "", ""},
		{"add in middle", "a\nc\n", "a\nb\nc\n", "  a\n+ b\n  c\n"},
		{"remove in middle", "a\nb\nc\n", "a\nc\n", "  a\n- b\n  c\n"},
		{"change", "a\nb\nc\n", "a\nB\nc\n", "  a\n- b\n+ B\n  c\n"},
		{"move", "x\na\nb\n", "a\nb\nx\n", "- x\n  a\n  b\n+ x\n"},
		{"lcs", "a\nb\nc\nd\ne\n", "b\nx\nd\ny\n", "- a\n  b\n- c\n+ x\n  d\n- e\n+ y\n"},
		{"repeated lines", "a\na\nb\n", "a\nb\nb\n", "  a\n- a\n+ b\n  b\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := diffLines(splitLines(tt.a), splitLines(tt.b))
			if got := renderDiff(d); got != tt.want {
				t.Errorf("diff\n%s\nwant\n%s", got, tt.want)
			}
			checkDiff(t, d, splitLines(tt.a), splitLines(tt.b))
		})
	}
}

// checkDiff checks that d turns a into b and that its line numbers count
// the lines of each side.
func checkDiff(t *testing.T, d []diffLine, a, b []string) {
	t.Helper()
	var olds, news []string
	for _, l := range d {
		if l.Op != opAdd {
			olds = append(olds, l.Text)
			if l.Old != len(olds) {
				t.Fatalf("old line number %d, want %d", l.Old, len(olds))
			}
		}
		if l.Op != opDel {
			news = append(news, l.Text)
			if l.New != len(news) {
				t.Fatalf("new line number %d, want %d", l.New, len(news))
			}
		}
	}
	if strings.Join(olds, "\n") != strings.Join(a, "\n") || strings.Join(news, "\n") != strings.Join(b, "\n") {
		t.Fatalf("the diff does not turn a into b")
	}
}

// TestDiffLinesMinimal checks on pseudo-random texts that the diff keeps
// a longest common subsequence: its unchanged lines are as many as the
// LCS length computed the slow way.
func TestDiffLinesMinimal(t *testing.T) {
	seed := uint32(1)
	rnd := func(n uint32) uint32 { seed = seed*1664525 + 1013904223; return (seed >> 16) % n }
	for range 200 {
		a := make([]string, rnd(12))
		b := make([]string, rnd(12))
		for i := range a {
			a[i] = string(rune('a' + rnd(4)))
		}
		for i := range b {
			b[i] = string(rune('a' + rnd(4)))
		}
		d := diffLines(a, b)
		checkDiff(t, d, a, b)
		same := 0
		for _, l := range d {
			if l.Op == opSame {
				same++
			}
		}
		if want := slowLCS(a, b); same != want {
			t.Fatalf("diff of %q and %q keeps %d lines, LCS is %d", a, b, same, want)
		}
	}
}

func slowLCS(a, b []string) int {
	if len(a) == 0 || len(b) == 0 {
		return 0
	}
	if a[0] == b[0] {
		return 1 + slowLCS(a[1:], b[1:])
	}
	return max(slowLCS(a[1:], b), slowLCS(a, b[1:]))
}

func TestDiffLinesLarge(t *testing.T) {
	a := make([]string, 5000)
	b := make([]string, 5000)
	for i := range a {
		a[i], b[i] = "a"+strings.Repeat("x", i%7), "b"+strings.Repeat("y", i%5)
	}
	d := diffLines(a, b) // past maxDiffCells: removed and added whole
	checkDiff(t, d, a, b)
	if added, removed := diffStats(d); added != 5000 || removed != 5000 {
		t.Fatalf("+%d -%d", added, removed)
	}
}
