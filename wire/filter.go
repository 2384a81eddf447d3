package wire

import "net/netip"

// Protocol numbers used in FilterRule.Protos.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// FilterRule is one compiled inbound accept rule of a node: a packet is
// let in when its source address lies in one of Srcs, its protocol is one
// of Protos and, for protocols with ports, its destination port lies in one
// of Ports. Rules only accept; what no rule accepts is dropped.
type FilterRule struct {
	// Srcs are the source prefixes (peers' overlay addresses, host CIDRs;
	// 0.0.0.0/0 and ::/0 for "*"). Empty: the rule matches nothing.
	Srcs []netip.Prefix `json:"srcs"`
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
