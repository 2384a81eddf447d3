package node

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wiremesh/wiremesh/filter"
	"github.com/wiremesh/wiremesh/node/bind"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// dataPath is the agent's part that carries packets: the WireGuard engine
// on the bind that picks each peer's path, the relay clients, the packet
// filter with its flow log, and the netmap they run on. It calls no other
// part; its methods hold mu only to read or swap netmap.
type dataPath struct {
	log                *slog.Logger
	relayOnly, noRelay bool
	engine             Engine
	bind               *bind.Bind
	relays             *relays
	tun                *releasingTUN                         // nil with a fake engine
	filter             *filter.Filter                        // nil with Config.NoFilter
	flows              *flowLog                              // nil with Config.NoFilter
	names              atomic.Pointer[map[netip.Addr]string] // overlay address → node name, for the filter's log

	mu        sync.Mutex
	netmap    *wire.Netmap     // guarded by mu; the applied netmap
	stun      []netip.AddrPort // guarded by mu; the STUN servers given to the bind
	stunSince time.Time        // guarded by mu; when stun last changed
}

// newDataPath makes the relay clients' holder, the bind, the flow log, the
// filter and the engine, with the node's key; knownToPeers: see
// EngineConfig.KnownToPeers. onCandidates is called (from the bind's
// goroutine; it must not block) when the node's candidates change. Close
// it.
func newDataPath(cfg *Config, key wgtypes.Key, knownToPeers bool, onCandidates func()) (_ *dataPath, err error) {
	d := &dataPath{log: cfg.Logger, relayOnly: cfg.RelayOnly, noRelay: cfg.NoRelay}
	d.relays = newRelays(key, dialRelayClient, d.log)
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	bcfg := bind.DefaultConfig()
	bcfg.PrivateKey = key
	bcfg.Relays = d.relays
	bcfg.RelayOnly, bcfg.NoRelay = cfg.RelayOnly, cfg.NoRelay
	bcfg.ExcludeInterfaces = []string{cfg.Interface}
	bcfg.OnCandidates = func([]netip.AddrPort) { onCandidates() }
	bcfg.Log = d.log
	for _, e := range cfg.Endpoints {
		bcfg.Endpoints = append(bcfg.Endpoints, netip.MustParseAddrPort(e)) // checked by Config.Validate
	}
	if d.bind, err = bind.New(bcfg); err != nil {
		return nil, err
	}
	d.relays.deliver = d.bind.DeliverRelayed
	ecfg := EngineConfig{
		Interface: cfg.Interface, ListenPort: cfg.ListenPort, MTU: cfg.MTU,
		PrivateKey: key, Logger: d.log, KnownToPeers: knownToPeers, Bind: d.bind,
	}
	if cfg.NoFilter {
		d.log.Warn("packet filter is off: every peer reaches every port (--unsafe-no-filter)")
	} else {
		if d.flows, err = newFlowLog(cfg.FlowRecords, cfg.FlowLog, d.nameOf, d.log); err != nil {
			return nil, err
		}
		fcfg := filter.DefaultConfig()
		fcfg.Logger = d.log
		fcfg.NameOf = d.nameOf
		fcfg.Flows, fcfg.NewFlows = d.flows.in, cfg.LogNewFlows
		if d.filter, err = filter.New(fcfg); err != nil {
			return nil, err
		}
	}
	ecfg.WrapTUN = func(t tun.Device) tun.Device {
		if d.filter != nil {
			t = filter.Wrap(t, d.filter)
		}
		d.tun = newReleasingTUN(t)
		return d.tun
	}
	eng, err := cfg.NewEngine(ecfg)
	if err != nil {
		return nil, err
	}
	d.engine = eng
	return d, nil
}

// close removes the interface (closing the bind), stops the relay
// clients, then the filter, and closes the flow log file. Call it after
// the flow log's run returned.
func (d *dataPath) close() {
	if d.engine != nil {
		d.engine.Close()
	}
	d.relays.close()
	if d.filter != nil {
		d.filter.Close()
	}
	if d.flows != nil {
		d.flows.closeFile()
	}
}

// apply runs the data path on nm: the filter's rules first, so that a peer
// that a new policy removes is cut before it goes, and a new peer's flows
// are judged by rules that know it; then the engine's peers. It is called
// by one goroutine at a time (Run's, then the netmap stream's).
func (d *dataPath) apply(nm *wire.Netmap) error {
	names := make(map[netip.Addr]string, len(nm.Peers))
	for _, p := range nm.Peers {
		for _, ad := range p.Addresses {
			names[ad.Addr()] = p.Name
		}
	}
	d.names.Store(&names)
	if d.filter != nil {
		d.filter.SetRules(filter.CompilePolicy(nm.PolicyVersion, localPrefixes(nm.Self), nm.FilterRules()))
	}
	d.applyPaths(nm)
	if err := d.engine.Apply(nm); err != nil {
		return err
	}
	d.mu.Lock()
	d.netmap = nm
	d.mu.Unlock()
	return nil
}

// applyPaths gives the bind each peer's candidates and the relays' STUN
// servers, and the relay clients the relay map (none with --no-relay).
func (d *dataPath) applyPaths(nm *wire.Netmap) {
	peers := make(map[[32]byte]bind.PeerInfo, len(nm.Peers))
	for _, p := range nm.Peers {
		key, err := wgtypes.ParseKey(p.PublicKey)
		if err != nil {
			continue // the engine says so
		}
		var info bind.PeerInfo
		for _, e := range p.Endpoints {
			if a, err := netip.ParseAddrPort(e); err == nil {
				info.Candidates = append(info.Candidates, a)
			}
		}
		peers[key] = info
	}
	d.bind.SetPeers(peers)
	if d.noRelay {
		d.relays.set(nil)
	} else {
		d.relays.set(nm.Relays)
	}
	stun := relaySTUN(nm.Relays, d.log)
	d.mu.Lock()
	changed := !slices.Equal(stun, d.stun)
	if changed {
		d.stun, d.stunSince = stun, time.Now()
	}
	d.mu.Unlock()
	if changed {
		d.bind.SetSTUNServers(stun)
	}
}

// setKey makes k the node's key on the interface, for the bind's probes
// and for the relays.
func (d *dataPath) setKey(k wgtypes.Key) error {
	if err := d.engine.SetPrivateKey(k); err != nil {
		return err
	}
	if err := d.bind.SetPrivateKey(k); err != nil {
		return err
	}
	d.relays.setKey(k)
	return nil
}

// stunSettled reports whether the node's candidates include what STUN
// has to say: it has no STUN servers, their round found the NAT type, or
// they had long enough (a round's timeout, with a margin) to answer.
func (d *dataPath) stunSettled() bool {
	d.mu.Lock()
	n, since := len(d.stun), d.stunSince
	d.mu.Unlock()
	return n == 0 || d.bind.NAT() != bind.NATUnknown || time.Since(since) > bind.STUNTimeout+time.Second
}

// current returns the applied netmap (nil before the first).
func (d *dataPath) current() *wire.Netmap {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.netmap
}

// selfKey is the node's public key in the applied netmap; empty: none.
func (d *dataPath) selfKey() string {
	if nm := d.current(); nm != nil {
		return nm.Self.PublicKey
	}
	return ""
}

// localPrefixes are the destinations the filter lets packets in for:
// the node's own overlay addresses, each as a single host (as the engine
// sets them on the link), whatever prefix length the netmap gives.
func localPrefixes(self wire.Node) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(self.Addresses))
	for _, p := range self.Addresses {
		out = append(out, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
	}
	return out
}

// nameOf names the peer that owns an overlay address ("" if none).
func (d *dataPath) nameOf(ad netip.Addr) string {
	if m := d.names.Load(); m != nil {
		return (*m)[ad]
	}
	return ""
}

// runFlows runs the flow log, if there is one, until ctx is done.
func (d *dataPath) runFlows(ctx context.Context) {
	if d.flows != nil {
		d.flows.run(ctx)
	}
}
