package dns

import (
	"net/netip"
	"strconv"
	"strings"

	miekg "github.com/miekg/dns"
)

// kind is what a query name refers to.
type kind uint8

const (
	kindForward kind = iota // outside the server's zones
	kindMissing             // in a zone, but no such name: NXDOMAIN
	kindEmpty               // an existing name without records (apex, node.DOMAIN, ...)
	kindNode                // NODE.node.DOMAIN
	kindService             // [TAG.]SVC.service[.near].DOMAIN, _SVC._TAG.service[.near].DOMAIN
	kindPTR                 // reverse name of an address in an overlay prefix or of a node
)

// query is a parsed query name.
type query struct {
	kind kind
	zone string     // the zone (SOA owner) the name is in
	name string     // node or service name, lower case
	tag  string     // service tag filter, lower case; empty: none
	near bool       // nearest first
	addr netip.Addr // kindPTR
}

// parseName classifies qname. It is a pure function of the name, the
// domain (lower case, no trailing dot) and the overlay prefixes.
func parseName(qname, domain string, prefixes []netip.Prefix) query {
	qname = strings.ToLower(miekg.Fqdn(qname))
	zone := domain + "."
	if miekg.IsSubDomain(zone, qname) {
		labels := miekg.SplitDomainName(qname)
		rest := labels[:len(labels)-miekg.CountLabel(zone)]
		return parseMeshName(rest, zone)
	}
	return parseReverse(qname, prefixes)
}

// parseMeshName classifies the labels of a name under the domain zone.
func parseMeshName(rest []string, zone string) query {
	q := query{kind: kindMissing, zone: zone}
	if len(rest) == 0 {
		q.kind = kindEmpty
		return q
	}
	if rest[len(rest)-1] == "near" {
		q.near = true
		rest = rest[:len(rest)-1]
		if len(rest) == 0 {
			q.kind = kindEmpty
			return q
		}
		if rest[len(rest)-1] != "service" {
			return q
		}
	}
	switch last, n := rest[len(rest)-1], len(rest); {
	case n == 1 && (last == "node" || last == "service"):
		q.kind = kindEmpty
	case n == 2 && last == "node" && !q.near:
		q.kind, q.name = kindNode, rest[0]
	case n == 2 && last == "service":
		q.kind, q.name = kindService, rest[0]
	case n == 3 && last == "service" && len(rest[0]) > 1 && len(rest[1]) > 1 &&
		rest[0][0] == '_' && rest[1][0] == '_':
		// RFC 2782: _SVC._TAG.service, the tag in the protocol slot;
		// _tcp means any tag.
		q.kind, q.name, q.tag = kindService, rest[0][1:], rest[1][1:]
		if q.tag == "tcp" {
			q.tag = ""
		}
	case n == 3 && last == "service":
		q.kind, q.name, q.tag = kindService, rest[1], rest[0]
	}
	return q
}

// parseReverse classifies qname (lower case, fully qualified) as a
// reverse name. A whole address in an overlay prefix's reverse zone is a
// PTR query in that zone; one outside them is a PTR query without a zone
// (forwarded unless a node has the address). Other names in a reverse
// zone are empty non-terminals when shorter than an address, else
// missing.
func parseReverse(qname string, prefixes []netip.Prefix) query {
	a, ok := reverseAddr(qname)
	for _, p := range prefixes {
		z := reverseZone(p)
		if !miekg.IsSubDomain(z, qname) {
			continue
		}
		whole := 4 + 2 // labels of a whole IPv4 reverse name
		if strings.HasSuffix(z, "ip6.arpa.") {
			whole = 32 + 2
		}
		switch {
		case ok:
			return query{kind: kindPTR, zone: z, addr: a}
		case miekg.CountLabel(qname) < whole:
			return query{kind: kindEmpty, zone: z}
		default:
			return query{kind: kindMissing, zone: z}
		}
	}
	if ok {
		return query{kind: kindPTR, addr: a}
	}
	return query{kind: kindForward}
}

// reverseAddr parses a whole in-addr.arpa or ip6.arpa name.
func reverseAddr(qname string) (netip.Addr, bool) {
	switch {
	case strings.HasSuffix(qname, ".in-addr.arpa."):
		labels := strings.Split(strings.TrimSuffix(qname, ".in-addr.arpa."), ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, l := range labels {
			v, err := strconv.ParseUint(l, 10, 8)
			if err != nil || len(l) > 1 && l[0] == '0' {
				return netip.Addr{}, false
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), true
	case strings.HasSuffix(qname, ".ip6.arpa."):
		labels := strings.Split(strings.TrimSuffix(qname, ".ip6.arpa."), ".")
		if len(labels) != 32 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i, l := range labels {
			v, err := strconv.ParseUint(l, 16, 4)
			if err != nil || len(l) != 1 {
				return netip.Addr{}, false
			}
			j := 31 - i
			b[j/2] |= byte(v) << (4 * (1 - j%2))
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// reverseZone returns the reverse zone of p, rounded out to a label
// boundary (octets for IPv4, nibbles for IPv6).
func reverseZone(p netip.Prefix) string {
	p = p.Masked()
	var sb strings.Builder
	if p.Addr().Is4() {
		b := p.Addr().As4()
		for i := p.Bits()/8 - 1; i >= 0; i-- {
			sb.WriteString(strconv.Itoa(int(b[i])))
			sb.WriteByte('.')
		}
		sb.WriteString("in-addr.arpa.")
		return sb.String()
	}
	b := p.Addr().As16()
	for i := p.Bits()/4 - 1; i >= 0; i-- {
		sb.WriteByte("0123456789abcdef"[b[i/2]>>(4*(1-i%2))&0xf])
		sb.WriteByte('.')
	}
	sb.WriteString("ip6.arpa.")
	return sb.String()
}
