package pages

import (
	"bytes"
	"testing"
)

func resident(t *testing.T, b []byte) int {
	t.Helper()
	n, err := Resident([][]byte{b})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRelease(t *testing.T) {
	const size = 65535 // wireguard-go's MaxMessageSize
	bufs := make([][]byte, 4)
	for i := range bufs {
		bufs[i] = make([]byte, size)
		for j := range bufs[i] {
			bufs[i][j] = 0xab
		}
	}
	inner := int(size / pageSize)
	for i, b := range bufs {
		if r := resident(t, b); r < inner-1 {
			t.Fatalf("buffer %d: %d of its %d inner pages resident after writing it", i, r, inner)
		}
	}
	n := Release(bufs[:3])
	if min := 3 * (inner - 1) * int(pageSize); n < min {
		t.Fatalf("Release covered %d bytes, want at least %d", n, min)
	}
	for i, b := range bufs[:3] {
		if r := resident(t, b); r != 0 {
			t.Errorf("buffer %d: %d pages still resident after Release", i, r)
		}
	}
	if r := resident(t, bufs[3]); r < inner-1 {
		t.Errorf("the buffer not released lost pages: %d of %d resident", r, inner)
	}
	// Released buffers stay usable: they read as zeros outside the
	// partial pages at their ends, and keep what is written next.
	b := bufs[0]
	zeros := bytes.Count(b, []byte{0})
	if zeros < (inner-1)*int(pageSize) {
		t.Errorf("released buffer has %d zero bytes, want at least %d", zeros, (inner-1)*int(pageSize))
	}
	copy(b[100:], "packet")
	if string(b[100:106]) != "packet" {
		t.Errorf("write after Release: read back %q", b[100:106])
	}
	if !bytes.Equal(bufs[3], bytes.Repeat([]byte{0xab}, size)) {
		t.Error("a buffer not given to Release changed")
	}
}

func TestReleaseSmallAndEmpty(t *testing.T) {
	small := []byte("not a page")
	if n := Release([][]byte{small, nil, {}}); n != 0 {
		t.Errorf("Release of buffers below a page covered %d bytes", n)
	}
	if string(small) != "not a page" {
		t.Errorf("small buffer changed: %q", small)
	}
}
