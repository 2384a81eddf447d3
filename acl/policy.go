// Package acl is the access policy language of a mesh: it parses and
// validates a HuJSON policy, runs its tests, and compiles it for each node
// into the inbound rules its packet filter enforces and the set of peers it
// may exchange traffic with.
//
// Rules only accept; what no rule accepts is denied, and the order of rules
// never matters.
package acl

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/wiremesh/wiremesh/internal/hudoc"
	"github.com/wiremesh/wiremesh/wire"
)

// Policy is a parsed and validated policy.
type Policy struct {
	// Groups maps "group:NAME" to its members.
	Groups map[string][]Selector
	// Hosts maps a host name to its prefix.
	Hosts map[string]netip.Prefix
	// Services maps a service name to the nodes that may provide it:
	// tag:NAME and node:NAME selectors. Nil: the policy has no "services"
	// section, and a node may provide the services named like its tags
	// (a node tagged tag:api may provide api; see Refused).
	Services map[string][]Selector
	// ACLs are the accept rules.
	ACLs []Rule
	// Tests are the assertions the policy must pass.
	Tests []Test
	// Text is the source the policy was parsed from.
	Text []byte
	// File names the source in messages.
	File string
}

// SelectorKind says what a Selector names.
type SelectorKind uint8

// The selector kinds.
const (
	SelAny   SelectorKind = iota + 1 // "*": every node, any source
	SelNode                          // "node:NAME"
	SelTag                           // "tag:NAME"
	SelGroup                         // "group:NAME"
	SelHost                          // a name from "hosts"
	SelCIDR                          // an address or prefix
	SelSvc                           // "svc:NAME": the nodes that run service NAME
)

// Selector names a set of nodes or addresses.
type Selector struct {
	Kind   SelectorKind
	Name   string       // "web-1" for node:web-1, "tag:web", "group:x", "svc:api", a host name
	Prefix netip.Prefix // for SelCIDR and, after resolving, SelHost
	Pos    Pos
}

// String returns the selector as written.
func (s Selector) String() string {
	switch s.Kind {
	case SelAny:
		return "*"
	case SelNode:
		return "node:" + s.Name
	case SelCIDR:
		if s.Prefix.IsSingleIP() {
			return s.Prefix.Addr().String()
		}
		return s.Prefix.String()
	}
	return s.Name
}

// Dest is a destination of a rule: a selector and its ports.
type Dest struct {
	Sel Selector
	// Ports are the ports as written. Nil only for a svc:NAME destination
	// written without ports (see OwnPorts).
	Ports []wire.PortRange
	Pos   Pos
}

// OwnPorts reports whether d is "svc:NAME" without ports: on each node that
// runs the service, the ports that node runs it on.
func (d Dest) OwnPorts() bool { return d.Sel.Kind == SelSvc && d.Ports == nil }

// String returns the destination as written, normalised.
func (d Dest) String() string {
	sel := d.Sel.String()
	if d.OwnPorts() {
		return sel
	}
	if d.Sel.Kind == SelCIDR && d.Sel.Prefix.Addr().Is6() {
		sel = "[" + sel + "]"
	}
	return sel + ":" + portsString(d.Ports)
}

// Rule is one accept rule.
type Rule struct {
	Src    []Selector
	Dst    []Dest
	Protos []uint8 // nil: TCP, UDP and ICMP
	Pos    Pos
}

// Test is an assertion about the policy: from Src, with Proto, every
// destination in Accept is reachable and none in Deny is.
type Test struct {
	Src    Selector
	Protos []uint8 // nil: TCP
	Accept []Dest
	Deny   []Dest
	Pos    Pos
}

// Pos is a position in the policy text (1-based).
type Pos = hudoc.Pos

// Error is a problem in the policy, at a position.
type Error = hudoc.Error

// ErrorList is every problem found in a policy, in text order.
type ErrorList = hudoc.ErrorList

func portsString(ps []wire.PortRange) string {
	var parts []string
	for _, p := range ps {
		switch {
		case p == wire.AllPorts:
			parts = append(parts, "*")
		case p.First == p.Last:
			parts = append(parts, fmt.Sprint(p.First))
		default:
			parts = append(parts, fmt.Sprintf("%d-%d", p.First, p.Last))
		}
	}
	return strings.Join(parts, ",")
}

// ProtoName returns the policy's name for an IP protocol number.
func ProtoName(p uint8) string {
	switch p {
	case wire.ProtoTCP:
		return "tcp"
	case wire.ProtoUDP:
		return "udp"
	case wire.ProtoICMP:
		return "icmp"
	case wire.ProtoICMPv6:
		return "icmpv6"
	}
	return fmt.Sprint(p)
}
