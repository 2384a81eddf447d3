package wire

import (
	"encoding/json"
	"testing"
)

func TestHealth(t *testing.T) {
	var zero Health
	if zero != Passing {
		t.Error("the zero Health is not Passing")
	}
	if max(Passing, Warning, Critical) != Critical || max(Passing, Warning) != Warning {
		t.Error("a worse Health is not a larger one")
	}
	for _, tc := range []struct {
		in   string
		want Health
		ok   bool
	}{
		{"passing", Passing, true}, {"pass", Passing, true},
		{"warning", Warning, true}, {"warn", Warning, true},
		{"critical", Critical, true}, {"fail", Critical, true},
		{"", Critical, false}, {"Passing", Critical, false}, {"ok", Critical, false},
	} {
		got, err := ParseHealth(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseHealth(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	b, err := json.Marshal(map[string]Health{"a": Passing, "b": Warning, "c": Critical})
	if err != nil || string(b) != `{"a":"passing","b":"warning","c":"critical"}` {
		t.Errorf("JSON: %s %v", b, err)
	}
	var back map[string]Health
	if err := json.Unmarshal(b, &back); err != nil || back["b"] != Warning || back["c"] != Critical {
		t.Errorf("JSON back: %v %v", back, err)
	}
	if _, err := json.Marshal(Health(3)); err == nil {
		t.Error("Health(3) marshalled")
	}
	if Health(9).String() != "Health(9)" {
		t.Errorf("Health(9).String() = %q", Health(9).String())
	}
}
