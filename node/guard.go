package node

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// underlayGuard keeps packets for the node's overlay addresses from
// entering through any interface but the WireGuard one (and loopback).
// Linux accepts a packet for a local address on every interface, so a host
// on the underlay network could otherwise route packets for the overlay
// address to this host's underlay interface, past WireGuard's
// authentication and the packet filter. It is an nftables table of its own
// (inet "wiremesh-IFACE"), with a prerouting chain at raw priority that
// drops such packets; Close removes it.
//
// Every packet the host receives passes the chain, twice for overlay
// traffic (the WireGuard datagram on the underlay, then what it carried on
// the WireGuard interface), so the rule is ordered for the common case:
// its first test, the destination address, fails at once for the
// underlay's datagrams, and every comparison is of 4 bytes or less (the
// interfaces by index, not by name), which nftables evaluates inline.
type underlayGuard struct {
	table *nftables.Table
}

// newUnderlayGuard installs the guard for addrs on iface (whose index is
// ifindex), replacing one an earlier run left behind.
func newUnderlayGuard(iface string, ifindex int, addrs []netip.Addr) (*underlayGuard, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("underlay guard: %w", err)
	}
	g := &underlayGuard{table: &nftables.Table{Family: nftables.TableFamilyINet, Name: "wiremesh-" + iface}}
	if tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err == nil {
		for _, t := range tables {
			if t.Name == g.table.Name {
				c.DelTable(t) // from an agent that was killed
			}
		}
	}
	c.AddTable(g.table)
	chain := c.AddChain(&nftables.Chain{
		Name: "guard", Table: g.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw,
	})
	for _, a := range addrs {
		c.AddRule(&nftables.Rule{Table: g.table, Chain: chain, Exprs: guardRule(ifindex, a)})
	}
	if err := c.Flush(); err != nil {
		return nil, fmt.Errorf("underlay guard: %w", err)
	}
	return g, nil
}

// guardRule is: the packet is for a, it came in on neither the interface
// with index ifindex nor lo: drop. The destination is compared first (in
// an inet chain, an IPv4 address at an IPv6 packet's offset 16 may match:
// the family is checked next).
func guardRule(ifindex int, a netip.Addr) []expr.Any {
	proto, offset := byte(unix.NFPROTO_IPV4), uint32(16) // IPv4 destination
	if a.Is6() {
		proto, offset = unix.NFPROTO_IPV6, 24
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(a.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Meta{Key: expr.MetaKeyIIF, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(uint32(ifindex))},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(loIndex)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// loIndex is the loopback interface's index in every network namespace.
const loIndex = 1

// Close removes the guard.
func (g *underlayGuard) Close() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("underlay guard: %w", err)
	}
	c.DelTable(g.table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("underlay guard: %w", err)
	}
	return nil
}
