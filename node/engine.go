package node

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/wiremesh/wiremesh/node/bind"
	"github.com/wiremesh/wiremesh/wire"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Engine is the data path an agent drives: a WireGuard interface with the
// node's addresses, routes to the overlay and one peer per netmap peer.
type Engine interface {
	// Apply makes the interface match nm: addresses of nm.Self, routes for
	// nm.Prefixes and exactly nm.Peers as WireGuard peers. Peers that stay
	// keep their sessions.
	Apply(nm *wire.Netmap) error
	// Stats returns per-peer counters keyed by base64 public key.
	Stats() (map[string]PeerStats, error)
	// SetPrivateKey replaces the interface's private key. Sessions under
	// the old key end; new handshakes start at once and are retried for
	// a second, while the peers learn the new public key.
	SetPrivateKey(k wgtypes.Key) error
	// Close removes the interface, its addresses and routes.
	Close() error
}

// PeerStats are a peer's WireGuard counters.
type PeerStats struct {
	Endpoint      string    `json:"endpoint,omitempty"`
	LastHandshake time.Time `json:"last_handshake,omitzero"`
	RxBytes       int64     `json:"rx_bytes"`
	TxBytes       int64     `json:"tx_bytes"`
}

// EngineConfig configures a wireguard-go engine.
type EngineConfig struct {
	Interface  string // interface name, also the UAPI socket name
	ListenPort int    // UDP port; 0: random
	MTU        int    // interface MTU
	PrivateKey wgtypes.Key
	Logger     *slog.Logger
	// WrapTUN, if set, wraps the TUN device before wireguard-go uses it
	// (the packet filter hooks in here). Nil: no wrapping.
	WrapTUN func(tun.Device) tun.Device
	// KnownToPeers says the node was enrolled before this start, so its
	// peers already have it and hold sessions with its last run: the
	// first netmap's peers are greeted at once, whatever the key order.
	KnownToPeers bool
	// Bind is the device's UDP bind, which picks each peer's path; every
	// peer's endpoint is bind.EndpointString of its key. Required.
	Bind *bind.Bind
}

// wgEngine is an Engine on a userspace wireguard-go device, configured
// through wgctrl over its UAPI socket so that wg(8) sees it too.
type wgEngine struct {
	cfg    EngineConfig
	log    *slog.Logger
	dev    *device.Device
	uapi   net.Listener
	wg     *wgctrl.Client
	link   netlink.Link
	uapiWG sync.WaitGroup // the UAPI accept loop and its connections

	mu      sync.Mutex
	addrs   []netip.Prefix          // guarded by mu; addresses set on the link
	applied map[wgtypes.Key]peerCfg // guarded by mu; what Apply last set per peer
	timers  []*time.Timer           // guarded by mu; pending greetings
	guard   *underlayGuard          // guarded by mu; nil until addresses are set, or if nftables failed
	closed  bool                    // guarded by mu
	greeted bool                    // guarded by mu; the first netmap's peers were greeted

	greeters sync.WaitGroup // running greeting timers

	stopWatch chan struct{} // guarded by mu; closed (and set to nil) by Close: stops watch
	watchDone chan struct{} // closed when watch has returned
}

type peerCfg struct {
	allowed string
}

// NewWireGuardEngine creates the TUN interface and the WireGuard device and
// brings the interface up with the key and listen port. Addresses and
// peers come with Apply.
func NewWireGuardEngine(cfg EngineConfig) (_ Engine, err error) {
	if cfg.Bind == nil {
		return nil, errors.New("engine: no bind")
	}
	e := &wgEngine{cfg: cfg, log: cfg.Logger, applied: map[wgtypes.Key]peerCfg{}}
	uapiFile, err := ipc.UAPIOpen(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: UAPI socket %s: %w (is another WireGuard process using this interface name?)", cfg.Interface, uapiSocket(cfg.Interface), err)
	}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if e.uapi, err = ipc.UAPIListen(cfg.Interface, uapiFile); err != nil {
		uapiFile.Close()
		return nil, fmt.Errorf("interface %s: UAPI listen: %w", cfg.Interface, err)
	}
	tdev, err := tun.CreateTUN(cfg.Interface, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("create TUN interface %s: %w", cfg.Interface, err)
	}
	if cfg.WrapTUN != nil {
		tdev = cfg.WrapTUN(tdev)
	}
	wlog := &device.Logger{
		Verbosef: func(string, ...any) {},
		Errorf: func(f string, a ...any) {
			e.log.Debug("wireguard: " + fmt.Sprintf(f, a...))
		},
	}
	e.dev = device.NewDevice(tdev, cfg.Bind, wlog)
	e.uapiWG.Add(1)
	go e.serveUAPI()
	if e.wg, err = wgctrl.New(); err != nil {
		return nil, fmt.Errorf("open wgctrl: %w", err)
	}
	port := cfg.ListenPort
	err = e.wg.ConfigureDevice(cfg.Interface, wgtypes.Config{PrivateKey: &cfg.PrivateKey, ListenPort: &port, ReplacePeers: true})
	if err != nil {
		if isAddrInUse(err) {
			return nil, portInUse(cfg.ListenPort)
		}
		return nil, fmt.Errorf("configure %s: %w", cfg.Interface, err)
	}
	if e.link, err = netlink.LinkByName(cfg.Interface); err != nil {
		return nil, fmt.Errorf("find interface %s: %w", cfg.Interface, err)
	}
	if err := netlink.LinkSetUp(e.link); err != nil {
		return nil, fmt.Errorf("bring %s up: %w", cfg.Interface, err)
	}
	// The device binds its port only once it is up, and it learns that the
	// link is up from a TUN event that may come after the port was set:
	// the port check above then passed without a bind, and a failed bind
	// would only be logged. Bring it up here, so a taken port is an error.
	if err := e.dev.Up(); err != nil {
		if isAddrInUse(err) {
			return nil, portInUse(cfg.ListenPort)
		}
		return nil, fmt.Errorf("bring up %s: %w", cfg.Interface, err)
	}
	// If the TUN event brought the device up first and its bind failed,
	// wireguard-go reset the port to 0, and the Up above bound a random
	// one: the agent would run, advertising a port it does not hold.
	if cfg.ListenPort != 0 {
		d, err := e.wg.Device(cfg.Interface)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", cfg.Interface, err)
		}
		if d.ListenPort != cfg.ListenPort {
			return nil, portInUse(cfg.ListenPort)
		}
	}
	e.stopWatch, e.watchDone = make(chan struct{}), make(chan struct{})
	go e.watch(bind.NewWatch(cfg.Bind, e.dev, e.log), e.stopWatch)
	return e, nil
}

// watch runs w until stop is closed (by Close): see bind.Watch for the
// one-way sessions of crossed handshakes that it repairs.
func (e *wgEngine) watch(w *bind.Watch, stop <-chan struct{}) {
	defer close(e.watchDone)
	t := time.NewTicker(bind.WatchInterval)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			w.Check(now)
		case <-stop:
			return
		}
	}
}

// portInUse is the error of an agent whose listen port another socket holds.
func portInUse(port int) error {
	return fmt.Errorf("listen port %d is already in use (by another program or agent): free it or choose another with --listen-port", port)
}

// uapiSocket is where wireguard-go's UAPI socket for iface lives.
func uapiSocket(iface string) string { return "/var/run/wireguard/" + iface + ".sock" }

// isAddrInUse reports whether err is the device's "port in use" answer,
// which wgctrl passes on as an errno.
func isAddrInUse(err error) bool {
	return errors.Is(err, unix.EADDRINUSE) || strings.Contains(err.Error(), "address already in use") || strings.Contains(err.Error(), "errno=-98")
}

func (e *wgEngine) serveUAPI() {
	defer e.uapiWG.Done()
	for {
		c, err := e.uapi.Accept()
		if err != nil {
			return
		}
		e.uapiWG.Add(1)
		go func() {
			defer e.uapiWG.Done()
			e.dev.IpcHandle(c)
		}()
	}
}

// Apply implements Engine.
func (e *wgEngine) Apply(nm *wire.Netmap) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("engine closed")
	}
	if err := e.setAddrsLocked(nm.Self.Addresses, nm.Prefixes); err != nil {
		return err
	}
	cfg := wgtypes.Config{}
	want := map[wgtypes.Key]peerCfg{}
	var added []wgtypes.Key
	// After a restart, the peers know this node and send with sessions of
	// its last run, which it no longer has: only a handshake from it
	// brings them back without WireGuard's 5 s wait, and since they learn
	// nothing new, no handshake of theirs can cross it.
	eager := e.cfg.KnownToPeers && !e.greeted
	for _, p := range nm.Peers {
		key, err := wgtypes.ParseKey(p.PublicKey)
		if err != nil {
			e.log.Warn("peer with bad public key skipped", "peer", p.Name, "err", err)
			continue
		}
		pc := peerCfg{allowed: fmt.Sprint(p.Addresses)}
		want[key] = pc
		old, had := e.applied[key]
		if had && old == pc {
			continue
		}
		if !had {
			added = append(added, key)
			if !e.greetsLocked(key, eager) {
				// Before the device has the peer, so that no packet of
				// ours starts a handshake that crosses the greeting.
				e.cfg.Bind.AwaitGreeting(key, awaitGreeting)
			}
		}
		c := wgtypes.PeerConfig{PublicKey: key, ReplaceAllowedIPs: true}
		for _, a := range p.Addresses {
			c.AllowedIPs = append(c.AllowedIPs, net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())})
		}
		cfg.Peers = append(cfg.Peers, c)
	}
	for key := range e.applied {
		if _, ok := want[key]; !ok {
			cfg.Peers = append(cfg.Peers, wgtypes.PeerConfig{PublicKey: key, Remove: true})
		}
	}
	if len(cfg.Peers) == 0 {
		return nil
	}
	if err := e.wg.ConfigureDevice(e.cfg.Interface, cfg); err != nil {
		return fmt.Errorf("configure peers on %s: %w", e.cfg.Interface, err)
	}
	e.applied = want
	for _, k := range added {
		if err := e.setEndpointLocked(k); err != nil {
			return err
		}
	}
	e.greeted = true
	for _, k := range added {
		e.greetLocked(k, eager)
	}
	return nil
}

// setEndpointLocked points peer k's endpoint at the bind's path selection
// for it. wgctrl cannot set it (its endpoints are UDP addresses), so it
// goes through the device's UAPI; wg(8) still reads an ip:port back.
func (e *wgEngine) setEndpointLocked(k wgtypes.Key) error {
	set := "public_key=" + hex.EncodeToString(k[:]) + "\nupdate_only=true\nendpoint=" + bind.EndpointString(k) + "\n"
	if err := e.dev.IpcSet(set); err != nil {
		return fmt.Errorf("set the endpoint of peer %s on %s: %w", k, e.cfg.Interface, err)
	}
	return nil
}

// SetPrivateKey implements Engine.
func (e *wgEngine) SetPrivateKey(k wgtypes.Key) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("engine closed")
	}
	if err := e.wg.ConfigureDevice(e.cfg.Interface, wgtypes.Config{PrivateKey: &k}); err != nil {
		return fmt.Errorf("set private key on %s: %w", e.cfg.Interface, err)
	}
	e.cfg.PrivateKey = k
	since := time.Now()
	for peer := range e.applied {
		for _, d := range rekeyNudges {
			e.nudgeLocked(peer, d, since)
		}
	}
	return nil
}

// rekeyNudges are when, after a key change, the engine starts a new
// handshake with each peer that has none since: a peer drops handshakes
// for a key it has not learned yet, and WireGuard itself retries only
// after 5 s.
var rekeyNudges = []time.Duration{0, 150 * time.Millisecond, 400 * time.Millisecond, time.Second}

// nudgeLocked starts a handshake with peer k after d unless one completed
// after since.
func (e *wgEngine) nudgeLocked(k wgtypes.Key, d time.Duration, since time.Time) {
	e.greeters.Add(1)
	t := time.AfterFunc(d, func() {
		defer e.greeters.Done()
		if dev, err := e.wg.Device(e.cfg.Interface); err == nil {
			for _, p := range dev.Peers {
				if p.PublicKey == k && p.LastHandshakeTime.After(since) {
					return
				}
			}
		}
		if p := e.dev.LookupPeer(device.NoisePublicKey(k)); p != nil {
			p.ExpireCurrentKeypairs()
			p.SendKeepalive()
		}
	})
	e.timers = append(e.timers, t)
}

// greetNudges are when, after greeting a new peer, the engine starts a
// fresh handshake again if none has completed since the peer was added.
var greetNudges = []time.Duration{250 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second}

// greetConfirm is when, after greeting a new peer, the greeter starts one
// more handshake whatever happened: see greetLocked.
const greetConfirm = 750 * time.Millisecond

// awaitGreeting is how long a new peer's side that does not greet holds
// its own handshake initiations for the peer's greeting (bind.AwaitGreeting):
// well above the gap between two agents applying one netmap.
const awaitGreeting = time.Second

// greetsLocked reports whether this node greets peer k when it is added:
// of two new peers the one with the smaller key does; with eager (after
// this node's restart), this node does whatever the order.
func (e *wgEngine) greetsLocked(k wgtypes.Key, eager bool) bool {
	self := e.cfg.PrivateKey.PublicKey()
	return eager || bytes.Compare(self[:], k[:]) < 0
}

// greetLocked starts a handshake with a peer just added, if this node is
// its greeter (greetsLocked), so that traffic can flow at once; WireGuard
// itself would start one only for a packet to send, and retry a lost one
// only after 5 s.
//
// Two initiations that cross go wrong in wireguard-go: both sides can end
// holding only an unconfirmed responder session and no handshake of their
// own allowed for 5 s, or, when one side finishes the other's response on
// one worker after the other's initiation replaced its index on another,
// with a session that works one way only (see bind.Watch). So only one
// side greets, and the other holds its own initiations until it has
// answered the greeting (bind.AwaitGreeting, for awaitGreeting).
//
// The greeter nudges again, after each of greetNudges, while no handshake
// has completed: it discards whatever handshake it has in flight and
// starts a fresh one, which the other side, having none allowed of its
// own, just answers; a first greeting dropped by a peer that did not know
// this node yet is repaired so. At greetConfirm it starts one more
// handshake whatever happened, so that a session a late crossing left
// one-way is replaced before the first TCP retransmit: the other side,
// holding a session it takes for good, starts none, so nothing crosses it.
func (e *wgEngine) greetLocked(k wgtypes.Key, eager bool) {
	if !e.greetsLocked(k, eager) {
		return
	}
	if p := e.dev.LookupPeer(device.NoisePublicKey(k)); p != nil {
		p.SendKeepalive()
	}
	for _, d := range greetNudges {
		e.nudgeLocked(k, d, time.Time{})
	}
	e.nudgeLocked(k, greetConfirm, farFuture)
}

// farFuture is a time no handshake completes after: nudgeLocked with it
// nudges in any case.
var farFuture = time.Unix(1<<40, 0)

// setAddrsLocked gives the link the node's addresses with the overlay
// prefix lengths, which also routes the overlay prefixes into the link.
func (e *wgEngine) setAddrsLocked(self, prefixes []netip.Prefix) error {
	var want []netip.Prefix
	for _, a := range self {
		for _, p := range prefixes {
			if p.Contains(a.Addr()) {
				want = append(want, netip.PrefixFrom(a.Addr(), p.Bits()))
			}
		}
	}
	if slices.Equal(want, e.addrs) {
		return nil
	}
	for _, old := range e.addrs {
		if !slices.Contains(want, old) {
			netlink.AddrDel(e.link, nlAddr(old))
		}
	}
	for _, a := range want {
		if err := netlink.AddrReplace(e.link, nlAddr(a)); err != nil {
			return fmt.Errorf("set address %s on %s: %w", a, e.cfg.Interface, err)
		}
	}
	e.addrs = want
	e.guardLocked()
	return nil
}

// guardLocked (re)installs the underlay guard for the link's addresses. A
// host without nftables runs without it, with a warning.
func (e *wgEngine) guardLocked() {
	if e.guard != nil {
		e.guard.Close()
		e.guard = nil
	}
	var addrs []netip.Addr
	for _, p := range e.addrs {
		addrs = append(addrs, p.Addr())
	}
	if len(addrs) == 0 {
		return
	}
	g, err := newUnderlayGuard(e.cfg.Interface, e.link.Attrs().Index, addrs)
	if err != nil {
		e.log.Warn("packets for the overlay addresses are not blocked on other interfaces", "err", err)
		return
	}
	e.guard = g
}

func nlAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = 0x80 // IFA_F_NODAD: usable at once, no duplicate address detection wait
	}
	return a
}

// Stats implements Engine.
func (e *wgEngine) Stats() (map[string]PeerStats, error) {
	d, err := e.wg.Device(e.cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", e.cfg.Interface, err)
	}
	out := make(map[string]PeerStats, len(d.Peers))
	for _, p := range d.Peers {
		s := PeerStats{LastHandshake: p.LastHandshakeTime, RxBytes: p.ReceiveBytes, TxBytes: p.TransmitBytes}
		if p.Endpoint != nil {
			s.Endpoint = p.Endpoint.String()
		}
		out[p.PublicKey.String()] = s
	}
	return out, nil
}

// Close implements Engine. Closing the device closes the TUN, and the
// kernel removes the interface with its addresses and routes.
func (e *wgEngine) Close() error {
	e.mu.Lock()
	stopWatch := e.stopWatch
	e.closed, e.stopWatch = true, nil
	for _, t := range e.timers {
		if t.Stop() {
			e.greeters.Done()
		}
	}
	e.timers = nil
	if e.guard != nil {
		if err := e.guard.Close(); err != nil {
			e.log.Warn("underlay guard not removed", "err", err)
		}
		e.guard = nil
	}
	e.mu.Unlock()
	e.greeters.Wait()
	if stopWatch != nil {
		close(stopWatch)
		<-e.watchDone
	}
	if e.uapi != nil {
		e.uapi.Close()
		// Closing the listener leaves the socket file; wg(8) would list a
		// dead interface.
		os.Remove(uapiSocket(e.cfg.Interface))
	}
	if e.dev != nil {
		e.dev.Close()
	}
	e.uapiWG.Wait()
	if e.wg != nil {
		e.wg.Close()
	}
	return nil
}
