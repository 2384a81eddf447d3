package node

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wiremesh/wiremesh/node/bind"
	"github.com/wiremesh/wiremesh/wire"
)

// relayConn is what the data path uses of a relay client (relay.Client).
type relayConn interface {
	// Run keeps the client attached until ctx is done.
	Run(ctx context.Context) error
	// Send queues pkt for the node with public key dst; it never blocks.
	Send(dst [32]byte, pkt []byte) error
	// Connected reports whether the client is attached now.
	Connected() bool
	// RTT is the last round trip to the relay; zero before the first.
	RTT() time.Duration
	// SetNodeKey makes the client attach with a new node private key.
	SetNodeKey(k [32]byte)
}

// dialRelay makes the client of relay r for the node key key; the client
// hands what it receives to onPacket.
type dialRelay func(r wire.Relay, key [32]byte, onPacket func(src [32]byte, pkt []byte), log *slog.Logger) (relayConn, error)

// homeSwitchRatio: the home relay changes to another connected one only if
// that one's RTT is below this share of the home's, so that relays of
// similar latency do not take turns.
const homeSwitchRatio = 0.7

// relays keeps one client per relay of the netmap's relay map, each run
// by a goroutine of its own, and implements bind.Relays over them. The
// packet path reads an immutable snapshot of the clients without a lock.
type relays struct {
	log     *slog.Logger
	dial    dialRelay
	deliver func(relay string, src [32]byte, pkt []byte) // set before the first set
	ctx     context.Context                              // parent of the clients' goroutines
	stop    context.CancelFunc
	wg      sync.WaitGroup // the clients' goroutines

	snap atomic.Pointer[[]*relayClient] // in relay map order
	home atomic.Pointer[string]         // the last home chosen; "" for none

	mu      sync.Mutex // guards the fields below; serialises set, setKey and close
	key     [32]byte
	clients map[string]*relayClient
}

// relayClient is one running client.
type relayClient struct {
	cfg    wire.Relay
	conn   relayConn
	addr   netip.AddrPort // the relay's address, for display
	cancel context.CancelFunc
	done   chan struct{} // closed when its goroutine returned
}

func newRelays(key [32]byte, dial dialRelay, log *slog.Logger) *relays {
	ctx, stop := context.WithCancel(context.Background())
	r := &relays{log: log, dial: dial, ctx: ctx, stop: stop, key: key, clients: map[string]*relayClient{}}
	r.snap.Store(&[]*relayClient{})
	empty := ""
	r.home.Store(&empty)
	return r
}

// set makes the clients match the relay map: a relay whose name, URL, pins
// or key changed gets a new client, a relay no longer listed loses its
// client.
func (r *relays) set(list []wire.Relay) {
	r.mu.Lock()
	defer r.mu.Unlock()
	want := map[string]wire.Relay{}
	for _, w := range list {
		want[w.Name] = w
	}
	for name, c := range r.clients {
		if w, ok := want[name]; !ok || !sameRelay(w, c.cfg) {
			c.cancel()
			<-c.done
			delete(r.clients, name)
		}
	}
	snap := make([]*relayClient, 0, len(list))
	for _, w := range list {
		c := r.clients[w.Name]
		if c == nil {
			var err error
			if c, err = r.startLocked(w); err != nil {
				r.log.Warn("relay unusable", "relay", w.Name, "err", err)
				continue
			}
			r.clients[w.Name] = c
		}
		snap = append(snap, c)
	}
	r.snap.Store(&snap)
}

// relaySTUN returns the STUN servers of the relay map, resolved, without
// duplicates.
func relaySTUN(list []wire.Relay, log *slog.Logger) []netip.AddrPort {
	var out []netip.AddrPort
	for _, w := range list {
		for _, s := range w.STUN {
			if a, err := resolveAddrPort(s); err != nil {
				log.Warn("relay STUN server unusable", "relay", w.Name, "addr", s, "err", err)
			} else if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

func sameRelay(a, b wire.Relay) bool {
	return a.Name == b.Name && a.URL == b.URL && a.Key == b.Key && slices.Equal(a.Pins, b.Pins)
}

// startLocked makes relay w's client and starts its goroutine.
func (r *relays) startLocked(w wire.Relay) (*relayClient, error) {
	name := w.Name
	conn, err := r.dial(w, r.key, func(src [32]byte, pkt []byte) { r.deliver(name, src, pkt) }, r.log.With("relay", name))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(r.ctx)
	c := &relayClient{cfg: w, conn: conn, addr: relayAddr(w.URL), cancel: cancel, done: make(chan struct{})}
	r.wg.Go(func() {
		defer close(c.done)
		conn.Run(ctx)
	})
	return c, nil
}

// relayAddr is the address of the relay at URL u (a host name resolved
// once); the zero AddrPort if it has none.
func relayAddr(u string) netip.AddrPort {
	pu, err := url.Parse(u)
	if err != nil {
		return netip.AddrPort{}
	}
	host := pu.Host
	if pu.Port() == "" {
		host = net.JoinHostPort(pu.Hostname(), "443")
	}
	a, _ := resolveAddrPort(host)
	return a
}

// resolveAddrPort parses HOST:PORT, resolving a host name to its first
// address.
func resolveAddrPort(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddrPort(s); err == nil {
		return a, nil
	}
	ua, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	a := ua.AddrPort()
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()), nil
}

// setKey gives every client the node's new private key.
func (r *relays) setKey(k [32]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.key = k
	for _, c := range r.clients {
		c.conn.SetNodeKey(k)
	}
}

// close stops every client and waits for their goroutines.
func (r *relays) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stop()
	r.wg.Wait()
	r.clients = map[string]*relayClient{}
	r.snap.Store(&[]*relayClient{})
}

func (r *relays) client(name string) *relayClient {
	for _, c := range *r.snap.Load() {
		if c.cfg.Name == name {
			return c
		}
	}
	return nil
}

// Send implements bind.Relays.
func (r *relays) Send(relay string, dst [32]byte, pkt []byte) error {
	c := r.client(relay)
	if c == nil {
		return errNoRelay
	}
	return c.conn.Send(dst, pkt)
}

var errNoRelay = errors.New("no such relay in the relay map")

// Connected implements bind.Relays.
func (r *relays) Connected(relay string) bool {
	c := r.client(relay)
	return c != nil && c.conn.Connected()
}

// Home implements bind.Relays: the connected relay with the lowest RTT,
// kept while it stays connected unless another is clearly faster
// (homeSwitchRatio); "" if none is connected.
func (r *relays) Home() string {
	cur := *r.home.Load()
	var home, best *relayClient
	for _, c := range *r.snap.Load() {
		if !c.conn.Connected() {
			continue
		}
		if c.cfg.Name == cur {
			home = c
		}
		if rtt := c.conn.RTT(); best == nil || rtt > 0 && (best.conn.RTT() == 0 || rtt < best.conn.RTT()) {
			best = c
		}
	}
	next := ""
	switch {
	case best == nil:
	case home == nil || clearlyFaster(best.conn.RTT(), home.conn.RTT()):
		next = best.cfg.Name
	default:
		next = home.cfg.Name
	}
	if next != cur {
		r.home.Store(&next)
	}
	return next
}

// clearlyFaster reports whether a relay with RTT a should replace the home
// relay with RTT b (both measured).
func clearlyFaster(a, b time.Duration) bool {
	return a > 0 && b > 0 && float64(a) < homeSwitchRatio*float64(b)
}

// Addr implements bind.Relays.
func (r *relays) Addr(relay string) netip.AddrPort {
	if c := r.client(relay); c != nil {
		return c.addr
	}
	return netip.AddrPort{}
}

// RelayState is one relay as status and metrics show it.
type RelayState struct {
	Name      string        `json:"name"`
	Addr      string        `json:"addr,omitempty"`
	Connected bool          `json:"connected"`
	RTT       wire.Duration `json:"rtt,omitempty"`
}

// states returns every relay's state, in relay map order.
func (r *relays) states() []RelayState {
	var out []RelayState
	for _, c := range *r.snap.Load() {
		s := RelayState{Name: c.cfg.Name, Connected: c.conn.Connected(), RTT: wire.Duration(c.conn.RTT())}
		if c.addr.IsValid() {
			s.Addr = c.addr.String()
		}
		out = append(out, s)
	}
	return out
}

var _ bind.Relays = (*relays)(nil)
