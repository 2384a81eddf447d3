package filter

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers the parser knows the transport header of.
const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132
)

// TCP flags the filter looks at.
const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

// ICMP types the filter looks at.
const (
	icmp4EchoReply   = 0
	icmp4Unreachable = 3
	icmp4Echo        = 8
	icmp4TimeExceed  = 11
	icmp4ParamProb   = 12
	icmp6Unreachable = 1
	icmp6TooBig      = 2
	icmp6TimeExceed  = 3
	icmp6ParamProb   = 4
	icmp6Echo        = 128
	icmp6EchoReply   = 129
)

// maxExtHeaders bounds the IPv6 extension header chain the parser walks; a
// longer chain is dropped as malformed.
const maxExtHeaders = 8

// Where a packet sits in a fragmented datagram.
const (
	fragNone  = iota // not fragmented (or an atomic fragment, RFC 6946)
	fragFirst        // offset 0, more to come: carries the transport header
	fragLater        // offset > 0: no transport header
)

// addr is an IP address as two big-endian words; an IPv4 address sits in
// the low 32 bits of lo, with hi zero.
type addr struct{ hi, lo uint64 }

// netip returns a as a netip.Addr of the family v6 says.
func (a addr) netip(v6 bool) netip.Addr {
	if !v6 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(a.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], a.hi)
	binary.BigEndian.PutUint64(b[8:], a.lo)
	return netip.AddrFrom16(b)
}

// addrOf returns ip as an addr and whether it is IPv6 (4in6 counts as
// IPv6, as in netip.Prefix.Contains).
func addrOf(ip netip.Addr) (addr, bool) {
	if ip.Is4() {
		b := ip.As4()
		return addr{lo: uint64(binary.BigEndian.Uint32(b[:]))}, false
	}
	b := ip.As16()
	return addr{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}, true
}

// packet holds the header fields the filter decides on. It is filled by
// parse and lives on the stack: nothing in it points into the buffer.
type packet struct {
	src, dst addr
	fam      uint8 // 4 or 6 once the addresses are read; 0 before
	proto    uint8 // upper-layer protocol (for a later fragment: the fragment's next header)
	frag     uint8 // fragNone, fragFirst or fragLater
	flags    uint8 // TCP flags
	icmpType uint8
	icmpCode uint8
	// The ports are not adjacent on purpose: the compiler would fuse
	// their loads into one that spans both 16-bit stores of the parser,
	// and that load stalls store forwarding (about 10 ns a packet).
	sport  uint16 // TCP, UDP, SCTP; ICMP echo: the identifier
	fragID uint32 // identification of a fragment
	// fragProto is what a datagram's fragments agree on besides fragID:
	// the IPv4 protocol, or the Next Header of the IPv6 fragment header
	// (an extension header may follow it in the first fragment only).
	fragProto uint8
	dport     uint16 // TCP, UDP, SCTP
	l4        int    // offset of the transport header
	end       int    // end of the IP packet in the buffer
}

// hasPorts reports whether proto carries ports that rules match on.
func hasPorts(proto uint8) bool {
	return proto == protoTCP || proto == protoUDP || proto == protoSCTP
}

// isICMP reports whether proto is ICMP or ICMPv6.
func isICMP(proto uint8) bool { return proto == protoICMP || proto == protoICMPv6 }

// minL4 is how many bytes of proto's header the filter needs: through the
// TCP flags (the whole fixed header) for TCP, the ports and verification
// tag for SCTP, the fixed 8 bytes for UDP and ICMP, nothing for others.
func minL4(proto uint8) int {
	switch proto {
	case protoTCP:
		return 20
	case protoSCTP:
		return 12
	case protoUDP, protoICMP, protoICMPv6:
		return 8
	}
	return 0
}

// parse reads the headers of the IP packet b into p. It returns Accept when
// p is complete, or why the packet must be dropped: DropMalformed for a
// packet that is not well-formed (bad version, lengths, truncation, too
// long an extension header chain), DropFragment for a first fragment that
// does not carry the whole header chain and transport header, or a later
// fragment that overlaps the transport header. A later fragment parses
// fine with p.frag == fragLater and no ports.
func parse(b []byte, p *packet) Verdict {
	if len(b) == 0 {
		return DropMalformed
	}
	switch b[0] >> 4 {
	case 4:
		return parse4(b, p, false)
	case 6:
		return parse6(b, p, false)
	}
	return DropMalformed
}

// parseInner reads the packet quoted by an ICMP error: only its IP header
// and the first 8 bytes of its transport header are there, and its length
// fields describe the original, not the quote.
func parseInner(b []byte, p *packet) Verdict {
	if len(b) == 0 {
		return DropMalformed
	}
	switch b[0] >> 4 {
	case 4:
		return parse4(b, p, true)
	case 6:
		return parse6(b, p, true)
	}
	return DropMalformed
}

// parse4 reads an IPv4 packet; inner: a quote in an ICMP error.
func parse4(b []byte, p *packet, inner bool) Verdict {
	if len(b) < 20 {
		return DropMalformed
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || ihl > len(b) {
		return DropMalformed
	}
	end := len(b)
	if !inner {
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if total < ihl || total > len(b) {
			return DropMalformed
		}
		end = total
	}
	p.fam = 4
	p.proto = b[9]
	p.src = addr{lo: uint64(binary.BigEndian.Uint32(b[12:16]))}
	p.dst = addr{lo: uint64(binary.BigEndian.Uint32(b[16:20]))}
	p.fragID = uint32(binary.BigEndian.Uint16(b[4:6]))
	p.fragProto = p.proto
	p.l4 = ihl
	p.end = end
	ff := binary.BigEndian.Uint16(b[6:8])
	switch off := int(ff&0x1fff) * 8; {
	case off != 0:
		p.frag = fragLater
		if off < minL4(p.proto) {
			return DropFragment // overlaps the transport header (RFC 1858)
		}
		return Accept
	case ff&0x2000 != 0:
		p.frag = fragFirst
	default:
		p.frag = fragNone
	}
	return parseL4(b[:end], p, inner)
}

// parse6 reads an IPv6 packet and walks its extension headers; inner: a
// quote in an ICMP error.
func parse6(b []byte, p *packet, inner bool) Verdict {
	if len(b) < 40 {
		return DropMalformed
	}
	end := len(b)
	if !inner {
		// A payload length of 0 announces a jumbogram, which never fits a
		// TUN MTU: the header chain then looks truncated and is dropped.
		end = 40 + int(binary.BigEndian.Uint16(b[4:6]))
		if end > len(b) {
			return DropMalformed
		}
	}
	p.fam = 6
	p.src = addr{binary.BigEndian.Uint64(b[8:16]), binary.BigEndian.Uint64(b[16:24])}
	p.dst = addr{binary.BigEndian.Uint64(b[24:32]), binary.BigEndian.Uint64(b[32:40])}
	p.end = end
	p.frag = fragNone
	nh, off, sawFrag := b[6], 40, false
	for n := 0; isExtHeader(nh); n++ {
		if n == maxExtHeaders {
			return DropMalformed
		}
		if off+8 > end {
			return truncated(p)
		}
		switch nh {
		case 0: // hop-by-hop
			if n != 0 {
				return DropMalformed // it must come first (RFC 8200)
			}
			nh, off = b[off], off+(int(b[off+1])+1)*8
		case 43: // routing
			if b[off+3] != 0 {
				// Segments left: the packet is to be forwarded elsewhere,
				// so its ports are not ours to judge.
				return DropMalformed
			}
			nh, off = b[off], off+(int(b[off+1])+1)*8
		case 51: // authentication header: length in 4-octet units, minus 2
			nh, off = b[off], off+(int(b[off+1])+2)*4
		case 44: // fragment
			if sawFrag {
				return DropMalformed
			}
			sawFrag = true
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			nh = b[off]
			p.fragID, p.fragProto = binary.BigEndian.Uint32(b[off+4:off+8]), nh
			off += 8
			if at := int(fo>>3) * 8; at != 0 {
				p.frag, p.proto, p.l4 = fragLater, nh, off
				if at < minL4(nh) {
					return DropFragment
				}
				return Accept
			}
			if fo&1 != 0 {
				p.frag = fragFirst
			}
		default:
			// Destination options, mobility, HIP, shim6, experimental:
			// next header, then length in 8-octet units, minus 1.
			nh, off = b[off], off+(int(b[off+1])+1)*8
		}
	}
	if off > end {
		return truncated(p)
	}
	p.proto, p.l4 = nh, off
	return parseL4(b[:end], p, inner)
}

// isExtHeader reports whether nh is an IPv6 extension header the parser
// walks past. ESP (50) is not: what follows it is encrypted.
func isExtHeader(nh uint8) bool {
	switch nh {
	case 0, 43, 44, 51, 60, 135, 139, 140, 253, 254:
		return true
	}
	return false
}

// truncated is the verdict on a header chain that runs past the packet: a
// first fragment must carry the whole chain (RFC 7112).
func truncated(p *packet) Verdict {
	if p.frag == fragFirst {
		return DropFragment
	}
	return DropMalformed
}

// parseL4 reads the transport header at b[p.l4:]. A quote in an ICMP error
// (inner) only needs the first 8 bytes: ports and ICMP identifier.
func parseL4(b []byte, p *packet, inner bool) Verdict {
	l := b[p.l4:]
	need := minL4(p.proto)
	if inner && need > 8 {
		need = 8
	}
	if len(l) < need {
		return truncated(p)
	}
	switch p.proto {
	case protoTCP:
		p.sport = binary.BigEndian.Uint16(l[0:2])
		p.dport = binary.BigEndian.Uint16(l[2:4])
		if inner {
			return Accept
		}
		if doff := int(l[12]>>4) * 4; doff < 20 || doff > len(l) {
			return truncated(p)
		}
		p.flags = l[13]
	case protoUDP, protoSCTP:
		p.sport = binary.BigEndian.Uint16(l[0:2])
		p.dport = binary.BigEndian.Uint16(l[2:4])
	case protoICMP, protoICMPv6:
		p.icmpType, p.icmpCode = l[0], l[1]
		p.sport = binary.BigEndian.Uint16(l[4:6])
	}
	return Accept
}

// icmpEcho classifies an ICMP message: +1 an echo request, -1 an echo
// reply, 0 anything else.
func icmpEcho(proto, typ uint8) int {
	switch {
	case proto == protoICMP && typ == icmp4Echo, proto == protoICMPv6 && typ == icmp6Echo:
		return 1
	case proto == protoICMP && typ == icmp4EchoReply, proto == protoICMPv6 && typ == icmp6EchoReply:
		return -1
	}
	return 0
}

// icmpError reports whether an ICMP message is an error that quotes the
// packet that caused it.
func icmpError(proto, typ uint8) bool {
	switch proto {
	case protoICMP:
		return typ == icmp4Unreachable || typ == icmp4TimeExceed || typ == icmp4ParamProb
	case protoICMPv6:
		return typ == icmp6Unreachable || typ == icmp6TooBig || typ == icmp6TimeExceed || typ == icmp6ParamProb
	}
	return false
}
