package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/wiremesh/wiremesh/dns"
	"golang.org/x/sys/unix"
)

// dnsSockets are the UDP and TCP sockets of one DNS address.
type dnsSockets struct {
	pc net.PacketConn
	l  net.Listener
}

func (d dnsSockets) close() {
	if d.pc != nil {
		d.pc.Close()
		d.l.Close()
	}
}

// listenLoopbackDNS takes the DNS port on the loopback address, unless DNS
// is off (zero sockets). The agent does it before it enrolls, so that a
// node is never enrolled by an agent that cannot serve.
func (a *Agent) listenLoopbackDNS() (dnsSockets, error) {
	if a.cfg.DNSPort < 0 {
		return dnsSockets{}, nil
	}
	return listenDNS(netip.AddrPortFrom(a.cfg.DNSAddr, uint16(a.cfg.DNSPort)))
}

// startDNS starts the DNS server on the loopback sockets and the node's
// overlay addresses; it takes the sockets over. It answers this host
// only: a query from anywhere else is refused, since the catalog is this
// node's view of what it may reach.
func (a *Agent) startDNS(loop dnsSockets) (*dns.Server, error) {
	if loop.pc == nil {
		return nil, nil
	}
	port := uint16(a.cfg.DNSPort)
	listen := []netip.AddrPort{netip.AddrPortFrom(a.cfg.DNSAddr, port)}
	socks := []dnsSockets{loop}
	defer func() {
		for _, s := range socks {
			s.close()
		}
	}()
	for _, p := range a.ctl.id.Node.Addresses {
		ap := netip.AddrPortFrom(p.Addr(), port)
		s, err := listenDNS(ap)
		if err != nil {
			return nil, err
		}
		listen, socks = append(listen, ap), append(socks, s)
	}
	cfg := a.cfg.DNS
	cfg.Prefixes = a.ctl.id.Prefixes
	cfg.Logger = a.log.With("sub", "dns")
	own := a.ctl.id.Node.Addresses
	cfg.AllowQuerier = func(q netip.Addr) bool {
		return q.IsLoopback() || slices.ContainsFunc(own, func(p netip.Prefix) bool { return p.Addr() == q })
	}
	cfg.Upstreams = a.upstreams(listen)
	srv, err := dns.New(cfg)
	if err != nil {
		return nil, err
	}
	for len(socks) > 0 {
		s := socks[0]
		socks = socks[1:]
		if err := srv.Serve(s.pc, s.l); err != nil { // Serve owns s now, even on error
			srv.Close()
			return nil, err
		}
	}
	a.log.Info("dns up", "addr", listen[0].String(), "domain", cfg.Domain, "upstreams", len(cfg.Upstreams))
	return srv, nil
}

// upstreams returns the resolvers names outside the mesh are forwarded to:
// the configured ones, or else the host's, from ResolvConf, without the
// DNS server's own addresses (listen).
func (a *Agent) upstreams(listen []netip.AddrPort) []string {
	if a.cfg.DNS.Upstreams != nil {
		return a.cfg.DNS.Upstreams
	}
	ups, err := dns.ReadResolvConf(a.cfg.ResolvConf)
	if err != nil {
		a.log.Warn("no upstream resolvers: names outside the mesh get REFUSED", "file", a.cfg.ResolvConf, "err", err)
	}
	ups = withoutSelf(ups, listen)
	if err == nil && len(ups) == 0 {
		a.log.Warn("no upstream resolvers besides this agent: names outside the mesh get REFUSED", "file", a.cfg.ResolvConf)
	}
	return ups
}

// freebind lets a socket bind an address before it is usable on its
// interface (an IPv6 address on a link that is not up yet).
var freebind = net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if strings.HasSuffix(network, "6") {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
	})
	return errors.Join(err, serr)
}}

// listenDNS binds UDP and TCP at ap.
func listenDNS(ap netip.AddrPort) (dnsSockets, error) {
	network := "4"
	if ap.Addr().Is6() {
		network = "6"
	}
	const hint = "(another DNS server on this port? see --dns-port, --dns-addr, --no-dns)"
	ctx := context.Background()
	pc, err := freebind.ListenPacket(ctx, "udp"+network, ap.String())
	if err != nil {
		return dnsSockets{}, fmt.Errorf("dns listen: %w %s", err, hint)
	}
	l, err := freebind.Listen(ctx, "tcp"+network, ap.String())
	if err != nil {
		pc.Close()
		return dnsSockets{}, fmt.Errorf("dns listen: %w %s", err, hint)
	}
	return dnsSockets{pc, l}, nil
}

// withoutSelf drops the upstreams that are the server itself, which would
// make a forwarding loop.
func withoutSelf(ups []string, self []netip.AddrPort) []string {
	return slices.DeleteFunc(ups, func(u string) bool {
		host, port, err := net.SplitHostPort(u)
		if err != nil {
			return false
		}
		a, err1 := netip.ParseAddr(host)
		p, err2 := strconv.ParseUint(port, 10, 16)
		if err1 != nil || err2 != nil {
			return false
		}
		ap := netip.AddrPortFrom(a.Unmap(), uint16(p))
		return slices.Contains(self, ap) || a.IsUnspecified() && slices.ContainsFunc(self, func(s netip.AddrPort) bool { return s.Port() == ap.Port() })
	})
}
