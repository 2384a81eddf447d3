// Command reliability runs the reliability suite — the tests and
// benchmarks that do something bad to a mesh (kill, cut, expire, flood,
// forge) and measure what happens — and prints a table: each fault, what
// was checked, the figure, the target and whether it was met.
//
//	go run ./test/reliability [-run REGEX] [-o FILE]
//
// `make reliability` runs it with -o docs/reliability.md. The end-to-end
// entries need root (they build namespace hosts); the whole suite takes
// about ten minutes.
//
// Tests and benchmarks add their rows with internal/report: each `go test`
// run gets a rows file of its own in $WIREMESH_REPORT. A row passes when
// its Met holds and its test passed; a test that adds no row gets one row
// with the suite's default texts; a test that was skipped or did not run
// fails.
//
// The figures of the fuzzing campaigns come from whoever runs them (make
// fuzz FUZZTIME=…): if docs/fuzz-figures.md exists, -o includes it
// verbatim as the document's "Fuzzing" section. It is markdown without a
// title of its own (its headings, if any, at level 3), for example a
// sentence on the run and a table of target, package, time, executions
// and result.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wiremesh/wiremesh/internal/report"
)

// entry is one test or benchmark of the suite.
type entry struct {
	pkg  string // package directory relative to the module root
	name string // a top-level Test or Benchmark function
	// fault and check are the texts of the row shown if the test adds none.
	fault, check string
}

func (e entry) bench() bool { return strings.HasPrefix(e.name, "Benchmark") }

const (
	e2e   = "./test/e2e"
	coord = "./coordinator"
	stor  = "./store"
	load  = "./test/bench"
)

// suite is the reliability suite, in the order of the report.
var suite = []entry{
	// Process and network faults on namespace hosts, the real binary.
	{e2e, "TestCoordinatorKillLoop", "coordinator SIGKILLed in a loop", "every acknowledged enrollment and change survives; agents resync"},
	{e2e, "TestCoordinatorOutage", "coordinator down 60 s", "no ping lost between existing nodes; agents resync; a change afterwards arrives ≤ 1 s"},
	{e2e, "TestLinkCut", "a host's link cut for 30 s", "its peers mark it failed ≤ 5 s; it comes back by itself"},
	{e2e, "TestSIGTERMCleanup", "agent SIGTERM; agent SIGKILL and restart", "interface, routes and sockets removed; no stale interface or route blocks the new start"},
	{e2e, "TestStateDirFullOrReadOnly", "agent state dir full or read-only", "reported in the log; the data path keeps working"},
	{e2e, "TestKeyRotation", "node's WireGuard key rotated; its node.json stolen", "≤ 1 s of pings lost; peers learn the new key; the stolen node.json neither rotates the key nor opens the stream"},
	{e2e, "TestExpire", "node expired by an admin", "dropped by every peer ≤ 1 s; its credential refused"},
	{e2e, "TestNodeExpiry", "node reaches its expiry", "dropped by every peer; its credential refused"},
	{e2e, "TestEphemeralNodes", "ephemeral node goes away", "removed from the mesh by itself"},
	{e2e, "TestJoinAndDeletePush", "node deleted by an admin", "dropped by every peer ≤ 1 s; its agent stops; its credential refused"},

	// Hostile input on namespace hosts.
	{e2e, "TestBadInput", "malformed, revoked, expired, used or mis-pinned join key; broken state dir", "clear error, non-zero exit, nothing half-written"},
	{e2e, "TestSpoofedInnerSource", "peer sends with another node's inner source address", "dropped by the receiver's WireGuard"},
	{e2e, "TestManInTheMiddle", "join key's URL leads to an impostor server", "agent refuses in the TLS handshake; the impostor gets no request"},
	{e2e, "TestFilterAbuse", "peer sends crafted TCP, UDP and fragments past the policy", "none reaches the receiver's stack"},
	{e2e, "TestUnderlayBypass", "underlay neighbour routes to an overlay address", "nothing reaches it around WireGuard"},

	// Hostile input to the coordinator's API, in process.
	{coord, "TestAdminAuth", "admin API: no, malformed, wrong, unknown or join-key token", "401 on every admin endpoint"},
	{coord, "TestAdminEndpointsRefuse", "admin API: bad tokens, a node credential, bodies too large or malformed", "401 / 403 / 413 / 400 on every admin endpoint"},
	{coord, "TestAdminTokens", "admin token revoked", "refused with 401"},
	{coord, "TestBadRequestBodies", "admin API: malformed request bodies", "400 naming the byte offset; nothing created"},
	{coord, "TestNetmapRefusals", "node credential with another node's key or without a proof of its private key, bad credentials", "netmap refused: 403 / 401"},
	{coord, "TestRotateKey", "key rotation with a node's credential and public key but no proof of its private key", "refused with 403; the key unchanged"},
	{coord, "TestServicesReportRefusals", "services report for another node's key, bad reports", "refused: 403 / 401 / 400; nothing stored"},
	{coord, "TestEnroll", "one-time join key used twice; bad enrollments", "refused: 401 / 400"},
	{coord, "TestCreateJoinKey", "revoked join key", "enrollment refused with 401"},

	// Enrollment floods, in process.
	{coord, "TestEnrollRateLimited", "one source over its enrollment limit", "429 with Retry-After; other sources enroll"},
	{stor, "TestStore", "the store's write lock held by another connection (SQLite, PostgreSQL)", "a bad join key is refused at once"},
	{coord, "TestEnrollUnderFlood", "flood of bad join keys", "valid agents all enroll, none refused; flooders get 429; bad keys looked at within the failure limit"},
	{coord, "BenchmarkEnrollUnderFlood", "flood of bad join keys", "valid enroll latency with and without the limit"},

	// Load: 1,000 simulated agents on one coordinator process.
	{load, "BenchmarkLoad", "policy change with 1,000 agents", "delivery p50 / p99 / max; coordinator CPU and memory"},
}

func main() {
	run := flag.String("run", "", "run only the entries whose name matches this `regexp`")
	out := flag.String("o", "", "also write the report as a markdown document to `FILE`")
	fuzz := flag.String("fuzz", "docs/fuzz-figures.md", "markdown `FILE` (relative to the module root) included as the Fuzzing section if it exists")
	timeout := flag.Duration("timeout", 30*time.Minute, "go test -timeout of each package's run")
	list := flag.Bool("list", false, "list the suite and exit")
	flag.Parse()
	code, err := reliability(*run, *out, *fuzz, *timeout, *list)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

// reliability runs the entries that match run and reports them; it returns
// the exit code: 1 if a row failed.
func reliability(run, out, fuzz string, timeout time.Duration, list bool) (int, error) {
	re, err := regexp.Compile(run)
	if err != nil {
		return 0, fmt.Errorf("-run: %w", err)
	}
	var entries []entry
	for _, e := range suite {
		if re.MatchString(e.name) {
			entries = append(entries, e)
		}
	}
	if len(entries) == 0 {
		return 0, fmt.Errorf("no entry matches -run %q", run)
	}
	if list {
		for _, e := range entries {
			fmt.Printf("%s\t%s\n", e.pkg, e.name)
		}
		return 0, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return 0, err
	}
	o, err := runSuite(root, entries, timeout)
	if err != nil {
		return 0, err
	}
	o.filter = run
	fmt.Print(markdownTable(o.lines))
	fmt.Println()
	fmt.Println(o.summary())
	if out != "" {
		if !filepath.IsAbs(fuzz) {
			fuzz = filepath.Join(root, fuzz)
		}
		doc := o.document(commit(root), machine(), fuzzSection(fuzz))
		if err := os.WriteFile(out, []byte(doc), 0o644); err != nil {
			return 0, err
		}
		fmt.Fprintf(os.Stderr, "wrote %s\n", out)
	}
	if o.passed() != len(o.lines) {
		return 1, nil
	}
	return 0, nil
}

// outcome is a run of (part of) the suite.
type outcome struct {
	filter  string // -run; empty for the whole suite
	began   time.Time
	took    time.Duration
	entries []entry
	results map[entry]*result // nil for an entry whose package did not run
	lines   []line
}

// runSuite runs entries, one `go test` after another, in root.
func runSuite(root string, entries []entry, timeout time.Duration) (*outcome, error) {
	o := &outcome{began: time.Now(), entries: entries, results: map[entry]*result{}}
	rows := map[entry][]report.Row{}
	for _, g := range groups(entries) {
		res, rs, err := runGroup(root, g, timeout)
		if err != nil {
			return nil, err
		}
		for _, e := range g.entries {
			o.results[e] = res[e.name]
			rows[e] = rs[e.name]
		}
	}
	o.took = time.Since(o.began)
	o.lines = join(entries, o.results, rows)
	return o, nil
}

func (o *outcome) passed() int {
	n := 0
	for _, l := range o.lines {
		if l.pass {
			n++
		}
	}
	return n
}

func (o *outcome) summary() string { return fmt.Sprintf("%d/%d passed", o.passed(), len(o.lines)) }

// moduleRoot is the directory of the main module's go.mod.
func moduleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(b))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the wiremesh module")
	}
	return filepath.Dir(mod), nil
}

// group is the entries of one `go test` run: one package's tests, or its
// benchmarks (apart, so that a failing test does not keep them from
// running).
type group struct {
	pkg     string
	bench   bool
	entries []entry
}

// groups splits entries into runs, in the order of their first entry.
func groups(entries []entry) []group {
	var gs []group
	for _, e := range entries {
		i := 0
		for i < len(gs) && (gs[i].pkg != e.pkg || gs[i].bench != e.bench()) {
			i++
		}
		if i == len(gs) {
			gs = append(gs, group{pkg: e.pkg, bench: e.bench()})
		}
		gs[i].entries = append(gs[i].entries, e)
	}
	return gs
}

// args are the `go test` arguments of g.
func (g group) args(timeout time.Duration) []string {
	var names []string
	for _, e := range g.entries {
		names = append(names, regexp.QuoteMeta(e.name))
	}
	pattern := "^(" + strings.Join(names, "|") + ")$"
	args := []string{"test", "-count=1", "-json", "-timeout", timeout.String()}
	if g.bench {
		args = append(args, "-run", "^$", "-bench", pattern, "-benchtime", "1x")
	} else {
		args = append(args, "-run", pattern)
	}
	return append(args, g.pkg)
}

// runGroup runs g's `go test` in root, streaming a line per finished test
// to stderr, and returns the results and the report rows by top-level
// test name.
func runGroup(root string, g group, timeout time.Duration) (map[string]*result, map[string][]report.Row, error) {
	f, err := os.CreateTemp("", "wiremesh-report-*.jsonl")
	if err != nil {
		return nil, nil, err
	}
	f.Close()
	defer os.Remove(f.Name())

	args := g.args(timeout)
	fmt.Fprintf(os.Stderr, "go %s\n", strings.Join(args, " "))
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), report.Env+"="+f.Name())
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	results, perr := parse(stdout, progress)
	werr := cmd.Wait()
	if perr != nil {
		return nil, nil, fmt.Errorf("go test %s: reading its output: %w", g.pkg, perr)
	}
	if len(results) == 0 && werr != nil {
		fmt.Fprintf(os.Stderr, "go test %s: %v; no test ran\n", g.pkg, werr)
	}
	rs, err := report.Read(f.Name())
	if err != nil {
		return nil, nil, err
	}
	rows := map[string][]report.Row{}
	for _, r := range rs {
		name, _, _ := strings.Cut(r.Test, "/")
		rows[name] = append(rows[name], r)
	}
	return results, rows, nil
}

// progress writes the line of a finished test to stderr, with its error
// lines if it failed.
func progress(name string, r *result) {
	fmt.Fprintf(os.Stderr, "%-5s %s (%s)\n", strings.ToUpper(r.status()), name, r.Elapsed.Round(100*time.Millisecond))
	if r.Action == "pass" || r.Action == "skip" {
		return
	}
	for _, l := range r.errors(8) {
		fmt.Fprintf(os.Stderr, "      %s\n", l)
	}
}

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Time    time.Time
	Action  string
	Test    string
	Elapsed float64 // seconds
	Output  string
}

// result is how one top-level test or benchmark ended.
type result struct {
	// Action is "pass", "fail" or "skip"; empty if it never ended.
	Action  string
	Ran     bool
	Elapsed time.Duration
	// Output is its output and its subtests', line by line.
	Output []string

	started  time.Time // its first event
	reported bool      // done was called
}

// status is the result in a word: pass, fail, skip, unfinished.
func (r *result) status() string {
	if r.Action == "" {
		return "unfinished"
	}
	return r.Action
}

// errorLine matches the lines of t.Error and t.Fatal, and a panic's.
var errorLine = regexp.MustCompile(`^(\s+\S+_test\.go:\d+: |panic: )`)

// errors returns up to n error lines of the output (or its last lines if
// it has none), each cut to 200 bytes.
func (r *result) errors(n int) []string {
	var out []string
	for _, l := range r.Output {
		if errorLine.MatchString(l) && !strings.Contains(l, "report: ") && len(out) < n {
			out = append(out, strings.TrimSpace(l))
		}
	}
	if len(out) == 0 {
		out = r.Output[max(0, len(r.Output)-n):]
	}
	for i, l := range out {
		if len(l) > 200 {
			out[i] = l[:200] + "…"
		}
	}
	return out
}

// parse reads `go test -json` output and returns the results of the
// top-level tests and benchmarks, by name, calling done for each as it
// ends. A passing benchmark has no event of its own: it ends when the next
// one starts or when the package passes. A test still running when the
// package ends (a timeout, a panic) keeps an empty Action, with the
// package's last output appended to its own. Lines that are not events
// are skipped.
func parse(r io.Reader, done func(name string, r *result)) (map[string]*result, error) {
	p := &parser{results: map[string]*result{}, done: done}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var ev event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Action == "" {
			continue
		}
		p.add(ev)
	}
	p.end(false, time.Time{})
	return p.results, sc.Err()
}

// parser is the state of parse.
type parser struct {
	results map[string]*result
	done    func(string, *result)
	open    string   // the benchmark running, which ends without an event
	pkgOut  []string // the package's own output
}

func (p *parser) add(ev event) {
	name, _, _ := strings.Cut(ev.Test, "/")
	if name == "" {
		switch ev.Action {
		case "output", "build-output":
			p.pkgOut = append(p.pkgOut, strings.TrimRight(ev.Output, "\n"))
		case "pass", "fail":
			p.end(ev.Action == "pass", ev.Time)
		}
		return
	}
	r := p.results[name]
	if r == nil {
		r = &result{started: ev.Time}
		p.results[name] = r
	}
	top := ev.Test == name
	switch {
	case ev.Action == "run" && top:
		p.closeBench(ev.Time)
		r.Ran = true
		if strings.HasPrefix(name, "Benchmark") {
			p.open = name
		}
	case ev.Action == "output":
		r.Output = append(r.Output, strings.TrimRight(ev.Output, "\n"))
	case top && (ev.Action == "pass" || ev.Action == "fail" || ev.Action == "skip" || ev.Action == "bench"):
		if ev.Action == "bench" {
			ev.Action = "pass"
		}
		if p.open == name {
			p.open = ""
		}
		r.Action = ev.Action
		r.Elapsed = time.Duration(ev.Elapsed * float64(time.Second))
		if r.Elapsed == 0 {
			r.Elapsed = ev.Time.Sub(r.started)
		}
		p.report(name, r)
	}
}

// closeBench ends the open benchmark as passed at t.
func (p *parser) closeBench(t time.Time) {
	if p.open == "" {
		return
	}
	r := p.results[p.open]
	r.Action, r.Elapsed = "pass", t.Sub(r.started)
	p.report(p.open, r)
	p.open = ""
}

// report calls done for r once.
func (p *parser) report(name string, r *result) {
	if !r.reported {
		r.reported = true
		p.done(name, r)
	}
}

// end handles the end of the package's run at t: whether it passed, or
// (at the end of the output) that no end was seen.
func (p *parser) end(passed bool, t time.Time) {
	if passed {
		p.closeBench(t)
	}
	for _, name := range slices.Sorted(maps.Keys(p.results)) {
		if r := p.results[name]; r.Ran && r.Action == "" && !r.reported {
			r.Output = append(r.Output, p.pkgOut[max(0, len(p.pkgOut)-20):]...)
			if !t.IsZero() {
				r.Elapsed = t.Sub(r.started)
			}
			p.report(name, r)
		}
	}
	p.open = ""
}

// line is one row of the table.
type line struct {
	report.Row
	pass bool
	why  string // for a failure: "test failed", "target missed", …
}

// join makes the table: each entry's rows, marked with its result, or one
// row with the entry's texts if it added none.
func join(entries []entry, results map[entry]*result, rows map[entry][]report.Row) []line {
	var lines []line
	for _, e := range entries {
		r := results[e]
		why := ""
		switch {
		case r == nil || !r.Ran:
			why = "did not run"
		case r.Action == "skip":
			why = "skipped"
		case r.Action == "fail":
			why = "test failed"
		case r.Action == "":
			why = "did not finish"
		}
		rs := rows[e]
		if len(rs) == 0 {
			rs = []report.Row{{Test: e.name, Fault: e.fault, Check: e.check, Figure: "—", Met: true}}
		}
		for _, row := range rs {
			l := line{Row: row, why: why}
			if why == "" && !row.Met {
				l.why = "target missed"
			}
			l.pass = l.why == ""
			lines = append(lines, l)
		}
	}
	return lines
}

// markdownTable renders lines as a markdown table.
func markdownTable(lines []line) string {
	var b strings.Builder
	b.WriteString("| Fault | Checked | Figure | Target | Result |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, l := range lines {
		result := "PASS"
		if !l.pass {
			result = "**FAIL** (" + l.why + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", cell(l.Fault), cell(l.Check), cell(l.Figure), cell(l.Target), result)
	}
	return b.String()
}

// cell makes s fit in a table cell.
func cell(s string) string {
	s = strings.TrimSpace(strings.ReplaceAll(s, "\n", " "))
	if s == "" {
		return "—"
	}
	return strings.ReplaceAll(s, "|", `\|`)
}

// document is the report as a markdown file, with the fuzzing section
// fuzz if it is not empty.
func (o *outcome) document(commit, machine, fuzz string) string {
	var b strings.Builder
	b.WriteString("# Reliability\n\n")
	b.WriteString("What wiremesh does under faults and hostile input. Each row is one check of a test or benchmark of the reliability suite: " +
		"the fault it caused, what it checked, the figure it measured and the target. " +
		"The end-to-end rows come from the real binary on network-namespace hosts; " +
		"a row passes when its figure meets its target and its test passed. " +
		"Reproduce it with `make reliability` (as root; it rewrites this file).\n\n")
	if o.filter != "" {
		fmt.Fprintf(&b, "This is a partial run: `go run ./test/reliability -run '%s'`.\n\n", o.filter)
	}
	fmt.Fprintf(&b, "- Date: %s (the run took %s)\n", o.began.UTC().Format("2006-01-02 15:04 MST"), o.took.Round(time.Second))
	fmt.Fprintf(&b, "- Commit: %s\n", commit)
	fmt.Fprintf(&b, "- Machine: %s\n\n", machine)
	b.WriteString(markdownTable(o.lines))
	fmt.Fprintf(&b, "\n%s.\n\n", o.summary())
	b.WriteString("## Tests\n\n| Package | Test | Outcome | Time |\n|---|---|---|---|\n")
	for _, e := range o.entries {
		outcome, t := "did not run", "—"
		if r := o.results[e]; r != nil && r.Ran {
			outcome, t = r.status(), r.Elapsed.Round(100*time.Millisecond).String()
		}
		fmt.Fprintf(&b, "| `%s` | `%s` | %s | %s |\n", strings.TrimPrefix(e.pkg, "./"), e.name, outcome, t)
	}
	if fuzz != "" {
		b.WriteString("\n## Fuzzing\n\n")
		b.WriteString(strings.TrimSpace(fuzz) + "\n")
	}
	return b.String()
}

// fuzzSection is the content of path, or "" if there is none.
func fuzzSection(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "reliability: fuzz figures: %v\n", err)
		}
		return ""
	}
	return string(b)
}

// commit is the checked-out commit, "-dirty" if the tree has changes.
func commit(root string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = root
	b, err := cmd.Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// machine describes the CPU, memory, kernel and Go of this machine.
func machine() string {
	model, cpus := cpuInfo()
	kernel := "unknown kernel"
	if b, err := exec.Command("uname", "-srm").Output(); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s × %d, %s memory; %s; %s", model, cpus, memTotal(), kernel, runtime.Version())
}

// cpuInfo returns the CPU model and the number of CPUs from /proc/cpuinfo.
func cpuInfo() (string, int) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU", runtime.NumCPU()
	}
	model, n := "unknown CPU", 0
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		switch strings.TrimSpace(k) {
		case "processor":
			n++
		case "model name":
			model = strings.TrimSpace(v)
		}
	}
	return model, max(n, 1)
}

// memTotal is MemTotal of /proc/meminfo in GiB.
func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			if err == nil {
				return fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	return "unknown"
}
