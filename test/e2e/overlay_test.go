package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/test/lab"
)

var sigterm = syscall.SIGTERM

// TestOverlayAllPairs: on three hosts every pair reaches every other over
// the overlay (ICMP, TCP, IPv4 and IPv6), and the underlay carries only
// WireGuard between them: a capture on the switch sees no ICMP or TCP
// between agent hosts and never the plaintext.
func TestOverlayAllPairs(t *testing.T) {
	m := newMesh(t)
	names := []string{"h1", "h2", "h3"}
	for _, n := range names {
		m.addAgent(n)
	}
	for _, a := range m.agents {
		for _, b := range m.agents {
			if a != b {
				pub := b.publicKey(t)
				waitFor(t, 5*time.Second, a.name+" has peer "+b.name, func() bool { return a.hasPeer(pub) })
			}
		}
	}
	// wg(8) sees the interface through its UAPI socket.
	h1 := m.agents["h1"]
	out, err := h1.host.Run(context.Background(), "wg", "show", h1.iface, "peers")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"h2", "h3"} {
		if !strings.Contains(string(out), m.agents[n].publicKey(t)) {
			t.Fatalf("wg show %s does not list %s:\n%s", h1.iface, n, out)
		}
	}
	capture, err := m.lab.Switch().Capture("br0")
	if err != nil {
		t.Fatal(err)
	}
	marker := make([]byte, 16)
	rand.Read(marker)
	secret := []byte("wiremesh-plaintext-" + hex.EncodeToString(marker))

	for _, src := range names {
		for _, dst := range names {
			if src == dst {
				continue
			}
			a, b := m.agents[src], m.agents[dst]
			a.ping(t, b.addr(t, false), 2, 200*time.Millisecond)
			tcpEcho(t, a.host, b.host, b.addr(t, false), secret)
		}
	}
	// IPv6 over the overlay, one pair each way.
	m.agents["h1"].ping(t, m.agents["h2"].addr(t, true), 2, 200*time.Millisecond)
	tcpEcho(t, m.agents["h2"].host, m.agents["h1"].host, m.agents["h1"].addr(t, true), secret)

	pkts := capture.Stop()
	agentHosts := map[netip.Addr]bool{}
	for _, a := range m.agents {
		agentHosts[a.host.Addr] = true
	}
	var wg int
	for _, p := range pkts {
		if bytes.Contains(p.Payload, secret) {
			t.Fatalf("plaintext seen on the underlay: %s", p)
		}
		if !agentHosts[p.Src] || !agentHosts[p.Dst] {
			continue // agent ↔ coordinator HTTPS
		}
		if p.Proto != lab.ProtoUDP || p.SrcPort != 51820 || p.DstPort != 51820 {
			t.Fatalf("non-WireGuard packet between agent hosts on the underlay: %s", p)
		}
		wg++
	}
	if wg == 0 {
		t.Fatalf("no WireGuard packets captured between agent hosts (%d packets in all)", len(pkts))
	}
	t.Logf("%d packets captured, %d WireGuard between agents, none in plaintext", len(pkts), wg)
}

// tcpEcho listens on dst at the overlay address, connects from src, sends
// msg and expects it echoed.
func tcpEcho(t *testing.T, src, dst *lab.Host, addr netip.Addr, msg []byte) {
	t.Helper()
	ln, err := dst.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatalf("listen on %s %s: %v", dst, addr, err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.CopyN(c, c, int64(len(msg)))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := src.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("TCP %s → %s: %v", src, ln.Addr(), err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatalf("TCP %s → %s: write: %v", src, ln.Addr(), err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("TCP %s → %s: read: %v", src, ln.Addr(), err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("TCP %s → %s: echo %q, want %q", src, ln.Addr(), got, msg)
	}
}
