package bind

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/wiremesh/wiremesh/relay/stun"
)

// wgNode is a real wireguard-go device on a channel TUN over a Bind.
type wgNode struct {
	b     *Bind
	inner *countingBind
	dev   *device.Device
	tun   *tuntest.ChannelTUN
	pub   [32]byte
	ip    netip.Addr
	port  uint16
}

// newWGNode returns a node on rn's relays; with rn nil, on no relay.
func newWGNode(t *testing.T, rn *relayNet, ip string) *wgNode {
	priv, pub := newKey(t)
	cfg := Config{PrivateKey: priv, Timing: fastTiming(),
		InterfaceAddrs: func() ([]netip.Prefix, error) { return nil, nil }}
	if rn != nil {
		cfg.Relays = &fakeRelays{net: rn, self: pub, home: "r1"}
	}
	inner := &countingBind{Bind: conn.NewStdNetBind()}
	b, err := newBind(cfg, inner)
	if err != nil {
		t.Fatal(err)
	}
	if rn != nil {
		rn.mu.Lock()
		rn.nodes[pub] = b
		rn.mu.Unlock()
	}
	n := &wgNode{b: b, inner: inner, tun: tuntest.NewChannelTUN(), pub: pub, ip: netip.MustParseAddr(ip)}
	n.dev = device.NewDevice(n.tun.TUN(), b, device.NewLogger(device.LogLevelError, "wg: "))
	t.Cleanup(n.dev.Close)
	if err := n.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(priv[:]))); err != nil {
		t.Fatal(err)
	}
	if err := n.dev.Up(); err != nil {
		t.Fatal(err)
	}
	n.port = uint16(ipcInt(t, n.dev, "listen_port"))
	return n
}

// countingBind counts the handshake initiations sent on the socket.
type countingBind struct {
	conn.Bind
	initiations atomic.Int64
}

func (c *countingBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	for _, b := range bufs {
		if len(b) == wgInitiationSize && b[0] == 1 {
			c.initiations.Add(1)
		}
	}
	return c.Bind.Send(bufs, ep)
}

func ipcGet(t *testing.T, dev *device.Device, key string) []string {
	s, err := dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

func ipcInt(t *testing.T, dev *device.Device, key string) int {
	v := ipcGet(t, dev, key)
	if len(v) != 1 {
		t.Fatalf("%s: %v", key, v)
	}
	n, err := strconv.Atoi(v[0])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// peer makes o a WireGuard peer of n, reached through the Bind.
func (n *wgNode) peer(t *testing.T, o *wgNode, cands ...netip.AddrPort) {
	n.b.SetPeers(map[[32]byte]PeerInfo{o.pub: {Candidates: cands, HomeRelay: "r1"}})
	err := n.dev.IpcSet(fmt.Sprintf("public_key=%s\nendpoint=%s\nallowed_ip=%s/32\n",
		hex.EncodeToString(o.pub[:]), EndpointString(o.pub), o.ip))
	if err != nil {
		t.Fatal(err)
	}
}

// pingThrough sends ICMP echo requests from a to b over the tunnel until
// one comes out of b's TUN.
func pingThrough(t *testing.T, a, b *wgNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	pkt := tuntest.Ping(b.ip, a.ip)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case a.tun.Outbound <- pkt:
		case <-ctx.Done():
			t.Fatalf("no packet from %v through the tunnel", a.ip)
		}
		select {
		case got := <-b.tun.Inbound:
			if !bytes.Equal(got, pkt) {
				t.Fatalf("got %x, want %x", got, pkt)
			}
			return
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("no packet from %v through the tunnel", a.ip)
		}
	}
}

func TestWireGuardDevicesDirect(t *testing.T) {
	rn := newRelayNet()
	a, b := newWGNode(t, rn, "10.0.0.1"), newWGNode(t, rn, "10.0.0.2")
	lo := netip.MustParseAddr("127.0.0.1")
	a.peer(t, b, netip.AddrPortFrom(lo, b.port))
	b.peer(t, a, netip.AddrPortFrom(lo, a.port))
	pingThrough(t, a, b)
	pingThrough(t, b, a)
	waitFor(t, "direct", wait, func() bool {
		pingThrough(t, a, b)
		s := a.b.Paths()
		return len(s) == 1 && s[0].Kind == PathDirect
	})
	// wg show (wgctrl) reads the endpoint as b's address.
	ep := ipcGet(t, a.dev, "endpoint")
	if len(ep) != 1 || ep[0] != netip.AddrPortFrom(lo, b.port).String() {
		t.Fatalf("endpoint %v", ep)
	}
	// Once the upgrade overlap is over, traffic goes direct only.
	waitFor(t, "five packets direct only", wait, func() bool {
		before := a.b.Stats()
		for range 5 {
			pingThrough(t, a, b)
		}
		st := a.b.Stats()
		return st.RelayTx == before.RelayTx && st.DirectTx.Packets >= before.DirectTx.Packets+5
	})
}

func TestWireGuardDevicesRelayed(t *testing.T) {
	rn := newRelayNet()
	a, b := newWGNode(t, rn, "10.0.0.1"), newWGNode(t, rn, "10.0.0.2")
	a.peer(t, b, closedPort(t))
	b.peer(t, a, closedPort(t))
	pingThrough(t, a, b)
	pingThrough(t, b, a)
	for _, n := range []*wgNode{a, b} {
		if s := n.b.Paths(); len(s) != 1 || s[0].Kind != PathRelay || s[0].Relay != "r1" {
			t.Fatalf("paths %+v", s)
		}
		ep := ipcGet(t, n.dev, "endpoint")
		if len(ep) != 1 || ep[0] != "192.0.2.10:443" {
			t.Fatalf("endpoint %v, want the relay's address", ep)
		}
		if _, err := net.ResolveUDPAddr("udp", ep[0]); err != nil {
			t.Fatal(err)
		}
	}
	if st := a.b.Stats(); st.RelayTx.Packets == 0 || st.RelayRx.Packets == 0 {
		t.Fatalf("stats %+v: want relayed traffic both ways", st)
	}
}

// A relay that alters what it forwards gets nothing delivered: WireGuard
// authenticates every packet end to end, so an altered one is dropped,
// whether the relay flips a bit of the ciphertext or of the header.
func TestTamperingRelayCausesDrops(t *testing.T) {
	rn := newRelayNet()
	a, b := newWGNode(t, rn, "10.0.0.1"), newWGNode(t, rn, "10.0.0.2")
	a.peer(t, b, closedPort(t))
	b.peer(t, a, closedPort(t))
	pingThrough(t, a, b) // the session is up, through the relay
	for name, tamper := range map[string]func([]byte){
		"payload": func(p []byte) { p[len(p)-1] ^= 1 },  // the last byte of the AEAD tag
		"counter": func(p []byte) { p[8] ^= 1 },         // the nonce counter in the header
		"index":   func(p []byte) { p[4] ^= 1 },         // the receiver index
		"type":    func(p []byte) { p[0], p[1] = 4, 1 }, // a malformed header
	} {
		rn.mu.Lock()
		rn.tamper = tamper
		rn.mu.Unlock()
		// Marked, so that a late copy of pingThrough's pings (it sends
		// one every 50 ms until one arrives) is told apart.
		marked := tuntest.Ping(b.ip, a.ip)
		marked[len(marked)-1] ^= 0x5a
		for range 10 {
			a.tun.Outbound <- marked
		}
		deadline := time.After(300 * time.Millisecond)
	drain:
		for {
			select {
			case p := <-b.tun.Inbound:
				if bytes.Equal(p, marked) {
					t.Fatalf("%s: a packet the relay altered came out of the tunnel: %x", name, p)
				}
			case <-deadline:
				break drain
			}
		}
	}
	rn.mu.Lock()
	rn.tamper = nil
	rn.mu.Unlock()
	pingThrough(t, a, b) // and honest forwarding works again
}

func TestSTUNCandidatesAndNAT(t *testing.T) {
	var servers []netip.AddrPort
	for range 2 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = stun.Serve(ctx, pc, slog.New(slog.NewTextHandler(io.Discard, nil)))
		}()
		t.Cleanup(func() { cancel(); <-done; pc.Close() })
		servers = append(servers, pc.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	got := make(chan []netip.AddrPort, 16)
	lo := netip.MustParsePrefix("127.0.0.1/8")
	a := newNode(t, nil, func(c *Config) {
		c.STUNServers = servers
		c.Endpoints = []netip.AddrPort{netip.MustParseAddrPort("198.51.100.1:51820")}
		c.InterfaceAddrs = func() ([]netip.Prefix, error) { return []netip.Prefix{lo}, nil }
		c.OnCandidates = func(a []netip.AddrPort) { got <- a }
	})
	waitFor(t, "NAT type", wait, func() bool { return a.b.NAT() == NATNone })
	want := []netip.AddrPort{netip.MustParseAddrPort("198.51.100.1:51820"), a.addr()}
	if c := a.b.LocalCandidates(); len(c) != 2 || c[0] != want[0] || c[1] != want[1] {
		t.Fatalf("candidates %v, want %v", c, want)
	}
	waitFor(t, "callback with the candidates", wait, func() bool {
		c := <-got
		return len(c) == 2 && c[1] == want[1]
	})

	// No answer at all: UDP blocked.
	b := newNode(t, nil, func(c *Config) { c.STUNServers = []netip.AddrPort{closedPort(t), closedPort(t)} })
	waitFor(t, "udp blocked", wait, func() bool { return b.b.NAT() == NATUDPBlocked })
}

// A session that works one way only (the receiver lost it, the sender
// still uses it) is repaired by the receiver's Watch within a few checks,
// not after wireguard-go's 15 s of silence; sessions that work are left
// alone.
func TestWatchRepairsOneWaySession(t *testing.T) {
	rn := newRelayNet()
	a, b := newWGNode(t, rn, "10.0.0.1"), newWGNode(t, rn, "10.0.0.2")
	lo := netip.MustParseAddr("127.0.0.1")
	a.peer(t, b, netip.AddrPortFrom(lo, b.port))
	b.peer(t, a, netip.AddrPortFrom(lo, a.port))
	w := NewWatch(b.b, b.dev, slog.New(slog.NewTextHandler(io.Discard, nil)))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case now := <-tick.C:
				w.Check(now)
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })

	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		pingThrough(t, a, b)
		pingThrough(t, b, a)
	}
	if n := b.b.Stats().SessionRepairs; n != 0 {
		t.Fatalf("%d repairs of a session that works both ways", n)
	}
	// b forgets a with its sessions; a still sends on its current one.
	// Late copies of the pings above are drained meanwhile: the channel
	// TUN blocks the peer's receiver, and removing the peer waits for it.
	stopDrain := make(chan struct{})
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case <-b.tun.Inbound:
			case <-stopDrain:
				return
			}
		}
	}()
	if err := b.dev.IpcSet("public_key=" + hex.EncodeToString(a.pub[:]) + "\nremove=true\n"); err != nil {
		t.Fatal(err)
	}
	b.peer(t, a, netip.AddrPortFrom(lo, a.port))
	close(stopDrain)
	<-drained
	start := time.Now()
	pingThrough(t, a, b)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("a's packets came through after %v; want a new handshake within a few checks", took.Round(time.Millisecond))
	}
	if b.b.Stats().SessionRepairs == 0 {
		t.Errorf("no repair counted")
	}
}

// greeterOf returns the node of a and b with the smaller key (the greeter,
// as the agent's engine picks it) and the other.
func greeterOf(a, b *wgNode) (greeter, greeted *wgNode) {
	if bytes.Compare(a.pub[:], b.pub[:]) < 0 {
		return a, b
	}
	return b, a
}

// A node that awaits a new peer's greeting sends no handshake initiation
// of its own, so none crosses the greeting: its first packet, sent before
// the greeting arrives, goes out on the session the greeting makes.
func TestAwaitedGreetingNoCrossing(t *testing.T) {
	g, o := greeterOf(newWGNode(t, nil, "10.0.0.1"), newWGNode(t, nil, "10.0.0.2"))
	lo := netip.MustParseAddr("127.0.0.1")
	g.peer(t, o, netip.AddrPortFrom(lo, o.port))
	o.b.SetPeers(map[[32]byte]PeerInfo{g.pub: {Candidates: []netip.AddrPort{netip.AddrPortFrom(lo, g.port)}, HomeRelay: "r1"}})
	o.b.AwaitGreeting(g.pub, time.Hour)
	o.peer(t, g, netip.AddrPortFrom(lo, g.port))

	pkt := tuntest.Ping(g.ip, o.ip)
	o.tun.Outbound <- pkt
	waitFor(t, "o's device to start its handshake", wait, func() bool {
		o.b.mu.Lock()
		defer o.b.mu.Unlock()
		p := o.b.peers[g.pub]
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.held != nil
	})
	g.dev.LookupPeer(device.NoisePublicKey(o.pub)).SendKeepalive()
	select {
	case got := <-g.tun.Inbound:
		if !bytes.Equal(got, pkt) {
			t.Fatalf("got %x, want %x", got, pkt)
		}
	case <-time.After(wait):
		t.Fatal("o's first packet did not come through after the greeting")
	}
	pingThrough(t, g, o)
	if n := o.inner.initiations.Load(); n != 0 {
		t.Fatalf("the greeted node sent %d handshake initiations; want none", n)
	}
}

// Without a greeting, the held initiation goes out when the wait ends.
func TestAwaitedGreetingTimesOut(t *testing.T) {
	g, o := greeterOf(newWGNode(t, nil, "10.0.0.1"), newWGNode(t, nil, "10.0.0.2"))
	lo := netip.MustParseAddr("127.0.0.1")
	g.peer(t, o, netip.AddrPortFrom(lo, o.port))
	o.b.SetPeers(map[[32]byte]PeerInfo{g.pub: {Candidates: []netip.AddrPort{netip.AddrPortFrom(lo, g.port)}, HomeRelay: "r1"}})
	const await = 300 * time.Millisecond
	start := time.Now()
	o.b.AwaitGreeting(g.pub, await)
	o.peer(t, g, netip.AddrPortFrom(lo, g.port))
	pingThrough(t, o, g)
	if took := time.Since(start); took < await {
		t.Errorf("o's first packet came through after %v, before the wait for the greeting (%v) ended", took, await)
	}
	if n := o.inner.initiations.Load(); n != 1 {
		t.Errorf("o sent %d handshake initiations; want the held one", n)
	}
}
