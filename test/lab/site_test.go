package lab_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/test/lab"
)

const (
	// quiet is how long a test listens to be sure nothing arrives.
	quiet = time.Second
	// answerWithin bounds the wait for an answer that must come.
	answerWithin = 5 * time.Second
)

// siteLab builds a lab with a public host "pub" and returns it, after the
// checks that every site test needs.
func siteLab(t *testing.T) (*lab.Lab, *lab.Host) {
	t.Helper()
	lab.Require(t, "ip", "nft", "ping")
	t.Parallel()
	l := lab.New(t)
	return l, l.AddPublicHost("pub")
}

// reflector answers every datagram on its sockets with the source address
// it saw, as a STUN server does.
type reflector struct {
	addrs []netip.AddrPort // where it listens
	seen  atomic.Int64     // datagrams received
}

// startReflector starts a reflector on n ports of host h; the test's
// cleanup stops it.
func startReflector(t *testing.T, h *lab.Host, n int) *reflector {
	t.Helper()
	r := &reflector{}
	var wg sync.WaitGroup
	var pcs []net.PacketConn
	t.Cleanup(func() {
		for _, pc := range pcs {
			pc.Close()
		}
		wg.Wait()
	})
	for range n {
		pc, err := h.ListenPacket("udp4", netip.AddrPortFrom(h.Addr, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		pcs = append(pcs, pc)
		r.addrs = append(r.addrs, addrOf(pc))
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.serve(pc)
		}()
	}
	return r
}

// serve answers "TOKEN" with "TOKEN ip:port" until pc is closed.
func (r *reflector) serve(pc net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		r.seen.Add(1)
		_, _ = pc.WriteTo(fmt.Appendf(nil, "%s %v", buf[:n], from.(*net.UDPAddr).AddrPort()), from)
	}
}

// listenUDP opens a UDP socket on h's address and a free port, closed by
// the test's cleanup.
func listenUDP(t *testing.T, h *lab.Host) net.PacketConn {
	t.Helper()
	return listenUDPPort(t, h, 0)
}

func listenUDPPort(t *testing.T, h *lab.Host, port uint16) net.PacketConn {
	t.Helper()
	pc, err := h.ListenPacket("udp4", netip.AddrPortFrom(h.Addr, port).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func addrOf(pc net.PacketConn) netip.AddrPort {
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

var tokens atomic.Int64

// mapped asks the reflector at dst, from pc, which address it sees: it
// sends a fresh token every 100 ms until the answer to it comes, up to
// answerWithin.
func mapped(pc net.PacketConn, dst netip.AddrPort) (netip.AddrPort, error) {
	token := fmt.Sprintf("q%d", tokens.Add(1))
	deadline := time.Now().Add(answerWithin)
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		if _, err := pc.WriteTo([]byte(token), net.UDPAddrFromAddrPort(dst)); err != nil {
			return netip.AddrPort{}, fmt.Errorf("ask %v: %w", dst, err)
		}
		resend := time.Now().Add(100 * time.Millisecond)
		if resend.After(deadline) {
			resend = deadline
		}
		_ = pc.SetReadDeadline(resend)
		for {
			n, _, err := pc.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break // send again
			}
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("ask %v: %w", dst, err)
			}
			got, ok := strings.CutPrefix(string(buf[:n]), token+" ")
			if !ok {
				continue // the answer to an earlier query
			}
			return netip.ParseAddrPort(got)
		}
	}
	return netip.AddrPort{}, fmt.Errorf("ask %v: no answer within %v", dst, answerWithin)
}

// nothingArrives fails the test if pc receives anything within wait.
func nothingArrives(t *testing.T, pc net.PacketConn, wait time.Duration, what string) {
	t.Helper()
	_ = pc.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, from, err := pc.ReadFrom(buf)
	if err == nil {
		t.Errorf("%s: received %q from %v, want nothing", what, buf[:n], from)
	} else if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("%s: %v", what, err)
	}
}

func mustMapped(t *testing.T, pc net.PacketConn, dst netip.AddrPort) netip.AddrPort {
	t.Helper()
	m, err := mapped(pc, dst)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSiteAddresses(t *testing.T) {
	l, pub := siteLab(t)
	s1 := l.AddSite("s1", lab.NATEasy)
	s2 := l.AddSite("s2", lab.NATHard)
	h1, h2, h3 := s1.AddHost("h1"), s1.AddHost("h2"), s2.AddHost("h3")
	for _, c := range []struct {
		what      string
		got, want string
	}{
		{"pub.Addr", pub.Addr.String(), "203.0.113.1"},
		{"s1.PublicAddr()", s1.PublicAddr().String(), "203.0.113.2"},
		{"s2.PublicAddr()", s2.PublicAddr().String(), "203.0.113.3"},
		{"s1.LAN", s1.LAN.String(), "192.0.2.0/27"},
		{"s2.LAN", s2.LAN.String(), "192.0.2.32/27"},
		{"h1.Addr", h1.Addr.String(), "192.0.2.2"},
		{"h2.Addr", h2.Addr.String(), "192.0.2.3"},
		{"h3.Addr", h3.Addr.String(), "192.0.2.34"},
		{"s1.Router.NS", s1.Router.NS, l.Prefix() + "-s1"},
		{"h3.NS", h3.NS, l.Prefix() + "-h3"},
		{"s2.Kind", s2.Kind.String(), "hard"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %s, want %s", c.what, c.got, c.want)
		}
	}

	ctx := ctxT(t, 10*time.Second)
	if routes, err := pub.Run(ctx, "ip", "-4", "route", "show"); err != nil || strings.Contains(string(routes), "default") {
		t.Errorf("pub's routes (%v), want no default:\n%s", err, routes)
	}
	if routes, err := h3.Run(ctx, "ip", "-4", "route", "show"); err != nil || !strings.Contains(string(routes), "default via 192.0.2.33 dev eth0") {
		t.Errorf("h3's routes (%v), want default via 192.0.2.33:\n%s", err, routes)
	}
	// The internet is reachable from both sites; the other site's LAN is not.
	if err := ping(ctx, h1, pub); err != nil {
		t.Error(err)
	}
	if _, err := h3.Run(ctx, "ping", "-c", "1", "-W", "1", s1.PublicAddr().String()); err != nil {
		t.Error(err)
	}
	if _, err := h3.Run(ctx, "ping", "-c", "1", "-W", "1", h1.Addr.String()); err == nil {
		t.Error("h3 (site s2) pinged h1 on s1's LAN")
	}
	if _, err := pub.Run(ctx, "ping", "-c", "1", "-W", "1", h1.Addr.String()); err == nil {
		t.Error("pub pinged h1 on s1's LAN")
	}
}

// TestNATMapping: an easy NAT shows every destination the same public
// ip:port, the socket's own port; a hard NAT shows each another port. Each
// keeps its mapping for a destination.
func TestNATMapping(t *testing.T) {
	l, pub := siteLab(t)
	refl := startReflector(t, pub, 3)
	for _, kind := range []lab.NATKind{lab.NATEasy, lab.NATHard} {
		s := l.AddSite(kind.String(), kind)
		pc := listenUDP(t, s.AddHost("h-"+kind.String()))
		t.Run(kind.String(), func(t *testing.T) {
			var got []netip.AddrPort
			for _, dst := range refl.addrs {
				got = append(got, mustMapped(t, pc, dst))
			}
			for _, m := range got {
				if m.Addr() != s.PublicAddr() {
					t.Errorf("mapped to %v, want the router's address %v", m, s.PublicAddr())
				}
			}
			if again := mustMapped(t, pc, refl.addrs[0]); again != got[0] {
				t.Errorf("second query to %v mapped to %v, first to %v", refl.addrs[0], again, got[0])
			}
			local := addrOf(pc).Port()
			switch kind {
			case lab.NATEasy:
				for _, m := range got {
					if m.Port() != local {
						t.Errorf("mappings %v, want port %d (the socket's) for every destination", got, local)
						break
					}
				}
			case lab.NATHard:
				// Random ports, so two may match by chance (1 in
				// 35,536); three cannot all be equal but by design.
				if got[0] == got[1] && got[1] == got[2] {
					t.Errorf("mappings %v, want a port per destination", got)
				}
			}
		})
	}
}

// TestEasyNATSharedPort shows what masquerade does (Linux 6.18) when two
// LAN hosts use the same source port: the first keeps it, the second gets
// another port, but the same one for every destination (even for one to
// which the first has no flow), so the mapping stays
// endpoint-independent for both.
func TestEasyNATSharedPort(t *testing.T) {
	l, pub := siteLab(t)
	refl := startReflector(t, pub, 2)
	s := l.AddSite("easy", lab.NATEasy)
	pc1 := listenUDP(t, s.AddHost("h1"))
	port := addrOf(pc1).Port()
	pc2 := listenUDPPort(t, s.AddHost("h2"), port)

	if m := mustMapped(t, pc1, refl.addrs[0]); m != netip.AddrPortFrom(s.PublicAddr(), port) {
		t.Errorf("h1 to %v mapped to %v, want the port kept", refl.addrs[0], m)
	}
	m2a := mustMapped(t, pc2, refl.addrs[0])
	m2b := mustMapped(t, pc2, refl.addrs[1])
	if m2a.Port() == port || m2a != m2b {
		t.Errorf("h2 (port %d too) mapped to %v for %v and to %v for %v; want one other port for both",
			port, m2a, refl.addrs[0], m2b, refl.addrs[1])
	}
	if m := mustMapped(t, pc1, refl.addrs[1]); m != netip.AddrPortFrom(s.PublicAddr(), port) {
		t.Errorf("h1 to %v mapped to %v, want the port kept", refl.addrs[1], m)
	}
}

// TestNATUDPBlocked: UDP does not leave a UDP-blocked site, TCP does
// (masqueraded); BlockUDP toggles the block.
func TestNATUDPBlocked(t *testing.T) {
	l, pub := siteLab(t)
	refl := startReflector(t, pub, 1)
	s := l.AddSite("blocked", lab.NATUDPBlocked)
	h := s.AddHost("h")
	pc := listenUDP(t, h)

	refl.unreached(t, pc, "blocked")
	if from := tcpFrom(t, h, pub); from != s.PublicAddr() {
		t.Errorf("TCP from the blocked site arrived from %v, want %v", from, s.PublicAddr())
	}

	if err := s.BlockUDP(false); err != nil {
		t.Fatal(err)
	}
	if m, err := mapped(pc, refl.addrs[0]); err != nil || m.Addr() != s.PublicAddr() {
		t.Errorf("unblocked: mapped = %v, %v; want an address of %v", m, err, s.PublicAddr())
	}
	if err := s.BlockUDP(true); err != nil {
		t.Fatal(err)
	}
	refl.unreached(t, pc, "blocked again")
}

// unreached checks that a datagram from pc reaches no socket of the
// reflector and that no answer comes back.
func (r *reflector) unreached(t *testing.T, pc net.PacketConn, what string) {
	t.Helper()
	before := r.seen.Load()
	if _, err := pc.WriteTo([]byte("q"), net.UDPAddrFromAddrPort(r.addrs[0])); err != nil {
		t.Fatal(err)
	}
	nothingArrives(t, pc, quiet, what)
	if n := r.seen.Load() - before; n != 0 {
		t.Errorf("%s: the reflector received %d datagrams", what, n)
	}
}

// tcpFrom connects from h to a listener on pub and returns the source
// address pub sees.
func tcpFrom(t *testing.T, h, pub *lab.Host) netip.Addr {
	t.Helper()
	ln, err := pub.Listen("tcp4", netip.AddrPortFrom(pub.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := h.DialContext(ctxT(t, answerWithin), "tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(answerWithin))
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	return sc.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
}

// TestSiteLAN: hosts of a site reach each other on their LAN addresses,
// without NAT, whatever the router does to the internet (UDP too, where
// the router blocks it).
func TestSiteLAN(t *testing.T) {
	l, _ := siteLab(t)
	for _, kind := range []lab.NATKind{lab.NATEasy, lab.NATHard, lab.NATUDPBlocked} {
		s := l.AddSite(kind.String(), kind)
		a, b := s.AddHost(kind.String()+"-a"), s.AddHost(kind.String()+"-b")
		pa, pb := listenUDP(t, a), listenUDP(t, b)
		t.Run(kind.String(), func(t *testing.T) {
			if _, err := pb.WriteTo([]byte("hi"), pa.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			_ = pa.SetReadDeadline(time.Now().Add(answerWithin))
			buf := make([]byte, 100)
			n, from, err := pa.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			if string(buf[:n]) != "hi" || from.String() != pb.LocalAddr().String() {
				t.Errorf("received %q from %v, want %q from %v", buf[:n], from, "hi", pb.LocalAddr())
			}
			if got := tcpFrom(t, a, b); got != a.Addr {
				t.Errorf("TCP over the LAN arrived from %v, want %v", got, a.Addr)
			}
		})
	}
}

// TestSiteNoInbound: the internet reaches a site host only with replies to
// flows the host started, and only from the address and port they went to.
// Neither the router's public address nor a route to the LAN lets anything
// else in.
func TestSiteNoInbound(t *testing.T) {
	l, pub := siteLab(t)
	s := l.AddSite("easy", lab.NATEasy)
	h := s.AddHost("h")
	pc := listenUDP(t, h)
	port := addrOf(pc).Port()
	ln, err := h.Listen("tcp4", netip.AddrPortFrom(h.Addr, port).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	// Outbound: the reply comes back.
	x, y := listenUDP(t, pub), listenUDP(t, pub)
	if _, err := pc.WriteTo([]byte("out"), x.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = x.SetReadDeadline(time.Now().Add(answerWithin))
	buf := make([]byte, 100)
	_, from, err := x.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.AddrPortFrom(s.PublicAddr(), port); from.(*net.UDPAddr).AddrPort() != want {
		t.Errorf("outbound datagram came from %v, want %v", from, want)
	}
	if _, err := x.WriteTo([]byte("reply"), from); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(answerWithin))
	if n, from, err := pc.ReadFrom(buf); err != nil || string(buf[:n]) != "reply" {
		t.Fatalf("reply: received %q from %v, %v; want %q", buf[:n], from, err, "reply")
	}
	if got := tcpFrom(t, h, pub); got != s.PublicAddr() {
		t.Errorf("TCP out arrived from %v, want %v", got, s.PublicAddr())
	}

	// Inbound to the public address: from another port than the flow's,
	// and TCP.
	public := netip.AddrPortFrom(s.PublicAddr(), port)
	if _, err := y.WriteTo([]byte("unsolicited"), net.UDPAddrFromAddrPort(public)); err != nil {
		t.Fatal(err)
	}
	if c, err := pub.DialContext(ctxT(t, answerWithin), "tcp4", public.String()); err == nil {
		c.Close()
		t.Errorf("TCP from pub to %v connected", public)
	}
	// Inbound to the LAN address: no route; with one via the router, the
	// router drops it.
	lanAddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(h.Addr, port))
	if _, err := y.WriteTo([]byte("no route"), lanAddr); err == nil {
		t.Errorf("pub sent to %v without a route", lanAddr)
	}
	if _, err := pub.Run(ctxT(t, answerWithin), "ip", "route", "add", s.LAN.String(), "via", s.PublicAddr().String()); err != nil {
		t.Fatal(err)
	}
	if _, err := y.WriteTo([]byte("routed"), lanAddr); err != nil {
		t.Fatal(err)
	}
	if c, err := pub.DialContext(ctxT(t, quiet), "tcp4", lanAddr.String()); err == nil {
		c.Close()
		t.Errorf("TCP from pub to %v connected", lanAddr)
	}

	// The datagrams were sent at least quiet ago, before the dial.
	nothingArrives(t, pc, 10*time.Millisecond, "unsolicited UDP from the internet")
	_ = ln.(*net.TCPListener).SetDeadline(time.Now())
	if c, err := ln.Accept(); err == nil {
		c.Close()
		t.Errorf("h accepted a TCP connection from %v", c.RemoteAddr())
	}
}

// TestSiteRebind: after Rebind a socket's next datagram leaves from a new
// public port (both times: the ranges alternate), and an easy NAT still
// maps endpoint-independently.
func TestSiteRebind(t *testing.T) {
	l, pub := siteLab(t)
	refl := startReflector(t, pub, 2)
	for _, kind := range []lab.NATKind{lab.NATEasy, lab.NATHard} {
		s := l.AddSite(kind.String(), kind)
		pc := listenUDP(t, s.AddHost("h-"+kind.String()))
		t.Run(kind.String(), func(t *testing.T) {
			before := mustMapped(t, pc, refl.addrs[0])
			for i := range 2 {
				if err := s.Rebind(); err != nil {
					t.Fatal(err)
				}
				after := mustMapped(t, pc, refl.addrs[0])
				if after.Addr() != s.PublicAddr() || after.Port() == before.Port() {
					t.Errorf("rebind %d: mapped to %v, before to %v; want a new port on %v", i+1, after, before, s.PublicAddr())
				}
				if kind == lab.NATEasy {
					if other := mustMapped(t, pc, refl.addrs[1]); other != after {
						t.Errorf("rebind %d: %v mapped to %v, %v to %v; want the same", i+1, refl.addrs[0], after, refl.addrs[1], other)
					}
				}
				before = after
			}
		})
	}
}

// TestSiteCleanup: no namespace, link or nftables table of a lab with
// sites outlives it.
func TestSiteCleanup(t *testing.T) {
	lab.Require(t, "ip", "nft")
	t.Parallel()
	var prefix string
	t.Run("lab", func(t *testing.T) {
		l := lab.New(t)
		prefix = l.Prefix()
		l.AddHost("under")
		l.AddPublicHost("pub")
		for _, kind := range []lab.NATKind{lab.NATEasy, lab.NATHard, lab.NATUDPBlocked} {
			s := l.AddSite(kind.String(), kind)
			s.AddHost("h-" + kind.String())
			if err := s.Rebind(); err != nil {
				t.Fatal(err)
			}
			ctx := ctxT(t, 10*time.Second)
			if out, err := s.Router.Run(ctx, "nft", "list", "tables"); err != nil || !strings.Contains(string(out), "table ip "+prefix) {
				t.Fatalf("router %s: nft list tables = %s, %v; want table %s", s.Name, out, err, prefix)
			}
		}
	})
	var left []string
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), prefix) {
				left = append(left, e.Name())
			}
		}
	}
	if len(left) > 0 {
		t.Errorf("namespaces with prefix %s left: %v", prefix, left)
	}
	for _, args := range [][]string{{"ip", "-o", "link", "show"}, {"nft", "list", "tables"}} {
		out, err := exec.CommandContext(context.Background(), args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		if strings.Contains(string(out), prefix) {
			t.Errorf("%s shows the prefix %s:\n%s", strings.Join(args, " "), prefix, out)
		}
	}
}
