package filter

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestNoAllocs: nothing on the packet path allocates.
func TestNoAllocs(t *testing.T) {
	rules := append(meshRules(rand.New(rand.NewPCG(5, 6)), 1000),
		rule([]string{alice + "/32", alice6 + "/128"}, nil, port(22), port(53)))
	f, _ := newFilter(t, rules, func(c *Config) { c.MaxConns = 4096 })
	dev := Wrap(&fakeTUN{}, f)

	newFlow := tcp(alice, me, 1, 22, tcpSYN)
	newFlow6 := udp(alice6, me6, 1, 53)
	established := tcp(alice, me, 40000, 22, tcpACK)
	f.Inbound(established)
	reply := udp(bob, me, 53, 5353)
	f.Outbound(udp(me, bob, 5353, 53))
	outNew := tcp(me, bob, 1, 443, tcpSYN)
	outEst := udp(me, bob, 5353, 53)
	denied := tcp(bob, me, 1, 22, tcpSYN)
	notOwn := tcp(alice, "172.31.0.2", 1, 22, tcpSYN)
	unreach := hdr{src: bob, dst: me, proto: protoICMP, icmpType: icmp4Unreachable, quote: udp(me, bob, 5353, 53)}.bytes()
	batch := [][]byte{withOffset(established, 16), withOffset(denied, 16), withOffset(reply, 16)}
	bufs := make([][]byte, len(batch))
	readBufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
	fake := dev.(*device).Device.(*fakeTUN)
	readQueue := [][][]byte{{outEst}}

	var i uint16
	tests := []struct {
		name string
		fn   func()
	}{
		{"inbound new flow", func() {
			i++
			binary.BigEndian.PutUint16(newFlow[20:], i)
			f.Inbound(newFlow)
		}},
		{"inbound new flow v6", func() {
			i++
			binary.BigEndian.PutUint16(newFlow6[40:], i)
			f.Inbound(newFlow6)
		}},
		{"inbound established", func() { f.Inbound(established) }},
		{"inbound reply", func() { f.Inbound(reply) }},
		{"inbound denied", func() { f.Inbound(denied) }},
		{"inbound not own address", func() { f.Inbound(notOwn) }},
		{"inbound icmp error", func() { f.Inbound(unreach) }},
		{"outbound new flow", func() {
			i++
			binary.BigEndian.PutUint16(outNew[20:], i)
			f.Outbound(outNew)
		}},
		{"outbound established", func() { f.Outbound(outEst) }},
		{"wrap write", func() {
			copy(bufs, batch)
			dev.Write(bufs, 16)
		}},
		{"wrap read", func() {
			fake.reads = readQueue
			dev.Read(readBufs, sizes, 16)
		}},
	}
	for _, tt := range tests {
		if n := testing.AllocsPerRun(1000, tt.fn); n != 0 {
			t.Errorf("%s: %v allocations per packet, want 0", tt.name, n)
		}
	}
	if st := f.Stats(); st.Accepted == 0 || st.Dropped[DropNotOwnAddr] == 0 {
		t.Errorf("nothing was accepted, or nothing dropped as not own address: the test is broken (%+v)", st)
	}
}
