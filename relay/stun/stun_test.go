package stun

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var rfcTxID = [12]byte{0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae}

// rfc5769IPv4 is the sample IPv4 response of RFC 5769 section 2.2: SOFTWARE,
// XOR-MAPPED-ADDRESS 192.0.2.1:32853, MESSAGE-INTEGRITY, FINGERPRINT.
const rfc5769IPv4 = "0101003c2112a442b7e7a701bc34d686fa87dfae" +
	"8022000b7465737420766563746f7220" +
	"002000080001a147e112a643" +
	"000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7" +
	"80280004c07d4c96"

func TestParseResponseRFC5769(t *testing.T) {
	b, _ := hex.DecodeString(rfc5769IPv4)
	if !Is(b) {
		t.Fatal("Is = false for the RFC 5769 response")
	}
	txid, addr, err := ParseResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	if txid != rfcTxID || addr != netip.MustParseAddrPort("192.0.2.1:32853") {
		t.Fatalf("got %x %v", txid, addr)
	}
}

func TestResponseIPv6MatchesRFC5769(t *testing.T) {
	addr := netip.MustParseAddrPort("[2001:db8:1234:5678:11:2233:4455:6677]:32853")
	b := Response(rfcTxID, addr)
	// RFC 5769 section 2.3: the XOR'd port and address bytes.
	want, _ := hex.DecodeString("00200014" + "0002a147" + "0113a9faa5d3f179bc25f4b5bed2b9d9")
	if !bytes.Equal(b[20:], want) {
		t.Fatalf("attribute\n got %x\nwant %x", b[20:], want)
	}
	txid, got, err := ParseResponse(b)
	if err != nil || txid != rfcTxID || got != addr {
		t.Fatalf("round trip: %x %v %v", txid, got, err)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, s := range []string{"203.0.113.7:41641", "[2001:db8::1]:3478", "0.0.0.0:0"} {
		addr := netip.MustParseAddrPort(s)
		txid := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
		req := Request(txid)
		if !Is(req) {
			t.Fatalf("Is(request) = false")
		}
		if got, err := ParseRequest(req); err != nil || got != txid {
			t.Fatalf("ParseRequest = %x, %v", got, err)
		}
		resp := Response(txid, addr)
		if !Is(resp) {
			t.Fatalf("Is(response) = false")
		}
		gotID, got, err := ParseResponse(resp)
		if err != nil || gotID != txid || got != addr {
			t.Fatalf("%s: ParseResponse = %x %v %v", s, gotID, got, err)
		}
		if _, err := ParseRequest(resp); err == nil {
			t.Fatalf("ParseRequest accepted a response")
		}
		if _, _, err := ParseResponse(req); err == nil {
			t.Fatalf("ParseResponse accepted a request")
		}
	}
}

func TestMappedAddressFallback(t *testing.T) {
	b := header(typeBindingSuccess, 12, rfcTxID)
	b = append(b, 0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x0d, 0x96, 198, 51, 100, 9)
	_, addr, err := ParseResponse(b)
	if err != nil || addr != netip.MustParseAddrPort("198.51.100.9:3478") {
		t.Fatalf("got %v %v", addr, err)
	}
}

func TestParseErrors(t *testing.T) {
	good := Response(rfcTxID, netip.MustParseAddrPort("192.0.2.1:1"))
	withAttr := func(attr ...byte) []byte {
		b := header(typeBindingSuccess, len(attr), rfcTxID)
		return append(b, attr...)
	}
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"short", good[:10], "shorter than the 20-byte header"},
		{"top bits", append([]byte{0xc1}, good[1:]...), "offset 0"},
		{"cookie", append(append(append([]byte{}, good[:4]...), 0, 0, 0, 0), good[8:]...), "magic cookie"},
		{"length", good[:len(good)-4], "length field"},
		{"error response", header(typeBindingError, 0, rfcTxID), "error response"},
		{"no address", header(typeBindingSuccess, 0, rfcTxID), "neither"},
		{"attr past end", withAttr(0x00, 0x20, 0x00, 0x10, 0, 1, 0, 0), "attribute 0x0020 at offset 20: length 16 runs past"},
		{"short value", withAttr(0x00, 0x20, 0x00, 0x02, 0, 1, 0, 0), "XOR-MAPPED-ADDRESS at offset 20: value of 2 bytes is too short"},
		{"family", withAttr(0x00, 0x20, 0x00, 0x08, 0, 9, 0, 0, 1, 2, 3, 4), "unknown address family 0x09"},
		{"family length", withAttr(0x00, 0x20, 0x00, 0x08, 0, 2, 0, 0, 1, 2, 3, 4), "want 20"},
	}
	for _, c := range cases {
		_, _, err := ParseResponse(c.b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to contain %q", c.name, err, c.want)
		}
	}
	if _, _, err := ParseResponse([]byte("hello")); !errors.Is(err, ErrNotSTUN) {
		t.Errorf("garbage: err = %v, want ErrNotSTUN", err)
	}
}

func TestIs(t *testing.T) {
	wg := make([]byte, 148)
	wg[0] = 1
	for _, b := range [][]byte{nil, wg, make([]byte, 20), []byte("wmdisc and some more bytes")} {
		if Is(b) {
			t.Errorf("Is(%x) = true", b)
		}
	}
}

func TestServe(t *testing.T) {
	srv, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, slog.New(slog.NewTextHandler(io.Discard, nil))) }()

	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Garbage first: it must be ignored, and the request after it answered.
	if _, err := c.WriteTo([]byte("not stun"), srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	txid := [12]byte{42}
	if _, err := c.WriteTo(Request(txid), srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	gotID, addr, err := ParseResponse(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	if gotID != txid || addr != c.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("answer %x %v, want %x %v", gotID, addr, txid, c.LocalAddr())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve returned %v after cancel", err)
	}
}

func FuzzParseResponse(f *testing.F) {
	b, _ := hex.DecodeString(rfc5769IPv4)
	f.Add(b)
	f.Add(Response(rfcTxID, netip.MustParseAddrPort("[2001:db8::1]:1")))
	f.Add(Request(rfcTxID))
	f.Fuzz(func(t *testing.T, b []byte) {
		txid, addr, err := ParseResponse(b)
		if err != nil {
			return
		}
		if !Is(b) {
			t.Fatalf("ParseResponse accepted what Is rejects: %x", b)
		}
		// What parses re-encodes to something that parses the same.
		txid2, addr2, err := ParseResponse(Response(txid, addr))
		if err != nil || txid2 != txid || addr2 != netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()) {
			t.Fatalf("re-encoding %v: %v %v", addr, addr2, err)
		}
	})
}

func FuzzParseRequest(f *testing.F) {
	f.Add(Request(rfcTxID))
	f.Add(append(header(typeBindingRequest, 8, rfcTxID), 0x80, 0x22, 0, 3, 'a', 'b', 'c', 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseRequest(b); err == nil && !Is(b) {
			t.Fatalf("ParseRequest accepted what Is rejects: %x", b)
		}
	})
}
