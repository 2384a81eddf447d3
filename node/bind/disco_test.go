package bind

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestDiscoRoundTrip(t *testing.T) {
	aPriv, aPub := newKey(t)
	bPriv, bPub := newKey(t)
	ab, err := discoAEAD(aPriv, bPub)
	if err != nil {
		t.Fatal(err)
	}
	ba, _ := discoAEAD(bPriv, aPub)
	addrs := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.7:41641"), netip.MustParseAddrPort("[2001:db8::7]:1")}
	for _, body := range [][]byte{pingBody([12]byte{1, 2}), pongBody([12]byte{3}, addrs[1]), callMeMaybeBody(addrs)} {
		msg := seal(ab, aPub, body)
		if classify(msg) != kindDisco {
			t.Fatal("not classified as disco")
		}
		if k, ok := discoSender(msg); !ok || k != aPub {
			t.Fatal("sender key lost")
		}
		pt, err := open(ba, msg)
		if err != nil || !bytes.Equal(pt, body) {
			t.Fatalf("open: %v", err)
		}
		// A changed sender key (the additional data) fails to open.
		forged := bytes.Clone(msg)
		forged[len(discoMagic)] ^= 1
		if _, err := open(ba, forged); err == nil {
			t.Fatal("opened with a changed sender key")
		}
	}
	m, err := parseBody(callMeMaybeBody(addrs))
	if err != nil || len(m.addrs) != 2 || m.addrs[0] != addrs[0] || m.addrs[1] != addrs[1] {
		t.Fatalf("call-me-maybe: %+v %v", m, err)
	}
	m, err = parseBody(pongBody([12]byte{3}, addrs[0]))
	if err != nil || m.txid != [12]byte{3} || m.addrs[0] != addrs[0] {
		t.Fatalf("pong: %+v %v", m, err)
	}
	for _, bad := range [][]byte{nil, {9}, {msgPing, 1}, append(pingBody([12]byte{}), 0), {msgCallMeMaybe, 1, 2}} {
		if _, err := parseBody(bad); err == nil {
			t.Errorf("parseBody(%x) accepted", bad)
		}
	}
	// A low-order (all-zero) peer key gives no key.
	if _, err := discoAEAD(aPriv, [32]byte{}); err == nil {
		t.Fatal("derived a key with the zero public key")
	}
}

// fakePeer is a raw UDP socket that speaks disco with a key pair.
type fakePeer struct {
	t    *testing.T
	c    *net.UDPConn
	priv [32]byte
	pub  [32]byte
}

func newFakePeer(t *testing.T) *fakePeer {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f := &fakePeer{t: t, c: c}
	f.priv, f.pub = newKey(t)
	return f
}

func (f *fakePeer) addr() netip.AddrPort { return f.c.LocalAddr().(*net.UDPAddr).AddrPort() }

// sealFor seals body from f (with the key pair priv/pub) to the node n.
func (f *fakePeer) sealFor(n *node, priv, pub [32]byte, body []byte) []byte {
	aead, err := discoAEAD(priv, n.pub)
	if err != nil {
		f.t.Fatal(err)
	}
	return seal(aead, pub, body)
}

func (f *fakePeer) send(n *node, msg []byte) {
	if _, err := f.c.WriteToUDPAddrPort(msg, n.addr()); err != nil {
		f.t.Fatal(err)
	}
}

// read returns the next disco message from n, opened.
func (f *fakePeer) read(n *node) discoMsg {
	aead, _ := discoAEAD(f.priv, n.pub)
	buf := make([]byte, 2048)
	for {
		_ = f.c.SetReadDeadline(time.Now().Add(wait))
		k, err := f.c.Read(buf)
		if err != nil {
			f.t.Fatal(err)
		}
		if classify(buf[:k]) != kindDisco {
			continue
		}
		pt, err := open(aead, buf[:k])
		if err != nil {
			f.t.Fatalf("open a message from the node: %v", err)
		}
		m, err := parseBody(pt)
		if err != nil {
			f.t.Fatal(err)
		}
		return m
	}
}

func (f *fakePeer) readPing(n *node) [12]byte {
	for {
		if m := f.read(n); m.typ == msgPing {
			return m.txid
		}
	}
}

func waitDrop(t *testing.T, n *node, r DropReason, before Stats) {
	t.Helper()
	waitFor(t, "drop "+r.String(), wait, func() bool { return n.b.Stats().DiscoDropped[r] > before.DiscoDropped[r] })
}

func TestForgedPongsDoNotMakeAPathTrusted(t *testing.T) {
	a := newNode(t, nil, func(c *Config) { c.Timing.PongTimeout = time.Minute })
	b, c, other := newFakePeer(t), newFakePeer(t), newFakePeer(t)
	_, unknownPub := newKey(t)
	unknownPriv := other.priv
	a.b.SetPeers(map[[32]byte]PeerInfo{
		b.pub: {Candidates: []netip.AddrPort{b.addr()}},
		c.pub: {Candidates: []netip.AddrPort{c.addr()}},
	})
	bn := &node{pub: b.pub}
	a.traffic(bn) // activity: a probes b
	txid := b.readPing(a)
	untrusted := func(why string) {
		t.Helper()
		p := a.b.peer(b.pub)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.best != nil || p.paths[b.addr()].lastPong != never {
			t.Fatalf("after %s: path trusted", why)
		}
	}
	valid := b.sealFor(a, b.priv, b.pub, pongBody(txid, a.addr()))

	s := a.b.Stats()
	b.send(a, c.sealFor(a, c.priv, c.pub, pongBody(txid, a.addr()))) // another peer's key
	waitDrop(t, a, DropPongWrongKey, s)
	untrusted("a pong with another peer's key")

	s = a.b.Stats()
	other.send(a, valid) // b's genuine pong, from another address
	waitDrop(t, a, DropPongWrongAddr, s)
	untrusted("b's pong from another address")

	s = a.b.Stats()
	b.send(a, b.sealFor(a, b.priv, b.pub, pongBody([12]byte{0xee}, a.addr()))) // a txid a never sent
	waitDrop(t, a, DropPongUnexpected, s)
	untrusted("a pong with a wrong txid")

	s = a.b.Stats()
	b.send(a, b.sealFor(a, unknownPriv, unknownPub, pongBody(txid, a.addr()))) // a key not in the netmap
	waitDrop(t, a, DropUnknownKey, s)
	tampered := bytes.Clone(valid)
	tampered[len(tampered)-1] ^= 1
	s = a.b.Stats()
	b.send(a, tampered)
	waitDrop(t, a, DropBadSeal, s)
	untrusted("unknown key and tampered pongs")

	// The genuine pong from b's address is accepted (so the refusals above
	// were the checks, not a broken path)...
	b.send(a, valid)
	waitFor(t, "trusted", wait, func() bool { return a.path(bn).Kind == PathDirect })
	// ...once: its replay is dropped.
	s = a.b.Stats()
	b.send(a, valid)
	waitDrop(t, a, DropPongUnexpected, s)
}

func TestDiscoFromUnknownKeyNotAnswered(t *testing.T) {
	a := newNode(t, nil, nil)
	b := newFakePeer(t)
	_, unknownPub := newKey(t)
	a.b.SetPeers(map[[32]byte]PeerInfo{b.pub: {}})
	s := a.b.Stats()
	// A ping from an unknown key, then one from b: the first answer is b's.
	b.send(a, b.sealFor(a, b.priv, unknownPub, pingBody([12]byte{1})))
	b.send(a, b.sealFor(a, b.priv, b.pub, pingBody([12]byte{2})))
	var m discoMsg
	for m = b.read(a); m.typ != msgPong; m = b.read(a) {
	}
	if m.txid != [12]byte{2} || m.addrs[0] != b.addr() {
		t.Fatalf("first pong %+v: want b's txid 2 seen from %v", m, b.addr())
	}
	if st := a.b.Stats(); st.DiscoDropped[DropUnknownKey] != s.DiscoDropped[DropUnknownKey]+1 {
		t.Fatal("the unknown key's ping was not counted as dropped")
	}
	// b's ping came from an address a did not know: it is now a candidate,
	// pinged back.
	if txid := b.readPing(a); txid == ([12]byte{}) {
		t.Fatal("zero txid")
	}
	if s := a.path(&node{pub: b.pub}); len(s.Candidates) != 1 || s.Candidates[0] != b.addr() {
		t.Fatalf("candidates %v, want b's address learned", s.Candidates)
	}
}

func TestPingReportsPaths(t *testing.T) {
	rn := newRelayNet()
	a, b := newNode(t, rn, nil), newNode(t, rn, nil)
	a.setPeer(b, b.addr(), closedPort(t))
	b.setPeer(a, a.addr())
	res, err := a.b.Ping(t.Context(), b.pub)
	if err != nil {
		t.Fatal(err)
	}
	if res.Tried != 3 || len(res.Answers) != 2 {
		t.Fatalf("tried %d, answers %+v: want 3 tried, direct and relay answering", res.Tried, res.Answers)
	}
	kinds := map[PathKind]PingAnswer{}
	for _, ans := range res.Answers {
		kinds[ans.Kind] = ans
	}
	if d := kinds[PathDirect]; d.Addr != b.addr() || d.Seen != a.addr() || d.RTT <= 0 {
		t.Fatalf("direct answer %+v", d)
	}
	if r := kinds[PathRelay]; r.Relay != "r1" {
		t.Fatalf("relay answer %+v", r)
	}
	rn.setDown("r1", true)
	rn.setDown("r2", true)
	c := newNode(t, rn, nil)
	a.b.SetPeers(map[[32]byte]PeerInfo{c.pub: {Candidates: []netip.AddrPort{closedPort(t)}}})
	if _, err := a.b.Ping(t.Context(), c.pub); err == nil {
		t.Fatal("ping with no answer did not fail")
	}
}

// Hole punching: a ping of ours to a peer's address that went unanswered
// (its NAT had no mapping for us yet) is sent again as soon as a ping
// from the peer arrives from that address, not at the next probe round.
func TestUnansweredPathPingedBackAtOnce(t *testing.T) {
	a := newNode(t, nil, func(c *Config) {
		c.Timing.ProbeRetry, c.Timing.Reprobe = time.Minute, time.Minute
		c.Timing.MinPing = 10 * time.Second // a tenth of it is longer than the test
	})
	b := newFakePeer(t)
	a.b.SetPeers(map[[32]byte]PeerInfo{b.pub: {Candidates: []netip.AddrPort{b.addr()}}})
	ep, err := a.b.ParseEndpoint(EndpointString(b.pub))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.b.Send([][]byte{data(1)}, ep); err != nil && !errors.Is(err, errNoPath) {
		t.Fatal(err)
	}
	b.readPing(a) // a's probe, which b's NAT "drops": no pong
	b.send(a, b.sealFor(a, b.priv, b.pub, pingBody([12]byte{7})))
	for m := b.read(a); m.typ != msgPong; m = b.read(a) {
	}
	start := time.Now()
	b.readPing(a)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a pinged b's address again after %v, want at once", took)
	}
}
