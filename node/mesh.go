package node

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wiremesh/wiremesh/dns"
	"github.com/wiremesh/wiremesh/gossip"
	"github.com/wiremesh/wiremesh/wire"
)

// joinEvery is how often the mesh loop looks for peers that gossip does
// not know, to join them.
const joinEvery = 2 * time.Second

// selfRTT is the round-trip time the agent gives its own node, so that
// nearest-first answers put local instances first (zero would mean
// "unknown" and sort last).
const selfRTT = time.Nanosecond

// mesh is the agent's part that gossips and serves DNS: one goroutine,
// run, owns the serf member and builds the DNS catalog. Others read the
// member through member; run calls the data path and the services (for
// the netmap, the local health and the services report's wake-ups) and
// holds no lock.
type mesh struct {
	cfg  gossip.Config // Config.Gossip
	off  bool          // Config.NoGossip
	log  *slog.Logger
	data *dataPath
	svc  *services
	dns  *dns.Server // nil with DNS off; set by Run before run starts

	applied chan struct{}                 // a value after a netmap is applied (buffered 1)
	member  atomic.Pointer[gossip.Member] // set once run started the serf member, for status, metrics and ping
}

// newMesh makes the mesh part; Run sets dns and starts run.
func newMesh(cfg *Config, data *dataPath, svc *services) *mesh {
	return &mesh{cfg: cfg.Gossip, off: cfg.NoGossip, log: cfg.Logger, data: data, svc: svc, applied: make(chan struct{}, 1)}
}

// netmapApplied wakes run to look at the applied netmap.
func (m *mesh) netmapApplied() {
	select {
	case m.applied <- struct{}{}:
	default:
	}
}

// run owns the agent's serf member: it starts it once a netmap carries
// gossip settings, keeps its keys and the local health in its tags in line,
// joins peers that gossip does not know, and rebuilds the DNS catalog whenever the
// netmap, the membership or the local checks change. It returns when ctx
// is done, after leaving the gossip pool.
func (m *mesh) run(ctx context.Context) {
	var (
		mem     *gossip.Member
		keys    []string
		changes <-chan struct{}
		joining sync.WaitGroup
		inJoin  bool
		joined  = make(chan struct{}, 1)
	)
	joinCtx, stopJoin := context.WithCancel(ctx)
	defer func() {
		stopJoin()
		if mem != nil {
			if err := mem.Close(); err != nil {
				m.log.Warn("leave gossip", "err", err)
			}
		}
		joining.Wait()
	}()
	tick := time.NewTicker(joinEvery)
	defer tick.Stop()
	healthDirty := true
	for {
		nm := m.data.current()
		if mem == nil && nm != nil && nm.Gossip != nil && !m.off {
			var err error
			if mem, err = m.startGossip(nm); err != nil {
				m.log.Error("gossip not started; retrying", "err", err)
			} else {
				keys, changes, healthDirty = nm.Gossip.Keys, mem.Changes(), true
				m.member.Store(mem)
			}
		}
		if mem != nil && nm.Gossip != nil && !slices.Equal(keys, nm.Gossip.Keys) {
			if err := setKeys(mem, nm.Gossip.Keys); err != nil {
				m.log.Error("gossip keys not changed", "err", err)
			} else {
				keys = nm.Gossip.Keys
				m.log.Info("gossip keys changed", "keys", len(keys))
			}
		}
		local := m.svc.status()
		var members []gossip.MemberInfo
		if mem != nil {
			members = mem.Members()
		}
		m.setCatalog(nm, local, members, mem != nil)
		if mem != nil && healthDirty {
			if err := mem.SetHealth(gossipHealth(local)); err != nil {
				m.log.Error("service health not gossiped", "err", err)
			}
			healthDirty = false
		}
		var addrs []netip.AddrPort
		if mem != nil && !inJoin {
			addrs = toJoin(nm, members)
		}
		if len(addrs) > 0 {
			inJoin = true
			joining.Add(1)
			go func() {
				defer joining.Done()
				m.join(joinCtx, mem, addrs)
				joined <- struct{}{}
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-m.applied:
		case <-changes:
		case <-m.svc.runner.Changes():
			healthDirty = true
			m.svc.wakeReport()
		case <-m.svc.changed:
			healthDirty = true
			m.svc.wakeReport()
		case <-joined:
			inJoin = false
		case <-tick.C:
		}
	}
}

// startGossip starts the node's serf member on its overlay IPv4 address.
func (m *mesh) startGossip(nm *wire.Netmap) (*gossip.Member, error) {
	cfg := m.cfg
	cfg.Name = nm.Self.Name
	for _, p := range nm.Self.Addresses {
		if p.Addr().Is4() {
			cfg.BindAddr = p.Addr()
		}
	}
	cfg.Port = nm.Gossip.Port
	var err error
	if cfg.Keys, err = decodeKeys(nm.Gossip.Keys); err != nil {
		return nil, err
	}
	cfg.Logger = m.log.With("sub", "gossip")
	mem, err := gossip.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	m.log.Info("gossip up", "addr", netip.AddrPortFrom(cfg.BindAddr, uint16(cfg.Port)).String())
	return mem, nil
}

func decodeKeys(keys []string) ([][]byte, error) {
	out := make([][]byte, 0, len(keys))
	for i, k := range keys {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return nil, fmt.Errorf("gossip key %d from the coordinator is not base64: %w", i+1, err)
		}
		out = append(out, b)
	}
	return out, nil
}

func setKeys(m *gossip.Member, keys []string) error {
	b, err := decodeKeys(keys)
	if err != nil {
		return err
	}
	return m.SetKeys(b)
}

// toJoin returns the gossip addresses of the peers that gossip does not
// know: at the start all of them, later new nodes. Serf itself tries to
// reconnect to failed members, and a member that left joins again when it
// comes back.
func toJoin(nm *wire.Netmap, members []gossip.MemberInfo) []netip.AddrPort {
	known := make(map[string]bool, len(members))
	for _, mi := range members {
		known[mi.Name] = true
	}
	var out []netip.AddrPort
	for _, p := range nm.Peers {
		if known[p.Name] {
			continue
		}
		for _, ad := range p.Addresses {
			if ad.Addr().Is4() {
				out = append(out, netip.AddrPortFrom(ad.Addr(), uint16(nm.Gossip.Port)))
			}
		}
	}
	return out
}

// join contacts the addresses one by one in random order until one
// answers: one member is enough to learn the whole membership, and serf
// joins one at a time, so a peer that is down costs a connection timeout.
func (m *mesh) join(ctx context.Context, mem *gossip.Member, addrs []netip.AddrPort) {
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	for _, ap := range addrs {
		if ctx.Err() != nil {
			return
		}
		n, err := mem.Join([]netip.AddrPort{ap})
		if n > 0 {
			return
		}
		m.log.Debug("gossip join failed", "addr", ap.String(), "err", err)
	}
}

// gossipHealth is the local services' health as gossip carries it.
func gossipHealth(local []ServiceStatus) map[string]wire.Health {
	out := make(map[string]wire.Health, len(local))
	for _, s := range local {
		out[s.Name] = s.Health
	}
	return out
}

// setCatalog rebuilds the DNS catalog, if the agent serves DNS.
func (m *mesh) setCatalog(nm *wire.Netmap, local []ServiceStatus, members []gossip.MemberInfo, gossipOn bool) {
	if m.dns == nil || nm == nil {
		return
	}
	nodes, insts := catalog(nm, local, members, gossipOn)
	snap, err := dns.NewSnapshot(nodes, insts, nil)
	if err != nil {
		m.log.Debug("dns catalog has entries it cannot serve", "err", err)
	}
	m.dns.SetSnapshot(snap)
}

// catalog is what DNS serves: the node itself with its local services and
// their checks, and the netmap's peers with the services the coordinator
// says this node may reach. With gossip on, a peer is alive only while
// gossip shows it alive, and its services have the health its member tags
// carry (a service they do not name yet is critical: it has not shown it
// is healthy). Without gossip, peers count as alive and passing.
func catalog(nm *wire.Netmap, local []ServiceStatus, members []gossip.MemberInfo, gossipOn bool) ([]dns.NodeRecord, []dns.Instance) {
	byName := make(map[string]*gossip.MemberInfo, len(members))
	for i := range members {
		byName[members[i].Name] = &members[i]
	}
	nodes := make([]dns.NodeRecord, 0, len(nm.Peers)+1)
	var insts []dns.Instance
	nodes = append(nodes, dns.NodeRecord{Name: nm.Self.Name, Addrs: addrsOf(nm.Self), Alive: true, RTT: selfRTT})
	for _, s := range local {
		insts = append(insts, dns.Instance{Service: s.Name, Node: nm.Self.Name, Port: s.Port, Tags: s.Tags, Health: s.Health})
	}
	for _, p := range nm.Peers {
		nr := dns.NodeRecord{Name: p.Name, Addrs: addrsOf(p), Alive: !gossipOn}
		mi := byName[p.Name]
		if mi != nil {
			nr.Alive, nr.RTT = mi.Status == gossip.Alive, mi.RTT
		}
		nodes = append(nodes, nr)
		for _, sv := range p.Services {
			in := dns.Instance{Service: sv.Name, Node: p.Name, Port: sv.Port, Tags: sv.Tags}
			if gossipOn {
				in.Health = wire.Critical
				if mi != nil {
					if h, ok := mi.Health[sv.Name]; ok {
						in.Health = h
					}
				}
			}
			insts = append(insts, in)
		}
	}
	return nodes, insts
}

func addrsOf(n wire.Node) []netip.Addr {
	out := make([]netip.Addr, 0, len(n.Addresses))
	for _, p := range n.Addresses {
		out = append(out, p.Addr())
	}
	return out
}
