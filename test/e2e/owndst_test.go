package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/internal/report"
	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// ownDstPolicy lets evil reach recv on tcp/443 and by ping; nothing else.
const ownDstPolicy = `{"acls": [
  {"action": "accept", "src": ["tag:evil"], "dst": ["tag:recv:443"], "proto": "tcp"},
  {"action": "accept", "src": ["tag:evil"], "dst": ["tag:recv:*"], "proto": "icmp"},
]}`

// Addresses of the LAN behind recv (a veth pair into the namespace lan).
var (
	lanGateway = netip.MustParseAddr("172.31.0.1") // recv's side
	lanHost    = netip.MustParseAddr("172.31.0.2")
	lanNet     = netip.MustParsePrefix("172.31.0.0/24")
)

// TestPeerReachesOnlyOwnAddresses: recv forwards (ip_forward=1) to a LAN
// on a second interface, and evil, allowed tcp/443 and ping to recv,
// rewrites its own WireGuard allowed IPs for recv and routes into its
// tunnel. It reaches nothing on the LAN host (not the allowed port, not
// the gossip port, not by ping) and not recv's underlay address, though
// every probe crosses the tunnel: recv's filter counts each as "not own
// address". The allowed port on recv's overlay address still answers, so
// the filter, not the routing, stops the rest.
func TestPeerReachesOnlyOwnAddresses(t *testing.T) {
	lab.Require(t, "sysctl")
	m := newBareMesh(t)
	evil := m.taggedAgent("evil", "tag:evil")
	recv := m.taggedAgent("recv", "tag:recv")
	m.setPolicy(ownDstPolicy)
	waitFor(t, 10*time.Second, "evil and recv peered", func() bool {
		return evil.hasPeer(recv.publicKey(t)) && recv.hasPeer(evil.publicKey(t))
	})
	lan := m.lab.AddHost("lan")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(h *lab.Host, args ...string) {
		t.Helper()
		if out, err := h.Run(ctx, args...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	// The LAN host hangs off recv only; recv forwards.
	run(lan, "ip", "link", "del", "eth0")
	recvUnderlay := recv.host.Addr
	evilAddr := evil.addr(t, false)
	run(recv.host, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "up0", "netns", lan.NS)
	run(recv.host, "ip", "addr", "add", netip.PrefixFrom(lanGateway, 24).String(), "dev", "lan0")
	run(recv.host, "ip", "link", "set", "lan0", "up")
	run(lan, "ip", "addr", "add", netip.PrefixFrom(lanHost, 24).String(), "dev", "up0")
	run(lan, "ip", "link", "set", "up0", "up")
	run(lan, "ip", "route", "add", "default", "via", lanGateway.String())
	run(recv.host, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")

	// Listeners: the allowed port and the gossip port on the LAN host,
	// the allowed port on every address of recv.
	var lanHits atomic.Int32
	countTCP(t, lan, netip.AddrPortFrom(lanHost, 443), &lanHits)
	countTCP(t, lan, netip.AddrPortFrom(lanHost, wire.GossipPort), &lanHits)
	countUDP(t, lan, netip.AddrPortFrom(lanHost, wire.GossipPort), &lanHits)
	var recvHits atomic.Int32
	countTCP(t, recv.host, netip.AddrPortFrom(netip.IPv4Unspecified(), 443), &recvHits)

	// The attacker's side: the LAN and recv's underlay address into the
	// tunnel to recv. WireGuard itself goes to recv's underlay address, so
	// only TCP to port 443 takes the tunnel there (a rule, table 100).
	run(evil.host, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf."+evil.iface+".rp_filter=0")
	run(evil.host, "ip", "route", "add", lanNet.String(), "dev", evil.iface, "src", evilAddr.String())
	run(evil.host, "ip", "route", "add", recvUnderlay.String()+"/32", "dev", evil.iface, "src", evilAddr.String(), "table", "100")
	run(evil.host, "ip", "rule", "add", "to", recvUnderlay.String()+"/32", "ipproto", "tcp", "dport", "443", "lookup", "100")
	intoTunnel := func() {
		t.Helper()
		addAllowedIPs(t, evil, recv.publicKey(t), lanNet, netip.PrefixFrom(recvUnderlay, 32))
	}

	// The control: the allowed port on recv's overlay address answers.
	intoTunnel()
	recvOverlay := netip.AddrPortFrom(recv.addr(t, false), 443)
	if !dialEcho(evil.host, recvOverlay, 5*time.Second) {
		t.Fatalf("evil cannot reach %s, which the policy allows", recvOverlay)
	}

	type probe struct {
		name string
		try  func() bool // reports whether evil got an answer
	}
	probes := []probe{
		{"tcp/443 on the LAN host", func() bool { return dialEcho(evil.host, netip.AddrPortFrom(lanHost, 443), 2*time.Second) }},
		{"the gossip port (tcp) on the LAN host", func() bool { return dialEcho(evil.host, netip.AddrPortFrom(lanHost, wire.GossipPort), 2*time.Second) }},
		{"the gossip port (udp) on the LAN host", func() bool { return udpEcho(t, evil, netip.AddrPortFrom(lanHost, wire.GossipPort), 2*time.Second) }},
		{"ping to the LAN host", func() bool {
			_, err := evil.host.Run(ctx, "ping", "-n", "-c", "1", "-W", "2", lanHost.String())
			return err == nil
		}},
		{"tcp/443 on recv's underlay address", func() bool {
			return dialEcho(evil.host, netip.AddrPortFrom(recvUnderlay, 443), 2*time.Second)
		}},
	}
	var reached []string
	crossed := 0
	for _, p := range probes {
		intoTunnel()
		before := notOwnDrops(t, recv)
		if p.try() {
			reached = append(reached, p.name)
			t.Errorf("evil reached %s through its tunnel to recv", p.name)
		}
		// The probe crossed the tunnel and met recv's filter.
		deadline := time.Now().Add(5 * time.Second)
		for notOwnDrops(t, recv) == before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if notOwnDrops(t, recv) > before {
			crossed++
		} else {
			t.Errorf("%s: recv's filter counted no \"not own address\" drop, so the probe did not reach it and checks nothing", p.name)
		}
	}
	if n := lanHits.Load(); n != 0 {
		t.Errorf("the LAN host's listeners got %d connections or datagrams from the tunnel", n)
	}
	if n := recvHits.Load(); n != 1 {
		t.Errorf("recv's listener on port 443 got %d connections, want 1 (the control, on its overlay address)", n)
	}
	report.Add(t, report.Row{Fault: "peer allowed tcp/443 routes other addresses into its tunnel to a forwarding node (rewritten allowed IPs and routes)",
		Check:  "probes that reach a LAN host behind the node or its underlay address (tcp/443, gossip tcp and udp, ping)",
		Figure: fmt.Sprintf("%d of %d reached (%s); %d of %d counted as not own address", len(reached), len(probes), strings.Join(reached, ", "), crossed, len(probes)),
		Target: fmt.Sprintf("0 reached, %d counted", len(probes)), Met: len(reached) == 0 && crossed == len(probes)})

	// What the policy allows still passes after all this.
	if !dialEcho(evil.host, recvOverlay, 5*time.Second) {
		t.Errorf("evil can no longer reach %s", recvOverlay)
	}
}

// addAllowedIPs adds prefixes to the allowed IPs of peer pub on a's
// WireGuard interface, as an attacker who holds the node can.
func addAllowedIPs(t *testing.T, a *agent, pub string, prefixes ...netip.Prefix) {
	t.Helper()
	c, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key, err := wgtypes.ParseKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pc := wgtypes.PeerConfig{PublicKey: key, UpdateOnly: true}
	for _, p := range prefixes {
		pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())})
	}
	if err := c.ConfigureDevice(a.iface, wgtypes.Config{Peers: []wgtypes.PeerConfig{pc}}); err != nil {
		t.Fatalf("add allowed IPs on %s: %v", a.name, err)
	}
}

// notOwnDrops is what a's filter dropped as not for its own addresses.
func notOwnDrops(t *testing.T, a *agent) uint64 {
	t.Helper()
	st := a.status(t)
	if st.Filter == nil {
		t.Fatalf("%s reports no filter", a.name)
	}
	return st.Filter.Dropped["not own address"]
}

// countTCP listens on ap in h, counts accepted connections in n and
// echoes on them until the test ends.
func countTCP(t *testing.T, h *lab.Host, ap netip.AddrPort, n *atomic.Int32) {
	t.Helper()
	ln, err := h.Listen("tcp", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 4)
			if k, err := c.Read(buf); err == nil {
				c.Write(buf[:k])
			}
			c.Close()
		}
	})
}

// countUDP listens on ap in h, counts datagrams in n and echoes them
// until the test ends.
func countUDP(t *testing.T, h *lab.Host, ap netip.AddrPort, n *atomic.Int32) {
	t.Helper()
	pc, err := h.ListenPacket("udp", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			n.Add(1)
			pc.WriteTo(buf[:k], from)
		}
	})
}

// dialEcho reports whether a TCP echo with ap from h completes in time.
func dialEcho(h *lab.Host, ap netip.AddrPort, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := h.DialContext(ctx, "tcp", ap.String())
	if err != nil {
		return false
	}
	defer c.Close()
	return echo(c, timeout)
}

// udpEcho reports whether a UDP datagram from a's overlay address to ap
// comes back in time.
func udpEcho(t *testing.T, a *agent, ap netip.AddrPort, timeout time.Duration) bool {
	t.Helper()
	pc, err := a.host.ListenPacket("udp", netip.AddrPortFrom(a.addr(t, false), 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(timeout))
	if _, err := pc.WriteTo([]byte("ping"), net.UDPAddrFromAddrPort(ap)); err != nil {
		return false
	}
	buf := make([]byte, 16)
	k, _, err := pc.ReadFrom(buf)
	return err == nil && string(buf[:k]) == "ping"
}

// TestForgedICMPError: a peer forges an ICMP "port unreachable" that
// quotes a UDP flow vic has open with srv. vic's filter drops it (it
// comes from evil, not from srv), so vic's connected socket never sees
// ECONNREFUSED; the same error from srv itself does reach it.
func TestForgedICMPError(t *testing.T) {
	m := newBareMesh(t)
	vic := m.taggedAgent("vic", "tag:vic")
	srv := m.taggedAgent("srv", "tag:srv")
	evil := m.taggedAgent("evil", "tag:evil")
	m.setPolicy(`{"acls": [
	  {"action": "accept", "src": ["tag:vic"], "dst": ["tag:srv:9999"], "proto": "udp"},
	  {"action": "accept", "src": ["tag:evil"], "dst": ["tag:vic:443"], "proto": "tcp"},
	]}`)
	waitFor(t, 10*time.Second, "vic peered with srv and evil", func() bool {
		return vic.hasPeer(srv.publicKey(t)) && vic.hasPeer(evil.publicKey(t)) && evil.hasPeer(vic.publicKey(t))
	})
	srvAP := netip.AddrPortFrom(srv.addr(t, false), 9999)
	sink, err := srv.host.ListenPacket("udp", srvAP.String())
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := vic.host.DialContext(ctx, "udp", srvAP.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	vicAP := netip.MustParseAddrPort(conn.LocalAddr().String())
	// refused sends one datagram on the flow (so it is tracked, and the
	// kernel reports an error that arrived meanwhile) and reports whether
	// the socket got ECONNREFUSED from an ICMP error.
	refused := func() bool {
		if _, err := conn.Write([]byte("hello")); err != nil {
			return errors.Is(err, syscall.ECONNREFUSED)
		}
		conn.SetReadDeadline(time.Now().Add(time.Second))
		_, err := conn.Read(make([]byte, 16))
		return errors.Is(err, syscall.ECONNREFUSED)
	}
	if refused() {
		t.Fatal("vic's flow to srv was refused before any forged error")
	}

	// evil's forgery: port unreachable, quoting vic → srv:9999.
	quote := udp4(vicAP.Addr(), srvAP.Addr(), vicAP.Port(), srvAP.Port(), []byte("hello"))[:28]
	forged := icmp4(evil.addr(t, false), vicAP.Addr(), 3, 3, quote)
	before := deniedFrom(t, vic, "evil")
	err = evil.host.Do(func() error {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		for range 3 {
			if err := syscall.Sendto(fd, forged, 0, &syscall.SockaddrInet4{Addr: vicAP.Addr().As4()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("raw send from evil: %v", err)
	}
	forgedWorked := refused()
	// Unless they got in, vic's filter counts the forged errors.
	counted := func() bool { return deniedFrom(t, vic, "evil")-before >= 3 }
	for deadline := time.Now().Add(5 * time.Second); !forgedWorked && !counted() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	crossed := counted()

	// The control: srv's own port unreachable comes in.
	sink.Close()
	genuine := false
	for i := 0; i < 5 && !genuine; i++ {
		genuine = refused()
	}
	report.Add(t, report.Row{Fault: "peer forges an ICMP port unreachable quoting another peer's UDP flow", Check: "forged error delivered to the flow's socket; genuine error from the flow's peer delivered",
		Figure: fmt.Sprintf("forged: %v; genuine: %v", forgedWorked, genuine), Target: "forged: false; genuine: true", Met: !forgedWorked && genuine})
	if forgedWorked {
		t.Error("evil's forged ICMP error reached vic's socket (ECONNREFUSED)")
	} else if !crossed {
		t.Error("vic's filter did not count the forged errors as denied from evil: they did not reach it, so this checks nothing")
	}
	if !genuine {
		t.Error("srv's own port unreachable never reached vic's socket: the check above proves nothing")
	}
}

// icmp4 builds an IPv4 ICMP error of type and code quoting quote.
func icmp4(src, dst netip.Addr, typ, code byte, quote []byte) []byte {
	b := make([]byte, 28+len(quote))
	b[0], b[8], b[9] = 0x45, 64, syscall.IPPROTO_ICMP
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20], 0))
	ic := b[20:]
	ic[0], ic[1] = typ, code
	copy(ic[8:], quote)
	binary.BigEndian.PutUint16(ic[2:], checksum(ic, 0))
	return b
}
