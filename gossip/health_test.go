package gossip

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

func TestEncodeHealth(t *testing.T) {
	tests := []struct {
		in      map[string]Health
		want    string
		wantErr bool
	}{
		{in: nil, want: ""},
		{in: map[string]Health{}, want: ""},
		{in: map[string]Health{"web": Passing}, want: "web=p"},
		{in: map[string]Health{"web": Passing, "api": Warning, "db": Critical}, want: "api=w,db=c,web=p"},
		{in: map[string]Health{"a-1": Critical, strings.Repeat("x", 63): Passing}, want: "a-1=c," + strings.Repeat("x", 63) + "=p"},
		{in: map[string]Health{"": Passing}, wantErr: true},
		{in: map[string]Health{"Web": Passing}, wantErr: true},
		{in: map[string]Health{"a,b": Passing}, wantErr: true},
		{in: map[string]Health{"a=b": Passing}, wantErr: true},
		{in: map[string]Health{strings.Repeat("x", 64): Passing}, wantErr: true},
		{in: map[string]Health{"web": Critical + 1}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := encodeHealth(tt.in)
		if tt.wantErr {
			if !errors.Is(err, errBadHealth) {
				t.Errorf("encodeHealth(%v) = %q, %v; want errBadHealth", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("encodeHealth(%v) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestDecodeHealth(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]Health
		wantErr bool
	}{
		{in: "", want: nil},
		{in: "web=p", want: map[string]Health{"web": Passing}},
		{in: "api=w,db=c,web=p", want: map[string]Health{"web": Passing, "api": Warning, "db": Critical}},
		{in: "web=p,api=w", want: map[string]Health{"web": Passing, "api": Warning}}, // order is not checked
		{in: ",", wantErr: true},
		{in: "web=p,", wantErr: true},
		{in: "web", wantErr: true},
		{in: "web=", wantErr: true},
		{in: "web=x", wantErr: true},
		{in: "web=pp", wantErr: true},
		{in: "=p", wantErr: true},
		{in: "WEB=p", wantErr: true},
		{in: "web=p,web=c", wantErr: true},
		{in: "w\x00b=p", wantErr: true},
		{in: "web=p=c", wantErr: true},
	}
	for _, tt := range tests {
		got, err := decodeHealth(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("decodeHealth(%q) = %v; want an error", tt.in, got)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
			t.Errorf("decodeHealth(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestHealthString(t *testing.T) {
	for h, want := range map[Health]string{Passing: "passing", Warning: "warning", Critical: "critical", 9: "Health(9)"} {
		if got := h.String(); got != want {
			t.Errorf("Health(%d).String() = %q, want %q", h, got, want)
		}
	}
	var zero Health
	if zero != Passing {
		t.Error("the zero Health is not Passing")
	}
}

// FuzzDecodeHealth checks that any tag decodes without panicking, and that
// what decodes re-encodes to a value that decodes the same.
func FuzzDecodeHealth(f *testing.F) {
	for _, s := range []string{"", "web=p", "api=w,db=c,web=p", "web=p,web=c", "a=", "=,=", "x=q"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := decodeHealth(s)
		if err != nil {
			if h != nil {
				t.Fatalf("decodeHealth(%q) returned %v with error %v", s, h, err)
			}
			return
		}
		enc, err := encodeHealth(h)
		if err != nil {
			t.Fatalf("decodeHealth(%q) = %v, which does not encode: %v", s, h, err)
		}
		back, err := decodeHealth(enc)
		if err != nil || !maps.Equal(back, h) {
			t.Fatalf("round trip of %q: %q decodes to %v, %v; want %v", s, enc, back, err, h)
		}
		if len(enc) != len(s) {
			t.Fatalf("decodeHealth(%q) accepted a value whose canonical form %q differs in length", s, enc)
		}
	})
}
