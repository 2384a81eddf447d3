package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// IP protocol numbers, for Packet.Proto.
const (
	ProtoICMP uint8 = 1
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
)

const (
	etherTypeIPv4 = 0x0800
	etherTypeVLAN = 0x8100
	etherTypeQinQ = 0x88a8
)

// Packet is an IPv4 packet seen by a Capture.
type Packet struct {
	Src, Dst netip.Addr
	// Proto is the IP protocol number (ProtoUDP, ProtoTCP, ProtoICMP...).
	Proto uint8
	// SrcPort and DstPort are set for UDP and TCP.
	SrcPort, DstPort uint16
	// Payload is the L4 payload: after the UDP or TCP header, after the
	// 8-byte ICMP header, the whole IP payload for other protocols and for
	// non-first fragments.
	Payload []byte
}

// String describes the packet in one line, e.g. "udp 198.51.100.2:5000 >
// 198.51.100.1:6000 len 5".
func (p Packet) String() string {
	switch p.Proto {
	case ProtoUDP, ProtoTCP:
		name := "udp"
		if p.Proto == ProtoTCP {
			name = "tcp"
		}
		return fmt.Sprintf("%s %v > %v len %d", name,
			netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort), len(p.Payload))
	case ProtoICMP:
		return fmt.Sprintf("icmp %v > %v len %d", p.Src, p.Dst, len(p.Payload))
	default:
		return fmt.Sprintf("proto %d %v > %v len %d", p.Proto, p.Src, p.Dst, len(p.Payload))
	}
}

// Capture records the IPv4 frames seen on one interface. Create it with
// Host.Capture and end it with Stop; the lab's cleanup stops any capture
// still running.
type Capture struct {
	f    *os.File
	done chan struct{} // closed when the reader goroutine has returned

	mu      sync.Mutex
	packets []Packet
	err     error

	stopOnce sync.Once
}

// Capture opens an AF_PACKET raw socket (ETH_P_ALL) inside the host's
// namespace, bound to the interface ifname (e.g. "br0" on the switch) and
// in promiscuous mode, and records every IPv4 frame seen, in either
// direction, until Stop. Frames the interface both sends and receives (as on
// lo) are recorded twice.
func (h *Host) Capture(ifname string) (*Capture, error) {
	var fd int
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		// Protocol 0 receives nothing until bind, so no frame of another
		// interface slips in.
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := setupPacketSocket(fd, ifi.Index); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: capture on %s: %w", h.Name, ifname, err)
	}
	// fd is non-blocking, so the file uses the runtime poller and supports
	// deadlines.
	c := &Capture{f: os.NewFile(uintptr(fd), "capture:"+h.Name+":"+ifname), done: make(chan struct{})}
	h.lab.trackCapture(c)
	go c.read()
	return c, nil
}

func setupPacketSocket(fd, ifindex int) error {
	// A big buffer, so a burst is not dropped while the reader is busy.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind packet socket: %w", err)
	}
	// Without promiscuous mode a bridge only passes up frames addressed to
	// itself, not the ones it forwards between its ports.
	mreq := &unix.PacketMreq{Ifindex: int32(ifindex), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, mreq); err != nil {
		return fmt.Errorf("promiscuous mode: %w", err)
	}
	return nil
}

func (c *Capture) read() {
	defer close(c.done)
	buf := make([]byte, 1<<17) // any IPv4 packet, even a GSO one, fits
	for {
		n, err := c.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.drain(buf) // Stop: take what is already queued
			} else {
				c.setErr(err)
			}
			return
		}
		c.record(buf[:n])
	}
}

// drain reads the frames already queued on the socket without waiting.
func (c *Capture) drain(buf []byte) {
	rc, err := c.f.SyscallConn()
	if err != nil {
		c.setErr(err)
		return
	}
	err = rc.Control(func(fd uintptr) {
		for {
			n, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				if !errors.Is(err, unix.EAGAIN) {
					c.setErr(err)
				}
				return
			}
			c.record(buf[:n])
		}
	})
	if err != nil {
		c.setErr(err)
	}
}

func (c *Capture) record(frame []byte) {
	p, ok := parseFrame(frame)
	if !ok {
		return
	}
	c.mu.Lock()
	c.packets = append(c.packets, p)
	c.mu.Unlock()
}

func (c *Capture) setErr(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = fmt.Errorf("capture: %w", err)
	}
	c.mu.Unlock()
}

// Packets returns the packets recorded so far, without stopping.
func (c *Capture) Packets() []Packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Packet(nil), c.packets...)
}

// Err returns the error that ended the capture early, if any.
func (c *Capture) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Stop reads the frames already queued, closes the socket and returns every
// packet recorded. It may be called more than once.
func (c *Capture) Stop() []Packet {
	c.stopOnce.Do(func() {
		// A deadline in the past wakes the reader, which then drains.
		if err := c.f.SetReadDeadline(time.Unix(1, 0)); err != nil {
			c.setErr(err)
			c.f.Close() // wakes the reader, without draining
			<-c.done
			return
		}
		<-c.done
		c.f.Close()
	})
	return c.Packets()
}

// parseFrame decodes an Ethernet frame carrying IPv4.
func parseFrame(b []byte) (Packet, bool) {
	if len(b) < 14 {
		return Packet{}, false
	}
	etherType := binary.BigEndian.Uint16(b[12:14])
	b = b[14:]
	for etherType == etherTypeVLAN || etherType == etherTypeQinQ {
		if len(b) < 4 {
			return Packet{}, false
		}
		etherType = binary.BigEndian.Uint16(b[2:4])
		b = b[4:]
	}
	if etherType != etherTypeIPv4 {
		return Packet{}, false
	}
	return parseIPv4(b)
}

// parseIPv4 decodes an IPv4 packet and the header of its L4 protocol.
func parseIPv4(b []byte) (Packet, bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return Packet{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < 20 || len(b) < ihl {
		return Packet{}, false
	}
	if total >= ihl && total < len(b) {
		b = b[:total] // drop Ethernet padding
	}
	p := Packet{
		Src:   netip.AddrFrom4([4]byte(b[12:16])),
		Dst:   netip.AddrFrom4([4]byte(b[16:20])),
		Proto: b[9],
	}
	l4 := b[ihl:]
	if binary.BigEndian.Uint16(b[6:8])&0x1fff != 0 { // not the first fragment
		p.Payload = clone(l4)
		return p, true
	}
	switch p.Proto {
	case ProtoUDP:
		if len(l4) < 8 {
			return p, true
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		p.Payload = clone(l4[8:])
	case ProtoTCP:
		if len(l4) < 20 {
			return p, true
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		if off := int(l4[12]>>4) * 4; off >= 20 && off <= len(l4) {
			p.Payload = clone(l4[off:])
		}
	case ProtoICMP:
		if len(l4) >= 8 {
			p.Payload = clone(l4[8:])
		}
	default:
		p.Payload = clone(l4)
	}
	return p, true
}

func clone(b []byte) []byte { return append([]byte{}, b...) }

// htons converts a 16-bit value to network byte order as the kernel expects
// it in sockaddr_ll.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
