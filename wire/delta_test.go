package wire

import (
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
