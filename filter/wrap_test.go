package filter

import (
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/tun"
)

// fakeTUN is a tun.Device in memory: Write records what it is given, Read
// hands out the packets queued in reads.
type fakeTUN struct {
	writes   [][][]byte // per Write call, the bufs it got (not copied)
	offsets  []int
	writeN   int // packets written, when not recording
	record   bool
	writeErr error

	reads   [][][]byte // per Read call, the packets to return
	readErr error
}

func (d *fakeTUN) File() *os.File           { return nil }
func (d *fakeTUN) MTU() (int, error)        { return 1420, nil }
func (d *fakeTUN) Name() (string, error)    { return "wmtest", nil }
func (d *fakeTUN) Events() <-chan tun.Event { return nil }
func (d *fakeTUN) Close() error             { return nil }
func (d *fakeTUN) BatchSize() int           { return 128 }
func (d *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	if d.writeErr != nil {
		return 1, d.writeErr
	}
	if d.record {
		d.writes = append(d.writes, slices.Clone(bufs))
		d.offsets = append(d.offsets, offset)
	}
	d.writeN += len(bufs)
	return len(bufs), nil
}

func (d *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(d.reads) == 0 {
		return 0, os.ErrClosed
	}
	batch := d.reads[0]
	d.reads = d.reads[1:]
	for i, p := range batch {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(batch), d.readErr
}

// withOffset returns pkt behind offset bytes of headroom, as wireguard-go
// passes it.
func withOffset(pkt []byte, offset int) []byte {
	b := make([]byte, offset, offset+len(pkt))
	for i := range b {
		b[i] = 0xee
	}
	return append(b, pkt...)
}

func TestWrapWrite(t *testing.T) {
	const offset = 16
	f, _ := newFilter(t, []wire.FilterRule{rule([]string{alice + "/32"}, []uint8{protoTCP}, port(22))})
	inner := &fakeTUN{record: true}
	dev := Wrap(inner, f)

	pass1 := withOffset(tcp(alice, me, 1, 22, tcpSYN), offset)
	pass2 := withOffset(tcp(alice, me, 2, 22, tcpACK), offset)
	pass3 := withOffset(tcp(alice, me, 1, 22, tcpACK), offset)
	bufs := [][]byte{
		pass1,
		withOffset(tcp(alice, me, 1, 23, tcpSYN), offset), // closed port
		pass2,
		withOffset([]byte{0x45, 0, 0}, offset), // malformed
		make([]byte, offset-1),                 // shorter than the offset
		withOffset(tcp(bob, me, 1, 22, tcpSYN), offset), // stranger
		pass3,
	}
	n, err := dev.Write(bufs, offset)
	if err != nil || n != 7 {
		t.Errorf("Write = %d, %v; want 7, nil (every packet written or dropped)", n, err)
	}
	if len(inner.writes) != 1 || inner.offsets[0] != offset {
		t.Fatalf("inner device got %d writes (offsets %v), want 1 at offset %d", len(inner.writes), inner.offsets, offset)
	}
	got := inner.writes[0]
	want := [][]byte{pass1, pass2, pass3}
	if len(got) != len(want) {
		t.Fatalf("inner device got %d packets, want %d", len(got), len(want))
	}
	for i := range want {
		if &got[i][0] != &want[i][0] || len(got[i]) != len(want[i]) {
			t.Errorf("packet %d written is not the accepted buffer itself, in order", i)
		}
	}
	if st := f.Stats(); st.Accepted != 3 || st.Dropped[DropNoRule] != 2 || st.Dropped[DropMalformed] != 2 {
		t.Errorf("Stats after Write: %+v; want 3 accepted, 2 no rule, 2 malformed", st)
	}

	// All dropped: the inner device is not called.
	if n, err := dev.Write([][]byte{withOffset(tcp(bob, me, 1, 22, tcpSYN), offset)}, offset); n != 1 || err != nil {
		t.Errorf("Write of a denied packet = %d, %v; want 1, nil", n, err)
	}
	if len(inner.writes) != 1 {
		t.Errorf("inner device called for a batch with nothing to write")
	}

	// An error of the inner device comes back with its count.
	inner.writeErr = errors.New("boom")
	if n, err := dev.Write([][]byte{withOffset(tcp(alice, me, 1, 22, tcpACK), offset)}, offset); n != 1 || !errors.Is(err, inner.writeErr) {
		t.Errorf("Write with a failing device = %d, %v; want 1, boom", n, err)
	}
}

func TestWrapRead(t *testing.T) {
	const offset = 32
	f, _ := newFilter(t, nil)
	inner := &fakeTUN{reads: [][][]byte{
		{tcp(me, alice, 40000, 22, tcpSYN), udp(me, bob, 5353, 53)},
		{ping(me6, alice6, 3, false)},
	}}
	dev := Wrap(inner, f)
	bufs := [][]byte{make([]byte, 2048), make([]byte, 2048)}
	sizes := make([]int, 2)
	if n, err := dev.Read(bufs, sizes, offset); n != 2 || err != nil {
		t.Fatalf("Read = %d, %v; want 2, nil", n, err)
	}
	inner.readErr = tun.ErrTooManySegments // packets come with this error too
	if n, err := dev.Read(bufs, sizes, offset); n != 1 || !errors.Is(err, tun.ErrTooManySegments) {
		t.Fatalf("Read = %d, %v; want 1, %v", n, err, tun.ErrTooManySegments)
	}
	for name, reply := range map[string][]byte{
		"tcp":    tcp(alice, me, 22, 40000, tcpSYN|tcpACK),
		"udp":    udp(bob, me, 53, 5353),
		"icmpv6": ping(alice6, me6, 3, true),
	} {
		if v := f.Inbound(reply); v != Accept {
			t.Errorf("%s reply to a packet read from the device: %v, want accept", name, v)
		}
	}
}

func TestWrapPassesThrough(t *testing.T) {
	f, _ := newFilter(t, nil)
	dev := Wrap(&fakeTUN{}, f)
	if dev.BatchSize() != 128 {
		t.Errorf("BatchSize = %d, want the inner device's 128", dev.BatchSize())
	}
	if mtu, _ := dev.MTU(); mtu != 1420 {
		t.Errorf("MTU = %d, want 1420", mtu)
	}
	if name, _ := dev.Name(); name != "wmtest" {
		t.Errorf("Name = %q, want wmtest", name)
	}
}
