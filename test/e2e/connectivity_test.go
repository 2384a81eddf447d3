package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
)

// The connectivity scenarios of issue 13: the coordinator (and the relay it
// embeds) on a public host of the lab's internet, agents on public hosts
// and on hosts of sites behind NAT routers.

// newInternetMesh starts a coordinator on a public host of a lab with an
// internet, with an allow-all policy. Sites and agents come with the
// lab's AddSite and onHost.
func newInternetMesh(t *testing.T) *mesh {
	t.Helper()
	lab.Require(t, "ip", "ping", "wg", "nft")
	l := lab.New(t)
	m := &mesh{t: t, lab: l, agents: map[string]*agent{}}
	m.coordHost = l.AddPublicHost("coord")
	m.dataDir = filepath.Join(t.TempDir(), "coordinator")
	m.tokenFile = filepath.Join(m.dataDir, "admin.token")
	m.startCoordinator()
	m.joinKey = strings.TrimSpace(m.cli("keys", "create", "--reusable"))
	m.setPolicy(allowAll)
	return m
}

// onHost starts an agent named after h on h.
func (m *mesh) onHost(h *lab.Host, extra ...string) *agent {
	m.t.Helper()
	a := &agent{name: h.Name, host: h, iface: m.lab.Prefix() + h.Name, stateDir: filepath.Join(m.t.TempDir(), "state")}
	if len(a.iface) > 15 {
		m.t.Fatalf("interface name %q too long", a.iface)
	}
	m.agents[a.name] = a
	a.start(m.t, append([]string{"--join", m.joinKey}, extra...)...)
	return a
}

// peered waits until a and b have each other as WireGuard peers.
func peered(t *testing.T, a, b *agent) {
	t.Helper()
	ka, kb := a.publicKey(t), b.publicKey(t)
	waitFor(t, 15*time.Second, a.name+" and "+b.name+" peered", func() bool { return a.hasPeer(kb) && b.hasPeer(ka) })
}

// path returns a's path to peer as `wiremesh status --json` shows it.
func (a *agent) path(t *testing.T, peer string) wire.PeerPath {
	t.Helper()
	for _, p := range a.status(t).Peers {
		if p.Name == peer {
			return p.Path
		}
	}
	t.Fatalf("%s has no peer %s", a.name, peer)
	return wire.PeerPath{}
}

// directTo reports whether a's path to peer is direct to an address whose
// IP is ip.
func (a *agent) directTo(t *testing.T, peer string, ip netip.Addr) bool {
	p := a.path(t, peer)
	ap, err := netip.ParseAddrPort(p.Addr)
	return p.Kind == wire.PathKindDirect && err == nil && ap.Addr() == ip
}

// wgEndpoint returns the endpoint `wg show` reads for a's peer b.
func (a *agent) wgEndpoint(t *testing.T, b *agent) netip.AddrPort {
	t.Helper()
	peers, err := a.wgPeers()
	if err != nil {
		t.Fatalf("wg on %s: %v", a.name, err)
	}
	p, ok := peers[b.publicKey(t)]
	if !ok || p.Endpoint == nil {
		return netip.AddrPort{}
	}
	ap := p.Endpoint.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// traffic pings b's overlay address from a, 5 a second, for d, in the
// background; the returned function waits for the pings to end and
// returns ping's output.
func traffic(t *testing.T, a, b *agent, d time.Duration) func() string {
	t.Helper()
	dst := b.addr(t, false).String()
	out := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Second)
		defer cancel()
		n := fmt.Sprint(int(d / (200 * time.Millisecond)))
		b, _ := a.host.Run(ctx, "ping", "-n", "-c", n, "-i", "0.2", "-W", "1", dst)
		out <- string(b)
	}()
	return func() string { return <-out }
}

// knowsCandidate reports whether a knows an address of its peer b whose
// IP is ip (from its netmap, or learned).
func (a *agent) knowsCandidate(t *testing.T, b string, ip netip.Addr) bool {
	for _, p := range a.status(t).Peers {
		for _, c := range p.Candidates {
			if ap, err := netip.ParseAddrPort(c); p.Name == b && err == nil && ap.Addr() == ip {
				return true
			}
		}
	}
	return false
}

// directBoth waits until a and b know the addresses ipB of b and ipA of a
// (the coordinator passes candidates on at most every 5 s), starts traffic
// between them, and waits until each has a direct path to the other at
// that address within the given time of the first packet; it returns how
// long that took.
func directBoth(t *testing.T, a, b *agent, ipB, ipA netip.Addr, within time.Duration) time.Duration {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%s knows %s at %s", a.name, b.name, ipB), func() bool { return a.knowsCandidate(t, b.name, ipB) })
	waitFor(t, 20*time.Second, fmt.Sprintf("%s knows %s at %s", b.name, a.name, ipA), func() bool { return b.knowsCandidate(t, a.name, ipA) })
	start := time.Now()
	wait := traffic(t, a, b, within)
	defer wait()
	waitFor(t, within, fmt.Sprintf("%s direct to %s at %s", a.name, b.name, ipB), func() bool { return a.directTo(t, b.name, ipB) })
	waitFor(t, within-time.Since(start), fmt.Sprintf("%s direct to %s at %s", b.name, a.name, ipA), func() bool { return b.directTo(t, a.name, ipA) })
	return time.Since(start)
}

// TestConnectivityEasyEasy: two hosts behind easy NATs reach each other
// directly, at the other site's public address, within 5 s of the first
// packet; `wg show` shows that address.
func TestConnectivityEasyEasy(t *testing.T) {
	m := newInternetMesh(t)
	sa, sb := m.lab.AddSite("sa", lab.NATEasy), m.lab.AddSite("sb", lab.NATEasy)
	a, b := m.onHost(sa.AddHost("ea")), m.onHost(sb.AddHost("eb"))
	peered(t, a, b)
	took := directBoth(t, a, b, sb.PublicAddr(), sa.PublicAddr(), 5*time.Second)
	t.Logf("direct within %s of the first packet", took)
	if ep := a.wgEndpoint(t, b); ep.Addr() != sb.PublicAddr() {
		t.Errorf("wg show on %s: endpoint of %s is %v, want %v:PORT", a.name, b.name, ep, sb.PublicAddr())
	}
	if ep := b.wgEndpoint(t, a); ep.Addr() != sa.PublicAddr() {
		t.Errorf("wg show on %s: endpoint of %s is %v, want %v:PORT", b.name, a.name, ep, sa.PublicAddr())
	}
	a.ping(t, b.addr(t, false), 10, "0.1")
	if p := a.path(t, b.name); p.Kind != wire.PathKindDirect {
		t.Errorf("after traffic, %s reaches %s by %+v, want direct", a.name, b.name, p)
	}
}

// TestConnectivityPublicHard: a public host and a host behind a hard NAT
// reach each other directly (the hard side's mapping toward the public
// host is the one the public host sees).
func TestConnectivityPublicHard(t *testing.T) {
	m := newInternetMesh(t)
	sh := m.lab.AddSite("sh", lab.NATHard)
	p, h := m.onHost(m.lab.AddPublicHost("pub")), m.onHost(sh.AddHost("hard"))
	peered(t, p, h)
	took := directBoth(t, h, p, p.host.Addr, sh.PublicAddr(), 10*time.Second)
	t.Logf("direct within %s of the first packet", took)
	if ep := h.wgEndpoint(t, p); ep.Addr() != p.host.Addr {
		t.Errorf("wg show on %s: endpoint of %s is %v, want %v:PORT", h.name, p.name, ep, p.host.Addr)
	}
	h.ping(t, p.addr(t, false), 10, "0.1")
	p.ping(t, h.addr(t, false), 10, "0.1")
}

// TestConnectivitySameNAT: two hosts behind one (hard) NAT reach each
// other directly over their LAN addresses.
func TestConnectivitySameNAT(t *testing.T) {
	m := newInternetMesh(t)
	s := m.lab.AddSite("lan", lab.NATHard)
	a, b := m.onHost(s.AddHost("la")), m.onHost(s.AddHost("lb"))
	peered(t, a, b)
	took := directBoth(t, a, b, b.host.Addr, a.host.Addr, 5*time.Second)
	t.Logf("direct within %s of the first packet", took)
	if ep := a.wgEndpoint(t, b); ep.Addr() != b.host.Addr {
		t.Errorf("wg show on %s: endpoint of %s is %v, want %v:PORT", a.name, b.name, ep, b.host.Addr)
	}
	a.ping(t, b.addr(t, false), 10, "0.1")
}
