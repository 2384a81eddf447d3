package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/filter"
	"github.com/wiremesh/wiremesh/wire"
)

// FlowRecord is one line of the flow log: a packet the filter dropped
// (Event "denied") or an inbound flow it let in (Event "new", with
// Config.LogNewFlows). The local API serves records as JSON lines at
// GET /v1/flows; --flow-log appends the same lines to a file.
type FlowRecord struct {
	// Time is when the agent took the record from the filter.
	Time time.Time `json:"time"`
	// Event is "denied" or "new".
	Event string `json:"event"`
	// Src is the source address; Peer the node it belongs to, which
	// WireGuard's cryptokey routing makes authentic. Empty: unknown (a
	// packet too malformed to have addresses; a source that is no peer).
	Src  string `json:"src,omitempty"`
	Peer string `json:"peer,omitempty"`
	// SrcPort is the source port (TCP, UDP, SCTP). Zero: none.
	SrcPort uint16 `json:"src_port,omitempty"`
	// Dst is the destination address: one of this node's, but for a
	// packet denied as "not own address".
	Dst string `json:"dst,omitempty"`
	// Port is the destination port (TCP, UDP, SCTP). Zero: none.
	Port uint16 `json:"port,omitempty"`
	// Proto is the protocol: tcp, udp, icmp, icmpv6, sctp or a number.
	Proto string `json:"proto,omitempty"`
	// Why is, for a denied packet, the reason: "no rule", "malformed",
	// "fragment", "not own address"; for a new flow that no rule but the mesh's own ports
	// (serf gossip) let in, "mesh port". Else empty.
	Why string `json:"why,omitempty"`
	// Rule is, for a new flow, the index of the first of the node's
	// inbound rules (the netmap's "rules", in order) that accepts it.
	// Nil: none did (see Why).
	Rule *int `json:"rule,omitempty"`
	// Policy is the policy version whose rules judged the packet (0: no
	// policy; everything but the mesh's ports is denied).
	Policy uint64 `json:"policy"`
	// Suppressed counts records of the same event the rate limiter
	// refused since the previous one. Zero: none.
	Suppressed uint64 `json:"suppressed,omitempty"`
}

// Flow record events.
const (
	eventDenied = "denied"
	eventNew    = "new"
)

// flowQueue is how many records the filter may get ahead of the agent.
const flowQueue = 1024

// flowLog takes flow records from the filter, keeps the last ones for the
// local API and appends them to the flow log file. One goroutine (run)
// formats and stores them; readers wait on changed.
type flowLog struct {
	in     chan filter.Flow        // the filter's Config.Flows
	nameOf func(netip.Addr) string // peer names
	file   *os.File                // Config.FlowLog; nil: none
	log    *slog.Logger
	done   chan struct{} // closed when run returns: followers stop

	mu      sync.Mutex
	lines   [][]byte      // guarded by mu; ring of the last records, JSON with newline
	seq     uint64        // guarded by mu; records stored so far; record i is lines[i%len(lines)]
	changed chan struct{} // guarded by mu; closed (and replaced) when a record is stored
	denied  uint64        // guarded by mu; records stored by event
	added   uint64        // guarded by mu
}

// newFlowLog makes a flow log that keeps keep records and, if path is not
// empty, appends them to that file (created 0600).
func newFlowLog(keep int, path string, nameOf func(netip.Addr) string, log *slog.Logger) (*flowLog, error) {
	l := &flowLog{
		in: make(chan filter.Flow, flowQueue), nameOf: nameOf, log: log, done: make(chan struct{}),
		lines: make([][]byte, keep), changed: make(chan struct{}),
	}
	if path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("flow log: %w", err)
		}
		l.file = f
	}
	return l, nil
}

// run stores the filter's records until ctx is done.
func (l *flowLog) run(ctx context.Context) {
	defer close(l.done)
	failing := false // the last file write failed; logged once
	for {
		select {
		case <-ctx.Done():
			return
		case fl := <-l.in:
			line := l.store(l.format(&fl, time.Now()))
			if l.file == nil {
				continue
			}
			_, err := l.file.Write(line)
			if err != nil && !failing {
				l.log.Error("cannot write the flow log; records stay in memory", "err", err)
			}
			failing = err != nil
		}
	}
}

// closeFile closes the flow log file, if any. Call it after run returned.
func (l *flowLog) closeFile() {
	if l.file != nil {
		if err := l.file.Close(); err != nil {
			l.log.Error("cannot close the flow log", "err", err)
		}
	}
}

// format turns a filter record into a FlowRecord at time now.
func (l *flowLog) format(fl *filter.Flow, now time.Time) FlowRecord {
	r := FlowRecord{Time: now, Event: eventDenied, Why: fl.Verdict.String(), Policy: fl.Rules.Policy(), Suppressed: fl.Suppressed}
	if fl.Verdict == filter.Accept {
		r.Event, r.Why = eventNew, ""
		if i := fl.Rules.Match(fl.Src, fl.Proto, fl.DstPort); i >= 0 {
			r.Rule = &i
		} else if fl.Always {
			r.Why = "mesh port"
		}
	}
	if fl.Src.IsValid() {
		r.Src, r.Dst, r.Proto = fl.Src.String(), fl.Dst.String(), filter.ProtoName(fl.Proto)
		r.Peer = l.nameOf(fl.Src)
	}
	if fl.Ports {
		r.SrcPort, r.Port = fl.SrcPort, fl.DstPort
	}
	return r
}

// store keeps r as the newest record and wakes readers; it returns r's
// line.
func (l *flowLog) store(r FlowRecord) []byte {
	line, _ := json.Marshal(r) // plain strings and numbers: cannot fail
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines[l.seq%uint64(len(l.lines))] = line
	l.seq++
	if r.Event == eventNew {
		l.added++
	} else {
		l.denied++
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return line
}

// since returns the stored records from number from on (the older ones
// are gone, if from is too old), the number of the next record, and a
// channel closed when it is stored.
func (l *flowLog) since(from uint64) (lines [][]byte, next uint64, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	from = max(from, l.seq-min(l.seq, uint64(len(l.lines))))
	for i := from; i < l.seq; i++ {
		lines = append(lines, l.lines[i%uint64(len(l.lines))])
	}
	return lines, l.seq, l.changed
}

// counts returns the records stored so far by event.
func (l *flowLog) counts() (denied, added uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.denied, l.added
}

// handleFlows adds GET /v1/flows to mux (see flowLog.handle); with the
// filter off it answers 404 with a reason.
func (a *Agent) handleFlows(mux *http.ServeMux) {
	if a.data.flows != nil {
		a.data.flows.handle(mux)
		return
	}
	mux.HandleFunc("GET /v1/flows", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(wire.Error{Error: "the packet filter is off (--unsafe-no-filter): no flow records"})
	})
}

// handle adds GET /v1/flows to mux: the kept records as JSON lines, oldest
// first (?n=N: the last N only); with ?follow=1 the handler then writes
// each new record as it comes, until the client goes away or the agent
// stops.
func (l *flowLog) handle(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/flows", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		follow := q.Get("follow") == "1" || q.Get("follow") == "true"
		var from uint64
		if s := q.Get("n"); s != "" {
			n, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				http.Error(w, "bad n: want a count of records", http.StatusBadRequest)
				return
			}
			_, next, _ := l.since(^uint64(0))
			from = next - min(next, n)
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		rc := http.NewResponseController(w)
		for {
			lines, next, changed := l.since(from)
			for _, line := range lines {
				if _, err := w.Write(line); err != nil {
					return
				}
			}
			if !follow {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
			from = next
			select {
			case <-changed:
			case <-r.Context().Done():
				return
			case <-l.done:
				return
			}
		}
	})
}
