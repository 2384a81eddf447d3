package bind

import (
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"
	"time"
)

const wait = 10 * time.Second

func TestDirectWhenCandidatesAnswer(t *testing.T) {
	rn := newRelayNet()
	a, b := newNode(t, rn, nil), newNode(t, rn, nil)
	a.setPeer(b, b.addr())
	b.setPeer(a, a.addr())
	a.traffic(b)
	waitFor(t, "a's path to b direct", wait, func() bool { return a.path(b).Kind == PathDirect })
	if got := a.path(b).Addr; got != b.addr() {
		t.Fatalf("direct path %v, want %v", got, b.addr())
	}
	// b maps a's packets to a's peer endpoint, over the direct socket.
	waitFor(t, "a direct packet at b on a's endpoint", wait, func() bool {
		g := <-b.recv
		return !g.relayed && g.ep == b.b.peer(a.pub)
	})
	if s := a.path(b); s.RTT <= 0 || s.LastPong.IsZero() || s.WhyNotDirect != "" {
		t.Fatalf("status %+v", s)
	}
}

func TestRelayWhenDirectFails(t *testing.T) {
	rn := newRelayNet()
	a, b := newNode(t, rn, nil), newNode(t, rn, nil)
	a.setPeer(b, closedPort(t))
	b.setPeer(a, closedPort(t))
	// The very first packet goes through the relay.
	if err := a.sendTo(b, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-b.recv:
		if !g.relayed || g.seq != 1 || g.ep != b.b.peer(a.pub) {
			t.Fatalf("first packet %+v, want seq 1 relayed on a's endpoint", g)
		}
	case <-time.After(wait):
		t.Fatal("first packet not delivered")
	}
	a.traffic(b)
	waitFor(t, "a's path relay", wait, func() bool { return a.path(b).Kind == PathRelay })
	// Several probe rounds later it is still the relay, and says why.
	waitFor(t, "three probe rounds", wait, func() bool {
		p := a.b.peer(b.pub)
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.fastRounds >= 3
	})
	s := a.path(b)
	if s.Kind != PathRelay || s.Relay != "r1" || s.WhyNotDirect != WhyNoPong {
		t.Fatalf("status %+v", s)
	}
	if st := a.b.Stats(); st.DirectTx.Packets != 0 || st.RelayTx.Packets == 0 {
		t.Fatalf("stats %+v: want relay traffic only", st)
	}
}

func TestUpgradeRelayToDirectWithoutLoss(t *testing.T) {
	rn := newRelayNet()
	a, b := newNode(t, rn, nil), newNode(t, rn, nil)
	a.setPeer(b, closedPort(t))
	b.setPeer(a, closedPort(t))
	sent := a.traffic(b)
	waitFor(t, "relay", wait, func() bool { return a.path(b).Kind == PathRelay })
	// The netmap now has b's real address (b's still has a wrong one for a:
	// a's call-me-maybe and pings must fix that side).
	a.setPeer(b, b.addr())
	waitFor(t, "a direct", wait, func() bool { return a.path(b).Kind == PathDirect })
	waitFor(t, "b direct", wait, func() bool { return b.path(a).Kind == PathDirect })
	last := sent() + 5
	seen := map[uint32]bool{}
	waitFor(t, "all packets up to the switch and after", wait, func() bool {
		for {
			select {
			case g := <-b.recv:
				seen[g.seq] = true
			default:
				return seen[last]
			}
		}
	})
	var lost []uint32
	for s := uint32(1); s <= last; s++ {
		if !seen[s] {
			lost = append(lost, s)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("lost %d of %d packets: %v", len(lost), last, lost)
	}
}

func TestFallbackToRelayWhenDirectDiesOneWay(t *testing.T) {
	rn := newRelayNet()
	a, b := newNode(t, rn, nil), newNode(t, rn, nil)
	a.setPeer(b, b.addr())
	b.setPeer(a, a.addr())
	a.traffic(b)
	b.traffic(a)
	waitFor(t, "direct", wait, func() bool { return a.path(b).Kind == PathDirect && b.path(a).Kind == PathDirect })
	// a→b now fails; b→a still works (a one-way path).
	b.under.block(a.addr(), true)
	blockedAt := time.Now()
	waitFor(t, "a falls back to the relay", wait, func() bool { return a.path(b).Kind == PathRelay })
	waitFor(t, "b falls back to the relay", wait, func() bool { return b.path(a).Kind == PathRelay })
	if d := time.Since(blockedAt); d > 3*fastTiming().Trust {
		t.Errorf("fallback took %v, want within about Trust (%v)", d, fastTiming().Trust)
	}
	// The one-way path never becomes trusted again: watch several heartbeats.
	changes := a.b.Stats().PathChanges
	deadline := time.Now().Add(3 * fastTiming().Trust)
	for time.Now().Before(deadline) {
		if k := a.path(b).Kind; k != PathRelay {
			t.Fatalf("a's path went %s over a one-way path", k)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c := a.b.Stats().PathChanges; c != changes {
		t.Fatalf("path changed %d times while one-way", c-changes)
	}
	// Traffic from a reaches b through the relay.
	waitFor(t, "a relayed packet at b", wait, func() bool { g := <-b.recv; return g.relayed })
	// And the path comes back when it heals.
	b.under.block(a.addr(), false)
	waitFor(t, "direct again", wait, func() bool { return a.path(b).Kind == PathDirect })
}

func TestHysteresisNoFlapping(t *testing.T) {
	rn := newRelayNet()
	lan := func(c *Config) {
		c.InterfaceAddrs = func() ([]netip.Prefix, error) {
			return []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}, nil
		}
		c.Timing.Reprobe = 300 * time.Millisecond
	}
	a, b := newNode(t, rn, lan), newNode(t, rn, lan)
	// b answers on two loopback addresses (its IPv4 and IPv6 sockets) with
	// the same (tiny) RTT.
	b2 := netip.AddrPortFrom(netip.IPv6Loopback(), b.port)
	a.setPeer(b, b.addr(), b2)
	b.setPeer(a, a.addr())
	a.traffic(b)
	waitFor(t, "direct", wait, func() bool { return a.path(b).Kind == PathDirect })
	p := a.b.peer(b.pub)
	pongs := func() (n int) {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, q := range p.paths {
			if q.lastPong != never {
				n++
			}
		}
		return n
	}
	waitFor(t, "both addresses answered", wait, func() bool { return pongs() == 2 })
	changes := a.b.Stats().PathChanges
	// Ten re-probe rounds of both addresses.
	p.mu.Lock()
	start := p.lastProbe
	p.mu.Unlock()
	waitFor(t, "ten probe rounds", wait, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.lastProbe-start >= int64(10*300*time.Millisecond)
	})
	if c := a.b.Stats().PathChanges; c != changes {
		t.Fatalf("path changed %d times between two equal addresses", c-changes)
	}
}

func TestBetter(t *testing.T) {
	ms := time.Millisecond
	// pathOf is a path whose pongs took rtts.
	pathOf := func(lan bool, rtts ...time.Duration) path {
		p := path{lan: lan}
		for _, r := range rtts {
			p.addRTT(r)
		}
		return p
	}
	cases := []struct {
		c, cur path
		want   bool
	}{
		{pathOf(true, 50*ms), pathOf(false, 1*ms), true},                    // LAN beats public
		{pathOf(false, 1*ms), pathOf(true, 50*ms), false},                   // public never beats LAN
		{pathOf(false, 10*ms), pathOf(false, 11*ms), false},                 // 9% better: no
		{pathOf(false, 7*ms), pathOf(false, 10*ms), true},                   // 30% and 3 ms: yes
		{pathOf(false, 300*time.Microsecond), pathOf(false, ms), false},     // 70% but < 1 ms: no
		{pathOf(false, 79*ms/10), pathOf(false, 10*ms), true},               // 21%, 2.1 ms
		{pathOf(false, 8*ms+time.Microsecond), pathOf(false, 10*ms), false}, // just under 20%
		// A delay that hit the current path's last pongs (a busy machine)
		// is no reason to leave it: the least of its recent RTTs counts.
		{pathOf(false, ms), pathOf(false, ms, 30*ms, 40*ms, 25*ms), false},
		{pathOf(false, ms), pathOf(false, 30*ms, 40*ms, 25*ms, 20*ms), true}, // slow for 4 pongs in a row: it is slower
	}
	for i, c := range cases {
		if got := better(&c.c, &c.cur); got != c.want {
			t.Errorf("%d: better(%v, %v) = %v", i, c.c.recent, c.cur.recent, got)
		}
	}
}

func TestRoamingPeerChangesPort(t *testing.T) {
	rn := newRelayNet()
	a, b := newNode(t, rn, nil), newNode(t, rn, nil)
	a.setPeer(b, b.addr())
	b.setPeer(a, a.addr())
	a.traffic(b)
	b.traffic(a)
	waitFor(t, "direct", wait, func() bool { return a.path(b).Kind == PathDirect })
	old := b.addr()
	// b's socket moves to another port (as after a NAT rebinding); a's
	// netmap still has the old one.
	b.close()
	b.open()
	if b.addr() == old {
		t.Fatal("same port after reopen")
	}
	moved := time.Now()
	waitFor(t, "a direct to b's new address", wait, func() bool {
		s := a.path(b)
		return s.Kind == PathDirect && s.Addr == b.addr()
	})
	t.Logf("recovered in %v (trust %v)", time.Since(moved), fastTiming().Trust)
	// Packets from the new address map to b's endpoint again.
	waitFor(t, "b's packets on b's endpoint", wait, func() bool {
		g := <-a.recv
		return !g.relayed && g.ep == a.b.peer(b.pub)
	})
}

func TestRelayOnlyAndNoRelay(t *testing.T) {
	rn := newRelayNet()
	a := newNode(t, rn, func(c *Config) { c.RelayOnly = true })
	b := newNode(t, rn, nil)
	a.setPeer(b, b.addr())
	b.setPeer(a, a.addr())
	a.traffic(b)
	b.traffic(a)
	waitFor(t, "relay-only a on the relay", wait, func() bool { return a.path(b).Kind == PathRelay })
	// b probes a directly, but a relay-only node does not answer there.
	waitFor(t, "b probed a few rounds", wait, func() bool {
		p := b.b.peer(a.pub)
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.fastRounds >= 3
	})
	if s := a.path(b); s.Kind != PathRelay || s.WhyNotDirect != WhyRelayOnly {
		t.Fatalf("a: %+v", s)
	}
	if s := b.path(a); s.Kind != PathRelay {
		t.Fatalf("b: %+v", s)
	}
	if st := a.b.Stats(); st.DirectTx.Packets != 0 {
		t.Fatalf("relay-only sent %d packets direct", st.DirectTx.Packets)
	}

	c := newNode(t, rn, func(c *Config) { c.NoRelay = true })
	d := newNode(t, rn, nil)
	c.setPeer(d, closedPort(t))
	d.setPeer(c, closedPort(t))
	for i := range 20 {
		_ = c.sendTo(d, uint32(i))
	}
	if st := c.b.Stats(); st.RelayTx.Packets != 0 || st.DirectTx.Packets != 20 {
		t.Fatalf("no-relay stats %+v", st)
	}
	if s := c.path(d); s.Kind != PathNone {
		t.Fatalf("no-relay path %+v", s)
	}
}

func TestRelayReplyFollowsIncoming(t *testing.T) {
	rn := newRelayNet()
	a, b := newNode(t, rn, nil), newNode(t, rn, nil)
	a.setPeer(b, closedPort(t))
	b.setPeer(a, closedPort(t))
	// a last heard from b through r2: its replies go through r2, while
	// connected; else through b's home relay.
	a.b.DeliverRelayed("r2", b.pub, data(1))
	if r := a.b.peer(b.pub).route(a.b.now()); a.b.pickRelay(r.lastIn, r.home) != "r2" {
		t.Fatalf("relay %q, want r2", a.b.pickRelay(r.lastIn, r.home))
	}
	rn.setDown("r2", true)
	if r := a.b.peer(b.pub).route(a.b.now()); a.b.pickRelay(r.lastIn, r.home) != "r1" {
		t.Fatal("not back on the home relay with r2 down")
	}
	// With every relay down, packets go to the first candidate: the one
	// chance left.
	rn.setDown("r1", true)
	before := a.b.Stats()
	if err := a.sendTo(b, 1); err != nil {
		t.Fatal(err)
	}
	if st := a.b.Stats(); st.DirectTx.Packets != before.DirectTx.Packets+1 || st.RelayTx != before.RelayTx {
		t.Fatalf("stats %+v after %+v: want one direct packet", st, before)
	}
}

func TestCandidatesOrder(t *testing.T) {
	ops := []netip.AddrPort{netip.MustParseAddrPort("198.51.100.1:51820")}
	refl := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.5:40000"), netip.MustParseAddrPort("198.51.100.1:51820")}
	pfx := []netip.Prefix{netip.MustParsePrefix("2001:db8::5/64"), netip.MustParsePrefix("10.0.0.5/24"), netip.MustParsePrefix("10.0.1.5/24")}
	got := computeCandidates(ops, refl, pfx, 41641)
	want := []netip.AddrPort{
		netip.MustParseAddrPort("198.51.100.1:51820"), netip.MustParseAddrPort("203.0.113.5:40000"),
		netip.MustParseAddrPort("10.0.0.5:41641"), netip.MustParseAddrPort("10.0.1.5:41641"),
		netip.MustParseAddrPort("[2001:db8::5]:41641"),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	var many []netip.Prefix
	for i := range 20 {
		many = append(many, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), 24))
	}
	if got := computeCandidates(nil, nil, many, 1); len(got) != MaxCandidates {
		t.Fatalf("%d candidates, want %d", len(got), MaxCandidates)
	}
}

func TestNATType(t *testing.T) {
	s1, s2 := netip.MustParseAddrPort("192.0.2.1:3478"), netip.MustParseAddrPort("192.0.2.2:3478")
	local := []netip.Prefix{netip.MustParsePrefix("10.0.0.5/24")}
	m := func(kv ...string) map[netip.AddrPort]netip.AddrPort {
		out := map[netip.AddrPort]netip.AddrPort{}
		for i := 0; i < len(kv); i += 2 {
			out[netip.MustParseAddrPort(kv[i])] = netip.MustParseAddrPort(kv[i+1])
		}
		return out
	}
	cases := []struct {
		servers int
		answers map[netip.AddrPort]netip.AddrPort
		want    NATType
	}{
		{0, nil, NATUnknown},
		{2, m(), NATUDPBlocked},
		{2, m(s1.String(), "10.0.0.5:41641"), NATNone},
		{2, m(s1.String(), "203.0.113.9:41641"), NATUnknown},
		{2, m(s1.String(), "203.0.113.9:41641", s2.String(), "203.0.113.9:41641"), NATEasy},
		{2, m(s1.String(), "203.0.113.9:41641", s2.String(), "203.0.113.9:50000"), NATHard},
	}
	for i, c := range cases {
		if got := natType(c.servers, c.answers, local, 41641); got != c.want {
			t.Errorf("%d: %s, want %s", i, got, c.want)
		}
	}
}

// TestNewCandidateProbedAtOnce: a peer settled on the relay (its
// candidates did not answer) is probed as soon as the netmap brings a new
// candidate, not at the next reprobe.
func TestNewCandidateProbedAtOnce(t *testing.T) {
	rn := newRelayNet()
	slow := func(c *Config) { c.Timing.Reprobe = time.Minute }
	a, b := newNode(t, rn, slow), newNode(t, rn, slow)
	dead := closedPort(t)
	a.setPeer(b, dead)
	b.setPeer(a) // b cannot ping a first
	a.traffic(b)
	waitFor(t, "a settled on the relay", wait, func() bool {
		p := a.b.peer(b.pub)
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.fastRounds >= 3
	})
	a.setPeer(b, dead, b.addr())
	waitFor(t, "a direct to b's new candidate", 5*time.Second, func() bool { return a.path(b).Kind == PathDirect })
}

// TestRoamingBeforeTrustEnds: when the peer moves while its current path is
// still trusted, its pings from the new address make the current path be
// checked at once, and the new one takes over well before the old one's
// trust would have run out.
func TestRoamingBeforeTrustEnds(t *testing.T) {
	rn := newRelayNet()
	long := func(c *Config) { c.Timing.Trust, c.Timing.Dead = 10*time.Second, 20*time.Second }
	a, b := newNode(t, rn, long), newNode(t, rn, long)
	a.setPeer(b, b.addr())
	b.setPeer(a, a.addr())
	a.traffic(b)
	b.traffic(a)
	waitFor(t, "direct", wait, func() bool { return a.path(b).Kind == PathDirect })
	b.close()
	b.open()
	moved := time.Now()
	waitFor(t, "a direct to b's new address", 5*time.Second, func() bool {
		s := a.path(b)
		return s.Kind == PathDirect && s.Addr == b.addr()
	})
	t.Logf("recovered in %v (trust 10s)", time.Since(moved))
}

// TestSilentPathRelayed: a trusted path that stops answering gets a copy
// of the traffic through the relay after a heartbeat interval and
// silentGrace, long before its trust ends.
func TestSilentPathRelayed(t *testing.T) {
	rn := newRelayNet()
	long := func(c *Config) { c.Timing.Trust, c.Timing.Dead = 10*time.Second, 20*time.Second }
	a, b := newNode(t, rn, long), newNode(t, rn, long)
	a.setPeer(b, b.addr())
	b.setPeer(a, a.addr())
	sent := a.traffic(b)
	b.traffic(a)
	waitFor(t, "direct", wait, func() bool { return a.path(b).Kind == PathDirect })
	waitFor(t, "the upgrade's overlap over", wait, func() bool { return time.Since(a.path(b).Since) > time.Second })
	b.under.block(a.addr(), true)
	blocked, n := time.Now(), sent()
	waitFor(t, "a relayed packet sent after the block at b", 5*time.Second, func() bool {
		select {
		case g := <-b.recv:
			return g.relayed && g.seq > n
		case <-time.After(50 * time.Millisecond):
			return false
		}
	})
	t.Logf("relayed %v after the path went silent (trust 10s)", time.Since(blocked))
}

// TestHandshakeCopiesDropped: while traffic also goes through the relay
// (here the upgrade's overlap), both copies of a data packet reach
// wireguard-go (its replay filter drops the second) but only the first of
// a handshake message: two copies of a response race in wireguard-go.
func TestHandshakeCopiesDropped(t *testing.T) {
	a, b := directPair(t)
	if d, r := a.copies(b, data(0)); d != 1 || r != 1 {
		t.Fatalf("a data packet: %d direct and %d relayed copies, want 1 and 1", d, r)
	}
	for _, m := range []struct {
		name string
		typ  byte
		size int
	}{{"initiation", 1, wgInitiationSize}, {"response", 2, wgResponseSize}, {"cookie reply", 3, wgCookieReplySize}} {
		name, pkt := m.name, make([]byte, m.size)
		pkt[0] = m.typ
		_, _ = rand.Read(pkt[len(pkt)-32:])
		if d, r := a.copies(b, pkt); d+r != 1 {
			t.Errorf("%s: %d direct and %d relayed copies, want one", name, d, r)
		}
		if d, r := a.resend(b, pkt); d+r != 0 {
			t.Errorf("%s sent again: %d direct and %d relayed copies, want none", name, d, r)
		}
	}
}

// directPair returns two nodes with a direct path from a to b whose
// upgrade overlap (traffic through the relay too) lasts a minute.
func directPair(t *testing.T) (a, b *node) {
	rn := newRelayNet()
	mod := func(c *Config) {
		c.Timing.Overlap, c.Timing.Trust, c.Timing.Dead = time.Minute, 10*time.Second, 20*time.Second
	}
	a, b = newNode(t, rn, mod), newNode(t, rn, mod)
	a.setPeer(b, b.addr())
	b.setPeer(a, a.addr())
	waitFor(t, "direct", wait, func() bool {
		_ = a.sendTo(b, 0)
		return a.path(b).Kind == PathDirect
	})
	return a, b
}

// copies sends pkt from n to o with a new sequence number and returns how
// many copies o got directly and through the relay.
func (n *node) copies(o *node, pkt []byte) (direct, relayed int) {
	binary.BigEndian.PutUint32(pkt[8:], n.seq.Add(1)|1<<31)
	return n.resend(o, pkt)
}

// resend is copies without a new sequence number.
func (n *node) resend(o *node, pkt []byte) (direct, relayed int) {
	seq := binary.BigEndian.Uint32(pkt[8:])
	ep, err := n.b.ParseEndpoint(EndpointString(o.pub))
	if err != nil {
		n.t.Fatal(err)
	}
	if err := n.b.Send([][]byte{pkt}, ep); err != nil {
		n.t.Fatal(err)
	}
	deadline := time.After(300 * time.Millisecond)
	for {
		select {
		case g := <-o.recv:
			switch {
			case g.seq != seq:
			case g.relayed:
				relayed++
			default:
				direct++
			}
		case <-deadline:
			return direct, relayed
		}
	}
}
