package ui

import "strings"

// Diff operations.
const (
	opSame = ' '
	opDel  = '-'
	opAdd  = '+'
)

// maxDiffCells bounds the LCS table; past it the differing middle is shown
// as removed and added whole.
const maxDiffCells = 4 << 20

// diffLine is one line of a line diff.
type diffLine struct {
	Op       byte // opSame, opDel or opAdd
	Old, New int  // line numbers in the old and new text; 0 where absent
	Text     string
}

// Class is the line's CSS class: "add", "del" or "same".
func (l diffLine) Class() string {
	switch l.Op {
	case opAdd:
		return "add"
	case opDel:
		return "del"
	}
	return "same"
}

// Mark is the line's sign as shown: "+", "−" or "".
func (l diffLine) Mark() string {
	switch l.Op {
	case opAdd:
		return "+"
	case opDel:
		return "−"
	}
	return ""
}

// splitLines splits text into lines, without a last empty one.
func splitLines(text string) []string {
	if text == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(text, "\n"), "\n")
}

// diffLines returns a line diff from a to b by longest common subsequence,
// after trimming their common head and tail.
func diffLines(a, b []string) []diffLine {
	head := 0
	for head < len(a) && head < len(b) && a[head] == b[head] {
		head++
	}
	tail := 0
	for tail < len(a)-head && tail < len(b)-head && a[len(a)-1-tail] == b[len(b)-1-tail] {
		tail++
	}
	var out []diffLine
	for i := range head {
		out = append(out, diffLine{Op: opSame, Old: i + 1, New: i + 1, Text: a[i]})
	}
	out = append(out, diffMiddle(a[head:len(a)-tail], b[head:len(b)-tail], head)...)
	for i := range tail {
		ai, bi := len(a)-tail+i, len(b)-tail+i
		out = append(out, diffLine{Op: opSame, Old: ai + 1, New: bi + 1, Text: a[ai]})
	}
	return out
}

// diffMiddle diffs a and b, which start at line off+1 of their texts.
func diffMiddle(a, b []string, off int) []diffLine {
	n, m := len(a), len(b)
	if n*m > maxDiffCells {
		return wholeChange(a, b, off)
	}
	// lcs[i*(m+1)+j] is the LCS length of a[i:] and b[j:].
	lcs := make([]int32, (n+1)*(m+1))
	at := func(i, j int) int32 { return lcs[i*(m+1)+j] }
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			v := max(at(i+1, j), at(i, j+1))
			if a[i] == b[j] {
				v = at(i+1, j+1) + 1
			}
			lcs[i*(m+1)+j] = v
		}
	}
	var out []diffLine
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			out = append(out, diffLine{Op: opSame, Old: off + i + 1, New: off + j + 1, Text: a[i]})
			i, j = i+1, j+1
		case i < n && (j == m || at(i+1, j) >= at(i, j+1)):
			out = append(out, diffLine{Op: opDel, Old: off + i + 1, Text: a[i]})
			i++
		default:
			out = append(out, diffLine{Op: opAdd, New: off + j + 1, Text: b[j]})
			j++
		}
	}
	return out
}

// wholeChange shows all of a removed and all of b added.
func wholeChange(a, b []string, off int) []diffLine {
	out := make([]diffLine, 0, len(a)+len(b))
	for i, l := range a {
		out = append(out, diffLine{Op: opDel, Old: off + i + 1, Text: l})
	}
	for j, l := range b {
		out = append(out, diffLine{Op: opAdd, New: off + j + 1, Text: l})
	}
	return out
}

// diffStats counts the added and removed lines of d.
func diffStats(d []diffLine) (added, removed int) {
	for _, l := range d {
		switch l.Op {
		case opAdd:
			added++
		case opDel:
			removed++
		}
	}
	return added, removed
}
