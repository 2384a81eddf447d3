package wire

import (
	"net/netip"
	"slices"
	"testing"
)

// TestFilterRules: a netmap's rules resolve their source nodes to the
// addresses of its Self and Peers; an ID the netmap does not hold adds
// nothing; rules without source nodes come back as they are.
func TestFilterRules(t *testing.T) {
	p := netip.MustParsePrefix
	self := Node{ID: 1, Addresses: []netip.Prefix{p("100.64.0.1/32"), p("fd77::1/128")}}
	peer := Node{ID: 2, Addresses: []netip.Prefix{p("100.64.0.2/32")}}
	nm := &Netmap{Self: self, Peers: []Node{peer}, Rules: []FilterRule{
		{Srcs: []netip.Prefix{p("192.0.2.0/24")}, SrcPeers: []int64{1, 2, 9}, Ports: []PortRange{{22, 22}}},
		{Srcs: []netip.Prefix{p("0.0.0.0/0")}},
	}}
	got := nm.FilterRules()
	want := []netip.Prefix{p("192.0.2.0/24"), p("100.64.0.1/32"), p("fd77::1/128"), p("100.64.0.2/32")}
	if len(got) != 2 || !slices.Equal(got[0].Srcs, want) || got[0].SrcPeers != nil || !slices.Equal(got[0].Ports, nm.Rules[0].Ports) {
		t.Errorf("resolved %+v, want sources %v and the rule's ports", got, want)
	}
	if len(nm.Rules[0].Srcs) != 1 || len(nm.Rules[0].SrcPeers) != 3 {
		t.Errorf("resolving changed the netmap's rules: %+v", nm.Rules)
	}
	nm.Rules = nm.Rules[1:]
	if got := nm.FilterRules(); &got[0] != &nm.Rules[0] {
		t.Error("rules without source nodes were copied")
	}
}
