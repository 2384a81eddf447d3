package acl

import (
	"slices"
	"strings"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

// mustCompile parses text as "policy.hujson" and compiles it against nodes.
func mustCompile(t testing.TB, text string, nodes []Node) *Compiled {
	t.Helper()
	p, err := Parse("policy.hujson", []byte(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return Compile(p, nodes)
}

// testsPolicy is the policy of TestRunTests; TESTS is replaced by the
// tests of a case, which start on line 10, column 5.
const testsPolicy = `{
  "acls": [
    {"action": "accept", "src": ["tag:web"], "dst": ["tag:api:443"]},
    {"action": "accept", "src": ["tag:web"], "dst": ["tag:api:22"]},
    {"action": "accept", "src": ["tag:web"], "dst": ["tag:api:8000-8099"], "proto": "tcp"},
    {"action": "accept", "src": ["tag:api"], "dst": ["tag:db:*"], "proto": "icmp"},
    {"action": "accept", "src": ["tag:ops"], "dst": ["tag:db:5432"], "proto": 132},
  ],
  "tests": [
    TESTS
  ],
}`

func TestRunTests(t *testing.T) {
	for _, tt := range []struct {
		name  string
		tests string
		want  []string
	}{{
		name:  "pass",
		tests: `{"src": "tag:web", "accept": ["tag:api:443", "tag:api:22", "tag:api:8000-8099"], "deny": ["tag:db:443", "tag:api:8100", "tag:api:7999", "node:printer:22"]},`,
	}, {
		name:  "deny fails, once per pair",
		tests: `{"src": "tag:web", "deny": ["tag:api:22"]},`,
		want: []string{
			`policy.hujson:10:5: test 1 failed: web-1 → api-1 on tcp/22 is allowed by rule 2 (line 4), but "tag:api:22" is in "deny"`,
			`policy.hujson:10:5: test 1 failed: web-2 → api-1 on tcp/22 is allowed by rule 2 (line 4), but "tag:api:22" is in "deny"`,
		},
	}, {
		name:  "accept checks the upper end of a range",
		tests: `{"src": "node:web-1", "accept": ["tag:api:8000-8100"]},`,
		want:  []string{`policy.hujson:10:5: test 1 failed: web-1 → api-1 on tcp/8100 is denied, but "tag:api:8000-8100" is in "accept"`},
	}, {
		name:  "accept checks the lower end of a range",
		tests: `{"src": "node:web-1", "accept": ["tag:api:7999-8099"]},`,
		want:  []string{`policy.hujson:10:5: test 1 failed: web-1 → api-1 on tcp/7999 is denied, but "tag:api:7999-8099" is in "accept"`},
	}, {
		name:  "deny checks both ends of a range",
		tests: `{"src": "node:web-1", "deny": ["tag:api:8099-8200", "tag:api:7000-8000"]},`,
		want: []string{
			`policy.hujson:10:5: test 1 failed: web-1 → api-1 on tcp/8099 is allowed by rule 3 (line 5), but "tag:api:8099-8200" is in "deny"`,
			`policy.hujson:10:5: test 1 failed: web-1 → api-1 on tcp/8000 is allowed by rule 3 (line 5), but "tag:api:7000-8000" is in "deny"`,
		},
	}, {
		name:  "udp",
		tests: `{"src": "node:web-1", "proto": "udp", "accept": ["tag:api:443", "tag:api:8000"]},`,
		want:  []string{`policy.hujson:10:5: test 1 failed: web-1 → api-1 on udp/8000 is denied, but "tag:api:8000" is in "accept"`},
	}, {
		name: "icmp",
		tests: `{"src": "tag:api", "proto": "icmp", "accept": ["tag:db:*"]},
    {"src": "node:web-1", "proto": "icmp", "deny": ["tag:api:*"]},`,
		want: []string{`policy.hujson:11:5: test 2 failed: web-1 → api-1 on icmp is allowed by rule 1 (line 3), but "tag:api:*" is in "deny"`},
	}, {
		name:  "protocol number with ports",
		tests: `{"src": "tag:ops", "proto": 132, "accept": ["tag:db:5432"], "deny": ["tag:db:5433", "tag:db:1-5431"]},`,
	}, {
		name:  "protocol number with ports, failing",
		tests: `{"src": "tag:ops", "proto": 132, "deny": ["tag:db:5000-5432"]},`,
		want:  []string{`policy.hujson:10:5: test 1 failed: bastion → db-1 on 132/5432 is allowed by rule 5 (line 7), but "tag:db:5000-5432" is in "deny"`},
	}, {
		name: "vacuous when no node matches",
		tests: `{"src": "tag:nobody", "deny": ["*:*"], "accept": ["*:*"]},
    {"src": "node:ghost", "accept": ["*:1"]},
    {"src": "tag:web", "accept": ["tag:nobody:22", "node:ghost:22", "10.9.0.0/16:22"]},
    {"src": "10.9.0.0/16", "accept": ["*:*"]},`,
	}, {
		name:  "a node is not tested against itself",
		tests: `{"src": "node:api-1", "accept": ["node:api-1:9"]},`,
	}, {
		name: "several tests, several failures",
		tests: `{"src": "node:web-2", "accept": ["node:api-1:443"]},
    {"src": "node:web-2", "accept": ["node:db-1:5432"], "deny": ["node:api-1:443"]},`,
		want: []string{
			`policy.hujson:11:5: test 2 failed: web-2 → db-1 on tcp/5432 is denied, but "node:db-1:5432" is in "accept"`,
			`policy.hujson:11:5: test 2 failed: web-2 → api-1 on tcp/443 is allowed by rule 1 (line 3), but "node:api-1:443" is in "deny"`,
		},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCompile(t, strings.Replace(testsPolicy, "TESTS", tt.tests, 1), smallInventory())
			var got []string
			if err := c.RunTests(); err != nil {
				list, ok := err.(ErrorList)
				if !ok {
					t.Fatalf("RunTests error is %T, want ErrorList", err)
				}
				for _, e := range list {
					got = append(got, e.Error())
				}
				if err.Error() != strings.Join(got, "\n") {
					t.Errorf("Error() = %q", err.Error())
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("RunTests:\n%s\nwant:\n%s", lines(got), lines(tt.want))
			}
		})
	}
}

// servicesTestsPolicy is the policy of TestRunTestsServices over
// smallInventory, where web-1 runs web on 8080 and web-2 on 8081; TESTS
// starts on line 7, column 5.
const servicesTestsPolicy = `{
  "acls": [
    {"action": "accept", "src": ["tag:api"], "dst": ["svc:web"], "proto": "tcp"},
    {"action": "accept", "src": ["svc:api"], "dst": ["tag:web:8080", "svc:db:5432"]},
  ],
  "tests": [
    TESTS
  ],
}`

func TestRunTestsServices(t *testing.T) {
	for _, tt := range []struct {
		name  string
		tests string
		want  []string
	}{{
		name:  "pass",
		tests: `{"src": "svc:api", "accept": ["svc:web", "svc:db", "svc:web:8080"], "deny": ["svc:web:8082", "svc:metrics", "svc:nobody", "svc:nobody:1"]},`,
	}, {
		name:  "udp",
		tests: `{"src": "node:api-1", "proto": "udp", "accept": ["svc:db"], "deny": ["svc:web:8081"]},`,
	}, {
		name:  "own ports, each instance probed",
		tests: `{"src": "tag:api", "deny": ["svc:web"]},`,
		want: []string{
			`policy.hujson:7:5: test 1 failed: api-1 → web-1 on tcp/8080 is allowed by rule 1 (line 3), but "svc:web" is in "deny"`,
			`policy.hujson:7:5: test 1 failed: api-1 → web-2 on tcp/8081 is allowed by rule 1 (line 3), but "svc:web" is in "deny"`,
		},
	}, {
		name:  "own ports, one instance denied",
		tests: `{"src": "tag:api", "proto": "udp", "accept": ["svc:web"]},`,
		want: []string{
			`policy.hujson:7:5: test 1 failed: api-1 → web-2 on udp/8081 is denied, but "svc:web" is in "accept"`,
		},
	}, {
		name:  "a service source",
		tests: `{"src": "svc:metrics", "accept": ["svc:web"]},`,
		want: []string{
			`policy.hujson:7:5: test 1 failed: db-1 → web-1 on tcp/8080 is denied, but "svc:web" is in "accept"`,
			`policy.hujson:7:5: test 1 failed: db-1 → web-2 on tcp/8081 is denied, but "svc:web" is in "accept"`,
		},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			c := mustCompile(t, strings.Replace(servicesTestsPolicy, "TESTS", tt.tests, 1), smallInventory())
			var got []string
			if err := c.RunTests(); err != nil {
				for _, e := range err.(ErrorList) {
					got = append(got, e.Error())
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("RunTests:\n%s\nwant:\n%s", lines(got), lines(tt.want))
			}
		})
	}
}

// TestRunTestsServicePorts: a svc destination without ports probes every
// port of every instance, not only the ends of the ranges they make up.
func TestRunTestsServicePorts(t *testing.T) {
	nodes := []Node{
		testNode(1, "client"),
		withServices(testNode(2, "web"), tcp("web", 10), tcp("web", 11), tcp("web", 12)),
	}
	c := mustCompile(t, `{
  "acls": [{"action": "accept", "src": ["node:client"], "dst": ["svc:web:10,12"]}],
  "tests": [{"src": "node:client", "accept": ["svc:web"]}],
}`, nodes)
	want := `policy.hujson:3:13: test 1 failed: client → web on tcp/11 is denied, but "svc:web" is in "accept"`
	if err := c.RunTests(); err == nil || err.Error() != want {
		t.Errorf("RunTests: %v\nwant: %s", err, want)
	}
}

func TestAllows(t *testing.T) {
	c := mustCompile(t, strings.Replace(testsPolicy, "TESTS", "", 1), smallInventory())
	const (
		web1, web2, api1, db1, bastion, printer = 1, 2, 3, 4, 5, 6
	)
	for _, tt := range []struct {
		src, dst int64
		proto    uint8
		port     uint16
		ok       bool
		rule     int
	}{
		{web1, api1, wire.ProtoTCP, 443, true, 1},
		{web1, api1, wire.ProtoUDP, 443, true, 1},
		{web1, api1, wire.ProtoICMP, 0, true, 1},
		{web1, api1, wire.ProtoICMPv6, 7, true, 1}, // no ports: the port is ignored
		{web1, api1, 47, 0, false, 0},              // absent proto: tcp, udp and icmp only
		{web1, api1, 132, 443, false, 0},
		{web1, api1, wire.ProtoTCP, 444, false, 0},
		{web1, api1, wire.ProtoTCP, 22, true, 2},
		{web2, api1, wire.ProtoTCP, 8000, true, 3},
		{web2, api1, wire.ProtoTCP, 8099, true, 3},
		{web2, api1, wire.ProtoTCP, 8100, false, 0},
		{web2, api1, wire.ProtoTCP, 7999, false, 0},
		{web2, api1, wire.ProtoUDP, 8000, false, 0},
		{api1, web1, wire.ProtoTCP, 443, false, 0}, // rules are one-way
		{api1, db1, wire.ProtoICMP, 0, true, 4},
		{api1, db1, wire.ProtoICMPv6, 0, true, 4},
		{api1, db1, wire.ProtoTCP, 1, false, 0},
		{bastion, db1, 132, 5432, true, 5},
		{bastion, db1, 132, 5433, false, 0},
		{bastion, db1, wire.ProtoTCP, 5432, false, 0},
		{printer, api1, wire.ProtoTCP, 443, false, 0},
		{api1, api1, wire.ProtoTCP, 443, false, 0},
	} {
		ok, rule := c.Allows(tt.src, tt.dst, tt.proto, tt.port)
		if ok != tt.ok || rule != tt.rule {
			t.Errorf("Allows(%d → %d, %d/%d) = %v, rule %d; want %v, rule %d", tt.src, tt.dst, tt.proto, tt.port, ok, rule, tt.ok, tt.rule)
		}
	}
}

// diffStrings returns the changes as text, and checks they are sorted by
// source, destination and protocol as Diff promises.
func diffStrings(t *testing.T, old, new *Compiled) []string {
	t.Helper()
	changes := Diff(old, new)
	var out []string
	for i, ch := range changes {
		out = append(out, ch.String())
		if i > 0 {
			a, b := changes[i-1], ch
			if strings.Compare(a.Src+"\x00"+a.Dst+"\x00"+a.Proto, b.Src+"\x00"+b.Dst+"\x00"+b.Proto) > 0 {
				t.Errorf("Diff out of order: %q before %q", a, b)
			}
		}
	}
	return out
}

// flip turns gains into losses and losses into gains.
func flip(changes []string) []string {
	var out []string
	for _, s := range changes {
		switch s[0] {
		case '+':
			out = append(out, "-"+s[1:])
		case '-':
			out = append(out, "+"+s[1:])
		}
	}
	return out
}

func sorted(ss []string) []string {
	ss = slices.Clone(ss)
	slices.Sort(ss)
	return ss
}

const (
	diffOld = `{"acls": [
  {"action": "accept", "src": ["tag:web"], "dst": ["tag:api:443,8000-8099"], "proto": "tcp"},
  {"action": "accept", "src": ["tag:api"], "dst": ["tag:db:5432"]},
]}`
	diffNew = `{"acls": [
  {"action": "accept", "src": ["node:web-1"], "dst": ["tag:api:443,8050-8199"], "proto": "tcp"},
  {"action": "accept", "src": ["tag:api"], "dst": ["tag:db:5432"], "proto": "tcp"},
  {"action": "accept", "src": ["tag:ops"], "dst": ["tag:db:22"], "proto": "tcp"},
]}`
)

func TestDiff(t *testing.T) {
	nodes := smallInventory()
	old, new := mustCompile(t, diffOld, nodes), mustCompile(t, diffNew, nodes)
	got := diffStrings(t, old, new)
	want := []string{
		"- api-1 → db-1 icmp",
		"- api-1 → db-1 udp/5432",
		"+ bastion → db-1 tcp/22",
		"+ web-1 → api-1 tcp/8100-8199",
		"- web-1 → api-1 tcp/8000-8049",
		"- web-2 → api-1 tcp/443,8000-8099",
	}
	// Compared as sets: the order of a gain and a loss of the same
	// source, destination and protocol is TestDiffDeterministic's.
	if !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("Diff(old, new):\n%s\nwant:\n%s", lines(got), lines(want))
	}
	if back := diffStrings(t, new, old); !slices.Equal(sorted(back), sorted(flip(want))) {
		t.Errorf("Diff(new, old):\n%s\nwant the gains and losses of Diff(old, new) swapped:\n%s", lines(back), lines(flip(want)))
	}

	t.Run("identical", func(t *testing.T) {
		if d := Diff(old, old); d != nil {
			t.Errorf("Diff(old, old) = %v", d)
		}
		if d := Diff(Compile(nil, nodes), Compile(nil, nodes)); d != nil {
			t.Errorf("Diff(nil, nil) = %v", d)
		}
	})
	t.Run("same access written differently", func(t *testing.T) {
		other := mustCompile(t, `{
  "groups": {"group:webs": ["node:web-1", "node:web-2"]},
  "acls": [
    {"action": "accept", "src": ["tag:api"], "dst": ["node:db-1:5432"], "proto": "udp"},
    {"action": "accept", "src": ["tag:api"], "dst": ["100.64.0.4:5432"], "proto": "tcp"},
    {"action": "accept", "src": ["tag:api"], "dst": ["tag:db:1"], "proto": "icmp"},
    {"action": "accept", "src": ["group:webs"], "dst": ["tag:api:8000-8049,443,8050-8099"], "proto": 6},
  ],
}`, nodes)
		if d := diffStrings(t, old, other); d != nil {
			t.Errorf("Diff:\n%s\nwant none", lines(d))
		}
	})
	t.Run("from nothing", func(t *testing.T) {
		got := diffStrings(t, Compile(nil, nodes), old)
		want := []string{
			"+ api-1 → db-1 icmp",
			"+ api-1 → db-1 tcp/5432",
			"+ api-1 → db-1 udp/5432",
			"+ web-1 → api-1 tcp/443,8000-8099",
			"+ web-2 → api-1 tcp/443,8000-8099",
		}
		if !slices.Equal(got, want) {
			t.Errorf("Diff(nil, old):\n%s\nwant:\n%s", lines(got), lines(want))
		}
	})
	t.Run("every port and one port", func(t *testing.T) {
		a := mustCompile(t, `{"acls": [{"action": "accept", "src": ["node:web-1"], "dst": ["node:api-1:*"], "proto": "tcp"}]}`, nodes)
		b := mustCompile(t, `{"acls": [{"action": "accept", "src": ["node:web-1"], "dst": ["node:api-1:1-65534"], "proto": "tcp"}]}`, nodes)
		got, want := diffStrings(t, a, b), []string{"- web-1 → api-1 tcp/0,65535"}
		if !slices.Equal(got, want) {
			t.Errorf("Diff:\n%s\nwant:\n%s", lines(got), lines(want))
		}
	})
}

func TestDiffServices(t *testing.T) {
	nodes := smallInventory()
	own := mustCompile(t, `{"acls": [{"action": "accept", "src": ["svc:api"], "dst": ["svc:web", "svc:ipp"], "proto": "tcp"}]}`, nodes)
	for _, tt := range []struct {
		name string
		new  string
		want []string
	}{{
		name: "own ports to one port",
		new:  `{"acls": [{"action": "accept", "src": ["svc:api"], "dst": ["svc:web:8080", "svc:ipp"], "proto": "tcp"}]}`,
		want: []string{"- api-1 → web-2 tcp/8081", "+ api-1 → web-2 tcp/8080"},
	}, {
		name: "the same, written with nodes and ports",
		new: `{"acls": [
  {"action": "accept", "src": ["node:api-1"], "dst": ["node:web-1:8080", "node:web-2:8081"], "proto": "tcp"},
  {"action": "accept", "src": ["tag:api"], "dst": ["node:printer:631"], "proto": "tcp"},
]}`,
	}, {
		name: "a service dropped",
		new:  `{"acls": [{"action": "accept", "src": ["svc:api"], "dst": ["svc:web"], "proto": "tcp"}]}`,
		want: []string{"- api-1 → printer tcp/631"},
	}, {
		name: "every protocol",
		new:  `{"acls": [{"action": "accept", "src": ["svc:api"], "dst": ["svc:web", "svc:ipp"]}]}`,
		want: []string{"+ api-1 → printer icmp", "+ api-1 → printer udp/631", "+ api-1 → web-1 icmp", "+ api-1 → web-1 udp/8080", "+ api-1 → web-2 icmp", "+ api-1 → web-2 udp/8081"},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			new := mustCompile(t, tt.new, nodes)
			if got := diffStrings(t, own, new); !slices.Equal(sorted(got), sorted(tt.want)) {
				t.Errorf("Diff:\n%s\nwant:\n%s", lines(got), lines(tt.want))
			}
			if back := diffStrings(t, new, own); !slices.Equal(sorted(back), sorted(flip(tt.want))) {
				t.Errorf("Diff back:\n%s\nwant:\n%s", lines(back), lines(flip(tt.want)))
			}
		})
	}
	// Two services on the same nodes, on other ports: the rules differ
	// only in the ports.
	t.Run("another service on the same nodes", func(t *testing.T) {
		nodes := []Node{testNode(1, "client"), withServices(testNode(2, "a"), tcp("x", 80), tcp("y", 81))}
		x := mustCompile(t, `{"acls": [{"action": "accept", "src": ["node:client"], "dst": ["svc:x"], "proto": "tcp"}]}`, nodes)
		y := mustCompile(t, `{"acls": [{"action": "accept", "src": ["node:client"], "dst": ["svc:y"], "proto": "tcp"}]}`, nodes)
		if got, want := diffStrings(t, x, y), []string{"+ client → a tcp/81", "- client → a tcp/80"}; !slices.Equal(sorted(got), sorted(want)) {
			t.Errorf("Diff:\n%s\nwant:\n%s", lines(got), lines(want))
		}
	})
}

// TestDiffDeterministic: acl check prints Diff; the same two policies
// must print the same lines in the same order every time.
func TestDiffDeterministic(t *testing.T) {
	var nodes []Node
	for i := 1; i <= 30; i++ {
		nodes = append(nodes, testNode(i, "n-"+string(rune('a'+i/26))+string(rune('a'+i%26)), "tag:x"))
	}
	old := mustCompile(t, `{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}]}`, nodes)
	new := mustCompile(t, `{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:80"]}]}`, nodes)
	first := diffStrings(t, old, new)
	for i := range 20 {
		if got := diffStrings(t, old, new); !slices.Equal(got, first) {
			for j := range got {
				if got[j] != first[j] {
					t.Fatalf("run %d: line %d is %q, was %q in the first run", i+2, j+1, got[j], first[j])
				}
			}
		}
	}
}

// TestDiffICMPv6 checks that Diff reports exactly what Allows says changed
// for ICMPv6, which a policy grants with "icmp", with no proto, or as
// protocol 58, and not with protocol 1.
func TestDiffICMPv6(t *testing.T) {
	nodes := []Node{testNode(1, "a"), testNode(2, "b")}
	rule := func(proto string) string {
		return `{"acls": [{"action": "accept", "src": ["node:a"], "dst": ["node:b:*"]` + proto + `}]}`
	}
	for _, tt := range []struct {
		name     string
		old, new string
	}{
		{"58 to absent", `, "proto": 58`, ``},
		{"icmp to 1", `, "proto": "icmp"`, `, "proto": 1`},
		{"absent to 1", ``, `, "proto": 1`},
		{"icmp to 58", `, "proto": "icmp"`, `, "proto": 58`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old, new := mustCompile(t, rule(tt.old), nodes), mustCompile(t, rule(tt.new), nodes)
			changes := Diff(old, new)
			for _, proto := range []uint8{wire.ProtoICMP, wire.ProtoICMPv6} {
				was, _ := old.Allows(1, 2, proto, 0)
				is, _ := new.Allows(1, 2, proto, 0)
				if was == is {
					continue
				}
				if !slices.ContainsFunc(changes, func(ch Change) bool {
					return ch.Gained == is && (ch.Proto == ProtoName(proto) || ch.Proto == "icmp")
				}) {
					t.Errorf("Allows(a → b, %s) went from %v to %v, but Diff = %v", ProtoName(proto), was, is, changes)
				}
			}
			for _, ch := range changes {
				var protos []uint8
				switch ch.Proto {
				case "icmp":
					protos = []uint8{wire.ProtoICMP, wire.ProtoICMPv6}
				case "icmpv6":
					protos = []uint8{wire.ProtoICMPv6}
				default:
					continue
				}
				real := false
				for _, p := range protos {
					was, _ := old.Allows(1, 2, p, 0)
					is, _ := new.Allows(1, 2, p, 0)
					real = real || was != is && is == ch.Gained
				}
				if !real {
					t.Errorf("Diff reports %q, but Allows says no %s access was %s", ch, ch.Proto, map[bool]string{true: "gained", false: "lost"}[ch.Gained])
				}
			}
		})
	}
}

func TestSubtractPorts(t *testing.T) {
	type rs = []wire.PortRange
	for _, tt := range []struct {
		a, b, want rs
	}{
		{rs{pr(1, 100)}, nil, rs{pr(1, 100)}},
		{nil, rs{pr(1, 100)}, nil},
		{rs{pr(1, 100)}, rs{pr(1, 100)}, nil},
		{rs{pr(1, 100)}, rs{pr(50, 60)}, rs{pr(1, 49), pr(61, 100)}},
		{rs{pr(1, 100)}, rs{pr(1, 1)}, rs{pr(2, 100)}},
		{rs{pr(1, 100)}, rs{pr(100, 100)}, rs{pr(1, 99)}},
		{rs{pr(1, 100)}, rs{pr(0, 0), pr(101, 200)}, rs{pr(1, 100)}},
		{rs{pr(1, 100)}, rs{wire.AllPorts}, nil},
		{rs{wire.AllPorts}, rs{pr(1, 65535)}, rs{pr(0, 0)}},
		{rs{wire.AllPorts}, rs{pr(0, 0)}, rs{pr(1, 65535)}},
		{rs{wire.AllPorts}, rs{pr(0, 65534)}, rs{pr(65535, 65535)}},
		{rs{pr(65535, 65535)}, rs{pr(65534, 65535)}, nil},
		{rs{pr(1, 10), pr(20, 30)}, rs{pr(5, 25)}, rs{pr(1, 4), pr(26, 30)}},
		{rs{pr(1, 30)}, rs{pr(2, 3), pr(5, 5), pr(30, 30)}, rs{pr(1, 1), pr(4, 4), pr(6, 29)}},
		{rs{pr(10, 20)}, rs{pr(1, 9), pr(21, 30)}, rs{pr(10, 20)}},
		{rs{pr(10, 20)}, rs{pr(1, 10), pr(20, 30)}, rs{pr(11, 19)}},
	} {
		if got := subtractPorts(tt.a, tt.b); !slices.Equal(got, tt.want) {
			t.Errorf("subtractPorts(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestChangeString(t *testing.T) {
	for _, tt := range []struct {
		ch   Change
		want string
	}{
		{Change{Gained: true, Src: "web-1", Dst: "api-1", Proto: "tcp", Ports: []wire.PortRange{pr(443, 443), pr(8080, 8090)}}, "+ web-1 → api-1 tcp/443,8080-8090"},
		{Change{Src: "web-1", Dst: "api-1", Proto: "icmp"}, "- web-1 → api-1 icmp"},
		{Change{Gained: true, Src: "a", Dst: "b", Proto: "udp", Ports: []wire.PortRange{wire.AllPorts}}, "+ a → b udp/*"},
		{Change{Src: "a", Dst: "b", Proto: "47"}, "- a → b 47"},
	} {
		if got := tt.ch.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestAccess(t *testing.T) {
	c := mustCompile(t, strings.Replace(testsPolicy, "TESTS", "", 1), smallInventory())
	const web1, web2, api1, db1 = 1, 2, 3, 4
	str := func(gs []Grant) string {
		var parts []string
		for _, g := range gs {
			parts = append(parts, g.String())
		}
		return strings.Join(parts, " ")
	}
	for _, tt := range []struct {
		src, dst int64
		want     string
	}{
		{web1, api1, "icmp tcp/22,443,8000-8099 udp/22,443 icmpv6"},
		{api1, web1, ""},
		{api1, db1, "icmp icmpv6"},
		{web1, web2, ""},
		{web1, web1, ""},
		{web1, 999, ""},
	} {
		if got := str(c.Access(tt.src, tt.dst)); got != tt.want {
			t.Errorf("Access(%d, %d) = %q, want %q", tt.src, tt.dst, got, tt.want)
		}
	}
	if got := Compile(nil, smallInventory()).Access(web1, api1); got != nil {
		t.Errorf("no policy: Access = %v, want nil", got)
	}
}
