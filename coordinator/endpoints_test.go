package coordinator

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// TestEndpointGate: endpointBurst changes apply at once (a starting agent's
// interface addresses, then its reflexive address), then one per interval:
// a change when none is due is held and the newest applies when one is; a
// node that returns to its stored value while held ends up unchanged.
func TestEndpointGate(t *testing.T) {
	now := time.Unix(1000, 0)
	g := newEndpointGate(5*time.Second, func() time.Time { return now })
	eps := func(i int) []string { return []string{fmt.Sprintf("192.0.2.%d:1", i)} }
	step := func(d time.Duration) { now = now.Add(d) }
	if g.offer(1, nil, nil) {
		t.Error("an unchanged list applies")
	}
	cur := []string(nil)
	for i := range endpointBurst {
		if !g.offer(1, cur, eps(i)) {
			t.Fatalf("change %d of a burst of %d is held", i+1, endpointBurst)
		}
		cur = eps(i)
		step(100 * time.Millisecond)
	}
	if g.offer(1, cur, eps(10)) || g.offer(1, cur, eps(11)) {
		t.Fatal("a change beyond the burst applies at once")
	}
	// 0.3 s of the interval has refilled 0.06 of a token.
	if ready, next := g.due(); ready != nil || !next.Equal(time.Unix(1005, 0)) {
		t.Fatalf("due() after the burst = %v, %v; want nothing until 1005", ready, next)
	}
	step(4700 * time.Millisecond)
	if ready, next := g.due(); !slices.Equal(ready[1], eps(11)) || !next.IsZero() {
		t.Fatalf("due() at 1005 = %v, %v; want the newest held value %v", ready, next, eps(11))
	}
	cur = eps(11)
	step(time.Second)
	if g.offer(1, cur, eps(1)) {
		t.Fatal("a change 1 s after a held one applied applies at once")
	}
	g.offer(1, cur, cur) // back to the stored value
	step(4 * time.Second)
	if ready, _ := g.due(); !slices.Equal(ready[1], cur) {
		t.Fatalf("due() = %v, want the stored value %v (no change)", ready, cur)
	}
	step(3 * 5 * time.Second)
	if _, next := g.due(); !next.IsZero() || len(g.nodes) != 0 {
		t.Errorf("a quiet node with a full bucket is kept: %v", g.nodes)
	}
	if !g.offer(2, nil, eps(1)) {
		t.Error("another node's change waits for node 1")
	}
}

// TestEndpointFlood: a node that reopens its netmap stream with new
// endpoints 40 times in a row costs its peer a netmap per endpoint
// interval, not one per change, and its last endpoints still reach the
// peer. Without the gate the peer gets a netmap per change.
func TestEndpointFlood(t *testing.T) {
	const interval, changes = time.Second, 40
	ts := startServer(t, time.Hour, func(c *Config) { c.EndpointInterval = interval })
	ts.setPolicy(t, `{"acls": [{"action": "accept", "src": ["tag:a"], "dst": ["tag:a:*"]}]}`)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true, Tags: []string{"tag:a"}})
	peer := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "peer"})
	flooder := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "flooder"})
	ps := ts.openStream(t, peer.Credential, wire.MapRequest{PublicKey: peer.Node.PublicKey})
	ps.next(t, "the peer's first netmap")

	endpoint := func(i int) string { return fmt.Sprintf("192.0.2.%d:51820", i+1) }
	start := time.Now()
	for i := range changes {
		s := ts.openStream(t, flooder.Credential, wire.MapRequest{PublicKey: flooder.Node.PublicKey, Endpoints: []string{endpoint(i)}})
		s.cancel()
		<-s.done
	}
	elapsed := time.Since(start)

	last := []string{endpoint(changes - 1)}
	got := 0
	ps.netmap(t, "the flooder's last endpoints", func(nm *wire.Netmap) bool {
		got++
		return slices.ContainsFunc(nm.Peers, func(p wire.Node) bool { return p.Name == "flooder" && slices.Equal(p.Endpoints, last) })
	})
	// A burst applies at once, one when each interval ends while changes
	// come, and the last one after them.
	bound := endpointBurst + 1 + int(elapsed/interval)
	t.Logf("%d endpoint changes in %s: the peer got %d netmaps (at most %d allowed)", changes, elapsed.Round(time.Millisecond), got, bound)
	if got > bound {
		t.Errorf("%d endpoint changes in %s sent the peer %d netmaps, want at most %d (one per %s)", changes, elapsed, got, bound, interval)
	}
}
