package health

import "time"

// state is a check's status with the counts that hold off a flip until
// enough results in a row agree (Consul's success_before_passing and
// failures_before_critical). Passing and warning results both count as
// successes, critical ones as failures.
type state struct {
	status  Status
	output  string
	updated time.Time
	// successes and failures count the latest results in a row of each
	// side; at most one of them is non-zero.
	successes, failures int
}

// apply records one result at time now. A result with the current status
// only updates the output; one that would change the status does so once
// successBefore (for Passing and Warning) or failuresBefore (for Critical)
// results in a row say so. apply reports whether the status changed.
func (s *state) apply(st Status, output string, now time.Time, successBefore, failuresBefore int) bool {
	need := successBefore
	if st == Critical {
		s.successes = 0
		s.failures++
		need = failuresBefore
	} else {
		s.failures = 0
		s.successes++
	}
	n := max(s.successes, s.failures)
	if st != s.status && n < need {
		return false
	}
	flipped := st != s.status
	if flipped || output != s.output {
		s.status, s.output, s.updated = st, output, now
	}
	return flipped
}
