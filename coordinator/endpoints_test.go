package coordinator

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// TestEndpointGate: the first change applies at once, changes within the
// interval after it are held and the newest applies when it ends; a node
// that returns to its stored value while held ends up unchanged.
func TestEndpointGate(t *testing.T) {
	now := time.Unix(1000, 0)
	g := newEndpointGate(5*time.Second, func() time.Time { return now })
	a, b, c := []string{"192.0.2.1:1"}, []string{"192.0.2.2:1"}, []string{"192.0.2.3:1"}
	step := func(d time.Duration) { now = now.Add(d) }
	if g.offer(1, nil, nil) {
		t.Error("an unchanged list applies")
	}
	if !g.offer(1, nil, a) {
		t.Fatal("a first change is held")
	}
	step(time.Second)
	if g.offer(1, a, b) || g.offer(1, a, c) {
		t.Fatal("a change 1 s after the last applies at once")
	}
	if ready, next := g.due(); ready != nil || !next.Equal(time.Unix(1005, 0)) {
		t.Fatalf("due() at 1 s = %v, %v; want nothing until 1005", ready, next)
	}
	step(4 * time.Second)
	if ready, next := g.due(); !slices.Equal(ready[1], c) || !next.IsZero() {
		t.Fatalf("due() at 5 s = %v, %v; want the newest held value %v", ready, next, c)
	}
	step(time.Second)
	if g.offer(1, c, a) {
		t.Fatal("a change 1 s after a held one applied applies at once")
	}
	g.offer(1, c, c) // back to the stored value
	step(5 * time.Second)
	if ready, _ := g.due(); !slices.Equal(ready[1], c) {
		t.Fatalf("due() = %v, want the stored value %v (no change)", ready, c)
	}
	step(5 * time.Second)
	if _, next := g.due(); !next.IsZero() || len(g.nodes) != 0 {
		t.Errorf("a quiet node is kept: %v", g.nodes)
	}
	if !g.offer(2, nil, a) {
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
	// One change applies at once, one when each interval ends while
	// changes come, and the last one after them.
	bound := 2 + int(elapsed/interval)
	t.Logf("%d endpoint changes in %s: the peer got %d netmaps (at most %d allowed)", changes, elapsed.Round(time.Millisecond), got, bound)
	if got > bound {
		t.Errorf("%d endpoint changes in %s sent the peer %d netmaps, want at most %d (one per %s)", changes, elapsed, got, bound, interval)
	}
}
