package bind

import (
	"crypto/rand"
	"math/big"
	"net"
	"net/netip"
	"slices"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/wiremesh/wiremesh/relay/stun"
)

// NATType is what the STUN answers say about this node's NAT.
type NATType string

// The NAT types.
const (
	NATUnknown    NATType = "unknown"     // no STUN servers, or too few answers to tell
	NATNone       NATType = "none"        // a server saw a local address and port
	NATEasy       NATType = "easy"        // two servers saw the same ip:port
	NATHard       NATType = "hard"        // two servers saw different ones
	NATUDPBlocked NATType = "udp_blocked" // no server answered
)

// localState is this node's side: addresses, STUN, candidates. Guarded by
// Bind.mu.
type localState struct {
	prefixes    []netip.Prefix
	nextPoll    int64
	servers     []netip.AddrPort
	stunPending map[[12]byte]netip.AddrPort // txid → server
	answers     map[netip.AddrPort]netip.AddrPort
	roundEnd    int64 // never: no round running
	nextSTUN    int64
	stunned     bool // a round ran since Open
	reflexive   []netip.AddrPort
	nat         NATType
	candidates  []netip.AddrPort
}

func newLocalState(servers []netip.AddrPort) localState {
	l := localState{servers: slices.Clone(servers), nat: NATUnknown}
	l.restart()
	return l
}

// restart makes the next tick read the addresses and run STUN.
func (l *localState) restart() {
	l.nextPoll, l.nextSTUN, l.roundEnd, l.stunned = never, never, never, false
	l.stunPending = map[[12]byte]netip.AddrPort{}
	l.answers = map[netip.AddrPort]netip.AddrPort{}
}

// SetSTUNServers replaces the STUN servers and runs a round soon.
func (b *Bind) SetSTUNServers(servers []netip.AddrPort) {
	b.mu.Lock()
	b.local.servers = slices.Clone(servers)
	b.local.nextSTUN = never
	b.mu.Unlock()
	b.kick()
}

// Rebind reads the local addresses, asks STUN and probes every active
// peer's candidates again now: for the agent to call when the host's
// network changed.
func (b *Bind) Rebind() {
	b.mu.Lock()
	b.local.nextPoll, b.local.nextSTUN = never, never
	for _, p := range b.peers {
		p.mu.Lock()
		p.lastProbe, p.fastRounds = never, 0
		p.mu.Unlock()
	}
	b.mu.Unlock()
	b.kick()
}

// LocalCandidates returns this node's candidates, best first: operator
// endpoints, STUN-reflexive addresses, interface addresses; at most
// MaxCandidates.
func (b *Bind) LocalCandidates() []netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.local.candidates)
}

// NAT returns the NAT type the last STUN round found.
func (b *Bind) NAT() NATType {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.local.nat
}

// refreshLocal reads the local addresses when due, ends and starts STUN
// rounds, and reports changed candidates (also to its caller).
func (b *Bind) refreshLocal(now int64) (changed bool) {
	var prefixes []netip.Prefix
	b.mu.Lock()
	poll := now-b.local.nextPoll >= 0
	if poll {
		b.local.nextPoll = now + int64(b.t.InterfacePoll)
	}
	b.mu.Unlock()
	if poll {
		var err error
		if prefixes, err = b.interfaceAddrs(); err != nil {
			b.log.Warn("local addresses unreadable", "err", err)
			poll = false
		}
	}

	b.mu.Lock()
	l := &b.local
	moved := poll && !slices.Equal(prefixes, l.prefixes)
	if moved {
		l.prefixes = prefixes
		b.prefixes.Store(&prefixes)
		if l.stunned {
			l.nextSTUN = never // new addresses: ask STUN again now
		}
	}
	if l.roundEnd != never && (now >= l.roundEnd || len(l.stunPending) == 0) {
		b.endSTUNLocked()
	}
	var reqs map[[12]byte]netip.AddrPort
	if l.roundEnd == never && len(l.servers) > 0 && now >= l.nextSTUN && (!l.stunned || b.anyActiveLocked(now)) {
		reqs = b.startSTUNLocked(now)
	}
	cands := computeCandidates(b.cfg.Endpoints, l.reflexive, l.prefixes, b.port)
	changed = !slices.Equal(cands, l.candidates)
	l.candidates = cands
	b.mu.Unlock()

	for txid, server := range reqs {
		if err := b.inner.Send([][]byte{stun.Request(txid)}, &conn.StdNetEndpoint{AddrPort: server}); err != nil {
			b.log.Debug("stun request not sent", "addr", server, "err", err)
		}
	}
	if moved {
		b.relabelPaths()
	}
	if changed {
		b.log.Info("local candidates changed", "addrs", cands)
		if b.cfg.OnCandidates != nil {
			b.cfg.OnCandidates(slices.Clone(cands))
		}
	}
	return changed
}

func (b *Bind) anyActiveLocked(now int64) bool {
	for _, p := range b.peers {
		if p.activeAt(now, b.t.Active) {
			return true
		}
	}
	return false
}

func (b *Bind) startSTUNLocked(now int64) map[[12]byte]netip.AddrPort {
	l := &b.local
	reqs := map[[12]byte]netip.AddrPort{}
	for _, s := range l.servers {
		var txid [12]byte
		_, _ = rand.Read(txid[:])
		reqs[txid] = s
		l.stunPending[txid] = s
	}
	clear(l.answers)
	l.roundEnd = now + int64(b.t.STUNTimeout)
	spread := int64(b.t.STUNMax - b.t.STUNMin)
	jitter := int64(0)
	if spread > 0 {
		n, _ := rand.Int(rand.Reader, big.NewInt(spread))
		jitter = n.Int64()
	}
	l.nextSTUN = now + int64(b.t.STUNMin) + jitter
	l.stunned = true
	return reqs
}

func (b *Bind) endSTUNLocked() {
	l := &b.local
	l.roundEnd = never
	clear(l.stunPending)
	l.reflexive = l.reflexive[:0]
	for _, s := range l.servers {
		if a, ok := l.answers[s]; ok && !slices.Contains(l.reflexive, a) {
			l.reflexive = append(l.reflexive, a)
		}
	}
	nat := natType(len(l.servers), l.answers, l.prefixes, b.port)
	if nat != l.nat {
		b.log.Info("nat type", "nat", string(nat), "addrs", l.reflexive)
	}
	l.nat = nat
}

// handleSTUN takes a STUN answer from src.
func (b *Bind) handleSTUN(pkt []byte, src netip.AddrPort) {
	txid, mapped, err := stun.ParseResponse(pkt)
	if err != nil {
		b.stats.garbage.Add(1)
		return
	}
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	b.mu.Lock()
	defer b.mu.Unlock()
	if server, ok := b.local.stunPending[txid]; ok && server == src {
		delete(b.local.stunPending, txid)
		b.local.answers[server] = netip.AddrPortFrom(mapped.Addr().Unmap(), mapped.Port())
	}
}

// natType tells the NAT type from the STUN answers of a round.
func natType(servers int, answers map[netip.AddrPort]netip.AddrPort, local []netip.Prefix, port uint16) NATType {
	switch {
	case servers == 0:
		return NATUnknown
	case len(answers) == 0:
		return NATUDPBlocked
	}
	seen := map[netip.AddrPort]bool{}
	for _, a := range answers {
		if a.Port() == port && slices.ContainsFunc(local, func(p netip.Prefix) bool { return p.Addr() == a.Addr() }) {
			return NATNone
		}
		seen[a] = true
	}
	switch {
	case len(answers) < 2:
		return NATUnknown
	case len(seen) == 1:
		return NATEasy
	}
	return NATHard
}

// computeCandidates orders and bounds the local candidates.
func computeCandidates(ops, reflexive []netip.AddrPort, prefixes []netip.Prefix, port uint16) []netip.AddrPort {
	var out []netip.AddrPort
	add := func(a netip.AddrPort) {
		a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		if len(out) < MaxCandidates && a.Port() != 0 && !a.Addr().IsUnspecified() && !a.Addr().IsMulticast() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for _, a := range ops {
		add(a)
	}
	for _, a := range reflexive {
		add(a)
	}
	if port != 0 {
		for _, v6 := range []bool{false, true} {
			for _, p := range prefixes {
				if p.Addr().Unmap().Is6() == v6 {
					add(netip.AddrPortFrom(p.Addr(), port))
				}
			}
		}
	}
	return out
}

// isLocal reports whether ip is in one of this node's subnets.
func (b *Bind) isLocal(ip netip.Addr) bool {
	for _, p := range *b.prefixes.Load() {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// relabelPaths recomputes every path's LAN class after an address change.
func (b *Bind) relabelPaths() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.peers {
		p.mu.Lock()
		for _, q := range p.paths {
			q.lan = b.isLocal(q.addr.Addr())
		}
		p.mu.Unlock()
	}
}

func (b *Bind) interfaceAddrs() ([]netip.Prefix, error) {
	if b.cfg.InterfaceAddrs != nil {
		return b.cfg.InterfaceAddrs()
	}
	return systemAddrs(b.cfg.ExcludeInterfaces)
}

// systemAddrs lists the addresses of the up interfaces but loopback and
// those in exclude, without link-local ones.
func systemAddrs(exclude []string) ([]netip.Prefix, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 || slices.Contains(exclude, ifc.Name) {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || ip.Unmap().IsLinkLocalUnicast() {
				continue
			}
			ones, _ := ipn.Mask.Size()
			ip = ip.Unmap()
			if ip.Is4() && ones > 32 {
				ones -= 96
			}
			out = append(out, netip.PrefixFrom(ip, ones))
		}
	}
	return out, nil
}
