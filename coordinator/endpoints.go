package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"sync"
	"time"
)

// DefaultEndpointInterval is the time in which one endpoint change of a
// node that the coordinator publishes comes back (beyond endpointBurst),
// unless Config.EndpointInterval says otherwise.
const DefaultEndpointInterval = 5 * time.Second

// endpointBurst is how many endpoint changes a node may make at once
// before they are spaced out: a starting agent reports its interface
// addresses, then (a fraction of a second later) the address STUN saw,
// then perhaps a second server's; held for an interval, the reflexive
// address reached the peers 5 s late and every new pair of easy NATs went
// direct only then.
const endpointBurst = 3

// endpointGate spaces out each node's endpoint changes with a token
// bucket: endpointBurst changes apply at once, then one per interval; a
// change when none is due is held, and the newest held value is applied
// when the next one is (by the maintain loop). A node that changes its
// endpoints in a loop costs its peers one netmap an interval, not one a
// change, and an agent whose address changed twice in a second still ends
// up advertising the last one.
type endpointGate struct {
	interval time.Duration
	now      func() time.Time
	wake     chan struct{} // buffered (1): a change was held

	mu sync.Mutex
	// nodes is guarded by mu. A node missing from it has a full bucket
	// and nothing held.
	nodes map[int64]endpointState
}

// endpointState is one node's entry in an endpointGate.
type endpointState struct {
	tokens  float64   // changes it may make, as of at
	at      time.Time // when tokens was counted
	holding bool      // held is a change to apply when a token is due
	held    []string
}

// refill counts the tokens st has at now.
func (g *endpointGate) refill(st endpointState, now time.Time) endpointState {
	st.tokens = min(endpointBurst, st.tokens+float64(now.Sub(st.at))/float64(g.interval))
	st.at = now
	return st
}

// hasToken reports whether st has a whole token (up to rounding).
func hasToken(st endpointState) bool { return st.tokens >= 1-1e-9 }

// nextToken is when st (counted at its at) has a whole token.
func (g *endpointGate) nextToken(st endpointState) time.Time {
	return st.at.Add(time.Duration((1 - st.tokens) * float64(g.interval)))
}

func newEndpointGate(interval time.Duration, now func() time.Time) *endpointGate {
	return &endpointGate{interval: interval, now: now, wake: make(chan struct{}, 1), nodes: map[int64]endpointState{}}
}

// offer decides about endpoints eps that node id asks for, cur being its
// stored ones: apply reports that eps are to be stored now, which takes a
// token. False: eps are unchanged, or held.
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
	if !ok {
		st = endpointState{tokens: endpointBurst, at: now}
	}
	st = g.refill(st, now)
	if hasToken(st) {
		st.tokens = max(0, st.tokens-1)
		g.nodes[id] = st
		return true
	}
	st.holding, st.held = true, eps
	g.nodes[id] = st
	select {
	case g.wake <- struct{}{}:
	default:
	}
	return false
}

// due takes the held changes that have a token now, and returns when the
// next held one will (zero: none is held). Nodes whose bucket is full
// again with nothing held are forgotten.
func (g *endpointGate) due() (ready map[int64][]string, next time.Time) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, st := range g.nodes {
		st = g.refill(st, now)
		switch {
		case st.holding && hasToken(st):
			if ready == nil {
				ready = map[int64][]string{}
			}
			ready[id] = st.held
			g.nodes[id] = endpointState{tokens: max(0, st.tokens-1), at: now}
		case st.holding:
			g.nodes[id] = st
			if at := g.nextToken(st); next.IsZero() || at.Before(next) {
				next = at
			}
		case st.tokens >= endpointBurst:
			delete(g.nodes, id)
		default:
			g.nodes[id] = st
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
