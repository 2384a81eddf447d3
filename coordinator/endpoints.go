package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"sync"
	"time"
)

// DefaultEndpointInterval is the least time between two endpoint changes
// of one node that the coordinator publishes, unless
// Config.EndpointInterval says otherwise.
const DefaultEndpointInterval = 5 * time.Second

// endpointGate spaces out each node's endpoint changes: a change within
// the interval after the node's last applied one is held, and when the
// interval ends the newest held value is applied (by the maintain loop).
// A node that changes its endpoints in a loop costs its peers one netmap
// an interval, not one a change, and an agent whose address changed twice
// in a second still ends up advertising the last one.
type endpointGate struct {
	interval time.Duration
	now      func() time.Time
	wake     chan struct{} // buffered (1): a change was held

	mu sync.Mutex
	// nodes is guarded by mu. A node missing from it has nothing held and
	// may change its endpoints now.
	nodes map[int64]endpointState
}

// endpointState is one node's entry in an endpointGate.
type endpointState struct {
	applied time.Time // when its last change was applied
	holding bool      // held is a change to apply when the interval ends
	held    []string
}

func newEndpointGate(interval time.Duration, now func() time.Time) *endpointGate {
	return &endpointGate{interval: interval, now: now, wake: make(chan struct{}, 1), nodes: map[int64]endpointState{}}
}

// offer decides about endpoints eps that node id asks for, cur being its
// stored ones: apply reports that eps are to be stored now, which counts
// as the node's change now. False: eps are unchanged, or held.
func (g *endpointGate) offer(id int64, cur, eps []string) (apply bool) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	st, ok := g.nodes[id]
	if st.holding {
		st.held = eps // the newest wins, also when it is the stored value
		g.nodes[id] = st
		return false
	}
	if slices.Equal(cur, eps) {
		return false
	}
	if !ok || now.Sub(st.applied) >= g.interval {
		g.nodes[id] = endpointState{applied: now}
		return true
	}
	g.nodes[id] = endpointState{applied: st.applied, holding: true, held: eps}
	select {
	case g.wake <- struct{}{}:
	default:
	}
	return false
}

// due takes the held changes whose interval has ended, counting each as
// applied now, and returns when the next held one falls due (zero: none is
// held). Nodes whose interval ended with nothing held are forgotten.
func (g *endpointGate) due() (ready map[int64][]string, next time.Time) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, st := range g.nodes {
		at := st.applied.Add(g.interval)
		switch {
		case st.holding && !now.Before(at):
			if ready == nil {
				ready = map[int64][]string{}
			}
			ready[id] = st.held
			g.nodes[id] = endpointState{applied: now}
		case st.holding:
			if next.IsZero() || at.Before(next) {
				next = at
			}
		case !now.Before(at):
			delete(g.nodes, id)
		}
	}
	return ready, next
}

// applyHeldEndpoints stores the held endpoint changes that are due and
// publishes them; it returns when the next one is due (zero: none).
func (c *Coordinator) applyHeldEndpoints(ctx context.Context) time.Time {
	ready, next := c.endpoints.due()
	changed := false
	for id, eps := range ready {
		ver, err := c.store.SetEndpoints(ctx, id, eps)
		if err != nil {
			if !errors.Is(err, sql.ErrNoRows) && ctx.Err() == nil { // a deleted node is no error
				c.log.Error("apply held endpoints", "err", err)
			}
			continue
		}
		changed = changed || ver != 0
	}
	if changed {
		if err := c.publish(ctx); err != nil {
			c.log.Error("publish after endpoint changes", "err", err)
		}
	}
	return next
}
