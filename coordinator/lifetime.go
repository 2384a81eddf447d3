package coordinator

import (
	"context"
	"sync"
	"time"
)

// DefaultEphemeralTimeout is how long an ephemeral node may be offline
// before the coordinator deletes it, unless Config.EphemeralTimeout says
// otherwise.
const DefaultEphemeralTimeout = 5 * time.Minute

// maintain does the coordinator's timed work until ctx is done: it
// follows the changes other coordinators make (follow), says it is up
// (beat), and, while it holds the timers lease (only one coordinator of a
// database does), publishes each node expiry when it falls due, so that
// peers drop the node at once, and deletes ephemeral nodes that have been
// offline for the ephemeral timeout. It also applies endpoint changes
// held back by the endpoint gate when their interval ends.
func (c *Coordinator) maintain(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	gained := make(chan struct{}, 1)
	wg.Go(func() { c.follow(ctx) })
	wg.Go(func() { c.beat(ctx, gained) })
	sweepEvery := min(max(c.cfg.EphemeralTimeout/4, 100*time.Millisecond), 30*time.Second)
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	due := time.NewTimer(0)
	defer due.Stop()
	held := time.NewTimer(0)
	defer held.Stop()
	retry := false
	for {
		s := c.state.Load()
		select {
		case <-ctx.Done():
			return
		case <-s.changed:
		case <-gained:
			retry = !c.expireDue(ctx) // those that fell due while nobody held it
		case <-due.C:
			if c.isLeader() {
				retry = !c.expireDue(ctx)
			}
		case <-sweep.C:
			if c.isLeader() {
				c.sweepEphemeral(ctx)
			}
		case <-c.endpoints.wake:
		case <-held.C:
		}
		if next := c.applyHeldEndpoints(ctx); !next.IsZero() {
			held.Reset(time.Until(next))
		} else {
			held.Stop()
		}
		// Every wake-up re-arms the expiry timer from the newest snapshot.
		switch s = c.state.Load(); {
		case !c.isLeader():
			due.Stop() // gained restarts it
		case retry:
			due.Reset(time.Second)
		case !s.nextExpiry.IsZero():
			due.Reset(time.Until(s.nextExpiry))
		default:
			due.Stop()
		}
	}
}

// expireDue publishes the expiries that have fallen due, and reports
// whether that worked.
func (c *Coordinator) expireDue(ctx context.Context) bool {
	names, err := c.store.ExpireDue(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error("publish node expiries; retrying in 1 s", "err", err)
		}
		return false
	}
	if len(names) == 0 {
		return true
	}
	if err := c.publish(ctx); err != nil {
		c.log.Error("publish after node expiry; retrying in 1 s", "err", err)
		return false
	}
	for _, n := range names {
		c.log.Info("node expired", "node", n)
	}
	return true
}

// sweepEphemeral deletes the ephemeral nodes that have been offline for
// the ephemeral timeout. A node counts as offline from its last stream's
// end, one that never held a stream from its enrollment (so a node just
// enrolled is not swept before its first stream opens), and either at
// most from this coordinator's start: agents reconnect after a
// coordinator restart.
func (c *Coordinator) sweepEphemeral(ctx context.Context) {
	nodes, err := c.store.AdminNodes(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error("sweep ephemeral nodes", "err", err)
		}
		return
	}
	now := time.Now()
	deleted := 0
	for _, n := range nodes {
		if !n.Ephemeral || c.isOnline(n) {
			continue
		}
		since := n.LastSeen
		if since.IsZero() {
			since = n.Created
		}
		if since.Before(c.started) {
			since = c.started
		}
		if now.Sub(since) < c.cfg.EphemeralTimeout {
			continue
		}
		ok, err := c.store.DeleteEphemeral(ctx, n.ID, n.LastSeen)
		if err != nil {
			c.log.Error("delete ephemeral node", "node", n.Name, "err", err)
			continue
		}
		if ok {
			deleted++
			c.log.Info("ephemeral node deleted", "node", n.Name, "offline_since", since.UTC().Format(time.RFC3339))
		}
	}
	if deleted > 0 {
		if err := c.publish(ctx); err != nil {
			c.log.Error("publish after deleting ephemeral nodes", "err", err)
		}
	}
}
