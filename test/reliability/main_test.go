package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/internal/report"
)

// events is `go test -json` output, cut from real runs: a passing test
// with a subtest, a skip, a failure, two benchmarks (one passing, which
// has no event of its own, one failing), and a test that timed out.
const events = `{"Time":"2026-12-01T09:21:57.580Z","Action":"start","Package":"p"}
{"Time":"2026-12-01T09:21:57.584Z","Action":"run","Package":"p","Test":"TestA"}
{"Time":"2026-12-01T09:21:57.584Z","Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}
{"Time":"2026-12-01T09:21:57.584Z","Action":"run","Package":"p","Test":"TestA/sub"}
{"Time":"2026-12-01T09:21:57.584Z","Action":"output","Package":"p","Test":"TestA/sub","Output":"    x_test.go:3: in sub\n"}
{"Time":"2026-12-01T09:21:57.584Z","Action":"pass","Package":"p","Test":"TestA/sub","Elapsed":0}
{"Time":"2026-12-01T09:22:00.584Z","Action":"pass","Package":"p","Test":"TestA","Elapsed":3}
{"Time":"2026-12-01T09:22:00.584Z","Action":"run","Package":"p","Test":"TestS"}
{"Time":"2026-12-01T09:22:00.584Z","Action":"output","Package":"p","Test":"TestS","Output":"--- SKIP: TestS (0.00s)\n"}
{"Time":"2026-12-01T09:22:00.584Z","Action":"skip","Package":"p","Test":"TestS","Elapsed":0}
not an event: go test's own noise
{"Time":"2026-12-01T09:22:00.584Z","Action":"run","Package":"p","Test":"TestF"}
{"Time":"2026-12-01T09:22:00.585Z","Action":"output","Package":"p","Test":"TestF","Output":"    x_test.go:5: report: a | b | c | target \"\" met=true\n"}
{"Time":"2026-12-01T09:22:00.585Z","Action":"output","Package":"p","Test":"TestF","Output":"    x_test.go:6: bad\n"}
{"Time":"2026-12-01T09:22:00.585Z","Action":"output","Package":"p","Test":"TestF","Output":"--- FAIL: TestF (0.50s)\n"}
{"Time":"2026-12-01T09:22:00.585Z","Action":"fail","Package":"p","Test":"TestF","Elapsed":0.5}
{"Time":"2026-12-01T09:22:01.000Z","Action":"run","Package":"p","Test":"BenchmarkB"}
{"Time":"2026-12-01T09:22:01.000Z","Action":"run","Package":"p","Test":"BenchmarkB/x=1"}
{"Time":"2026-12-01T09:22:01.400Z","Action":"output","Package":"p","Test":"BenchmarkB/x=1","Output":"BenchmarkB/x=1-2   \t       1\t     22384 ns/op\n"}
{"Time":"2026-12-01T09:22:03.000Z","Action":"run","Package":"p","Test":"BenchmarkC"}
{"Time":"2026-12-01T09:22:03.100Z","Action":"output","Package":"p","Test":"BenchmarkC","Output":"--- FAIL: BenchmarkC\n"}
{"Time":"2026-12-01T09:22:03.100Z","Action":"fail","Package":"p","Test":"BenchmarkC"}
{"Time":"2026-12-01T09:22:04.000Z","Action":"run","Package":"p","Test":"TestHang"}
{"Time":"2026-12-01T09:22:04.000Z","Action":"run","Package":"p","Test":"TestHang/sub"}
{"Time":"2026-12-01T09:22:05.000Z","Action":"output","Package":"p","Test":"TestHang/sub","Output":"panic: test timed out after 1s\n"}
{"Time":"2026-12-01T09:22:05.000Z","Action":"output","Package":"p","Test":"TestHang/sub","Output":"goroutine 5 [running]:\n"}
{"Time":"2026-12-01T09:22:05.000Z","Action":"output","Package":"p","Output":"FAIL\tp\t1.005s\n"}
{"Time":"2026-12-01T09:22:06.000Z","Action":"fail","Package":"p","Elapsed":8}
`

func TestParse(t *testing.T) {
	var order []string
	got, err := parse(strings.NewReader(events), func(name string, r *result) { order = append(order, name+" "+r.status()) })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"TestA pass", "TestS skip", "TestF fail", "BenchmarkB pass", "BenchmarkC fail", "TestHang unfinished"}
	if !slices.Equal(order, want) {
		t.Errorf("done calls %q, want %q", order, want)
	}
	for name, elapsed := range map[string]time.Duration{
		"TestA": 3 * time.Second, "TestF": 500 * time.Millisecond, "BenchmarkB": 2 * time.Second, "TestHang": 2 * time.Second,
	} {
		if r := got[name]; r == nil || !r.Ran || r.Elapsed != elapsed {
			t.Errorf("%s: %+v, want run for %v", name, r, elapsed)
		}
	}
	if e := got["TestF"].errors(8); !slices.Equal(e, []string{"x_test.go:6: bad"}) {
		t.Errorf("TestF's errors %q, want its t.Error line without the report line", e)
	}
	if e := got["TestHang"].errors(8); !slices.Equal(e, []string{"panic: test timed out after 1s"}) {
		t.Errorf("TestHang's errors %q, want the panic", e)
	}
	if h := got["TestHang"].Output; h[len(h)-1] != "FAIL\tp\t1.005s" {
		t.Errorf("TestHang's output does not end with the package's: %q", h)
	}
	if len(got) != len(want) {
		t.Errorf("%d results, want %d", len(got), len(want))
	}
}

// A package that passes ends its last benchmark.
func TestParseLastBenchmark(t *testing.T) {
	in := `{"Time":"2026-12-01T09:22:01Z","Action":"run","Package":"p","Test":"BenchmarkLoad"}
{"Time":"2026-12-01T09:23:01Z","Action":"output","Package":"p","Output":"ok  \tp\t60.0s\n"}
{"Time":"2026-12-01T09:23:01Z","Action":"pass","Package":"p","Elapsed":60}
`
	got, err := parse(strings.NewReader(in), func(string, *result) {})
	if r := got["BenchmarkLoad"]; err != nil || r == nil || r.Action != "pass" || r.Elapsed != time.Minute {
		t.Errorf("BenchmarkLoad: %+v, %v; want a pass after 1m0s", r, err)
	}
}

func TestJoin(t *testing.T) {
	pass, fail, skip := &result{Action: "pass", Ran: true}, &result{Action: "fail", Ran: true}, &result{Action: "skip", Ran: true}
	es := []entry{
		{"p", "TestMet", "f1", "c1"}, {"p", "TestNoRows", "f2", "c2"}, {"p", "TestFailed", "f3", "c3"},
		{"p", "TestSkipped", "f4", "c4"}, {"p", "TestAbsent", "f5", "c5"}, {"p", "TestHung", "f6", "c6"},
	}
	results := map[entry]*result{es[0]: pass, es[1]: pass, es[2]: fail, es[3]: skip, es[5]: {Ran: true}}
	rows := map[entry][]report.Row{
		es[0]: {{Test: "TestMet", Fault: "a", Figure: "0 lost", Target: "0 lost", Met: true}, {Test: "TestMet/x", Fault: "b", Figure: "2 lost", Target: "0 lost"}},
		es[2]: {{Test: "TestFailed", Fault: "c", Figure: "1", Met: true}},
	}
	var got []string
	for _, l := range join(es, results, rows) {
		got = append(got, l.Fault+" "+l.Figure+" "+l.why)
	}
	want := []string{"a 0 lost ", "b 2 lost target missed", "f2 — ", "c 1 test failed", "f4 — skipped", "f5 — did not run", "f6 — did not finish"}
	if !slices.Equal(got, want) {
		t.Errorf("join:\n%q\nwant\n%q", got, want)
	}
}

func TestMarkdownTable(t *testing.T) {
	lines := []line{
		{Row: report.Row{Fault: "a | b", Check: "two\nlines", Figure: "1 s", Target: "≤ 1 s"}, pass: true},
		{Row: report.Row{Fault: "c", Check: "d", Figure: "—"}, why: "skipped"},
	}
	want := "| Fault | Checked | Figure | Target | Result |\n|---|---|---|---|---|\n" +
		"| a \\| b | two lines | 1 s | ≤ 1 s | PASS |\n" +
		"| c | d | — | — | **FAIL** (skipped) |\n"
	if got := markdownTable(lines); got != want {
		t.Errorf("table:\n%s\nwant\n%s", got, want)
	}
}

func TestGroupArgs(t *testing.T) {
	gs := groups([]entry{{pkg: "./a", name: "TestX"}, {pkg: "./a", name: "BenchmarkY"}, {pkg: "./b", name: "TestZ"}, {pkg: "./a", name: "TestW"}})
	var got []string
	for _, g := range gs {
		got = append(got, strings.Join(g.args(time.Minute), " "))
	}
	want := []string{
		"test -count=1 -json -timeout 1m0s -run ^(TestX|TestW)$ ./a",
		"test -count=1 -json -timeout 1m0s -run ^$ -bench ^(BenchmarkY)$ -benchtime 1x ./a",
		"test -count=1 -json -timeout 1m0s -run ^(TestZ)$ ./b",
	}
	if !slices.Equal(got, want) {
		t.Errorf("go test runs:\n%q\nwant\n%q", got, want)
	}
}

// Every entry of the suite names a test or benchmark once, with texts.
func TestSuite(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range suite {
		if seen[e.pkg+" "+e.name] || e.fault == "" || e.check == "" || !(strings.HasPrefix(e.name, "Test") || e.bench()) {
			t.Errorf("bad or repeated entry %+v", e)
		}
		seen[e.pkg+" "+e.name] = true
	}
}
