package wire

import (
	"net/netip"
	"slices"
)

// Protocol numbers used in FilterRule.Protos.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// FilterRule is one compiled inbound accept rule of a node: a packet is
// let in when its source address lies in one of Srcs or is an address of
// one of SrcPeers, its protocol is one of Protos and, for protocols with
// ports, its destination port lies in one of Ports. Rules only accept;
// what no rule accepts is dropped.
type FilterRule struct {
	// Srcs are source prefixes (host CIDRs; 0.0.0.0/0 and ::/0 for "*";
	// before protocol 7, peers' overlay addresses too).
	Srcs []netip.Prefix `json:"srcs,omitempty"`
	// SrcPeers are source nodes by ID, sorted: each is the netmap's Self
	// or one of its Peers, and its Addresses are sources (ResolveRules).
	// An ID the netmap does not hold adds nothing. From protocol 7; a
	// coordinator resolves them into Srcs for older agents. Both empty:
	// the rule matches nothing.
	SrcPeers []int64 `json:"src_peers,omitempty"`
	// Protos are IP protocol numbers. Empty: TCP, UDP, ICMP and ICMPv6.
	Protos []uint8 `json:"protos,omitempty"`
	// Ports are destination port ranges, for TCP, UDP and SCTP. Empty:
	// no port matches (protocols without ports ignore Ports).
	Ports []PortRange `json:"ports,omitempty"`
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	First uint16 `json:"first"`
	Last  uint16 `json:"last"`
}

// AllPorts is the range of every port.
var AllPorts = PortRange{First: 0, Last: 65535}

// ResolveRules returns rules with the addresses of their SrcPeers, as
// addrs gives them, in Srcs: the rules a packet filter takes. Rules
// without SrcPeers are shared, not copied.
func ResolveRules(rules []FilterRule, addrs func(id int64) []netip.Prefix) []FilterRule {
	if !slices.ContainsFunc(rules, func(r FilterRule) bool { return len(r.SrcPeers) > 0 }) {
		return rules
	}
	out := make([]FilterRule, len(rules))
	for i, r := range rules {
		if len(r.SrcPeers) > 0 {
			srcs := make([]netip.Prefix, 0, len(r.Srcs)+2*len(r.SrcPeers))
			srcs = append(srcs, r.Srcs...)
			for _, id := range r.SrcPeers {
				srcs = append(srcs, addrs(id)...)
			}
			r.Srcs, r.SrcPeers = srcs, nil
		}
		out[i] = r
	}
	return out
}

// FilterRules returns nm's Rules resolved (ResolveRules) against its Self
// and Peers.
func (nm *Netmap) FilterRules() []FilterRule {
	addrs := make(map[int64][]netip.Prefix, len(nm.Peers)+1)
	for i := range nm.Peers {
		addrs[nm.Peers[i].ID] = nm.Peers[i].Addresses
	}
	addrs[nm.Self.ID] = nm.Self.Addresses
	return ResolveRules(nm.Rules, func(id int64) []netip.Prefix { return addrs[id] })
}
