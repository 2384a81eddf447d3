// Package stun is a minimal STUN (RFC 5389) codec and server: just enough
// for a node to learn the address and port its NAT maps its UDP socket to.
//
// Only Binding requests and Binding success responses exist here. A request
// is the 20-byte header with no attributes; a response carries the
// XOR-MAPPED-ADDRESS of the request's source. ParseResponse also accepts
// the older MAPPED-ADDRESS (and the pre-RFC XOR-MAPPED-ADDRESS type 0x8020)
// so that public servers answer too. Other attributes are skipped; the
// parsers never panic on any input (they have fuzz targets) and their
// errors name the attribute and the offset that is wrong.
package stun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Message types and attribute types used here (RFC 5389 sections 6, 15 and 18).
const (
	typeBindingRequest  = 0x0001
	typeBindingSuccess  = 0x0101
	typeBindingError    = 0x0111
	attrMappedAddress   = 0x0001
	attrXORMappedAddr   = 0x0020
	attrXORMappedOld    = 0x8020 // the value of drafts, still sent by some servers
	familyIPv4          = 0x01
	familyIPv6          = 0x02
	headerLen           = 20
	magicCookie         = 0x2112A442
	maxAttributesParsed = 64 // a response with more is rejected, not walked
)

// ErrNotSTUN is returned (wrapped) for input that is not a STUN message at
// all, as opposed to a STUN message that is malformed.
var ErrNotSTUN = errors.New("not a stun message")

// Is reports whether b looks like a STUN message: the first two bits are
// zero, bytes 4..8 hold the magic cookie and the length field matches the
// rest of b (a multiple of 4). It reads the header only.
func Is(b []byte) bool {
	if len(b) < headerLen || b[0]&0xC0 != 0 {
		return false
	}
	if binary.BigEndian.Uint32(b[4:8]) != magicCookie {
		return false
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	return n%4 == 0 && n == len(b)-headerLen
}

// Request returns a Binding request with transaction id txid.
func Request(txid [12]byte) []byte {
	return header(typeBindingRequest, 0, txid)
}

// Response returns a Binding success response to the request txid that
// tells its sender it was seen from addr (as XOR-MAPPED-ADDRESS).
func Response(txid [12]byte, addr netip.AddrPort) []byte {
	ip := addr.Addr().Unmap()
	family, ipLen := byte(familyIPv4), 4
	if ip.Is6() {
		family, ipLen = familyIPv6, 16
	}
	valueLen := 4 + ipLen
	b := header(typeBindingSuccess, 4+valueLen, txid)
	b = binary.BigEndian.AppendUint16(b, attrXORMappedAddr)
	b = binary.BigEndian.AppendUint16(b, uint16(valueLen))
	b = append(b, 0, family)
	b = binary.BigEndian.AppendUint16(b, addr.Port()^(magicCookie>>16))
	raw := ip.AsSlice()
	key := b[4:headerLen] // cookie, then the transaction id
	for i := range raw {
		raw[i] ^= key[i]
	}
	return append(b, raw...)
}

func header(typ, length int, txid [12]byte) []byte {
	b := make([]byte, headerLen, headerLen+length)
	binary.BigEndian.PutUint16(b[0:2], uint16(typ))
	binary.BigEndian.PutUint16(b[2:4], uint16(length))
	binary.BigEndian.PutUint32(b[4:8], magicCookie)
	copy(b[8:20], txid[:])
	return b
}

// ParseRequest returns the transaction id of the Binding request b. Its
// attributes, if any, are checked for framing and otherwise ignored.
func ParseRequest(b []byte) (txid [12]byte, err error) {
	typ, txid, err := parseHeader(b)
	if err != nil {
		return txid, err
	}
	if typ != typeBindingRequest {
		return txid, fmt.Errorf("stun: message type %#04x at offset 0 is not a binding request", typ)
	}
	err = walkAttributes(b, func(int, int, []byte) error { return nil })
	return txid, err
}

// ParseResponse returns the transaction id of the Binding success response
// b and the address it says the request came from: XOR-MAPPED-ADDRESS if
// present, else MAPPED-ADDRESS.
func ParseResponse(b []byte) (txid [12]byte, addr netip.AddrPort, err error) {
	typ, txid, err := parseHeader(b)
	if err != nil {
		return txid, addr, err
	}
	switch typ {
	case typeBindingSuccess:
	case typeBindingError:
		return txid, addr, errors.New("stun: the server answered with a binding error response")
	default:
		return txid, addr, fmt.Errorf("stun: message type %#04x at offset 0 is not a binding response", typ)
	}
	var xored, mapped netip.AddrPort
	err = walkAttributes(b, func(off, typ int, v []byte) error {
		var err error
		switch typ {
		case attrXORMappedAddr, attrXORMappedOld:
			if !xored.IsValid() {
				xored, err = parseAddress(b[4:headerLen], off, typ, v)
			}
		case attrMappedAddress:
			if !mapped.IsValid() {
				mapped, err = parseAddress(nil, off, typ, v)
			}
		}
		return err
	})
	switch {
	case err != nil:
		return txid, addr, err
	case xored.IsValid():
		return txid, xored, nil
	case mapped.IsValid():
		return txid, mapped, nil
	}
	return txid, addr, errors.New("stun: binding response has neither XOR-MAPPED-ADDRESS nor MAPPED-ADDRESS")
}

func parseHeader(b []byte) (typ int, txid [12]byte, err error) {
	if len(b) < headerLen {
		return 0, txid, fmt.Errorf("stun: %d bytes are shorter than the 20-byte header: %w", len(b), ErrNotSTUN)
	}
	if b[0]&0xC0 != 0 {
		return 0, txid, fmt.Errorf("stun: first byte %#02x at offset 0 has its top bits set: %w", b[0], ErrNotSTUN)
	}
	if c := binary.BigEndian.Uint32(b[4:8]); c != magicCookie {
		return 0, txid, fmt.Errorf("stun: magic cookie %#08x at offset 4 is not %#08x: %w", c, magicCookie, ErrNotSTUN)
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n%4 != 0 || n != len(b)-headerLen {
		return 0, txid, fmt.Errorf("stun: length field %d at offset 2 does not match the %d bytes after the header", n, len(b)-headerLen)
	}
	copy(txid[:], b[8:20])
	return int(binary.BigEndian.Uint16(b[0:2])), txid, nil
}

// walkAttributes calls fn with the offset, type and value of each attribute
// of the message b, whose header parseHeader has checked.
func walkAttributes(b []byte, fn func(off, typ int, v []byte) error) error {
	for off, count := headerLen, 0; off < len(b); count++ {
		if count == maxAttributesParsed {
			return fmt.Errorf("stun: more than %d attributes (offset %d)", maxAttributesParsed, off)
		}
		if len(b)-off < 4 {
			return fmt.Errorf("stun: truncated attribute header at offset %d", off)
		}
		typ := int(binary.BigEndian.Uint16(b[off:]))
		n := int(binary.BigEndian.Uint16(b[off+2:]))
		end := off + 4 + n
		if end > len(b) {
			return fmt.Errorf("stun: attribute %#04x at offset %d: length %d runs past the end of the message", typ, off, n)
		}
		if err := fn(off, typ, b[off+4:end]); err != nil {
			return err
		}
		off = end + (4-n%4)%4 // values are padded to 4 bytes
	}
	return nil
}

// parseAddress decodes a (XOR-)MAPPED-ADDRESS value found at offset off.
// key is the cookie and transaction id to XOR with, or nil for MAPPED-ADDRESS.
func parseAddress(key []byte, off, typ int, v []byte) (netip.AddrPort, error) {
	name := attrName(typ)
	if len(v) < 4 {
		return netip.AddrPort{}, fmt.Errorf("stun: %s at offset %d: value of %d bytes is too short", name, off, len(v))
	}
	ipLen := 0
	switch v[1] {
	case familyIPv4:
		ipLen = 4
	case familyIPv6:
		ipLen = 16
	default:
		return netip.AddrPort{}, fmt.Errorf("stun: %s at offset %d: unknown address family %#02x", name, off, v[1])
	}
	if len(v) != 4+ipLen {
		return netip.AddrPort{}, fmt.Errorf("stun: %s at offset %d: value of %d bytes, want %d for its family", name, off, len(v), 4+ipLen)
	}
	port := binary.BigEndian.Uint16(v[2:4])
	var raw [16]byte
	copy(raw[:], v[4:])
	if key != nil {
		port ^= magicCookie >> 16
		for i := range ipLen {
			raw[i] ^= key[i]
		}
	}
	ip, _ := netip.AddrFromSlice(raw[:ipLen])
	return netip.AddrPortFrom(ip, port), nil
}

func attrName(typ int) string {
	if typ == attrMappedAddress {
		return "MAPPED-ADDRESS"
	}
	return "XOR-MAPPED-ADDRESS"
}
