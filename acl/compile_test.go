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

// smallInventory is the inventory of the golden tests.
func smallInventory() []Node {
	return []Node{
		testNode(1, "web-1", "tag:web"),
		testNode(2, "web-2", "tag:web", "tag:canary"),
		testNode(3, "api-1", "tag:api"),
		testNode(4, "db-1", "tag:db"),
		testNode(5, "bastion", "tag:ops"),
		testNode(6, "printer"),
		testNode(7, "lonely", "tag:lonely"),
	}
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
		fmt.Fprintf(&b, "%s (%s %s)\n", n.Name, n.Addrs[0].Addr(), strings.Join(n.Tags, ","))
		peers := peerNames(c, nodes, n.ID)
		if len(peers) == 0 {
			peers = []string{"(none)"}
		}
		fmt.Fprintf(&b, "  peers: %s\n", strings.Join(peers, ", "))
		rules := c.Rules(n.ID)
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
			if r, p := c.Rules(n.ID), peerNames(c, nodes, n.ID); r != nil || p != nil {
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
			if r, p := c.Rules(id(name)), peerNames(c, nodes, id(name)); len(r) != 0 || len(p) != 0 {
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
		if r := c.Rules(id("bastion")); len(r) != 1 || prefixesText(r[0].Srcs) != "100.64.0.5/32 fd77:6d65:7368::5/128" {
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
		r := c.Rules(id("web-1"))
		if len(r) == 0 || prefixesText(r[0].Srcs) != "0.0.0.0/0 ::/0" || protoText(r[0].Protos) != "icmp,icmpv6" {
			t.Errorf("web-1's first rule: %+v, want srcs 0.0.0.0/0 ::/0, protos icmp,icmpv6", r)
		}
	})
	t.Run("ports merged", func(t *testing.T) {
		c := compile("selectors.hujson")
		var got []string
		for _, r := range c.Rules(id("api-1")) {
			got = append(got, portsText(r.Ports))
		}
		for _, want := range []string{"80-101,443,8443", "22,1000-2501", "*"} {
			if !slices.Contains(got, want) {
				t.Errorf("api-1's rules have ports %q, want one with %q", got, want)
			}
		}
	})
	t.Run("unknown node", func(t *testing.T) {
		c := compile("oneway.hujson")
		if r := c.Rules(999); r != nil {
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
