package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The internet and the sites.
//
// The "internet" is a second bridge, "inet", in the switch namespace, on
// 203.0.113.0/24; public hosts and the uplinks ("wan") of site routers get
// 203.0.113.N in order of AddPublicHost and AddSite. Site number i (0, 1,
// 2... in order of AddSite) has the LAN 192.0.2.32i/27: its router holds
// .32i+1 on the bridge "lan" in its own namespace, its hosts .32i+2 on.
// Nothing has a route to a site's LAN but its router and its hosts.
const (
	// InternetBridge is the name of the internet's bridge in the switch
	// namespace (e.g. to Capture on it).
	InternetBridge = "inet"
	// RouterWAN and RouterLAN name a site router's uplink and LAN bridge.
	RouterWAN = "wan"
	RouterLAN = "lan"

	siteBits = 27 // the size of a site's LAN
)

var (
	internet = netip.MustParsePrefix("203.0.113.0/24") // TEST-NET-3 (RFC 5737)
	siteLANs = netip.MustParsePrefix("192.0.2.0/24")   // TEST-NET-1, carved into /27s
)

// portRange is an inclusive range of ports for a NAT's mappings.
type portRange struct{ lo, hi uint16 }

func (r portRange) String() string { return fmt.Sprintf("%d-%d", r.lo, r.hi) }

var (
	// hardRange holds a hard NAT's mappings until its first Rebind.
	hardRange = portRange{30000, 65535}
	// rebindRanges hold every NAT's mappings after a Rebind, alternately:
	// disjoint from each other and from hardRange, so that every Rebind
	// moves every mapping.
	rebindRanges = [2]portRange{{10000, 19999}, {20000, 29999}}
)

// NATKind is how a site's router translates and filters.
type NATKind int

const (
	// NATEasy maps endpoint-independently ("masquerade"): a LAN socket
	// keeps one public ip:port for every destination, and that port is the
	// socket's own port when no other flow holds it.
	NATEasy NATKind = iota + 1
	// NATHard maps endpoint-dependently ("masquerade random"): every
	// destination sees another random port.
	NATHard
	// NATUDPBlocked is NATEasy whose router drops all UDP from the LAN
	// to the internet; TCP passes.
	NATUDPBlocked
)

// String returns "easy", "hard" or "udp-blocked".
func (k NATKind) String() string {
	switch k {
	case NATEasy:
		return "easy"
	case NATHard:
		return "hard"
	case NATUDPBlocked:
		return "udp-blocked"
	default:
		return "NATKind(" + strconv.Itoa(int(k)) + ")"
	}
}

// Site is a LAN behind a NAT router. Create it with Lab.AddSite.
//
// Its router forwards between LAN and internet, masquerades what leaves on
// its uplink, and lets in from the internet only what belongs to a flow
// that a LAN host started (replies, and ICMP errors about them). It drops
// what else comes to its own address but ICMP, as a home router does: an
// unsolicited UDP packet delivered to it would leave a conntrack entry
// that makes the NAT map a LAN host's later flow back to the sender to
// another port, which no hole punching expects. Hosts on the same LAN
// reach each other directly, without NAT or filter.
type Site struct {
	// Name is the name given to AddSite.
	Name string
	// Kind is the NAT the router does.
	Kind NATKind
	// Router is the router's namespace. Its Addr is the public address
	// on RouterWAN; it holds the LAN's first address on RouterLAN.
	Router *Host
	// LAN is the site's subnet, a /27 of 192.0.2.0/24.
	LAN netip.Prefix

	lab *Lab

	// mu guards the fields below, and serialises changes of the ruleset.
	mu         sync.Mutex
	nhosts     int  // hosts added
	rebinds    int  // Rebinds done
	udpBlocked bool // outbound UDP dropped
}

// AddPublicHost creates the namespace "<prefix>-<name>" with eth0 on the
// internet bridge and the address 203.0.113.N/24. It has no default route,
// so no route to any site's LAN. It fails the test on error.
func (l *Lab) AddPublicHost(name string) *Host {
	l.t.Helper()
	h, err := l.addPublicHost(name)
	if err != nil {
		l.t.Fatalf("lab: add public host %q: %v", name, err)
	}
	return h
}

func (l *Lab) addPublicHost(name string) (*Host, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	addr, err := l.internetAddr()
	if err != nil {
		return nil, err
	}
	h := &Host{Name: name, NS: l.prefix + "-" + name, Addr: addr, lab: l}
	if err := l.addNS(h.NS); err != nil {
		return nil, err
	}
	if err := l.plugInternet(h.NS, hostLink, addr); err != nil {
		return nil, err
	}
	return h, nil
}

// AddSite creates a site: a router namespace "<prefix>-<name>" with its
// uplink on the internet (203.0.113.N) and the bridge of a LAN of its own
// (the next /27 of 192.0.2.0/24, up to 8 sites), IP forwarding on, and the
// nftables NAT of kind. Add hosts with Site.AddHost. It fails the test on
// error.
func (l *Lab) AddSite(name string, kind NATKind) *Site {
	l.t.Helper()
	s, err := l.addSite(name, kind)
	if err != nil {
		l.t.Fatalf("lab: add site %q: %v", name, err)
	}
	return s
}

func (l *Lab) addSite(name string, kind NATKind) (*Site, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if kind < NATEasy || kind > NATUDPBlocked {
		return nil, fmt.Errorf("unknown NAT kind %v", kind)
	}
	l.mu.Lock()
	i := l.nsites
	l.nsites++
	l.mu.Unlock()
	if i >= 1<<(siteBits-siteLANs.Bits()) {
		return nil, fmt.Errorf("too many sites: 192.0.2.0/24 holds %d /%d LANs", 1<<(siteBits-siteLANs.Bits()), siteBits)
	}
	b := siteLANs.Addr().As4()
	b[3] = byte(i << (32 - siteBits))
	lan := netip.PrefixFrom(netip.AddrFrom4(b), siteBits)

	wan, err := l.internetAddr()
	if err != nil {
		return nil, err
	}
	s := &Site{
		Name:       name,
		Kind:       kind,
		Router:     &Host{Name: name, NS: l.prefix + "-" + name, Addr: wan, lab: l},
		LAN:        lan,
		lab:        l,
		udpBlocked: kind == NATUDPBlocked,
	}
	ns := s.Router.NS
	if err := l.addNS(ns); err != nil {
		return nil, err
	}
	if err := l.plugInternet(ns, RouterWAN, wan); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"link", "add", RouterLAN, "type", "bridge"},
		{"addr", "add", netip.PrefixFrom(lan.Addr().Next(), siteBits).String(), "dev", RouterLAN},
		{"link", "set", RouterLAN, "up"},
	} {
		if err := ipIn(ns, args...); err != nil {
			return nil, err
		}
	}
	if err := s.Router.Do(routerSysctls); err != nil {
		return nil, err
	}
	if err := s.apply(); err != nil {
		return nil, err
	}
	return s, nil
}

// routerSysctls turns IP forwarding on in the current namespace, and keeps
// frames bridged between LAN hosts out of the IP hooks (br_netfilter would
// otherwise show them to conntrack and to the ruleset).
func routerSysctls() error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
		return fmt.Errorf("ip forwarding: %w", err)
	}
	err := os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-iptables", []byte("0"), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) { // no br_netfilter: nothing to turn off
		return fmt.Errorf("bridge netfilter: %w", err)
	}
	return nil
}

// AddHost creates the namespace "<prefix>-<name>" with eth0 on the site's
// LAN, the next free address of the LAN, and a default route via the
// router. It fails the test on error.
func (s *Site) AddHost(name string) *Host {
	s.lab.t.Helper()
	h, err := s.addHost(name)
	if err != nil {
		s.lab.t.Fatalf("lab: site %s: add host %q: %v", s.Name, name, err)
	}
	return h
}

func (s *Site) addHost(name string) (*Host, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.nhosts++
	n := s.nhosts
	s.mu.Unlock()
	addr := s.LAN.Addr().Next() // the router's
	for range n {
		addr = addr.Next()
	}
	if !s.LAN.Contains(addr.Next()) { // the last is the broadcast address
		return nil, fmt.Errorf("too many hosts for the LAN %v", s.LAN)
	}
	h := &Host{Name: name, NS: s.lab.prefix + "-" + name, Addr: addr, lab: s.lab}
	if err := s.lab.addNS(h.NS); err != nil {
		return nil, err
	}
	if err := plug(h.NS, hostLink, netip.PrefixFrom(addr, siteBits), s.Router.NS, s.lab.portName(), RouterLAN); err != nil {
		return nil, err
	}
	if err := ipIn(h.NS, "route", "add", "default", "via", s.LAN.Addr().Next().String()); err != nil {
		return nil, err
	}
	return h, nil
}

// PublicAddr returns the router's address on the internet, the address
// that the site's outbound flows are masqueraded to.
func (s *Site) PublicAddr() netip.Addr { return s.Router.Addr }

// Rebind makes every NAT mapping of the site anew on a new port, as a NAT
// that reboots or expires its mappings does: it moves the mappings to a
// port range disjoint from the one used so far (the two rebind ranges
// alternate) and flushes the router's connection tracking. The next packet
// of every flow then leaves from a new public port, what is sent to the old
// one no longer reaches the LAN, and TCP connections through the NAT break.
// One exception: masquerade keeps a port that is in its range, so the first
// Rebind of an easy NAT leaves a socket bound to a port in 10000-19999
// where it was.
func (s *Site) Rebind() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rebinds++
	if err := s.applyLocked(); err != nil {
		return err
	}
	if err := s.flushConntrack(); err != nil {
		return fmt.Errorf("site %s: rebind: %w", s.Name, err)
	}
	return nil
}

// BlockUDP makes the router drop (block) or forward (!block) the UDP
// that LAN hosts send to the internet, in flows already started too.
func (s *Site) BlockUDP(block bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.udpBlocked = block
	return s.applyLocked()
}

func (s *Site) apply() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyLocked()
}

// applyLocked replaces the router's ruleset, atomically, with the one for
// the site's state. s.mu must be held.
func (s *Site) applyLocked() error {
	if err := nft(s.Router.NS, s.rulesetLocked()); err != nil {
		return fmt.Errorf("site %s: %w", s.Name, err)
	}
	return nil
}

// rulesetLocked returns the nft script for the site's state: the table
// (named after the lab's prefix) is created, deleted and made again in one
// transaction. s.mu must be held.
func (s *Site) rulesetLocked() string {
	// Ports are mapped for TCP and UDP; other protocols (ICMP) only
	// have their source address changed.
	var ports, random string
	if s.Kind == NATHard {
		random = " random"
		ports = " to :" + hardRange.String()
	}
	if s.rebinds > 0 {
		ports = " to :" + rebindRanges[(s.rebinds-1)%2].String()
	}
	masq := fmt.Sprintf("oifname %q meta l4proto { tcp, udp } masquerade%s%s\n\t\toifname %[1]q masquerade%[3]s",
		RouterWAN, ports, random)
	var blockUDP string
	if s.udpBlocked {
		blockUDP = fmt.Sprintf("oifname %q meta l4proto udp drop", RouterWAN)
	}
	t := s.lab.prefix
	return fmt.Sprintf(`table ip %[1]s
delete table ip %[1]s
table ip %[1]s {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		%[3]s
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname %[2]q ct state established,related accept
		iifname %[2]q drop
		%[4]s
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname %[2]q ct state established,related accept
		iifname %[2]q meta l4proto icmp accept
		iifname %[2]q drop
	}
}
`, t, RouterWAN, masq, blockUDP)
}

// flushConntrack deletes every IPv4 conntrack entry in the router's
// namespace.
func (s *Site) flushConntrack() error {
	ns, err := netns.GetFromName(s.Router.NS)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", s.Router.NS, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", s.Router.NS, err)
	}
	defer h.Close()
	if err := h.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		return fmt.Errorf("flush conntrack in %s: %w", s.Router.NS, err)
	}
	return nil
}

// internetAddr makes the internet bridge if needed and returns the next
// free address on it.
func (l *Lab) internetAddr() (netip.Addr, error) {
	l.inetOnce.Do(func() {
		for _, args := range [][]string{
			{"link", "add", InternetBridge, "type", "bridge"},
			{"link", "set", InternetBridge, "up"},
		} {
			if err := ipIn(l.sw.NS, args...); err != nil {
				l.inetErr = fmt.Errorf("internet: %w", err)
				return
			}
		}
	})
	if l.inetErr != nil {
		return netip.Addr{}, l.inetErr
	}
	l.mu.Lock()
	l.ninet++
	n := l.ninet
	l.mu.Unlock()
	if n >= 255 {
		return netip.Addr{}, errors.New("too many hosts and sites for the /24 internet")
	}
	b := internet.Addr().As4()
	b[3] = byte(n)
	return netip.AddrFrom4(b), nil
}

// plugInternet wires dev in namespace ns to the internet bridge with addr.
func (l *Lab) plugInternet(ns, dev string, addr netip.Addr) error {
	return plug(ns, dev, netip.PrefixFrom(addr, internet.Bits()), l.sw.NS, l.portName(), InternetBridge)
}

// portName returns a new name for the bridge end of a veth pair, unique in
// the lab: "<prefix>p<n>", at most 6+1+3 bytes.
func (l *Lab) portName() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nports++
	return l.prefix + "p" + strconv.Itoa(l.nports)
}

// checkName rejects names that cannot be part of a namespace name.
func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		return errors.New("invalid host name")
	}
	return nil
}

// nft runs the nft script in namespace ns ("ip netns exec NS nft -f -").
func nft(ns, script string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}
