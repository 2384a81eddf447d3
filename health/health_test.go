package health

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestAggregate(t *testing.T) {
	r := func(ss ...Status) []Result {
		var out []Result
		for _, s := range ss {
			out = append(out, Result{Status: s})
		}
		return out
	}
	for _, tc := range []struct {
		in   []Result
		want Status
	}{
		{nil, Passing},
		{r(Passing, Passing), Passing},
		{r(Passing, Warning), Warning},
		{r(Warning, Critical, Passing), Critical},
		{r(Critical), Critical},
	} {
		if got := Aggregate(tc.in); got != tc.want {
			t.Errorf("Aggregate(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestTrimOutput(t *testing.T) {
	if got := trimOutput("  ok\n\n"); got != "ok" {
		t.Errorf("trimOutput = %q", got)
	}
	if got := trimOutput("a\xffb"); got != "a\uFFFDb" {
		t.Errorf("invalid UTF-8: %q", got)
	}
	long := strings.Repeat("é", MaxOutput) // 2 bytes each
	got := trimOutput(long)
	if len(got) > MaxOutput || !utf8.ValidString(got) || !strings.HasSuffix(got, truncated) {
		t.Errorf("long output: %d bytes, valid %v, ends %q", len(got), utf8.ValidString(got), got[len(got)-20:])
	}
}

// TestStateThresholds feeds results one by one and checks the status
// after each: flips wait for enough results in a row; results with the
// current status always go through.
func TestStateThresholds(t *testing.T) {
	const P, W, C = Passing, Warning, Critical
	tests := []struct {
		name                string
		succBefore, failsBf int
		results             []Status
		want                []Status
	}{
		{"no thresholds", 1, 1,
			[]Status{P, C, W, P, C},
			[]Status{P, C, W, P, C}},
		{"three to pass", 3, 1,
			[]Status{P, P, C, P, P, P, C},
			[]Status{C, C, C, C, C, P, C}},
		{"two to fail", 1, 2,
			[]Status{P, C, P, C, C, P},
			[]Status{P, P, P, P, C, P}},
		{"warning counts as success", 2, 2,
			[]Status{P, W, W, C, W, C, C},
			[]Status{C, W, W, W, W, W, C}},
		{"flapping never flips", 2, 2,
			[]Status{P, P, C, P, C, P, C},
			[]Status{C, P, P, P, P, P, P}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := state{status: Critical, output: "no result yet"}
			now := time.Unix(0, 0)
			for i, res := range tc.results {
				was := s.status
				now = now.Add(time.Second)
				flipped := s.apply(res, res.String(), now, tc.succBefore, tc.failsBf)
				if s.status != tc.want[i] || flipped != (s.status != was) {
					t.Fatalf("after result %d (%s): status %s, flipped %v; want %s", i+1, res, s.status, flipped, tc.want[i])
				}
				if s.status == res && s.output != res.String() {
					t.Errorf("after result %d: output %q not taken", i+1, s.output)
				}
				if flipped && !s.updated.Equal(now) {
					t.Errorf("after result %d: flipped, but updated is %v", i+1, s.updated)
				}
			}
		})
	}
}
