package node

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/dns"
	"github.com/wiremesh/wiremesh/gossip"
	"github.com/wiremesh/wiremesh/health"
	"github.com/wiremesh/wiremesh/wire"
)

func testNode(name string, i byte, svcs ...wire.Service) wire.Node {
	return wire.Node{Name: name, Addresses: []netip.Prefix{
		netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, i}), 32),
		netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 15: i}), 128),
	}, Services: svcs}
}

func TestCatalog(t *testing.T) {
	web := wire.Service{Name: "web", Port: 8080, Tags: []string{"v2"}}
	nm := &wire.Netmap{
		Self:   testNode("me", 1),
		Peers:  []wire.Node{testNode("up", 2, web), testNode("down", 3, web), testNode("unknown", 4, web), testNode("fresh", 5, web)},
		Gossip: &wire.Gossip{Port: 7946, Keys: []string{"k"}},
	}
	local := []ServiceStatus{{Name: "web", Port: 80, Health: health.Passing}, {Name: "jobs", Port: 9000, Health: health.Critical}}
	members := []gossip.MemberInfo{
		{Name: "me", Status: gossip.Alive},
		{Name: "up", Status: gossip.Alive, RTT: 3 * time.Millisecond, Health: map[string]gossip.Health{"web": gossip.Warning}},
		{Name: "down", Status: gossip.Failed, Health: map[string]gossip.Health{"web": gossip.Passing}},
		{Name: "fresh", Status: gossip.Alive}, // no health tag yet
	}
	addrs := func(n wire.Node) []netip.Addr { return addrsOf(n) }

	nodes, insts := catalog(nm, local, members, true)
	wantNodes := []dns.NodeRecord{
		{Name: "me", Addrs: addrs(nm.Self), Alive: true, RTT: selfRTT},
		{Name: "up", Addrs: addrs(nm.Peers[0]), Alive: true, RTT: 3 * time.Millisecond},
		{Name: "down", Addrs: addrs(nm.Peers[1])},
		{Name: "unknown", Addrs: addrs(nm.Peers[2])},
		{Name: "fresh", Addrs: addrs(nm.Peers[3]), Alive: true},
	}
	wantInsts := []dns.Instance{
		{Service: "web", Node: "me", Port: 80, Health: dns.Passing},
		{Service: "jobs", Node: "me", Port: 9000, Health: dns.Critical},
		{Service: "web", Node: "up", Port: 8080, Tags: []string{"v2"}, Health: dns.Warning},
		{Service: "web", Node: "down", Port: 8080, Tags: []string{"v2"}, Health: dns.Passing},
		{Service: "web", Node: "unknown", Port: 8080, Tags: []string{"v2"}, Health: dns.Critical},
		{Service: "web", Node: "fresh", Port: 8080, Tags: []string{"v2"}, Health: dns.Critical},
	}
	if d := cmp.Diff(wantNodes, nodes, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("nodes (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantInsts, insts); d != "" {
		t.Errorf("instances (-want +got):\n%s", d)
	}

	// Without gossip, peers are alive and their services passing.
	nodes, insts = catalog(nm, nil, nil, false)
	for _, n := range nodes {
		if !n.Alive {
			t.Errorf("without gossip, %s is not alive", n.Name)
		}
	}
	for _, in := range insts {
		if in.Health != dns.Passing {
			t.Errorf("without gossip, %s on %s is %v", in.Service, in.Node, in.Health)
		}
	}
}

func TestToJoin(t *testing.T) {
	nm := &wire.Netmap{
		Peers:  []wire.Node{testNode("up", 2), testNode("down", 3), testNode("new", 4)},
		Gossip: &wire.Gossip{Port: 7946},
	}
	members := []gossip.MemberInfo{{Name: "up", Status: gossip.Alive}, {Name: "down", Status: gossip.Failed}}
	got := toJoin(nm, members)
	want := []netip.AddrPort{netip.MustParseAddrPort("100.64.0.4:7946")} // failed members are serf's to reconnect
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); d != "" {
		t.Errorf("toJoin (-want +got):\n%s", d)
	}
}

func TestWithoutSelf(t *testing.T) {
	self := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53"), netip.MustParseAddrPort("100.64.0.1:53")}
	got := withoutSelf([]string{"127.0.0.1:53", "127.0.0.53:53", "100.64.0.1:53", "0.0.0.0:53", "192.0.2.1:53", "127.0.0.1:5353", "bad"}, self)
	want := []string{"127.0.0.53:53", "192.0.2.1:53", "127.0.0.1:5353", "bad"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("withoutSelf (-want +got):\n%s", d)
	}
}

// TestUpstreamsFromResolvConf: an agent given no --dns-upstream forwards
// to the nameservers of its resolv.conf, without its own addresses; given
// some, to those only.
func TestUpstreamsFromResolvConf(t *testing.T) {
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.1\nnameserver 192.0.2.53\nsearch mesh.internal\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	self := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")}
	for _, tc := range []struct {
		name string
		set  []string
		want []string
	}{
		{"from resolv.conf", nil, []string{"192.0.2.53:53"}},
		{"--dns-upstream", []string{"198.51.100.53"}, []string{"198.51.100.53:53"}},
	} {
		cfg := DefaultConfig()
		cfg.StateDir, cfg.ResolvConf, cfg.DNS.Upstreams = t.TempDir(), rc, tc.set
		if err := cfg.Validate(); err != nil { // as New does
			t.Fatal(err)
		}
		a := &Agent{cfg: cfg, log: slog.New(slog.DiscardHandler)}
		if d := cmp.Diff(tc.want, a.upstreams(self)); d != "" {
			t.Errorf("%s: upstreams (-want +got):\n%s", tc.name, d)
		}
	}
}
