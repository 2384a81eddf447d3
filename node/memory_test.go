package node

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/wiremesh/wiremesh/internal/pages"
	"github.com/wiremesh/wiremesh/test/lab"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

func TestQuietness(t *testing.T) {
	var q quietness
	steps := []struct {
		moved, allocated uint64
		ticks            int
		want             change // of the last tick
	}{
		{0, 100 << 10, 100, unchanged}, // an idle agent stays quiet
		{calmRate, 0, 1, becameBusy},   // WireGuard traffic
		{10 * calmRate, 0, 20, unchanged},
		{0, 0, calmFor - 1, unchanged}, // not yet calm
		{0, calmAllocs, 1, unchanged},  // allocation keeps it busy
		{0, 0, calmFor - 1, unchanged},
		{0, 0, 1, calmedDown},
		{0, 0, 3 * calmFor, unchanged}, // and stays down
		{0, calmAllocs, 1, becameBusy}, // a burst of DNS queries, say
		{0, 0, calmFor, calmedDown},
	}
	for i, s := range steps {
		for n := range s.ticks {
			got := q.tick(s.moved, s.allocated)
			want := unchanged
			if n == s.ticks-1 {
				want = s.want
			}
			if got != want {
				t.Fatalf("step %d, tick %d of %d: %v, want %v", i, n+1, s.ticks, got, want)
			}
		}
	}
}

// tunInOwnNetns creates a TUN device with 192.0.2.1/24 in a network
// namespace of its own, and a UDP socket there whose packets to the /24
// the device reads. The namespace goes away with the device and socket.
func tunInOwnNetns(t *testing.T) (tun.Device, *net.UDPConn) {
	t.Helper()
	type made struct {
		dev  tun.Device
		sock *net.UDPConn
		err  error
	}
	ch := make(chan made, 1)
	go func() {
		// The thread enters the new namespace and never leaves it:
		// it ends with this goroutine, locked.
		runtime.LockOSThread()
		var m made
		defer func() { ch <- m }()
		if m.err = unix.Unshare(unix.CLONE_NEWNET); m.err != nil {
			return
		}
		if m.dev, m.err = tun.CreateTUN("wmrel0", 1420); m.err != nil {
			return
		}
		// No IPv6 on it: the kernel's neighbour discovery would come
		// out of the device at random times.
		err := os.WriteFile("/proc/sys/net/ipv6/conf/wmrel0/disable_ipv6", []byte("1"), 0)
		var link netlink.Link
		if err == nil {
			link, err = netlink.LinkByName("wmrel0")
		}
		if err == nil {
			err = netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(24, 32)}})
		}
		if err == nil {
			err = netlink.LinkSetUp(link)
		}
		if err == nil {
			m.sock, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1)})
		}
		if m.err = err; err != nil {
			m.dev.Close()
		}
	}()
	m := <-ch
	if m.err != nil {
		t.Fatalf("TUN in a namespace of its own: %v", m.err)
	}
	t.Cleanup(func() {
		m.sock.Close()
		m.dev.Close()
	})
	return m.dev, m.sock
}

// TestReleasingTUN: ReleaseBuffers makes the TUN reader drop the pages of
// the batch it waits with, and the read goes on to return the next packet.
func TestReleasingTUN(t *testing.T) {
	lab.Require(t)
	dev, sock := tunInOwnNetns(t)
	r := newReleasingTUN(dev)
	const offset = 16 // wireguard-go reads at its transport header's size
	batch := dev.BatchSize()
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = bytes.Repeat([]byte{0xab}, 65535)
	}
	resident := func() int {
		n, err := pages.Resident(bufs)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := resident(); n < batch*15 {
		t.Fatalf("%d pages of the written batch resident, want about %d", n, batch*16)
	}
	type result struct {
		n     int
		sizes []int
		err   error
	}
	read := func() chan result {
		ch := make(chan result, 1)
		go func() {
			sizes := make([]int, batch)
			n, err := r.Read(bufs, sizes, offset)
			ch <- result{n, sizes, err}
		}()
		return ch
	}
	done := read()
	if err := r.ReleaseBuffers(); err != nil {
		t.Fatalf("ReleaseBuffers: %v", err)
	}
	deadline := time.Now().Add(waitFor)
	for resident() > batch { // what stays is the partial page at each end
		if time.Now().After(deadline) {
			t.Fatalf("%d pages still resident %v after ReleaseBuffers", resident(), waitFor)
		}
		select {
		case res := <-done:
			t.Fatalf("Read returned %d, %v before its buffers were released", res.n, res.err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	// The read goes on: a datagram routed to the device comes out of it.
	// The kernel's own packets (IPv6 neighbour discovery) may come first.
	payload := []byte("after the release")
	dst := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.2:9"))
	for tries := 0; ; tries++ {
		if _, err := sock.WriteToUDP(payload, dst); err != nil {
			t.Fatal(err)
		}
		var res result
		select {
		case res = <-done:
		case <-time.After(waitFor):
			t.Fatal("no packet read after ReleaseBuffers")
		}
		if res.err != nil {
			t.Fatalf("Read after ReleaseBuffers: %v", res.err)
		}
		for i := range res.n {
			if bytes.HasSuffix(bufs[i][offset:offset+res.sizes[i]], payload) {
				return
			}
		}
		if tries == 10 {
			t.Fatalf("the datagram never came out of the device")
		}
		done = read()
	}
}

// udp4 is an IPv4 UDP packet from src to dst (UDP checksum 0: none).
func udp4(src, dst netip.AddrPort, payload []byte) []byte {
	p := make([]byte, 28+len(payload))
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(p[12:], s4[:])
	copy(p[16:], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], src.Port())
	binary.BigEndian.PutUint16(p[22:], dst.Port())
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return p
}

// TestReleasingTUNWriteClears: Write delivers the packets and leaves the
// caller's slice without references to its buffers, so that buffers
// wireguard-go gave back to its pool can be collected.
func TestReleasingTUNWriteClears(t *testing.T) {
	lab.Require(t)
	dev, sock := tunInOwnNetns(t)
	r := newReleasingTUN(dev)
	const offset = 16
	to := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(sock.LocalAddr().(*net.UDPAddr).Port))
	from := netip.MustParseAddrPort("192.0.2.2:4000")
	bufs := make([][]byte, 3)
	for i := range bufs {
		pkt := udp4(from, to, fmt.Appendf(nil, "packet %d", i))
		bufs[i] = append(make([]byte, offset, 65535), pkt...)
	}
	batch := bufs[:2] // wireguard-go's slice shares its array with the caller
	if _, err := r.Write(batch, offset); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if bufs[0] != nil || bufs[1] != nil || bufs[2] == nil {
		t.Errorf("after Write the caller's slice holds %v, %v, %v buffers; want the written two cleared, the third kept",
			bufs[0] != nil, bufs[1] != nil, bufs[2] != nil)
	}
	sock.SetReadDeadline(time.Now().Add(waitFor))
	got := map[string]bool{}
	buf := make([]byte, 100)
	for len(got) < 2 {
		n, err := sock.Read(buf)
		if err != nil {
			t.Fatalf("read what Write sent into the namespace (have %v): %v", got, err)
		}
		got[string(buf[:n])] = true
	}
	if !got["packet 0"] || !got["packet 1"] {
		t.Errorf("received %v, want packet 0 and packet 1", got)
	}
}
