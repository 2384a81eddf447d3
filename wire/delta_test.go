package wire

import (
	"strings"
	"testing"
)

// TestNetmapDeltaApply: a delta replaces Self and the peers it names,
// leaves the netmap it was applied to as it was, and refuses a peer the
// netmap does not have.
func TestNetmapDeltaApply(t *testing.T) {
	nm := &Netmap{Version: 3, Self: Node{ID: 1, Name: "a"}, PolicyVersion: 2, Peers: []Node{{ID: 2, Name: "b"}, {ID: 3, Name: "c"}}}
	d := &NetmapDelta{Version: 5, Self: &Node{ID: 1, Name: "a", Endpoints: []string{"192.0.2.1:1"}}, Peers: []Node{{ID: 3, Name: "c", Endpoints: []string{"192.0.2.3:1"}}}}
	got, err := d.Apply(nm)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 5 || got.PolicyVersion != 2 || len(got.Self.Endpoints) != 1 || len(got.Peers) != 2 || got.Peers[0].Name != "b" || len(got.Peers[1].Endpoints) != 1 {
		t.Errorf("applied: %+v", got)
	}
	if nm.Version != 3 || len(nm.Self.Endpoints) != 0 || len(nm.Peers[1].Endpoints) != 0 {
		t.Errorf("the netmap the delta was applied to changed: %+v", nm)
	}
	for _, bad := range []*NetmapDelta{
		{Version: 6, Peers: []Node{{ID: 9, Name: "x"}}},
		{Version: 6, Self: &Node{ID: 2}},
	} {
		if _, err := bad.Apply(nm); err == nil || !strings.Contains(err.Error(), "netmap delta 6") {
			t.Errorf("Apply(%+v) = %v, want an error naming the delta", bad, err)
		}
	}
}
