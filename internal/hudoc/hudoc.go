// Package hudoc checks HuJSON documents written by people: it parses them,
// locates values by line and column, and collects every problem found as
// an error a person can act on ("file:line:col: message").
package hudoc

import (
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/tailscale/hujson"
)

// Pos is a position in a document (1-based; Line 0 means the whole file).
type Pos struct {
	Line, Col int
}

// Error is a problem in a document, at a position.
type Error struct {
	File string
	Pos  Pos
	Msg  string
}

func (e *Error) Error() string {
	if e.Pos.Line == 0 {
		return e.File + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Pos.Line, e.Pos.Col, e.Msg)
}

// ErrorList is every problem found in a document, in text order.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Doc is a document being checked; it collects problems.
type Doc struct {
	File string
	Text []byte
	Errs ErrorList
}

var syntaxErr = regexp.MustCompile(`^hujson: line (\d+), column (\d+): (.*)$`)

// Parse parses text, refusing more than maxSize bytes. A syntax error comes
// back as an ErrorList with its position.
func Parse(file string, text []byte, maxSize int) (hujson.Value, *Doc, error) {
	if len(text) > maxSize {
		return hujson.Value{}, nil, ErrorList{{File: file, Msg: fmt.Sprintf("the file is %d bytes; the limit is %d", len(text), maxSize)}}
	}
	root, err := hujson.Parse(text)
	if err != nil {
		e := &Error{File: file, Msg: err.Error()}
		if m := syntaxErr.FindStringSubmatch(err.Error()); m != nil {
			e.Pos.Line, _ = strconv.Atoi(m[1])
			e.Pos.Col, _ = strconv.Atoi(m[2])
			e.Msg = "syntax error: " + m[3]
		}
		return root, nil, ErrorList{e}
	}
	return root, &Doc{File: file, Text: text}, nil
}

// Pos returns where v starts.
func (d *Doc) Pos(v *hujson.Value) Pos {
	off := min(v.StartOffset, len(d.Text))
	line := 1 + bytes.Count(d.Text[:off], []byte("\n"))
	col := 1 + off - (bytes.LastIndexByte(d.Text[:off], '\n') + 1)
	return Pos{Line: line, Col: col}
}

// Errorf records a problem at v.
func (d *Doc) Errorf(v *hujson.Value, format string, args ...any) {
	d.ErrorAt(d.Pos(v), format, args...)
}

// ErrorAt records a problem at p.
func (d *Doc) ErrorAt(p Pos, format string, args ...any) {
	d.Errs = append(d.Errs, &Error{File: d.File, Pos: p, Msg: fmt.Sprintf(format, args...)})
}

// Err returns the problems found, in text order, or nil.
func (d *Doc) Err() error {
	if len(d.Errs) == 0 {
		return nil
	}
	sort.SliceStable(d.Errs, func(i, j int) bool {
		a, b := d.Errs[i].Pos, d.Errs[j].Pos
		return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
	})
	return d.Errs
}

// KindName names the kind of v for a message: "an object", "a list"...
func KindName(v *hujson.Value) string {
	switch v.Value.Kind() {
	case '{':
		return "an object"
	case '[':
		return "a list"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 'n':
		return "null"
	}
	return "a boolean"
}

// Key returns the name of an object member.
func Key(m *hujson.ObjectMember) string { return m.Name.Value.(hujson.Literal).String() }

// Array returns the elements of v, or records that v is not a list.
func (d *Doc) Array(v *hujson.Value, what string) []hujson.Value {
	arr, ok := v.Value.(*hujson.Array)
	if !ok {
		d.Errorf(v, "%s must be a list, not %s", what, KindName(v))
		return nil
	}
	return arr.Elements
}

// Str returns the string v holds, or records that it is not a string.
func (d *Doc) Str(v *hujson.Value, what string) (string, bool) {
	lit, ok := v.Value.(hujson.Literal)
	if !ok || lit.Kind() != '"' {
		d.Errorf(v, "%s must be a string, not %s", what, KindName(v))
		return "", false
	}
	return lit.String(), true
}

// Members returns the members of object v, recording that v is not an
// object or that a key repeats; unknown is called for each key for which
// known returns false, and such members are left out.
func (d *Doc) Members(v *hujson.Value, what string, known func(string) bool, unknown func(m *hujson.ObjectMember, key string)) []hujson.ObjectMember {
	obj, ok := v.Value.(*hujson.Object)
	if !ok {
		d.Errorf(v, "%s must be an object, not %s", what, KindName(v))
		return nil
	}
	seen := map[string]bool{}
	var out []hujson.ObjectMember
	for i := range obj.Members {
		m := &obj.Members[i]
		k := Key(m)
		if seen[k] {
			d.Errorf(&m.Name, "duplicate key %q in %s", k, what)
			continue
		}
		seen[k] = true
		if !known(k) {
			unknown(m, k)
			continue
		}
		out = append(out, *m)
	}
	return out
}
