package node

import (
	"strings"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

func TestPingVerdict(t *testing.T) {
	quiet := PeerStats{RxBytes: 100, Endpoint: "10.0.0.2:51820"}
	heard := PeerStats{RxBytes: 250, Endpoint: "10.0.0.2:51820"}
	for _, tt := range []struct {
		name          string
		answered      int
		before, after PeerStats
		failed        bool
		verdict, why  string
	}{
		{"answered", 2, quiet, heard, false, "ok", "2 of 3 probes answered"},
		{"alive, dropped", 0, quiet, heard, false, "policy", "its policy does not let ICMP"},
		{"silent", 0, quiet, quiet, false, "network", "nothing came from b"},
		{"gossip failed", 0, quiet, heard, true, "network", "gossip marks it failed"},
	} {
		v, why := pingVerdict("b", tt.answered, 3, tt.before, tt.after, tt.failed)
		if v != tt.verdict || !strings.Contains(why, tt.why) {
			t.Errorf("%s: %s %q, want %s with %q", tt.name, v, why, tt.verdict, tt.why)
		}
	}
}

func TestFindPeer(t *testing.T) {
	nm := &wire.Netmap{Peers: []wire.Node{testNode("b", 2), testNode("c", 3)}}
	for _, s := range []string{"c", "100.64.0.3"} {
		if p, ok := findPeer(nm, s); !ok || p.Name != "c" {
			t.Errorf("findPeer(%q) = %v, %v", s, p.Name, ok)
		}
	}
	if _, ok := findPeer(nm, "d"); ok {
		t.Error("found a node that is not a peer")
	}
	if _, ok := findPeer(nil, "b"); ok {
		t.Error("found a peer without a netmap")
	}
}
