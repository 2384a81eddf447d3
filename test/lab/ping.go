package lab

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
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
// Every probe has until all of them are answered, or until PingGrace
// after the last was due. ping's own count mode (-c alone) gives its last
// probe only one interval, or two round trips, once any probe was
// answered: a reply that a loaded host delays by 200 ms counted as lost
// (TestConnectivityPublicHard lost "pings 9 and 10 of 10" to that in a CI
// proof run). With a deadline, ping goes on probing after count until
// count answers are in; only the first count probes are judged.
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

// Answered reports whether probe seq (1..Count) was answered.
func (p *Pings) Answered(seq int) bool { return p.answered[seq] }

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
