// Package report collects the rows of the reliability report: tests and
// benchmarks of the suite call Add with what they checked and the figure
// they measured, and `make reliability` turns the rows, joined with each
// test's outcome, into docs/reliability.md.
//
// Rows go to the file named by $WIREMESH_REPORT, one JSON object a line;
// without it Add only logs the row.
package report

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
)

// Env names the variable that holds the rows file.
const Env = "WIREMESH_REPORT"

// Row is one line of the report.
type Row struct {
	// Test is the test or benchmark that measured the figure; Add fills it.
	Test string `json:"test"`
	// Fault is what was done to the mesh: "coordinator SIGKILL loop".
	Fault string `json:"fault"`
	// Check is what was verified: "every acknowledged enrollment exists once".
	Check string `json:"check"`
	// Figure is the measurement, with its unit: "0 of 400 pings lost".
	Figure string `json:"figure"`
	// Target is the figure the issue asks for, empty if none: "≤ 1 s".
	Target string `json:"target,omitempty"`
	// Met reports whether Figure reaches Target, computed by the caller
	// from what it measured. Add sets it for a row without a target, which
	// has nothing to miss. A row passes when Met holds and its test passed.
	Met bool `json:"met"`
}

// Add records r for tb's test, appending it to the rows file if there is
// one. A rows file that cannot be written fails tb.
func Add(tb testing.TB, r Row) {
	tb.Helper()
	r.Test = tb.Name()
	if r.Target == "" {
		r.Met = true
	}
	tb.Logf("report: %s | %s | %s | target %q met=%v", r.Fault, r.Check, r.Figure, r.Target, r.Met)
	path := os.Getenv(Env)
	if path == "" {
		return
	}
	b, err := json.Marshal(r)
	if err != nil {
		tb.Fatalf("report: %v", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		tb.Fatalf("report: %v", err)
	}
	// One write of a short line: O_APPEND keeps rows from parallel test
	// processes whole.
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		tb.Fatalf("report: write %s: %v", path, err)
	}
	if err := f.Close(); err != nil {
		tb.Fatalf("report: close %s: %v", path, err)
	}
}

// Read parses a rows file.
func Read(path string) ([]Row, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rows []Row
	line := 1
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		if i > 0 {
			var r Row
			if err := json.Unmarshal(b[:i], &r); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", path, line, err)
			}
			rows = append(rows, r)
		}
		if i < len(b) {
			i++
		}
		b = b[i:]
		line++
	}
	return rows, nil
}
