package coordinator

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// message returns the stream's next message that is not a keep-alive.
func (s *stream) message(t *testing.T, what string) wire.MapMessage {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case m := <-s.msgs:
			if !m.KeepAlive {
				return m
			}
		case <-s.done:
			t.Fatalf("stream ended (%v) before %s", s.err, what)
		case <-timeout:
			t.Fatalf("no %s within %s", what, waitFor)
		}
	}
}

// silent reads n keep-alives and fails on anything else: the stream was
// sent nothing (see quiet).
func (s *stream) silent(t *testing.T, name string, n int) {
	t.Helper()
	for got := 0; got < n; got++ {
		if m := s.messageOrKeepAlive(t, name); !m.KeepAlive {
			t.Fatalf("%s: sent %+v after a change it does not see; want keep-alives only", name, m)
		}
	}
}

func (s *stream) messageOrKeepAlive(t *testing.T, what string) wire.MapMessage {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case <-s.done:
		t.Fatalf("stream ended (%v) before %s", s.err, what)
	case <-time.After(waitFor):
		t.Fatalf("nothing on %s within %s", what, waitFor)
	}
	return wire.MapMessage{}
}

// TestNetmapDeltas: a node's new endpoints reach its peers as a delta
// that carries its entry alone, and the node itself as a delta of its
// Self; a node that is not its peer gets nothing; an agent that did not
// ask for deltas gets the whole netmap; the policy is not compiled again.
// The delta applied to the stream's last netmap is the netmap the
// coordinator would send whole.
func TestNetmapDeltas(t *testing.T) {
	ts := startServer(t, skipKeepAlive)
	ts.setPolicy(t, fmt.Sprintf(skipPolicy, 22))
	enroll := func(name, tag string) wire.EnrollResponse {
		jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Tags: []string{tag}})
		return ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: name})
	}
	a1, a2, b1, old := enroll("a1", "tag:a"), enroll("a2", "tag:a"), enroll("b1", "tag:b"), enroll("old", "tag:a")
	open := func(n wire.EnrollResponse, deltas bool) (*stream, *wire.Netmap) {
		s := ts.openStream(t, n.Credential, wire.MapRequest{PublicKey: n.Node.PublicKey, Deltas: deltas})
		m := s.message(t, n.Node.Name+"'s first netmap")
		if m.Netmap == nil {
			t.Fatalf("%s's first message %+v, want a whole netmap", n.Node.Name, m)
		}
		return s, m.Netmap
	}
	sa1, _ := open(a1, true)
	sa2, nm2 := open(a2, true)
	sb1, _ := open(b1, true)
	sold, _ := open(old, false)
	// Opening streams touched nodes (last seen is not in netmaps, but
	// wait until every stream has seen the newest state).
	for _, s := range []*stream{sa1, sa2, sb1, sold} {
		s.drain(t, "a stream")
	}
	compiled := ts.c.state.Load().compiled

	eps := []string{"192.0.2.7:41641"}
	if _, err := ts.c.store.SetEndpoints(context.Background(), a1.Node.ID, eps); err != nil {
		t.Fatal(err)
	}
	if err := ts.c.publish(context.Background()); err != nil {
		t.Fatal(err)
	}
	m := sa2.message(t, "a1's endpoints at a2")
	if m.Delta == nil || m.Delta.Self != nil || len(m.Delta.Peers) != 1 || m.Delta.Peers[0].Name != "a1" || !slices.Equal(m.Delta.Peers[0].Endpoints, eps) {
		t.Fatalf("a2 got %+v, want a delta with a1's entry and its new endpoints", m)
	}
	applied, err := m.Delta.Apply(nm2)
	if err != nil {
		t.Fatal(err)
	}
	whole, _ := ts.c.netmapFor(ts.c.state.Load(), a2.Node.ID)
	if digestNetmap(applied) != digestNetmap(whole) || applied.Version != whole.Version {
		t.Errorf("a2's netmap with the delta applied differs from the whole netmap:\n%+v\n%+v", applied, whole)
	}
	if m := sa1.message(t, "a1's own endpoints"); m.Delta == nil || m.Delta.Self == nil || !slices.Equal(m.Delta.Self.Endpoints, eps) || len(m.Delta.Peers) != 0 {
		t.Errorf("a1 got %+v, want a delta of its Self", m)
	}
	if m := sold.message(t, "a1's endpoints at an agent without deltas"); m.Netmap == nil || !slices.ContainsFunc(m.Netmap.Peers, func(p wire.Node) bool { return p.Name == "a1" && slices.Equal(p.Endpoints, eps) }) {
		t.Errorf("old got %+v, want a whole netmap with a1's endpoints", m)
	}
	sb1.silent(t, "b1", 3)
	if ts.c.state.Load().compiled != compiled {
		t.Error("an endpoint change compiled the policy again")
	}

	// A change the policy sees (a tag) is whole, for everyone it alters.
	if code, body := ts.doJSON(t, "PUT", wire.PathNodes+"/a1/tags", ts.admin, wire.SetTagsRequest{Tags: []string{"tag:b"}}); code != 204 {
		t.Fatalf("set tags: %d %s", code, body)
	}
	if m := sa2.message(t, "a1 gone from a2"); m.Netmap == nil || slices.Contains(peerNames(m.Netmap), "a1") {
		t.Errorf("a2 got %+v, want a whole netmap without a1", m)
	}
	if m := sb1.message(t, "a1 at b1"); m.Netmap == nil || !slices.Contains(peerNames(m.Netmap), "a1") {
		t.Errorf("b1 got %+v, want a whole netmap with a1", m)
	}
}

// TestStreamDeltaWalk: a stream that missed more snapshots than
// maxDeltaSteps, or one built whole, gets a whole netmap; one that missed
// a few deltas gets them merged into one.
func TestStreamDeltaWalk(t *testing.T) {
	ts := startServer(t, time.Hour)
	ts.setPolicy(t, allowAll)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	b := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "b"})
	from := ts.c.state.Load()
	setEndpoints := func(id int64, ep string) {
		t.Helper()
		if _, err := ts.c.store.SetEndpoints(context.Background(), id, []string{ep}); err != nil {
			t.Fatal(err)
		}
		if err := ts.c.publish(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	setEndpoints(a.Node.ID, "192.0.2.1:1")
	setEndpoints(b.Node.ID, "192.0.2.2:1")
	setEndpoints(a.Node.ID, "192.0.2.1:2")
	to, whole, d := streamDelta(from, b.Node.ID)
	if whole || d == nil || to != ts.c.state.Load() || d.Version != to.version {
		t.Fatalf("streamDelta after three deltas: whole %v, delta %+v; want one delta to the newest", whole, d)
	}
	if d.Self == nil || d.Self.Endpoints[0] != "192.0.2.2:1" || len(d.Peers) != 1 || d.Peers[0].Endpoints[0] != "192.0.2.1:2" {
		t.Errorf("merged delta %+v: want b's own endpoints and a's newest", d)
	}
	for i := range maxDeltaSteps {
		setEndpoints(a.Node.ID, fmt.Sprintf("192.0.2.1:%d", 10+i))
	}
	if _, whole, _ := streamDelta(from, b.Node.ID); !whole {
		t.Errorf("a stream %d snapshots behind gets a delta, want a whole netmap", maxDeltaSteps+3)
	}
	from = ts.c.state.Load()
	ts.setPolicy(t, allowAll+" ")
	if _, whole, _ := streamDelta(from, b.Node.ID); !whole {
		t.Error("a policy change came as a delta")
	}
}
