package lab

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PingGrace is how long Ping waits for answers after its last probe was
// due.
const PingGrace = 3 * time.Second

// Pings is what one run of Ping saw: which of its probes were answered.
type Pings struct {
	// Count is the number of probes judged (sequence numbers 1..Count).
	Count int
	// Out is ping's output.
	Out      string
	answered map[int]bool
}

// Ping pings dst from h count times, one probe every interval, and
// reports which probes were answered.
//
// ping's own count mode (-c alone) gives its last probe only one
// interval, or two round trips, once any probe was answered: a reply that
// a loaded host delays by 200 ms counted as lost (TestConnectivityPublicHard
// lost "pings 9 and 10 of 10" to that in a CI proof run). So ping runs
// with a deadline too, PingGrace after the last probe is due: it then goes
// on probing after count until count answers are in, and only the first
// count probes are judged. A probe is judged lost when its answer is not
// in by then, or when count answers came first (a later probe's overtook
// it). With a deadline, ping also stops at the first ICMP error it gets;
// the probes after it count as lost.
func (h *Host) Ping(ctx context.Context, dst string, count int, interval time.Duration) (*Pings, error) {
	deadline := math.Ceil((time.Duration(count)*interval + PingGrace).Seconds())
	out, err := h.Run(ctx, "ping", "-n", "-c", strconv.Itoa(count),
		"-i", strconv.FormatFloat(interval.Seconds(), 'f', -1, 64),
		"-w", strconv.Itoa(int(deadline)), dst)
	p := &Pings{Count: count, Out: string(out), answered: map[int]bool{}}
	// ping exits 1 when a probe went unanswered: that is a result, not a
	// failure. Without its summary line, the run itself failed.
	if !strings.Contains(p.Out, " packets transmitted") {
		return nil, fmt.Errorf("ping %s from %s: %w", dst, h.Name, err)
	}
	for _, line := range strings.Split(p.Out, "\n") {
		i := strings.Index(line, "icmp_seq=")
		if i < 0 || !strings.Contains(line, " bytes from ") {
			continue
		}
		var seq int
		if _, err := fmt.Sscanf(line[i:], "icmp_seq=%d", &seq); err == nil {
			p.answered[seq] = true
		}
	}
	return p, nil
}

// PingInBackground runs Ping in a goroutine of its own and returns a
// function that waits for its end and returns what it saw, failing t if
// ping could not run. The goroutine touches no testing.T: a test that
// ends before it waits is safe (the lab's cleanup kills ping).
func (h *Host) PingInBackground(dst string, count int, interval time.Duration) (wait func(t testing.TB) *Pings) {
	type result struct {
		p   *Pings
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(count)*interval+PingGrace+time.Minute)
		defer cancel()
		p, err := h.Ping(ctx, dst, count, interval)
		done <- result{p, err}
	}()
	return func(t testing.TB) *Pings {
		t.Helper()
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.p
	}
}

// Answered reports whether probe seq (1..Count) was answered.
func (p *Pings) Answered(seq int) bool { return p.answered[seq] }

// Answers returns how many probes were answered, those after Count too:
// for a check that nothing gets through.
func (p *Pings) Answers() int { return len(p.answered) }

// Lost returns how many of the Count probes went unanswered.
func (p *Pings) Lost() int {
	n := 0
	for seq := 1; seq <= p.Count; seq++ {
		if !p.answered[seq] {
			n++
		}
	}
	return n
}

// LongestGap returns the longest run of unanswered probes.
func (p *Pings) LongestGap() int {
	gap, run := 0, 0
	for seq := 1; seq <= p.Count; seq++ {
		if p.answered[seq] {
			run = 0
			continue
		}
		run++
		gap = max(gap, run)
	}
	return gap
}

// String sums the run up: "N of M probes lost, longest run K", with the
// sequence numbers of the lost ones when there are few.
func (p *Pings) String() string {
	lost := p.Lost()
	s := fmt.Sprintf("%d of %d probes unanswered", lost, p.Count)
	if lost == 0 {
		return s
	}
	s += fmt.Sprintf(", longest run %d", p.LongestGap())
	if lost <= 20 {
		var seqs []string
		for seq := 1; seq <= p.Count; seq++ {
			if !p.answered[seq] {
				seqs = append(seqs, strconv.Itoa(seq))
			}
		}
		s += " (" + strings.Join(seqs, " ") + ")"
	}
	return s
}
