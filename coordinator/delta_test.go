package coordinator

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
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
// A tag change reaches the streams it alters as peers removed and added,
// a policy change as rules alone. Every delta applied to the stream's
// last netmap is the netmap the coordinator would send whole.
func TestNetmapDeltas(t *testing.T) {
	ts := startServer(t, skipKeepAlive)
	ts.setPolicy(t, fmt.Sprintf(skipPolicy, 22))
	a1, a2, b1, old := ts.enrollTagged(t, "a1", "tag:a"), ts.enrollTagged(t, "a2", "tag:a"), ts.enrollTagged(t, "b1", "tag:b"), ts.enrollTagged(t, "old", "tag:a")
	ts.enrollTagged(t, "hub", "tag:hub") // reaches everyone on the port the policy names
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
	if applied.Digest() != whole.Digest() || applied.Version != whole.Version {
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

	// A change the policy sees (a tag) is compiled again, and each stream
	// gets what differs for it: a2 loses a1, b1 gains it (and rules that
	// let it in); the delta applied is the whole netmap.
	nmb, _ := ts.c.netmapFor(ts.c.state.Load(), b1.Node.ID)
	nma2 := applied
	if code, body := ts.doJSON(t, "PUT", wire.PathNodes+"/a1/tags", ts.admin, wire.SetTagsRequest{Tags: []string{"tag:b"}}); code != 204 {
		t.Fatalf("set tags: %d %s", code, body)
	}
	check := func(name string, s *stream, id int64, before *wire.Netmap, ok func(*wire.NetmapDelta) bool) {
		t.Helper()
		m := s.message(t, name+"'s delta")
		if m.Delta == nil || !ok(m.Delta) {
			t.Fatalf("%s got %+v (delta %+v), want another delta", name, m, m.Delta)
		}
		got, err := m.Delta.Apply(before)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := ts.c.netmapFor(ts.c.state.Load(), id)
		if got.Digest() != want.Digest() {
			t.Errorf("%s's netmap with the delta applied differs from the whole netmap:\n%+v\n%+v", name, got, want)
		}
	}
	check("a2", sa2, a2.Node.ID, nma2, func(d *wire.NetmapDelta) bool {
		return slices.Equal(d.Removed, []int64{a1.Node.ID}) && len(d.Peers) == 0
	})
	check("b1", sb1, b1.Node.ID, nmb, func(d *wire.NetmapDelta) bool {
		return len(d.Peers) == 1 && d.Peers[0].Name == "a1" && len(d.Removed) == 0 && d.Policy != nil
	})

	// A policy change that moves the hub's port sends every agent its
	// rules alone.
	nmb, _ = ts.c.netmapFor(ts.c.state.Load(), b1.Node.ID)
	ts.setPolicy(t, fmt.Sprintf(skipPolicy, 23))
	check("b1", sb1, b1.Node.ID, nmb, func(d *wire.NetmapDelta) bool {
		return d.Policy != nil && d.Self == nil && len(d.Peers) == 0 && len(d.Removed) == 0
	})
	// A new policy version that changes no one's rules is sent to no one
	// (an agent without deltas gets it whole).
	ts.setPolicy(t, fmt.Sprintf(skipPolicy, 23)+"\n")
	sb1.silent(t, "b1", 3)
	if m := sold.message(t, "the new version at the agent without deltas"); m.Netmap == nil {
		t.Errorf("old got %+v, want a whole netmap", m)
	}
}

// TestDiffNetmapEveryField: for a change of any one field of a netmap
// (as TestNetmapDigestEveryField makes them), the delta diffNetmap makes,
// applied to the netmap before, gives the netmap after; or diffNetmap says
// a delta cannot carry it, which it must say only of fields outside Self
// (but for its ID: another node's netmap), Peers, PolicyVersion and
// Rules; a new policy version alone is no news (but the first one is).
// Peers added and removed, too.
func TestDiffNetmapEveryField(t *testing.T) {
	filled := func() *wire.Netmap {
		nm := &wire.Netmap{}
		fill(t, reflect.ValueOf(nm).Elem(), "Netmap")
		nm.Self.ID = 1000 // not a peer's
		return nm
	}
	try := func(what string, before, after *wire.Netmap, deltaField bool) {
		t.Helper()
		d, ok := diffNetmap(before, after)
		switch {
		case !ok && deltaField:
			t.Errorf("%s changed: no delta", what)
		case !ok:
		case d == nil:
			// A new policy version with the same rules is no news.
			if before.Digest() != after.Digest() && what != "Netmap.PolicyVersion" {
				t.Errorf("%s changed: diffNetmap found no difference", what)
			}
		default:
			got, err := d.Apply(before)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if got.Digest() != after.Digest() {
				t.Errorf("%s changed: the delta applied differs from the netmap after", what)
			}
		}
	}
	changes := 0
	eachChange(t, reflect.ValueOf(filled()).Elem(), "Netmap", nil, func(path string, steps []int, change func(reflect.Value)) {
		if path == "Netmap.Version" {
			return
		}
		changes++
		after := filled()
		change(at(reflect.ValueOf(after).Elem(), steps))
		if strings.HasPrefix(path, "Netmap.Peers") {
			// Peers are matched by ID: a changed ID is one peer gone and
			// another added; two peers with one ID are not a netmap.
			if path == "Netmap.Peers (two elements)" && after.Peers[0].ID == after.Peers[1].ID {
				after.Peers[1].ID++
			}
		}
		deltaField := strings.HasPrefix(path, "Netmap.Self") && path != "Netmap.Self.ID" || strings.HasPrefix(path, "Netmap.Peers") || strings.HasPrefix(path, "Netmap.Rules") || path == "Netmap.PolicyVersion"
		try(path, filled(), after, deltaField)
	})
	if changes < 30 {
		t.Errorf("only %d changes tried", changes)
	}
	before := filled()
	after := filled()
	after.Peers = nil
	try("every peer removed", before, after, true)
	try("peers added to none", after, before, true)
	// The first policy is news even with the same rules (none).
	before, after = filled(), filled()
	before.PolicyVersion, before.Rules, after.Rules = 0, nil, nil
	if d, ok := diffNetmap(before, after); !ok || d == nil || d.Policy == nil || d.Policy.Version != after.PolicyVersion {
		t.Errorf("the first policy: delta %+v, %v; want its version", d, ok)
	}
}

// TestPolicyDelta: a policy change that leaves the peers as they were is
// worked out from the compiled policies (policyDelta): the rules of the
// nodes whose rules changed, and the entries of peers whose services a
// node may now reach; what it sends, applied, is the whole netmap.
func TestPolicyDelta(t *testing.T) {
	ts := startServer(t, time.Hour)
	const before = `{"acls": [{"action": "accept", "src": ["tag:viewer"], "dst": ["tag:web:22"]}]}`
	const after = `{"acls": [{"action": "accept", "src": ["tag:viewer"], "dst": ["tag:web:22,80"]}]}`
	ts.setPolicy(t, before)
	web, viewer := ts.enrollTagged(t, "web1", "tag:web"), ts.enrollTagged(t, "viewer1", "tag:viewer")
	if _, err := ts.c.store.SetServices(context.Background(), web.Node, []wire.Service{{Name: "web", Port: 80, Proto: wire.ServiceTCP}}, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	if err := ts.c.publish(context.Background()); err != nil {
		t.Fatal(err)
	}
	prev := ts.c.state.Load()
	nmv, _ := ts.c.netmapFor(prev, viewer.Node.ID)
	nmw, _ := ts.c.netmapFor(prev, web.Node.ID)
	if len(nmv.Peers) != 1 || len(nmv.Peers[0].Services) != 0 {
		t.Fatalf("viewer's netmap before: %+v; want web1 without the service it may not reach", nmv.Peers)
	}
	ts.setPolicy(t, after)
	cur := ts.c.state.Load()
	for _, tc := range []struct {
		name string
		id   int64
		nm   *wire.Netmap
		ok   func(*wire.NetmapDelta) bool
	}{
		{"viewer1", viewer.Node.ID, nmv, func(d *wire.NetmapDelta) bool {
			return d.Policy == nil && len(d.Peers) == 1 && len(d.Peers[0].Services) == 1
		}},
		{"web1", web.Node.ID, nmw, func(d *wire.NetmapDelta) bool { return d.Policy != nil && len(d.Peers) == 0 }},
	} {
		d, ok := policyDelta(prev, cur, tc.id)
		if !ok || d == nil || !tc.ok(d) {
			t.Errorf("%s: policyDelta = %+v, %v", tc.name, d, ok)
			continue
		}
		got, err := d.Apply(tc.nm)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := ts.c.netmapFor(cur, tc.id)
		if d.Policy == nil {
			want.PolicyVersion = got.PolicyVersion // its rules did not change: no news
		}
		if got.Digest() != want.Digest() {
			t.Errorf("%s: the delta applied differs from the whole netmap:\n%+v\n%+v", tc.name, got, want)
		}
	}
	// Peers that change, or nodes that change, are not its to say.
	ts.setPolicy(t, `{"acls": []}`)
	if _, ok := policyDelta(cur, ts.c.state.Load(), viewer.Node.ID); ok {
		t.Error("policyDelta took a change of peers")
	}
	cur = ts.c.state.Load()
	ts.enrollTagged(t, "web2", "tag:web")
	if _, ok := policyDelta(cur, ts.c.state.Load(), viewer.Node.ID); ok {
		t.Error("policyDelta took a join")
	}
}

// TestRulesBySourceID: rules name their source nodes by ID (protocol 7),
// so a join sends each peer that may reach the new node its entry and
// rules of a few bytes per source, under 2 KiB in all; an agent of
// protocol 6 gets the same rules with the sources' addresses instead,
// whole and in deltas.
func TestRulesBySourceID(t *testing.T) {
	ts := startServer(t, skipKeepAlive)
	ts.setPolicy(t, fmt.Sprintf(skipPolicy, 22))
	a1, a2 := ts.enrollTagged(t, "a1", "tag:a"), ts.enrollTagged(t, "a2", "tag:a")
	open := func(n wire.EnrollResponse, protocol int) (*stream, *wire.Netmap) {
		s := ts.openStream(t, n.Credential, wire.MapRequest{ProtocolVersion: protocol, PublicKey: n.Node.PublicKey, Deltas: true})
		m := s.message(t, n.Node.Name+"'s first netmap")
		if m.Netmap == nil {
			t.Fatalf("%s's first message %+v, want a whole netmap", n.Node.Name, m)
		}
		return s, m.Netmap
	}
	s1, nm1 := open(a1, 6)
	s2, nm2 := open(a2, wire.ProtocolVersion)
	s1.drain(t, "a1")
	s2.drain(t, "a2")
	ids := []int64{a1.Node.ID, a2.Node.ID}
	addrs := func(ns ...wire.EnrollResponse) []netip.Prefix {
		var out []netip.Prefix
		for _, n := range ns {
			out = append(out, n.Node.Addresses...)
		}
		return out
	}
	if len(nm2.Rules) != 1 || !slices.Equal(nm2.Rules[0].SrcPeers, ids) || len(nm2.Rules[0].Srcs) != 0 {
		t.Fatalf("a2's rules %+v, want one from nodes %v by ID", nm2.Rules, ids)
	}
	if r := nm2.FilterRules(); !slices.Equal(r[0].Srcs, addrs(a1, a2)) {
		t.Errorf("a2's rules resolved: %+v, want sources %v", r, addrs(a1, a2))
	}
	if len(nm1.Rules) != 1 || len(nm1.Rules[0].SrcPeers) != 0 || !slices.Equal(nm1.Rules[0].Srcs, addrs(a1, a2)) {
		t.Fatalf("a1 (protocol 6) got rules %+v, want sources %v by address", nm1.Rules, addrs(a1, a2))
	}

	a3 := ts.enrollTagged(t, "a3", "tag:a")
	m := s2.message(t, "a3's join at a2")
	d := m.Delta
	if d == nil || len(d.Peers) != 1 || d.Peers[0].Name != "a3" || d.Policy == nil || !slices.Equal(d.Policy.Rules[0].SrcPeers, append(ids, a3.Node.ID)) {
		t.Fatalf("a2 got %+v (delta %+v), want a3's entry and rules from a1, a2, a3 by ID", m, d)
	}
	b, _ := json.Marshal(m)
	t.Logf("a3's join at a2: %d bytes", len(b))
	if len(b) >= 2048 {
		t.Errorf("a3's join cost a2 %d bytes, want < 2 KiB: %s", len(b), b)
	}
	applied, err := d.Apply(nm2)
	if err != nil {
		t.Fatal(err)
	}
	if r := applied.FilterRules(); !slices.Equal(r[0].Srcs, addrs(a1, a2, a3)) {
		t.Errorf("a2's rules after the join, resolved: %+v, want sources %v", r, addrs(a1, a2, a3))
	}
	m = s1.message(t, "a3's join at a1 (protocol 6)")
	if d := m.Delta; d == nil || d.Policy == nil || len(d.Policy.Rules[0].SrcPeers) != 0 || !slices.Equal(d.Policy.Rules[0].Srcs, addrs(a1, a2, a3)) {
		t.Errorf("a1 (protocol 6) got %+v, want rules from a1, a2, a3 by address", d)
	}
}

// TestStreamResumes: an agent that names the netmap it holds
// (MapRequest.HaveDigest) gets, when that is its netmap now, a first
// delta that carries only the version, and the changes after it as
// deltas; when something changed meanwhile, or without deltas, the whole
// netmap.
func TestStreamResumes(t *testing.T) {
	ts := startServer(t, skipKeepAlive)
	ts.setPolicy(t, fmt.Sprintf(skipPolicy, 22))
	a1, a2 := ts.enrollTagged(t, "a1", "tag:a"), ts.enrollTagged(t, "a2", "tag:a")
	open := func(have *wire.Netmap, deltas bool) (*stream, wire.MapMessage) {
		req := wire.MapRequest{PublicKey: a1.Node.PublicKey, Deltas: deltas}
		if have != nil {
			dg := have.Digest()
			req.HaveDigest = hex.EncodeToString(dg[:])
		}
		s := ts.openStream(t, a1.Credential, req)
		t.Cleanup(s.cancel)
		return s, s.message(t, "the first message")
	}
	s, m := open(nil, true)
	nm := m.Netmap
	if nm == nil {
		t.Fatalf("first message %+v, want a whole netmap", m)
	}
	s.drain(t, "a1")
	s.cancel()
	resumes := func() float64 {
		return metricValue(t, ts.c, "wiremesh_coordinator_netmap_pushes_total", "trigger", "resume")
	}

	s, m = open(nm, true)
	if d := m.Delta; d == nil || d.Version < nm.Version || d.Self != nil || d.Peers != nil || d.Removed != nil || d.Policy != nil {
		t.Fatalf("resuming with the netmap held: first message %+v (delta %+v), want a delta of the version alone", m, m.Delta)
	}
	if resumes() != 1 {
		t.Errorf("resumes counted: %v, want 1", resumes())
	}
	eps := []string{"192.0.2.9:41641"}
	if _, err := ts.c.store.SetEndpoints(context.Background(), a2.Node.ID, eps); err != nil {
		t.Fatal(err)
	}
	if err := ts.c.publish(context.Background()); err != nil {
		t.Fatal(err)
	}
	m = s.message(t, "a2's endpoints")
	if m.Delta == nil || len(m.Delta.Peers) != 1 || !slices.Equal(m.Delta.Peers[0].Endpoints, eps) {
		t.Fatalf("after resuming: %+v, want a delta with a2's endpoints", m)
	}
	now, err := m.Delta.Apply(nm)
	if err != nil {
		t.Fatal(err)
	}
	s.cancel()

	// nm is no longer a1's netmap: it comes whole. now is, but an agent
	// without deltas gets it whole all the same.
	if _, m := open(nm, true); m.Netmap == nil {
		t.Errorf("resuming with a netmap that changed since: %+v, want the whole netmap", m)
	}
	if _, m := open(now, false); m.Netmap == nil {
		t.Errorf("without deltas: %+v, want the whole netmap", m)
	}
	if resumes() != 1 {
		t.Errorf("resumes counted: %v, want 1", resumes())
	}
	if _, m := open(now, true); m.Delta == nil {
		t.Errorf("resuming with the current netmap: %+v, want a delta of the version", m)
	}
}
