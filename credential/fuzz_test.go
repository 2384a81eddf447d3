package credential_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/credential"
)

// fuzzBundle checks a bundle parser on arbitrary input: it never panics,
// and what it accepts survives Encode and a second parse unchanged.
func fuzzBundle(f *testing.F, prefix string, parse func(string) (credential.Bundle, error)) {
	seed := credential.Bundle{URL: "https://coord.example:8443", Pins: credential.Pins{testPin(9)}, Secret: credential.NewSecret("jk")}
	f.Add(seed.Encode(prefix))
	f.Add(" " + seed.Encode(prefix) + "\n")
	f.Add(prefix)
	f.Add(prefix + "e30") // {}
	f.Add(encodeRaw(prefix, `{"u":"https://[::1]:1","p":"`+testPin(0).String()+`","s":"a.AAAA","x":0}`))
	f.Fuzz(func(t *testing.T, s string) {
		defer failOnPanic(t, "parse(%q)", s)
		b, err := parse(s)
		if err != nil {
			return
		}
		if len(b.Pins) == 0 || b.URL == "" || b.Secret.ID == "" || b.Secret.Value == "" {
			t.Fatalf("parse(%q) accepted an incomplete bundle %+v", s, b)
		}
		if b.SecretText != b.Secret.String() {
			t.Fatalf("parse(%q): SecretText %q but Secret %q", s, b.SecretText, b.Secret.String())
		}
		enc := b.Encode(prefix)
		b2, err := parse(enc)
		if err != nil {
			t.Fatalf("parse(%q) = %+v, but its encoding %q does not parse: %v", s, b, enc, err)
		}
		if diff := cmp.Diff(b, b2); diff != "" {
			t.Fatalf("re-encoding changed the bundle (-first +second):\n%s", diff)
		}
	})
}

func FuzzParseJoinKey(f *testing.F) {
	fuzzBundle(f, credential.JoinKeyPrefix, credential.ParseJoinKey)
}

func FuzzParseAdminToken(f *testing.F) {
	fuzzBundle(f, credential.AdminTokenPrefix, credential.ParseAdminToken)
}

func FuzzParseSecret(f *testing.F) {
	f.Add(credential.NewSecret("nd").String())
	f.Add("a.b")
	f.Add("a.b.c")
	f.Add(".")
	f.Add("id.AAAA==")
	f.Fuzz(func(t *testing.T, in string) {
		defer failOnPanic(t, "ParseSecret(%q)", in)
		s, err := credential.ParseSecret(in)
		if err != nil {
			return
		}
		if s.String() != in {
			t.Fatalf("ParseSecret(%q).String() = %q, want the input", in, s.String())
		}
		s2, err := credential.ParseSecret(s.String())
		if err != nil || s2 != s {
			t.Fatalf("ParseSecret(%q) = %+v, but re-parsing gives %+v, %v", in, s, s2, err)
		}
		if !s.Matches(s.Hash()) {
			t.Fatalf("%+v does not match its own hash", s)
		}
	})
}
