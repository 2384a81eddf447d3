package service

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

// FuzzParse feeds arbitrary text to Parse and ParseRegistration. They must
// not panic; errors must be an ErrorList with positions inside the text, in
// text order; accepted definitions must satisfy every rule the parser
// promises, and parsing again must give the same result. Seeds are in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add([]byte(exampleFile))
	f.Fuzz(func(t *testing.T, text []byte) {
		for _, parse := range []func(string, []byte) ([]Definition, error){Parse, ParseRegistration} {
			defs, err := parse("fuzz.hujson", text)
			if err != nil {
				if defs != nil {
					t.Error("definitions returned with an error")
				}
				checkErrors(t, text, err)
				continue
			}
			checkDefs(t, defs)
			again, err := parse("fuzz.hujson", text)
			if err != nil || !reflect.DeepEqual(again, defs) {
				t.Fatalf("parsing the same text again gave another result: %v", err)
			}
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

// checkDefs checks the promises Parse makes about what it accepts.
func checkDefs(t *testing.T, defs []Definition) {
	t.Helper()
	names, ids := map[string]bool{}, map[string]bool{}
	for _, d := range defs {
		if !wire.IsLabel(d.Name) || names[d.Name] {
			t.Errorf("bad or repeated service name %q", d.Name)
		}
		names[d.Name] = true
		if d.Port == 0 || d.Protocol != TCP && d.Protocol != UDP {
			t.Errorf("service %q: port %d, protocol %q", d.Name, d.Port, d.Protocol)
		}
		for i, tag := range d.Tags {
			if !wire.IsLabel(tag) || slices.Contains(d.Tags[:i], tag) {
				t.Errorf("service %q: bad or repeated tag %q", d.Name, tag)
			}
		}
		for _, c := range d.Checks {
			if !idRE.MatchString(c.ID) || ids[c.ID] {
				t.Errorf("bad or repeated check ID %q", c.ID)
			}
			ids[c.ID] = true
			checkCheck(t, c)
		}
	}
}

func checkCheck(t *testing.T, c CheckDef) {
	t.Helper()
	if c.SuccessBeforePassing < 1 || c.SuccessBeforePassing > MaxThreshold ||
		c.FailuresBeforeCritical < 1 || c.FailuresBeforeCritical > MaxThreshold {
		t.Errorf("check %s: thresholds %d, %d", c, c.SuccessBeforePassing, c.FailuresBeforeCritical)
	}
	switch c.Kind {
	case KindTTL:
		if c.TTL < MinInterval || c.Interval != 0 || c.Timeout != 0 || c.Target != "" || c.Args != nil {
			t.Errorf("ttl check %+v", c)
		}
	case KindHTTP, KindTCP, KindExec:
		if c.Interval < MinInterval || c.Timeout <= 0 || c.TTL != 0 {
			t.Errorf("check %s: interval %s, timeout %s, ttl %s", c, c.Interval, c.Timeout, c.TTL)
		}
		if (c.Kind == KindExec) != (len(c.Args) > 0 && c.Args[0] != "") || (c.Kind == KindExec) == (c.Target != "") {
			t.Errorf("check %s: target %q, args %q", c, c.Target, c.Args)
		}
	default:
		t.Errorf("check %q has kind %q", c.ID, c.Kind)
	}
}
