package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestNetmapDeltaApply: a delta replaces Self, the peers it names and the
// policy, adds new peers in ID order and removes gone ones, and leaves
// the netmap it was applied to as it was; a removal of a peer the netmap
// lacks, or another node's Self, is refused.
func TestNetmapDeltaApply(t *testing.T) {
	nm := &Netmap{Version: 3, Self: Node{ID: 1, Name: "a"}, PolicyVersion: 2, Rules: []FilterRule{{Protos: []byte{6}}},
		Peers: []Node{{ID: 2, Name: "b"}, {ID: 4, Name: "d"}, {ID: 6, Name: "f"}}}
	d := &NetmapDelta{Version: 5,
		Self:    &Node{ID: 1, Name: "a", Endpoints: []string{"192.0.2.1:1"}},
		Peers:   []Node{{ID: 4, Name: "d", Endpoints: []string{"192.0.2.4:1"}}, {ID: 3, Name: "c"}},
		Removed: []int64{6},
		Policy:  &NetmapPolicy{Version: 7, Rules: []FilterRule{}},
	}
	got, err := d.Apply(nm)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got.Peers {
		names = append(names, p.Name)
	}
	if got.Version != 5 || got.PolicyVersion != 7 || len(got.Rules) != 0 || len(got.Self.Endpoints) != 1 || strings.Join(names, ",") != "b,c,d" || len(got.Peers[2].Endpoints) != 1 {
		t.Errorf("applied: %+v (peers %v)", got, names)
	}
	if nm.Version != 3 || len(nm.Self.Endpoints) != 0 || len(nm.Peers) != 3 || len(nm.Peers[1].Endpoints) != 0 || nm.PolicyVersion != 2 {
		t.Errorf("the netmap the delta was applied to changed: %+v", nm)
	}
	for _, bad := range []*NetmapDelta{
		{Version: 6, Removed: []int64{9}},
		{Version: 6, Self: &Node{ID: 2}},
	} {
		if _, err := bad.Apply(nm); err == nil || !strings.Contains(err.Error(), "netmap delta 6") {
			t.Errorf("Apply(%+v) = %v, want an error naming the delta", bad, err)
		}
	}
}

// FuzzNetmapDelta: a stream message an agent decodes, whatever it holds,
// is either refused with an error naming the delta or gives a netmap of
// the same node whose peers are unique and ordered by ID, and leaves the
// netmap it was applied to as it was.
func FuzzNetmapDelta(f *testing.F) {
	f.Add([]byte(`{"delta":{"version":5,"peers":[{"id":3,"name":"c"}],"removed":[2],"policy":{"version":7,"rules":[]}}}`))
	f.Add([]byte(`{"delta":{"version":6,"self":{"id":1,"endpoints":["192.0.2.1:1"]}}}`))
	f.Add([]byte(`{"delta":{"version":6,"peers":[{"id":9},{"id":9}],"removed":[4,4]}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		nm := &Netmap{Version: 3, Self: Node{ID: 1, Name: "a"}, Peers: []Node{{ID: 2, Name: "b"}, {ID: 4, Name: "d"}}}
		var m MapMessage
		if json.Unmarshal(raw, &m) != nil || m.Delta == nil {
			return
		}
		got, err := m.Delta.Apply(nm)
		if nm.Version != 3 || len(nm.Peers) != 2 || nm.Peers[0].ID != 2 || nm.Peers[1].ID != 4 || nm.Self.Name != "a" {
			t.Fatalf("the netmap applied to changed: %+v", nm)
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "netmap delta ") {
				t.Errorf("error %q does not name the delta", err)
			}
			return
		}
		if got.Self.ID != 1 {
			t.Errorf("self became node %d", got.Self.ID)
		}
		for i := 1; i < len(got.Peers); i++ {
			if got.Peers[i-1].ID >= got.Peers[i].ID {
				t.Errorf("peers not unique and ordered by ID: %d then %d", got.Peers[i-1].ID, got.Peers[i].ID)
			}
		}
	})
}

// BenchmarkNetmapDeltaApply: what applying a delta of one changed peer
// costs an agent with 200 and with 10,000 peers.
func BenchmarkNetmapDeltaApply(b *testing.B) {
	for _, n := range []int{200, 10000} {
		nm := &Netmap{Self: Node{ID: 0}}
		for i := 1; i <= n; i++ {
			nm.Peers = append(nm.Peers, Node{ID: int64(i), Name: "n", Endpoints: []string{"192.0.2.1:51820"}})
		}
		d := &NetmapDelta{Version: 2, Peers: []Node{{ID: int64(n / 2), Name: "n", Endpoints: []string{"192.0.2.2:51820"}}}}
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.Apply(nm); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
