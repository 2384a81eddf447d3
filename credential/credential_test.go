package credential_test

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/credential"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewSecret(t *testing.T) {
	s := credential.NewSecret("jk")
	if !strings.HasPrefix(s.ID, "jk") || len(s.ID) != len("jk")+12 {
		t.Errorf("ID = %q, want \"jk\" and 12 hex digits", s.ID)
	}
	if v, err := base64.RawURLEncoding.DecodeString(s.Value); err != nil || len(v) != 32 {
		t.Errorf("Value = %q: want 32 bytes of unpadded base64url (decoded %d bytes, err %v)", s.Value, len(v), err)
	}
	if o := credential.NewSecret("jk"); o.ID == s.ID || o.Value == s.Value {
		t.Errorf("two secrets share a part: %v and %v", s, o)
	}

	got, err := credential.ParseSecret(s.String())
	if err != nil {
		t.Fatalf("ParseSecret(%q): %v", s.String(), err)
	}
	if got != s {
		t.Errorf("ParseSecret(String()) = %+v, want %+v", got, s)
	}
	if got.String() != s.ID+"."+s.Value {
		t.Errorf("String() = %q, want ID.VALUE", got.String())
	}
}

func TestSecretHash(t *testing.T) {
	s := credential.NewSecret("nd")
	h := s.Hash()
	if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
		t.Fatalf("Hash() = %q, want 64 hex digits", h)
	}
	if strings.Contains(h, s.Value) {
		t.Errorf("Hash() contains the secret value")
	}
	other := credential.NewSecret("nd")
	sameIDOtherValue := credential.Secret{ID: s.ID, Value: other.Value}
	for _, tc := range []struct {
		name   string
		secret credential.Secret
		hash   string
		want   bool
	}{
		{"own hash", s, h, true},
		{"another secret", other, h, false},
		{"same id, other value", sameIDOtherValue, h, false},
		{"empty hash", s, "", false},
		{"truncated hash", s, h[:63], false},
		{"upper-case hash", s, strings.ToUpper(h), false},
	} {
		if got := tc.secret.Matches(tc.hash); got != tc.want {
			t.Errorf("%s: Matches = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestParseSecretRejects(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"", "want ID.VALUE"},
		{"nodot", "want ID.VALUE"},
		{".value", "want ID.VALUE"},
		{"id.", "want ID.VALUE"},
		{strings.Repeat("i", 65) + ".AAAA", "too long"},
		{"id." + strings.Repeat("A", 129), "too long"},
		{"id.AA!A", "malformed secret value"},
		{"id.AAAA=", "malformed secret value"}, // padding is not part of the form
		{"id.AA+/", "malformed secret value"},  // standard, not URL alphabet
		{"id.AA.AA", "malformed secret value"},
	} {
		s, err := credential.ParseSecret(tc.in)
		if err == nil {
			t.Errorf("ParseSecret(%q) = %+v, want error containing %q", tc.in, s, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSecret(%q) error %q, want it to contain %q", tc.in, err, tc.want)
		}
	}
}

// failOnPanic, deferred, turns a panic into a test failure so that the
// other tests still run.
func failOnPanic(t *testing.T, format string, args ...any) {
	if r := recover(); r != nil {
		t.Fatalf("%s panicked: %v\n%s", fmt.Sprintf(format, args...), r, debug.Stack())
	}
}

func testPin(b byte) credential.Pin {
	p := credential.Pin{Kind: credential.PinCA}
	for i := range p.Sum {
		p.Sum[i] = b + byte(i)
	}
	return p
}

func TestBundleRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name   string
		prefix string
		parse  func(string) (credential.Bundle, error)
	}{
		{"join key", credential.JoinKeyPrefix, credential.ParseJoinKey},
		{"admin token", credential.AdminTokenPrefix, credential.ParseAdminToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := credential.Bundle{URL: "https://coord.example:8443", Pins: credential.Pins{testPin(7)}, Secret: credential.NewSecret("jk")}
			enc := want.Encode(tc.prefix)
			if !strings.HasPrefix(enc, tc.prefix) {
				t.Fatalf("Encode = %q, want prefix %q", enc, tc.prefix)
			}
			if strings.ContainsAny(enc, " \n\t=+/") {
				t.Errorf("Encode = %q: not a single copy-pasteable word", enc)
			}
			want.SecretText = want.Secret.String()
			// Pasted keys often carry whitespace around them.
			for _, in := range []string{enc, "  " + enc + "\n"} {
				got, err := tc.parse(in)
				if err != nil {
					t.Fatalf("parse(%q): %v", in, err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("parse(Encode()) mismatch (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// encodeRaw encodes arbitrary JSON the way Bundle.Encode does.
func encodeRaw(prefix, json string) string {
	return prefix + base64.RawURLEncoding.EncodeToString([]byte(json))
}

func TestParseRejects(t *testing.T) {
	pin := testPin(1).String()
	sec := credential.NewSecret("jk").String()
	good := credential.Bundle{URL: "https://c:1", Pins: credential.Pins{testPin(1)}, Secret: credential.NewSecret("ad")}
	for _, tc := range []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", "this is not a join key (they start with wmjoin1-)"},
		{"admin token as join key", good.Encode(credential.AdminTokenPrefix), "this is an admin token, not a join key: join keys start with wmjoin1-"},
		{"file path", "/root/join.key", "this is not a join key (they start with wmjoin1-)"},
		{"older format version", "wmjoin0-" + good.Encode(credential.JoinKeyPrefix)[8:], "this is not a join key"},
		{"truncated in the JSON", good.Encode(credential.JoinKeyPrefix)[:40], "this join key is truncated (40 characters, too short for its contents): copy the whole join key"},
		{"truncated in base64", good.Encode(credential.JoinKeyPrefix)[:41], "this join key is truncated (41 characters"},
		{"bad base64", credential.JoinKeyPrefix + "abc!defg", "bad base64 at byte 11"},
		{"padded base64", good.Encode(credential.JoinKeyPrefix) + "==", "bad base64"},
		{"not JSON", encodeRaw(credential.JoinKeyPrefix, "{not json"), "this is not a join key (they start with wmjoin1-, then its encoded contents): the contents do not decode"},
		{"JSON array", encodeRaw(credential.JoinKeyPrefix, "[1]"), "bad contents"},
		{"unknown field", encodeRaw(credential.JoinKeyPrefix, `{"u":"https://c:1","p":"`+pin+`","s":"`+sec+`","x":1}`), `unknown field "x"`},
		{"http URL", encodeRaw(credential.JoinKeyPrefix, `{"u":"http://c:1","p":"`+pin+`","s":"`+sec+`"}`), `bad coordinator URL "http://c:1"`},
		{"URL without host", encodeRaw(credential.JoinKeyPrefix, `{"u":"https:///x","p":"`+pin+`","s":"`+sec+`"}`), "bad coordinator URL"},
		{"missing URL", encodeRaw(credential.JoinKeyPrefix, `{"p":"`+pin+`","s":"`+sec+`"}`), "bad coordinator URL"},
		{"missing pin", encodeRaw(credential.JoinKeyPrefix, `{"u":"https://c:1","s":"`+sec+`"}`), "missing certificate pin"},
		{"bad pin", encodeRaw(credential.JoinKeyPrefix, `{"u":"https://c:1","p":"md5:00","s":"`+sec+`"}`), "bad pin"},
		{"pin too long", encodeRaw(credential.JoinKeyPrefix, `{"u":"https://c:1","p":"`+pin+`00","s":"`+sec+`"}`), "bad pin"},
		{"missing secret", encodeRaw(credential.JoinKeyPrefix, `{"u":"https://c:1","p":"`+pin+`"}`), "malformed secret"},
		{"bad secret", encodeRaw(credential.JoinKeyPrefix, `{"u":"https://c:1","p":"`+pin+`","s":"nodot"}`), "malformed secret"},
		{"too long", credential.JoinKeyPrefix + strings.Repeat("A", 4096), "too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer failOnPanic(t, "ParseJoinKey(%q)", tc.in)
			b, err := credential.ParseJoinKey(tc.in)
			if err == nil {
				t.Fatalf("ParseJoinKey = %+v, want error containing %q", b, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), good.Secret.Value) || strings.Contains(err.Error(), strings.SplitN(sec, ".", 2)[1]) {
				t.Errorf("error %q reveals the secret", err)
			}
		})
	}

	if _, err := credential.ParseAdminToken(good.Encode(credential.JoinKeyPrefix)); err == nil ||
		!strings.Contains(err.Error(), "this is a join key, not an admin token: admin tokens start with wmadmin1-") {
		t.Errorf("ParseAdminToken(join key) error %v, want a wrong-prefix error", err)
	}
}

func TestPin(t *testing.T) {
	p := testPin(0xa0)
	s := p.String()
	if want := "sha256:" + hex.EncodeToString(p.Sum[:]); s != want {
		t.Fatalf("String() = %q, want %q", s, want)
	}
	for _, in := range []string{s, "sha256:" + strings.ToUpper(s[7:])} {
		got, err := credential.ParsePin(in)
		if err != nil || got != p {
			t.Errorf("ParsePin(%q) = %v, %v; want %v", in, got, err, p)
		}
	}
	if !(credential.Pin{}).IsZero() || p.IsZero() {
		t.Errorf("IsZero wrong: zero pin %v, set pin %v", (credential.Pin{}).IsZero(), p.IsZero())
	}

	hex64 := s[7:]
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"no scheme", hex64},
		{"upper-case scheme", "SHA256:" + hex64},
		{"other hash", "sha1:" + hex64},
		{"no digits", "sha256:"},
		{"31 bytes", "sha256:" + hex64[:62]},
		{"odd digits", "sha256:" + hex64[:63]},
		{"65 digits", "sha256:" + hex64 + "0"},
		{"33 bytes", "sha256:" + hex64 + "00"},
		{"64 bytes", "sha256:" + strings.Repeat("ab", 64)},
		{"not hex", "sha256:" + hex64[:62] + "zz"},
		{"leading space", " sha256:" + hex64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer failOnPanic(t, "ParsePin(%q)", tc.in)
			if got, err := credential.ParsePin(tc.in); err == nil {
				t.Errorf("ParsePin(%q) = %v, want error", tc.in, got)
			} else if !strings.Contains(err.Error(), "bad pin") {
				t.Errorf("ParsePin(%q) error %q, want it to contain \"bad pin\"", tc.in, err)
			}
		})
	}
}

func TestPinJSON(t *testing.T) {
	p := testPin(3)
	b, err := p.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if want := `"` + p.String() + `"`; string(b) != want {
		t.Errorf("MarshalJSON = %s, want %s", b, want)
	}
	var got credential.Pin
	if err := got.UnmarshalJSON(b); err != nil || got != p {
		t.Errorf("UnmarshalJSON(%s) = %v, %v; want %v", b, got, err, p)
	}
	for _, in := range []string{`3`, `"sha256:00"`, `""`} {
		var q credential.Pin
		if err := q.UnmarshalJSON([]byte(in)); err == nil {
			t.Errorf("UnmarshalJSON(%s) = %v, want error", in, q)
		}
		if !q.IsZero() {
			t.Errorf("UnmarshalJSON(%s) left %v, want the zero pin", in, q)
		}
	}
}
