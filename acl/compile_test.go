package acl

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// testNode returns node n with addresses 100.64.0.N/32 and
// fd77:6d65:7368::N/128 (N in hex for the IPv6 address).
func testNode(n int, name string, tags ...string) Node {
	return Node{
		ID:   int64(n),
		Name: name,
		Tags: tags,
		Addrs: []netip.Prefix{
			netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, byte(n >> 8), byte(n)}), 32),
			netip.PrefixFrom(v6Addr(n), 128),
		},
	}
}

func v6Addr(n int) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0x77, 0x6d, 0x65, 0x73, 0x68, 14: byte(n >> 8), 15: byte(n)})
}

// withServices returns n running the services given, and tagged so that
// a policy without "services" lets it provide them (tag:web for web).
func withServices(n Node, svcs ...NodeService) Node {
	n.Services = svcs
	n.Tags = slices.Clone(n.Tags)
	for _, s := range svcs {
		if t := "tag:" + s.Name; !slices.Contains(n.Tags, t) {
			n.Tags = append(n.Tags, t)
		}
	}
	return n
}

func tcp(name string, port uint16) NodeService {
	return NodeService{Name: name, Port: port, Proto: wire.ProtoTCP}
}

func udp(name string, port uint16) NodeService {
	return NodeService{Name: name, Port: port, Proto: wire.ProtoUDP}
}

// smallInventory is the inventory of the golden tests. The two web nodes
// run "web" on different ports; the printer runs "ipp" on TCP and UDP.
func smallInventory() []Node {
	return []Node{
		withServices(testNode(1, "web-1", "tag:web"), tcp("web", 8080)),
		withServices(testNode(2, "web-2", "tag:web", "tag:canary"), tcp("web", 8081)),
		withServices(testNode(3, "api-1", "tag:api"), tcp("api", 443), tcp("metrics", 9100)),
		withServices(testNode(4, "db-1", "tag:db"), tcp("db", 5432), tcp("metrics", 9100)),
		testNode(5, "bastion", "tag:ops"),
		withServices(testNode(6, "printer"), tcp("ipp", 631), udp("ipp", 631)),
		testNode(7, "lonely", "tag:lonely"),
	}
}

// servicesText renders a node's services as "svc:web/8080/tcp ...".
func servicesText(svcs []NodeService) string {
	var out []string
	for _, s := range svcs {
		out = append(out, fmt.Sprintf("svc:%s/%d/%s", s.Name, s.Port, protoText([]uint8{s.Proto})))
	}
	return strings.Join(out, " ")
}

// protoText names protocols independently of the package.
func protoText(ps []uint8) string {
	if ps == nil {
		return "any (tcp,udp,icmp,icmpv6)"
	}
	names := map[uint8]string{1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
	var out []string
	for _, p := range ps {
		if n, ok := names[p]; ok {
			out = append(out, n)
		} else {
			out = append(out, fmt.Sprint(p))
		}
	}
	return strings.Join(out, ",")
}

func prefixesText(ps []netip.Prefix) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return strings.Join(out, " ")
}

// peerNames returns the names of node id's peers, sorted.
func peerNames(c *Compiled, nodes []Node, id int64) []string {
	var out []string
	c.Peers(id, func(i int) { out = append(out, nodes[i].Name) })
	slices.Sort(out)
	return out
}

// renderNetmaps renders every node's inbound rules and peers.
func renderNetmaps(c *Compiled, nodes []Node) string {
	var b strings.Builder
	for _, n := range nodes {
		about := strings.Join(n.Tags, ",")
		if len(n.Services) > 0 {
			about = strings.TrimPrefix(about+" "+servicesText(n.Services), " ")
		}
		fmt.Fprintf(&b, "%s (%s %s)\n", n.Name, n.Addrs[0].Addr(), about)
		peers := peerNames(c, nodes, n.ID)
		if len(peers) == 0 {
			peers = []string{"(none)"}
		}
		fmt.Fprintf(&b, "  peers: %s\n", strings.Join(peers, ", "))
		rules := resolved(c, n.ID)
		if len(rules) == 0 {
			b.WriteString("  rules: (none)\n")
		}
		for i, r := range rules {
			fmt.Fprintf(&b, "  rule %d\n    srcs:   %s\n    protos: %s\n    ports:  %s\n", i+1, prefixesText(r.Srcs), protoText(r.Protos), portsText(r.Ports))
		}
	}
	return b.String()
}

func TestCompileGolden(t *testing.T) {
	nodes := smallInventory()
	files, err := filepath.Glob("testdata/compile/*.hujson")
	if err != nil || len(files) == 0 {
		t.Fatalf("no policies in testdata/compile: %v", err)
	}
	cases := map[string]*Policy{"nil": nil}
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Parse(filepath.Base(f), text)
		if err != nil {
			t.Fatal(err)
		}
		cases[strings.TrimSuffix(filepath.Base(f), ".hujson")] = p
	}
	for _, name := range sortedKeys(cases) {
		t.Run(name, func(t *testing.T) {
			c := Compile(cases[name], nodes)
			got := "# policy " + name + ": every node's inbound rules and peers\n\n" + renderNetmaps(c, nodes)
			golden := filepath.Join("testdata", "golden", name+".txt")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("netmaps differ from %s (run with -update to accept):\n%s", golden, lineDiff(string(want), got))
			}
		})
	}
}

// lineDiff shows the lines of want and got that differ, in order.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n\t-%s\n\t+%s\n", i+1, wl, gl)
		}
	}
	return b.String()
}

// The golden files fix the whole output; these state the properties the
// issue asks for, so that a wrong -update does not go unnoticed.
func TestCompileProperties(t *testing.T) {
	nodes := smallInventory()
	id := func(name string) int64 {
		for _, n := range nodes {
			if n.Name == name {
				return n.ID
			}
		}
		t.Fatalf("no node %q", name)
		return 0
	}
	compile := func(file string) *Compiled {
		text, err := os.ReadFile(filepath.Join("testdata", "compile", file))
		if err != nil {
			t.Fatal(err)
		}
		p, err := Parse(file, text)
		if err != nil {
			t.Fatal(err)
		}
		return Compile(p, nodes)
	}

	t.Run("nil policy", func(t *testing.T) {
		c := Compile(nil, nodes)
		for _, n := range nodes {
			if r, p := resolved(c, n.ID), peerNames(c, nodes, n.ID); r != nil || p != nil {
				t.Errorf("%s: rules %v, peers %v; want none", n.Name, r, p)
			}
		}
		if c.Policy() != nil {
			t.Errorf("Policy() = %v, want nil", c.Policy())
		}
		if err := c.RunTests(); err != nil {
			t.Errorf("RunTests: %v", err)
		}
	})
	t.Run("allowed nothing sees no peers", func(t *testing.T) {
		c := compile("basic.hujson")
		for _, name := range []string{"printer", "bastion", "lonely"} {
			if r, p := resolved(c, id(name)), peerNames(c, nodes, id(name)); len(r) != 0 || len(p) != 0 {
				t.Errorf("%s: rules %v, peers %v; want none", name, r, p)
			}
			for _, n := range nodes {
				if slices.Contains(peerNames(c, nodes, n.ID), name) {
					t.Errorf("%s sees %s as a peer", n.Name, name)
				}
			}
		}
	})
	t.Run("peers both ways", func(t *testing.T) {
		c := compile("oneway.hujson")
		if got := peerNames(c, nodes, id("bastion")); len(got) != len(nodes)-1 {
			t.Errorf("bastion's peers: %v, want every other node", got)
		}
		// "*:22" covers bastion itself: its only rule admits its own addresses.
		if r := resolved(c, id("bastion")); len(r) != 1 || prefixesText(r[0].Srcs) != "100.64.0.5/32 fd77:6d65:7368::5/128" {
			t.Errorf("bastion's rules: %v, want one, from its own addresses only", r)
		}
		for _, n := range nodes {
			if n.Name != "bastion" && !slices.Contains(peerNames(c, nodes, n.ID), "bastion") {
				t.Errorf("%s does not see bastion", n.Name)
			}
		}
		if got := peerNames(c, nodes, id("web-1")); !slices.Equal(got, []string{"api-1", "bastion"}) {
			t.Errorf("web-1's peers: %v, want [api-1 bastion]", got)
		}
		if got := peerNames(c, nodes, id("api-1")); !slices.Equal(got, []string{"bastion", "web-1"}) {
			t.Errorf("api-1's peers: %v, want [bastion web-1]", got)
		}
	})
	t.Run("star source is every address", func(t *testing.T) {
		c := compile("selectors.hujson")
		r := resolved(c, id("web-1"))
		if len(r) == 0 || prefixesText(r[0].Srcs) != "0.0.0.0/0 ::/0" || protoText(r[0].Protos) != "icmp,icmpv6" {
			t.Errorf("web-1's first rule: %+v, want srcs 0.0.0.0/0 ::/0, protos icmp,icmpv6", r)
		}
	})
	t.Run("ports merged", func(t *testing.T) {
		c := compile("selectors.hujson")
		var got []string
		for _, r := range resolved(c, id("api-1")) {
			got = append(got, portsText(r.Ports))
		}
		for _, want := range []string{"80-101,443,8443", "22,1000-2501", "*"} {
			if !slices.Contains(got, want) {
				t.Errorf("api-1's rules have ports %q, want one with %q", got, want)
			}
		}
	})
	t.Run("services", func(t *testing.T) {
		c := compile("services.hujson")
		if err := c.RunTests(); err != nil {
			t.Errorf("RunTests: %v", err)
		}
		// web-1 and web-2 are in the same rules, on their own ports.
		for name, want := range map[string]string{"web-1": "8080", "web-2": "8081"} {
			if r := resolved(c, id(name)); len(r) == 0 || portsText(r[0].Ports) != want {
				t.Errorf("%s's rules: %v, want the first on port %s only", name, r, want)
			}
		}
		if got := peerNames(c, nodes, id("printer")); !slices.Equal(got, []string{"bastion"}) {
			t.Errorf("printer's peers: %v, want [bastion]", got)
		}
	})
	t.Run("unknown node", func(t *testing.T) {
		c := compile("oneway.hujson")
		if r := resolved(c, 999); r != nil {
			t.Errorf("Rules(999) = %v, want nil", r)
		}
		c.Peers(999, func(i int) { t.Errorf("Peers(999) called fn(%d)", i) })
		if ok, rule := c.Allows(999, 1, wire.ProtoTCP, 22); ok || rule != 0 {
			t.Errorf("Allows(999, 1) = %v, %d", ok, rule)
		}
		if ok, rule := c.Allows(5, 999, wire.ProtoTCP, 22); ok || rule != 0 {
			t.Errorf("Allows(5, 999) = %v, %d", ok, rule)
		}
	})
	t.Run("no nodes", func(t *testing.T) {
		p, err := Parse("p", []byte(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}], "tests": [{"src": "*", "deny": ["*:22"]}]}`))
		if err != nil {
			t.Fatal(err)
		}
		c := Compile(p, nil)
		if err := c.RunTests(); err != nil {
			t.Errorf("RunTests: %v", err)
		}
		if d := Diff(Compile(nil, nil), c); d != nil {
			t.Errorf("Diff = %v", d)
		}
	})
}

func TestNormalizePorts(t *testing.T) {
	for _, tt := range []struct {
		in, want []wire.PortRange
	}{
		{nil, nil},
		{[]wire.PortRange{pr(5, 5)}, []wire.PortRange{pr(5, 5)}},
		{[]wire.PortRange{pr(10, 20), pr(1, 5)}, []wire.PortRange{pr(1, 5), pr(10, 20)}},
		{[]wire.PortRange{pr(1, 5), pr(6, 9)}, []wire.PortRange{pr(1, 9)}},
		{[]wire.PortRange{pr(1, 5), pr(7, 9)}, []wire.PortRange{pr(1, 5), pr(7, 9)}},
		{[]wire.PortRange{pr(1, 50), pr(10, 20)}, []wire.PortRange{pr(1, 50)}},
		{[]wire.PortRange{pr(80, 80), pr(80, 80)}, []wire.PortRange{pr(80, 80)}},
		{[]wire.PortRange{pr(65535, 65535), wire.AllPorts}, []wire.PortRange{wire.AllPorts}},
		{[]wire.PortRange{pr(65534, 65535), pr(1, 65533)}, []wire.PortRange{pr(1, 65535)}},
	} {
		in := slices.Clone(tt.in)
		if got := normalizePorts(in); !slices.Equal(got, tt.want) {
			t.Errorf("normalizePorts(%v) = %v, want %v", tt.in, got, tt.want)
		}
		if !slices.Equal(in, tt.in) {
			t.Errorf("normalizePorts modified its argument: %v, was %v", in, tt.in)
		}
	}
}

// TestCompileServices checks svc: selectors over nodes that differ only in
// the ports they run a service on.
func TestCompileServices(t *testing.T) {
	nodes := []Node{
		testNode(1, "client", "tag:client"),
		withServices(testNode(2, "a", "tag:x"), tcp("web", 80)),
		withServices(testNode(3, "b", "tag:x"), tcp("web", 81)),
		withServices(testNode(4, "c", "tag:x"), tcp("web", 80)),
		withServices(testNode(5, "d", "tag:x"), tcp("web", 80), tcp("web", 8080), tcp("other", 81)),
		withServices(testNode(6, "e", "tag:x"), tcp("web", 80), udp("web", 80)),
		withServices(testNode(7, "f", "tag:x"), udp("dns", 53)),
	}
	const client, a, b, c, d, e, f = 1, 2, 3, 4, 5, 6, 7
	rulePorts := func(cp *Compiled, id int64) []string {
		var out []string
		for _, r := range resolved(cp, id) {
			out = append(out, protoText(r.Protos)+" "+portsText(r.Ports))
		}
		return out
	}

	t.Run("own ports", func(t *testing.T) {
		cp := mustCompile(t, `{"acls": [{"action": "accept", "src": ["tag:client"], "dst": ["svc:web"], "proto": "tcp"}]}`, nodes)
		for _, tt := range []struct {
			id   int64
			want []string
		}{
			{a, []string{"tcp 80"}},
			{b, []string{"tcp 81"}},
			{c, []string{"tcp 80"}},
			{d, []string{"tcp 80,8080"}},
			{e, []string{"tcp 80"}},
			{f, nil},
			{client, nil},
		} {
			if got := rulePorts(cp, tt.id); !slices.Equal(got, tt.want) {
				t.Errorf("rules of node %d: %q, want %q", tt.id, got, tt.want)
			}
		}
		// a, c and e share a class; b and d, in the same rules, do not.
		if cp.classOf[a-1] != cp.classOf[c-1] || cp.classOf[a-1] != cp.classOf[e-1] {
			t.Errorf("classes of a, c, e: %d %d %d; want one", cp.classOf[a-1], cp.classOf[c-1], cp.classOf[e-1])
		}
		if cp.classOf[a-1] == cp.classOf[b-1] || cp.classOf[a-1] == cp.classOf[d-1] || cp.classOf[b-1] == cp.classOf[d-1] {
			t.Errorf("classes of a, b, d: %d %d %d; want three", cp.classOf[a-1], cp.classOf[b-1], cp.classOf[d-1])
		}
		if got, want := peerNames(cp, nodes, client), []string{"a", "b", "c", "d", "e"}; !slices.Equal(got, want) {
			t.Errorf("client's peers: %v, want %v", got, want)
		}
		if got := peerNames(cp, nodes, b); !slices.Equal(got, []string{"client"}) {
			t.Errorf("b's peers: %v, want [client]", got)
		}
		for _, tt := range []struct {
			dst  int64
			port uint16
			ok   bool
		}{
			{a, 80, true}, {a, 81, false}, {b, 80, false}, {b, 81, true},
			{d, 80, true}, {d, 8080, true}, {d, 81, false}, {f, 53, false},
		} {
			if ok, _ := cp.Allows(client, tt.dst, wire.ProtoTCP, tt.port); ok != tt.ok {
				t.Errorf("Allows(client → %d, tcp/%d) = %v, want %v", tt.dst, tt.port, ok, tt.ok)
			}
		}
	})
	t.Run("proto is the rule's", func(t *testing.T) {
		cp := mustCompile(t, `{"acls": [{"action": "accept", "src": ["tag:client"], "dst": ["svc:dns", "svc:web"]}]}`, nodes)
		if got, want := rulePorts(cp, f), []string{"any (tcp,udp,icmp,icmpv6) 53"}; !slices.Equal(got, want) {
			t.Errorf("rules of f: %q, want %q", got, want)
		}
		for _, proto := range []uint8{wire.ProtoTCP, wire.ProtoUDP, wire.ProtoICMP} {
			if ok, _ := cp.Allows(client, f, proto, 53); !ok {
				t.Errorf("Allows(client → f, %s/53) = false, want true", ProtoName(proto))
			}
			if ok, _ := cp.Allows(client, b, proto, 81); !ok {
				t.Errorf("Allows(client → b, %s/81) = false, want true", ProtoName(proto))
			}
		}
	})
	t.Run("explicit ports", func(t *testing.T) {
		cp := mustCompile(t, `{"acls": [{"action": "accept", "src": ["tag:client"], "dst": ["svc:web:9000", "svc:other:81"], "proto": "tcp"}]}`, nodes)
		for id, want := range map[int64][]string{a: {"tcp 9000"}, b: {"tcp 9000"}, d: {"tcp 81,9000"}, f: nil} {
			if got := rulePorts(cp, id); !slices.Equal(got, want) {
				t.Errorf("rules of node %d: %q, want %q", id, got, want)
			}
		}
		if cp.classOf[a-1] != cp.classOf[b-1] {
			t.Errorf("a and b are in classes %d and %d; with the same ports, want one", cp.classOf[a-1], cp.classOf[b-1])
		}
	})
	t.Run("source", func(t *testing.T) {
		cp := mustCompile(t, `{
  "groups": {"group:dns": ["svc:dns"]},
  "acls": [
    {"action": "accept", "src": ["svc:other", "group:dns"], "dst": ["tag:client:22"], "proto": "tcp"},
  ],
}`, nodes)
		r := resolved(cp, client)
		if len(r) != 1 || prefixesText(r[0].Srcs) != "100.64.0.5/32 100.64.0.7/32 fd77:6d65:7368::5/128 fd77:6d65:7368::7/128" {
			t.Errorf("client's rules: %v, want one from d's and f's addresses", r)
		}
		if got := peerNames(cp, nodes, client); !slices.Equal(got, []string{"d", "f"}) {
			t.Errorf("client's peers: %v, want [d f]", got)
		}
	})
	t.Run("instances come and go", func(t *testing.T) {
		p, err := Parse("p", []byte(`{"acls": [{"action": "accept", "src": ["tag:client"], "dst": ["svc:web"], "proto": "tcp"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		now := slices.Clone(nodes)
		now[b-1] = withServices(now[b-1], tcp("web", 9090)) // moved
		now[c-1] = withServices(now[c-1])                   // deregistered
		now[f-1] = withServices(now[f-1], tcp("web", 80))   // registered
		cp := Compile(p, now)
		for id, want := range map[int64][]string{a: {"tcp 80"}, b: {"tcp 9090"}, c: nil, f: {"tcp 80"}} {
			if got := rulePorts(cp, id); !slices.Equal(got, want) {
				t.Errorf("rules of node %d: %q, want %q", id, got, want)
			}
		}
		if got, want := peerNames(cp, now, client), []string{"a", "b", "d", "e", "f"}; !slices.Equal(got, want) {
			t.Errorf("client's peers: %v, want %v", got, want)
		}
	})
	t.Run("unknown service", func(t *testing.T) {
		cp := mustCompile(t, `{"acls": [{"action": "accept", "src": ["svc:nope", "tag:client"], "dst": ["svc:nope", "svc:nope:1"]}]}`, nodes)
		for _, n := range nodes {
			if r, p := resolved(cp, n.ID), peerNames(cp, nodes, n.ID); r != nil || p != nil {
				t.Errorf("%s: rules %v, peers %v; want none", n.Name, r, p)
			}
		}
	})
}

// resolved returns node id's rules with their source nodes' addresses in
// Srcs (sorted), as an agent's filter takes them.
func resolved(c *Compiled, id int64) []wire.FilterRule {
	rules := slices.Clone(wire.ResolveRules(c.Rules(id), func(x int64) []netip.Prefix {
		if i, ok := c.index[x]; ok {
			return c.nodes[i].Addrs
		}
		return nil
	}))
	for i := range rules {
		rules[i].Srcs = dedupPrefixes(slices.Clone(rules[i].Srcs))
	}
	return rules
}
