package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// skipKeepAlive is the keep-alive interval of TestNetmapSkipsUnchanged:
// short, so that an idle stream proves it is alive quickly.
const skipKeepAlive = 50 * time.Millisecond

// next returns the stream's next netmap, skipping keep-alives.
func (s *stream) next(t *testing.T, what string) *wire.Netmap {
	t.Helper()
	return s.netmap(t, what, func(*wire.Netmap) bool { return true })
}

// drain reads what the stream has buffered (keep-alives piled up while
// the test read other streams) until nothing came for half a keep-alive
// interval. A netmap among them fails the test.
func (s *stream) drain(t *testing.T, name string) {
	t.Helper()
	for {
		select {
		case m := <-s.msgs:
			if m.Netmap != nil {
				t.Fatalf("%s: unexpected netmap v%d (peers %v)", name, m.Netmap.Version, peerNames(m.Netmap))
			}
		case <-s.done:
			t.Fatalf("%s: stream ended (%v)", name, s.err)
		case <-time.After(skipKeepAlive / 2):
			return
		}
	}
}

// quiet reads the stream until n keep-alives came and fails on a netmap:
// the stream is alive and was sent nothing. Of keep-alives sent after a
// change, the second comes after the stream's loop has looked at it, so
// n >= 3 after a drain proves that the change was considered and skipped.
func (s *stream) quiet(t *testing.T, name string, n int) {
	t.Helper()
	timeout := time.After(waitFor)
	for got := 0; got < n; {
		select {
		case m := <-s.msgs:
			if m.Netmap != nil {
				t.Fatalf("%s: netmap v%d (peers %v) after a change it does not see; want keep-alives only", name, m.Netmap.Version, peerNames(m.Netmap))
			}
			got++
		case <-s.done:
			t.Fatalf("%s: stream ended (%v)", name, s.err)
		case <-timeout:
			t.Fatalf("%s: %d keep-alives within %s, want %d", name, got, waitFor, n)
		}
	}
}

// skipPolicy keeps tag:a and tag:b apart; tag:hub reaches both.
const skipPolicy = `{"acls": [
	{"action": "accept", "src": ["tag:a"], "dst": ["tag:a:*"]},
	{"action": "accept", "src": ["tag:b"], "dst": ["tag:b:*"]},
	{"action": "accept", "src": ["tag:hub"], "dst": ["*:%d"]},
]}`

// TestNetmapSkipsUnchanged: a change goes only to the streams whose netmap
// it alters; the others get keep-alives and no netmap, and the skips are
// counted. A policy change and a node's own change still reach it.
func TestNetmapSkipsUnchanged(t *testing.T) {
	ts := startServer(t, skipKeepAlive)
	ts.setPolicy(t, fmt.Sprintf(skipPolicy, 22))
	a1, b1, hub := ts.enrollTagged(t, "a1", "tag:a"), ts.enrollTagged(t, "b1", "tag:b"), ts.enrollTagged(t, "hub", "tag:hub")
	open := func(n wire.EnrollResponse, port int) (*stream, *wire.Netmap) {
		s := ts.openStream(t, n.Credential, wire.MapRequest{PublicKey: n.Node.PublicKey, ListenPort: port})
		return s, s.next(t, n.Node.Name+"'s first netmap")
	}
	sh, _ := open(hub, 51800)
	sa, _ := open(a1, 51801)
	sb, nmb := open(b1, 51802)
	if got := peerNames(nmb); !slices.Equal(got, []string{"hub"}) {
		t.Fatalf("b1's peers %v, want [hub]", got)
	}
	// A stream's opening records its node's last-seen time, which the
	// next change carries to its peers' netmaps (and its own): a policy
	// change, which every stream gets, brings all up to date.
	streams := map[string]*stream{"hub": sh, "a1": sa, "b1": sb}
	pv := ts.setPolicy(t, fmt.Sprintf(skipPolicy, 2201)).Version
	for name, s := range streams {
		s.netmap(t, name+"'s policy", func(nm *wire.Netmap) bool { return nm.PolicyVersion == pv })
	}
	sa.drain(t, "a1")
	sb.drain(t, "b1")
	skips := metricValue(t, ts.c, "wiremesh_coordinator_netmap_skips_total")

	// a2 enrolls: a1 and hub learn it, b1 does not see it.
	a2 := ts.enrollTagged(t, "a2", "tag:a")
	hasA2 := func(nm *wire.Netmap) bool { return slices.Contains(peerNames(nm), "a2") }
	if nm := sa.next(t, "a2 at a1"); !hasA2(nm) {
		t.Errorf("a1's next netmap has peers %v, want a2 among them", peerNames(nm))
	}
	sh.netmap(t, "a2 at hub", hasA2)
	sb.quiet(t, "b1", 4)

	// a2 connects with an endpoint: a1 and hub learn it; b1 still nothing.
	sb.drain(t, "b1")
	sa2, _ := open(a2, 51803)
	hasA2Endpoint := func(nm *wire.Netmap) bool {
		return slices.ContainsFunc(nm.Peers, func(p wire.Node) bool { return p.Name == "a2" && len(p.Endpoints) > 0 })
	}
	if nm := sa.next(t, "a2's endpoint at a1"); !hasA2Endpoint(nm) {
		t.Errorf("a1's next netmap has peers %+v, want a2 with an endpoint", nm.Peers)
	}
	sh.netmap(t, "a2's endpoint at hub", hasA2Endpoint)
	sb.quiet(t, "b1", 4)
	if got := metricValue(t, ts.c, "wiremesh_coordinator_netmap_skips_total"); got < skips+2 {
		t.Errorf("netmap skips %v, want at least %v (b1's, twice)", got, skips+2)
	}

	// A policy change reaches every stream; b1's first netmap since the
	// flush above is this one.
	streams["a2"] = sa2
	pv = ts.setPolicy(t, fmt.Sprintf(skipPolicy, 2202)).Version
	for name, s := range streams {
		if name == "hub" {
			s.netmap(t, "hub's policy", func(nm *wire.Netmap) bool { return nm.PolicyVersion == pv })
			continue
		}
		if nm := s.next(t, name+"'s policy"); nm.PolicyVersion != pv {
			t.Errorf("%s's next netmap has policy %d, want %d", name, nm.PolicyVersion, pv)
		}
	}

	// b1's own change (its tags) reaches b1 and hub, not a1 or a2.
	sa.drain(t, "a1")
	sa2.drain(t, "a2")
	if code, body := ts.doJSON(t, "PUT", wire.PathNodes+"/b1/tags", ts.admin, wire.SetTagsRequest{Tags: []string{"tag:b", "tag:db"}}); code != http.StatusNoContent {
		t.Fatalf("set b1's tags: %d %s", code, body)
	}
	if nm := sb.next(t, "b1's new tags"); !slices.Equal(nm.Self.Tags, []string{"tag:b", "tag:db"}) {
		t.Errorf("b1's next netmap has Self.Tags %v", nm.Self.Tags)
	}
	sh.netmap(t, "b1's tags at hub", func(nm *wire.Netmap) bool {
		return slices.ContainsFunc(nm.Peers, func(p wire.Node) bool { return p.Name == "b1" && slices.Contains(p.Tags, "tag:db") })
	})
	sa.quiet(t, "a1", 4)
	sa2.drain(t, "a2")

	// A second stream of a1, with nothing changed, gets the newest netmap
	// at once.
	if _, nm := open(a1, 51801); nm.PolicyVersion != pv || !hasA2Endpoint(nm) {
		t.Errorf("a1's second stream: first netmap policy %d, peers %+v", nm.PolicyVersion, nm.Peers)
	}

	// Deleting b1 ends its stream.
	if code, body := ts.do(t, "DELETE", wire.PathNodes+"/b1", ts.admin, nil); code != http.StatusNoContent {
		t.Fatalf("delete b1: %d %s", code, body)
	}
	sb.ended(t)
}

// TestNetmapDigestEveryField: the digest leaves out Version and nothing
// else. Every field under wire.Netmap is filled in, then changed one at a
// time (a leaf to another value, a slice or pointer to nil, a slice to two
// elements); each change must change the digest. A field of a kind the
// test cannot fill fails it, so a new field is never left unchecked.
func TestNetmapDigestEveryField(t *testing.T) {
	filled := func() *wire.Netmap {
		nm := &wire.Netmap{}
		fill(t, reflect.ValueOf(nm).Elem(), "Netmap")
		return nm
	}
	want := filled().Digest()
	nv := filled()
	nv.Version++
	if nv.Digest() != want {
		t.Fatal("a new version changes the digest")
	}
	changes := 0
	eachChange(t, reflect.ValueOf(filled()).Elem(), "Netmap", nil, func(path string, steps []int, change func(reflect.Value)) {
		if path == "Netmap.Version" {
			return
		}
		changes++
		nm := filled()
		change(at(reflect.ValueOf(nm).Elem(), steps))
		if nm.Digest() == want {
			t.Errorf("%s changed: the digest is the same", path)
		}
	})
	if changes < 30 {
		t.Errorf("only %d changes tried", changes)
	}
	// Lengths keep neighbours apart: a string moved from one field to the
	// next is another netmap.
	a, b := filled(), filled()
	a.Self.Name, a.Self.PublicKey = "ab", "c"
	b.Self.Name, b.Self.PublicKey = "a", "bc"
	if a.Digest() == b.Digest() {
		t.Error("name ab, key c has the digest of name a, key bc")
	}
}

var (
	timeType   = reflect.TypeFor[time.Time]()
	prefixType = reflect.TypeFor[netip.Prefix]()
)

// fill sets every field under v to a value that is not zero; a slice gets
// one element.
func fill(t *testing.T, v reflect.Value, path string) {
	t.Helper()
	switch {
	case v.Type() == timeType:
		v.Set(reflect.ValueOf(time.UnixMilli(1_700_000_000_000)))
		return
	case v.Type() == prefixType:
		v.Set(reflect.ValueOf(netip.MustParsePrefix("100.64.0.1/32")))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if !f.IsExported() {
				t.Fatalf("%s.%s is unexported: teach fill about %s", path, f.Name, v.Type())
			}
			fill(t, v.Field(i), path+"."+f.Name)
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem(), path)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(t, v.Index(0), path+"[0]")
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	default:
		t.Fatalf("%s is a %s: teach fill and eachChange about it", path, v.Kind())
	}
}

// eachChange calls fn for every change it knows under v (filled): the
// field's path, the steps to it (field indexes; 0 into a slice or
// pointer) and the change.
func eachChange(t *testing.T, v reflect.Value, path string, steps []int, fn func(string, []int, func(reflect.Value))) {
	t.Helper()
	steps = slices.Clip(steps)
	switch {
	case v.Type() == timeType:
		fn(path, steps, func(v reflect.Value) { v.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Second))) })
		return
	case v.Type() == prefixType:
		fn(path, steps, func(v reflect.Value) { v.Set(reflect.ValueOf(netip.MustParsePrefix("100.64.0.2/32"))) })
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			eachChange(t, v.Field(i), path+"."+v.Type().Field(i).Name, append(steps, i), fn)
		}
	case reflect.Pointer:
		fn(path+" (nil)", steps, func(v reflect.Value) { v.Set(reflect.Zero(v.Type())) })
		eachChange(t, v.Elem(), path, append(steps, 0), fn)
	case reflect.Slice:
		fn(path+" (nil)", steps, func(v reflect.Value) { v.Set(reflect.Zero(v.Type())) })
		fn(path+" (two elements)", steps, func(v reflect.Value) { v.Set(reflect.Append(v, v.Index(0))) })
		eachChange(t, v.Index(0), path+"[0]", append(steps, 0), fn)
	case reflect.String:
		fn(path, steps, func(v reflect.Value) { v.SetString(v.String() + "y") })
	case reflect.Bool:
		fn(path, steps, func(v reflect.Value) { v.SetBool(!v.Bool()) })
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		fn(path, steps, func(v reflect.Value) { v.SetInt(v.Int() + 1) })
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		fn(path, steps, func(v reflect.Value) { v.SetUint(v.Uint() + 1) })
	default:
		t.Fatalf("%s is a %s: teach fill and eachChange about it", path, v.Kind())
	}
}

// at follows steps from v.
func at(v reflect.Value, steps []int) reflect.Value {
	for _, i := range steps {
		switch v.Kind() {
		case reflect.Struct:
			v = v.Field(i)
		case reflect.Pointer:
			v = v.Elem()
		case reflect.Slice:
			v = v.Index(i)
		}
	}
	return v
}

// BenchmarkNetmapCompare measures what a stream does per change for a
// netmap of 999 peers and of 59, built from two snapshots that differ for
// it only in the version: build it, and digest it (what the stream does)
// or compare it with the last one by reflect.DeepEqual (which would keep
// every stream's last netmap) or encode it (what sending it costs at the
// least, and what comparing encodings would cost).
func BenchmarkNetmapCompare(b *testing.B) {
	for _, peers := range []int{999, 59} {
		ts := startServer(b, time.Hour)
		seedNodes(b, ts.c, peers+1)
		text := allowAll
		if peers < 999 {
			// node 1 sees the nodes whose id ≤ peers+1 (tagged tag:near).
			if _, err := openDB(b, ts.c).Exec("UPDATE nodes SET tags = '[\"tag:near\"]' WHERE id <= ?", peers+1); err != nil {
				b.Fatal(err)
			}
			text = `{"acls": [{"action": "accept", "src": ["tag:near"], "dst": ["tag:near:*"]}]}`
		}
		setPolicyIn(b, ts, text)
		ctx := context.Background()
		// Two snapshots whose netmap for node 1 differs only in the
		// version: node 2's endpoints change and change back.
		s1 := ts.c.state.Load()
		for _, eps := range [][]string{{"198.51.100.9:1"}, nodeOf(b, s1, 2).Endpoints} {
			if _, err := ts.c.store.SetEndpoints(ctx, 2, eps); err != nil {
				b.Fatal(err)
			}
			if err := ts.c.publish(ctx); err != nil {
				b.Fatal(err)
			}
		}
		s2 := ts.c.state.Load()
		nm1, _ := ts.c.netmapFor(s1, 1)
		nm2, _ := ts.c.netmapFor(s2, 1)
		if s1.version == s2.version || len(nm1.Peers) != peers || nm1.Digest() != nm2.Digest() {
			b.Fatalf("snapshots v%d, v%d: %d peers, digests differ", s1.version, s2.version, len(nm1.Peers))
		}
		b.Run(fmt.Sprintf("peers=%d/build", peers), func(b *testing.B) {
			for b.Loop() {
				ts.c.netmapFor(s2, 1)
			}
		})
		b.Run(fmt.Sprintf("peers=%d/digest", peers), func(b *testing.B) {
			for b.Loop() {
				nm2.Digest()
			}
		})
		b.Run(fmt.Sprintf("peers=%d/deepequal", peers), func(b *testing.B) {
			for b.Loop() {
				v := *nm2
				v.Version = nm1.Version
				if !reflect.DeepEqual(nm1, &v) {
					b.Fatal("not the same")
				}
			}
		})
		b.Run(fmt.Sprintf("peers=%d/encode", peers), func(b *testing.B) {
			enc := json.NewEncoder(io.Discard)
			for b.Loop() {
				if err := enc.Encode(wire.MapMessage{Netmap: nm2}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// setPolicyIn sets the policy through the admin API.
func setPolicyIn(b *testing.B, ts *testServer, text string) {
	b.Helper()
	code, body := ts.doJSON(b, "PUT", wire.PathPolicy, ts.admin, wire.SetPolicyRequest{Text: text})
	if code != http.StatusOK {
		b.Fatalf("set policy: %d %s", code, body)
	}
}

// nodeOf returns node id of snapshot s.
func nodeOf(b *testing.B, s *snapshot, id int64) wire.Node {
	b.Helper()
	i, ok := s.byID[id]
	if !ok {
		b.Fatalf("no node %d", id)
	}
	return s.nodes[i]
}
