package bind

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
)

// fastTiming shortens every timing so that tests see many rounds quickly.
func fastTiming() Timing {
	return Timing{
		Trust: 600 * time.Millisecond, Heartbeat: 200 * time.Millisecond,
		ProbeRetry: 500 * time.Millisecond, Reprobe: 2 * time.Second, Dead: 2 * time.Second,
		PongTimeout: 500 * time.Millisecond, Active: 2 * time.Second, Overlap: 300 * time.Millisecond,
		MinPing: 100 * time.Millisecond, STUNMin: time.Second, STUNMax: 2 * time.Second,
		STUNTimeout: 300 * time.Millisecond, InterfacePoll: time.Second, RelayReply: 2 * time.Second,
		Tick: 20 * time.Millisecond, FastProbeRounds: 3,
	}
}

// relayNet is an in-memory set of relays that delivers synchronously.
type relayNet struct {
	mu     sync.Mutex
	nodes  map[[32]byte]*Bind
	down   map[string]bool
	tamper func(pkt []byte) // guarded by mu; nil: packets pass as sent
	sent   atomic.Int64
}

func newRelayNet() *relayNet {
	return &relayNet{nodes: map[[32]byte]*Bind{}, down: map[string]bool{}}
}

func (n *relayNet) setDown(relay string, down bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.down[relay] = down
}

// fakeRelays is one node's client of a relayNet; relays "r1" and "r2".
type fakeRelays struct {
	net  *relayNet
	self [32]byte
	home string
}

func (f *fakeRelays) Send(relay string, dst [32]byte, pkt []byte) error {
	f.net.mu.Lock()
	b, down, tamper := f.net.nodes[dst], f.net.down[relay], f.net.tamper
	f.net.mu.Unlock()
	if down || b == nil {
		return errors.New("fake relay: not connected")
	}
	f.net.sent.Add(1)
	if tamper != nil {
		pkt = bytes.Clone(pkt)
		tamper(pkt)
	}
	b.DeliverRelayed(relay, f.self, pkt)
	return nil
}

func (f *fakeRelays) Connected(relay string) bool {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	return (relay == "r1" || relay == "r2") && !f.net.down[relay]
}

func (f *fakeRelays) Home() string { return f.home }

func (f *fakeRelays) Addr(relay string) netip.AddrPort {
	return netip.MustParseAddrPort("192.0.2.10:443")
}

// filterBind is the fake underlay: a StdNetBind whose receive drops
// datagrams from blocked source addresses.
type filterBind struct {
	conn.Bind
	mu      sync.Mutex
	blocked map[netip.AddrPort]bool
}

func (f *filterBind) block(a netip.AddrPort, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blocked[a] = on
}

func (f *filterBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, p, err := f.Bind.Open(port)
	for i, fn := range fns {
		fns[i] = func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
			n, err := fn(bufs, sizes, eps)
			f.mu.Lock()
			for j := range n {
				if se, ok := eps[j].(*conn.StdNetEndpoint); ok && f.blocked[se.AddrPort] {
					sizes[j] = 0
				}
			}
			f.mu.Unlock()
			return n, err
		}
	}
	return fns, p, err
}

// got is a WireGuard packet a node's "device" received.
type got struct {
	seq     uint32
	ep      conn.Endpoint
	relayed bool
}

// node is a Bind with receive loops standing in for wireguard-go.
type node struct {
	t     *testing.T
	b     *Bind
	under *filterBind
	priv  [32]byte
	pub   [32]byte
	port  uint16
	recv  chan got
	wg    sync.WaitGroup
	seq   atomic.Uint32 // of packets sent by copies
}

func newKey(t testing.TB) (priv, pub [32]byte) {
	_, _ = rand.Read(priv[:])
	pub, err := publicKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

func newNode(t *testing.T, rn *relayNet, mod func(*Config)) *node {
	t.Helper()
	n := &node{t: t, recv: make(chan got, 4096)}
	n.priv, n.pub = newKey(t)
	cfg := Config{
		PrivateKey:     n.priv,
		Timing:         fastTiming(),
		InterfaceAddrs: func() ([]netip.Prefix, error) { return nil, nil },
	}
	if rn != nil {
		cfg.Relays = &fakeRelays{net: rn, self: n.pub, home: "r1"}
	}
	if mod != nil {
		mod(&cfg)
	}
	n.under = &filterBind{Bind: conn.NewStdNetBind(), blocked: map[netip.AddrPort]bool{}}
	b, err := newBind(cfg, n.under)
	if err != nil {
		t.Fatal(err)
	}
	n.b = b
	if rn != nil {
		rn.mu.Lock()
		rn.nodes[n.pub] = b
		rn.mu.Unlock()
	}
	n.open()
	t.Cleanup(n.close)
	return n
}

func (n *node) open() {
	fns, port, err := n.b.Open(0)
	if err != nil {
		n.t.Fatal(err)
	}
	n.port = port
	for i, fn := range fns {
		relayed := i == len(fns)-1
		n.wg.Go(func() { n.receive(fn, relayed) })
	}
}

func (n *node) receive(fn conn.ReceiveFunc, relayed bool) {
	bs := n.b.BatchSize()
	bufs, sizes, eps := make([][]byte, bs), make([]int, bs), make([]conn.Endpoint, bs)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
	}
	for {
		k, err := fn(bufs, sizes, eps)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		for i := range k {
			if sizes[i] == 0 {
				continue
			}
			select {
			case n.recv <- got{seq: binary.BigEndian.Uint32(bufs[i][8:]), ep: eps[i], relayed: relayed}:
			default:
			}
		}
	}
}

func (n *node) close() {
	_ = n.b.Close()
	n.wg.Wait()
}

// addr is the node's loopback address.
func (n *node) addr() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.port)
}

// peerWith makes each node a peer of the other with the given candidates.
func (n *node) setPeer(o *node, cands ...netip.AddrPort) {
	n.b.SetPeers(map[[32]byte]PeerInfo{o.pub: {Candidates: cands, HomeRelay: "r1"}})
}

// data is a WireGuard transport message carrying seq.
func data(seq uint32) []byte {
	p := make([]byte, 64)
	p[0] = 4
	binary.BigEndian.PutUint32(p[8:], seq)
	return p
}

// sendTo sends one data packet to peer o through n's endpoint for it.
func (n *node) sendTo(o *node, seq uint32) error {
	ep, err := n.b.ParseEndpoint(EndpointString(o.pub))
	if err != nil {
		n.t.Fatal(err)
	}
	return n.b.Send([][]byte{data(seq)}, ep)
}

// traffic sends a packet from n to o every 10 ms until the test ends;
// it returns the number sent so far.
func (n *node) traffic(o *node) func() uint32 {
	ctx, cancel := context.WithCancel(context.Background())
	var seq atomic.Uint32
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = n.sendTo(o, seq.Add(1))
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			wg.Wait()
		}
	}
	n.t.Cleanup(stop)
	return func() uint32 { return seq.Load() }
}

// path returns n's path to o.
func (n *node) path(o *node) PathStatus {
	for _, s := range n.b.Paths() {
		if s.Peer == o.pub {
			return s
		}
	}
	return PathStatus{Kind: "not a peer"}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// closedPort returns a loopback UDP address nothing listens on.
func closedPort(t *testing.T) netip.AddrPort {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	return a
}
