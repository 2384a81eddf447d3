package dns

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

const (
	soaMesh   = "mesh.internal. 5 IN SOA ns.mesh.internal. hostmaster.mesh.internal. 1 3600 600 86400 5"
	soaRev4   = "100.in-addr.arpa. 5 IN SOA ns.mesh.internal. hostmaster.mesh.internal. 1 3600 600 86400 5"
	fromPeer  = "100.64.0.9:5353" // a node that may not see "hidden"
	fromLocal = "127.0.0.1:5353"  // the agent's own host
)

func TestAnswers(t *testing.T) {
	tests := []struct {
		name   string
		qtype  uint16
		from   string // default remote
		cfg    Config
		rcode  int
		answer []string
		ns     []string
		extra  []string
	}{
		// NODE.node
		{name: "n1.node.mesh.internal.", qtype: miekg.TypeA, answer: []string{"n1.node.mesh.internal. 60 IN A 100.64.0.1"}},
		{name: "n1.node.mesh.internal.", qtype: miekg.TypeAAAA, answer: []string{"n1.node.mesh.internal. 60 IN AAAA fd77:6d65:7368::1"}},
		{name: "N1.Node.MESH.internal.", qtype: miekg.TypeA, answer: []string{"N1.Node.MESH.internal. 60 IN A 100.64.0.1"}},
		{name: "n3.node.mesh.internal.", qtype: miekg.TypeA, answer: []string{"n3.node.mesh.internal. 60 IN A 100.64.0.3"}},
		{name: "n2.node.mesh.internal.", qtype: miekg.TypeAAAA, ns: []string{soaMesh}},
		{name: "n1.node.mesh.internal.", qtype: miekg.TypeANY, answer: []string{
			"n1.node.mesh.internal. 60 IN A 100.64.0.1", "n1.node.mesh.internal. 60 IN AAAA fd77:6d65:7368::1"}},
		{name: "n1.node.mesh.internal.", qtype: miekg.TypeTXT, ns: []string{soaMesh}},
		{name: "dead.node.mesh.internal.", qtype: miekg.TypeA, answer: []string{"dead.node.mesh.internal. 60 IN A 100.64.0.4"}},
		{name: "nope.node.mesh.internal.", qtype: miekg.TypeA, rcode: miekg.RcodeNameError, ns: []string{soaMesh}},
		{name: "hidden.node.mesh.internal.", qtype: miekg.TypeA, rcode: miekg.RcodeNameError, ns: []string{soaMesh}},
		{name: "hidden.node.mesh.internal.", qtype: miekg.TypeA, from: fromLocal, answer: []string{"hidden.node.mesh.internal. 60 IN A 100.64.0.5"}},
		{name: "n1.node.near.mesh.internal.", qtype: miekg.TypeA, rcode: miekg.RcodeNameError, ns: []string{soaMesh}},

		// SVC.service: passing and warning, not critical, dead or hidden.
		{name: "web.service.mesh.internal.", qtype: miekg.TypeA, answer: []string{
			"web.service.mesh.internal. 5 IN A 100.64.0.1", "web.service.mesh.internal. 5 IN A 100.64.0.2"}},
		{name: "WEB.Service.Mesh.Internal.", qtype: miekg.TypeA, answer: []string{
			"WEB.Service.Mesh.Internal. 5 IN A 100.64.0.1", "WEB.Service.Mesh.Internal. 5 IN A 100.64.0.2"}},
		{name: "web.service.mesh.internal.", qtype: miekg.TypeA, cfg: Config{OnlyPassing: true}, answer: []string{
			"web.service.mesh.internal. 5 IN A 100.64.0.1"}},
		{name: "web.service.mesh.internal.", qtype: miekg.TypeA, from: fromLocal, answer: []string{
			"web.service.mesh.internal. 5 IN A 100.64.0.1", "web.service.mesh.internal. 5 IN A 100.64.0.2",
			"web.service.mesh.internal. 5 IN A 100.64.0.5"}},
		{name: "web.service.mesh.internal.", qtype: miekg.TypeAAAA, answer: []string{
			"web.service.mesh.internal. 5 IN AAAA fd77:6d65:7368::1"}},
		{name: "web.service.mesh.internal.", qtype: miekg.TypeSRV,
			answer: []string{
				"web.service.mesh.internal. 5 IN SRV 1 1 80 n1.node.mesh.internal.",
				"web.service.mesh.internal. 5 IN SRV 1 1 8080 n2.node.mesh.internal."},
			extra: []string{
				"n1.node.mesh.internal. 60 IN A 100.64.0.1", "n1.node.mesh.internal. 60 IN AAAA fd77:6d65:7368::1",
				"n2.node.mesh.internal. 60 IN A 100.64.0.2"}},
		{name: "web.service.mesh.internal.", qtype: miekg.TypeMX, ns: []string{soaMesh}},
		{name: "web.service.mesh.internal.", qtype: miekg.TypeA, cfg: Config{ServiceTTL: 30 * time.Second}, answer: []string{
			"web.service.mesh.internal. 30 IN A 100.64.0.1", "web.service.mesh.internal. 30 IN A 100.64.0.2"}},

		// Tags, both syntaxes.
		{name: "v1.web.service.mesh.internal.", qtype: miekg.TypeA, answer: []string{"v1.web.service.mesh.internal. 5 IN A 100.64.0.1"}},
		{name: "PRIMARY.web.service.mesh.internal.", qtype: miekg.TypeA, answer: []string{"PRIMARY.web.service.mesh.internal. 5 IN A 100.64.0.1"}},
		{name: "v2.web.service.mesh.internal.", qtype: miekg.TypeA, answer: []string{"v2.web.service.mesh.internal. 5 IN A 100.64.0.2"}},
		{name: "v3.web.service.mesh.internal.", qtype: miekg.TypeA, rcode: miekg.RcodeNameError, ns: []string{soaMesh}},
		{name: "_web._v2.service.mesh.internal.", qtype: miekg.TypeSRV,
			answer: []string{"_web._v2.service.mesh.internal. 5 IN SRV 1 1 8080 n2.node.mesh.internal."},
			extra:  []string{"n2.node.mesh.internal. 60 IN A 100.64.0.2"}},
		{name: "_web._tcp.service.mesh.internal.", qtype: miekg.TypeSRV,
			answer: []string{
				"_web._tcp.service.mesh.internal. 5 IN SRV 1 1 80 n1.node.mesh.internal.",
				"_web._tcp.service.mesh.internal. 5 IN SRV 1 1 8080 n2.node.mesh.internal."},
			extra: []string{
				"n1.node.mesh.internal. 60 IN A 100.64.0.1", "n1.node.mesh.internal. 60 IN AAAA fd77:6d65:7368::1",
				"n2.node.mesh.internal. 60 IN A 100.64.0.2"}},

		// Known service without a healthy instance: empty NOERROR.
		{name: "db.service.mesh.internal.", qtype: miekg.TypeA, ns: []string{soaMesh}},
		{name: "db.service.mesh.internal.", qtype: miekg.TypeSRV, ns: []string{soaMesh}},
		{name: "nope.service.mesh.internal.", qtype: miekg.TypeA, rcode: miekg.RcodeNameError, ns: []string{soaMesh}},
		{name: "secret.service.mesh.internal.", qtype: miekg.TypeA, rcode: miekg.RcodeNameError, ns: []string{soaMesh}},
		{name: "nope.service.mesh.internal.", qtype: miekg.TypeA, cfg: Config{NegativeTTL: time.Minute}, rcode: miekg.RcodeNameError,
			ns: []string{"mesh.internal. 60 IN SOA ns.mesh.internal. hostmaster.mesh.internal. 1 3600 600 86400 60"}},

		// Zone structure.
		{name: "mesh.internal.", qtype: miekg.TypeSOA, answer: []string{soaMesh}},
		{name: "mesh.internal.", qtype: miekg.TypeA, ns: []string{soaMesh}},
		{name: "service.mesh.internal.", qtype: miekg.TypeA, ns: []string{soaMesh}},
		{name: "a.b.web.service.mesh.internal.", qtype: miekg.TypeA, rcode: miekg.RcodeNameError, ns: []string{soaMesh}},
		{name: "whatever.mesh.internal.", qtype: miekg.TypeA, rcode: miekg.RcodeNameError, ns: []string{soaMesh}},

		// Reverse.
		{name: "1.0.64.100.in-addr.arpa.", qtype: miekg.TypePTR, answer: []string{"1.0.64.100.in-addr.arpa. 60 IN PTR n1.node.mesh.internal."}},
		{name: "3.0.64.100.in-addr.arpa.", qtype: miekg.TypePTR, answer: []string{"3.0.64.100.in-addr.arpa. 60 IN PTR n3.node.mesh.internal."}},
		{name: "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.6.3.7.5.6.d.6.7.7.d.f.ip6.arpa.", qtype: miekg.TypePTR,
			answer: []string{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.6.3.7.5.6.d.6.7.7.d.f.ip6.arpa. 60 IN PTR n1.node.mesh.internal."}},
		{name: "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.6.3.7.5.6.D.6.7.7.D.F.IP6.ARPA.", qtype: miekg.TypePTR,
			answer: []string{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.6.3.7.5.6.D.6.7.7.D.F.IP6.ARPA. 60 IN PTR n1.node.mesh.internal."}},
		{name: "99.0.64.100.in-addr.arpa.", qtype: miekg.TypePTR, rcode: miekg.RcodeNameError, ns: []string{soaRev4}},
		{name: "5.0.64.100.in-addr.arpa.", qtype: miekg.TypePTR, rcode: miekg.RcodeNameError, ns: []string{soaRev4}},
		{name: "1.0.64.100.in-addr.arpa.", qtype: miekg.TypeA, ns: []string{soaRev4}},
		{name: "64.100.in-addr.arpa.", qtype: miekg.TypePTR, ns: []string{soaRev4}},
		{name: "x.1.0.64.100.in-addr.arpa.", qtype: miekg.TypePTR, rcode: miekg.RcodeNameError, ns: []string{soaRev4}},

		// Other names without upstreams.
		{name: "example.com.", qtype: miekg.TypeA, rcode: miekg.RcodeRefused},
		{name: "1.1.168.192.in-addr.arpa.", qtype: miekg.TypePTR, rcode: miekg.RcodeRefused},

		// Another domain.
		{name: "n1.node.corp.", qtype: miekg.TypeA, cfg: Config{Domain: "Corp."}, answer: []string{"n1.node.corp. 60 IN A 100.64.0.1"}},
		{name: "n1.node.mesh.internal.", qtype: miekg.TypeA, cfg: Config{Domain: "corp"}, rcode: miekg.RcodeRefused},
	}
	for _, tt := range tests {
		from := tt.from
		if from == "" {
			from = fromPeer
		}
		t.Run(tt.name+"/"+miekg.TypeToString[tt.qtype]+"/"+from, func(t *testing.T) {
			s := newTestServer(t, tt.cfg)
			m := ask(t, s, "udp", from, tt.name, tt.qtype, 0).msg
			if m.Rcode != tt.rcode {
				t.Errorf("rcode %s, want %s", rcode(m), miekg.RcodeToString[tt.rcode])
			}
			inZone := tt.rcode != miekg.RcodeRefused
			if m.Authoritative != inZone || m.Truncated || m.Id == 0 || !m.Response {
				t.Errorf("header: aa=%v tc=%v id=%d qr=%v, want aa=%v", m.Authoritative, m.Truncated, m.Id, m.Response, inZone)
			}
			if len(m.Question) != 1 || m.Question[0].Name != tt.name {
				t.Errorf("question %v, want %s", m.Question, tt.name)
			}
			if d := diff(m.Answer, tt.answer, false, t); d != "" {
				t.Errorf("answer (-want +got):\n%s", d)
			}
			if d := diff(m.Ns, tt.ns, false, t); d != "" {
				t.Errorf("authority (-want +got):\n%s", d)
			}
			if d := diff(m.Extra, tt.extra, false, t); d != "" {
				t.Errorf("additional (-want +got):\n%s", d)
			}
			if m.IsEdns0() != nil {
				t.Errorf("OPT in the answer to a query without one")
			}
		})
	}
}

func TestNoSnapshotYet(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	m := ask(t, s, "udp", fromPeer, "n1.node.mesh.internal.", miekg.TypeA, 0).msg
	if m.Rcode != miekg.RcodeServerFailure {
		t.Errorf("before the first snapshot: rcode %s, want SERVFAIL", rcode(m))
	}
}

func TestSOASerialAdvances(t *testing.T) {
	s := newTestServer(t, Config{})
	s.SetSnapshot(s.cur.Load().snap)
	m := ask(t, s, "udp", fromPeer, "nope.mesh.internal.", miekg.TypeA, 0).msg
	if len(m.Ns) != 1 || m.Ns[0].(*miekg.SOA).Serial != 2 {
		t.Errorf("after two snapshots: authority %v, want SOA serial 2", m.Ns)
	}
}

func TestShuffle(t *testing.T) {
	s := newBigServer(t, Config{}, 5)
	seen := map[string]bool{}
	for range 50 {
		m := ask(t, s, "udp", fromPeer, "big.service.mesh.internal.", miekg.TypeA, 0).msg
		if len(m.Answer) != 5 {
			t.Fatalf("%d answers, want 5", len(m.Answer))
		}
		seen[strings.Join(zone(m.Answer), ",")] = true
	}
	if len(seen) < 10 {
		t.Errorf("50 queries gave %d orders of 5 instances, want them shuffled", len(seen))
	}
}

func TestMaxAnswers(t *testing.T) {
	for _, tt := range []struct {
		max, want int
	}{{0, 16}, {3, 3}, {-1, 20}} {
		s := newBigServer(t, Config{MaxAnswers: tt.max}, 20)
		hit := map[string]bool{}
		for range 40 {
			w := ask(t, s, "tcp", fromPeer, "big.service.mesh.internal.", miekg.TypeA, 0)
			if len(w.msg.Answer) != tt.want || w.msg.Truncated {
				t.Fatalf("MaxAnswers %d: %d answers tc=%v, want %d", tt.max, len(w.msg.Answer), w.msg.Truncated, tt.want)
			}
			for _, l := range zone(w.msg.Answer) {
				hit[l] = true
			}
		}
		if len(hit) != 20 {
			t.Errorf("MaxAnswers %d: 40 queries reached %d of 20 instances, want all by shuffling", tt.max, len(hit))
		}
	}
}

func TestNear(t *testing.T) {
	want := []string{
		"n2.node.mesh.internal. 60 IN A 100.64.0.2",
		"n3.node.mesh.internal. 60 IN A 100.64.0.3",
		"n1.node.mesh.internal. 60 IN A 100.64.0.1",
		"n4.node.mesh.internal. 60 IN A 100.64.0.4",
	}
	nodes := []NodeRecord{
		{Name: "n1", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}, Alive: true, RTT: 30 * time.Millisecond},
		{Name: "n2", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.2")}, Alive: true, RTT: 10 * time.Millisecond},
		{Name: "n3", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.3")}, Alive: true, RTT: 20 * time.Millisecond},
		{Name: "n4", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.4")}, Alive: true}, // unknown RTT: last
	}
	var insts []Instance
	for _, n := range nodes {
		insts = append(insts, Instance{Service: "web", Node: n.Name, Port: 80})
	}
	snap, err := NewSnapshot(nodes, insts, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"web.service.near.mesh.internal.", Config{}},
		{"_web._tcp.service.near.mesh.internal.", Config{}},
		{"web.service.mesh.internal.", Config{NearByDefault: true}},
	} {
		s := newTestServer(t, tt.cfg)
		s.SetSnapshot(snap)
		for range 5 {
			m := ask(t, s, "udp", fromPeer, tt.name, miekg.TypeSRV, 0).msg
			var got []string
			for _, rr := range m.Answer {
				got = append(got, rr.(*miekg.SRV).Target)
			}
			if d := diff(m.Extra, want, true, t); d != "" || strings.Join(got, " ") != "n2.node.mesh.internal. n3.node.mesh.internal. n1.node.mesh.internal. n4.node.mesh.internal." {
				t.Fatalf("%s: targets %v, additional (-want +got):\n%s", tt.name, got, d)
			}
		}
	}
}

func TestOnlyFirstQuestion(t *testing.T) {
	s := newTestServer(t, Config{})
	req := new(miekg.Msg)
	req.SetQuestion("n1.node.mesh.internal.", miekg.TypeA)
	req.Question = append(req.Question, miekg.Question{Name: "n2.node.mesh.internal.", Qtype: miekg.TypeA, Qclass: miekg.ClassINET})
	w := newRecorder("udp", fromPeer)
	s.ServeDNS(w, req)
	if d := diff(w.msg.Answer, []string{"n1.node.mesh.internal. 60 IN A 100.64.0.1"}, true, t); d != "" || len(w.msg.Question) != 1 {
		t.Errorf("questions %v, answer (-want +got):\n%s", w.msg.Question, d)
	}
}

func TestBadRequests(t *testing.T) {
	s := newTestServer(t, Config{})
	for _, tt := range []struct {
		name  string
		edit  func(*miekg.Msg)
		rcode int // -1: dropped
	}{
		{"no question", func(m *miekg.Msg) { m.Question = nil }, miekg.RcodeFormatError},
		{"response", func(m *miekg.Msg) { m.Response = true }, -1},
		{"notify", func(m *miekg.Msg) { m.Opcode = miekg.OpcodeNotify }, miekg.RcodeNotImplemented},
		{"update", func(m *miekg.Msg) { m.Opcode = miekg.OpcodeUpdate }, miekg.RcodeNotImplemented},
		{"chaos class", func(m *miekg.Msg) { m.Question[0].Qclass = miekg.ClassCHAOS }, miekg.RcodeRefused},
		{"edns version 1", func(m *miekg.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) }, miekg.RcodeBadVers},
	} {
		req := new(miekg.Msg)
		req.SetQuestion("n1.node.mesh.internal.", miekg.TypeA)
		tt.edit(req)
		w := newRecorder("udp", fromPeer)
		s.ServeDNS(w, req)
		switch {
		case w.err != nil:
			t.Errorf("%s: %v", tt.name, w.err)
		case tt.rcode < 0 && w.msg != nil:
			t.Errorf("%s: answered %s, want dropped", tt.name, rcode(w.msg))
		case tt.rcode >= 0 && w.msg == nil:
			t.Errorf("%s: dropped, want %s", tt.name, miekg.RcodeToString[tt.rcode])
		case tt.rcode >= 0 && (w.msg.Rcode != tt.rcode || len(w.msg.Answer) > 0):
			t.Errorf("%s: %s with %d answers, want %s", tt.name, rcode(w.msg), len(w.msg.Answer), miekg.RcodeToString[tt.rcode])
		}
	}
}

func TestSnapshotErrors(t *testing.T) {
	snap, err := NewSnapshot(
		[]NodeRecord{{Name: "ok", Alive: true, Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.1")}}, {Name: "bad name"}, {Name: "OK"}},
		[]Instance{{Service: "web", Node: "ok"}, {Service: "web", Node: "nope"}, {Service: "a.b", Node: "ok"}},
		nil)
	if err == nil {
		t.Fatal("NewSnapshot accepted a bad node name, a duplicate, an unknown node and a bad service name")
	}
	for _, want := range []string{`"bad name"`, `"OK": duplicate`, `unknown node "nope"`, `"a.b"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	s := newTestServer(t, Config{})
	s.SetSnapshot(snap)
	m := ask(t, s, "udp", fromPeer, "web.service.mesh.internal.", miekg.TypeA, 0).msg
	if d := diff(m.Answer, []string{"web.service.mesh.internal. 5 IN A 100.64.0.1"}, true, t); d != "" {
		t.Errorf("the good entries are not served (-want +got):\n%s", d)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Domain: "bad..domain"},
		{Upstreams: []string{"no-port"}},
		{NegativeTTL: -time.Second},
		{Prefixes: []netip.Prefix{{}}},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) accepted it", c)
		}
	}
	c := Config{Domain: "Mesh.Example.", Upstreams: []string{"10.0.0.1", "[fd00::1]:5353", "dns.example:53"}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Domain != "mesh.example" || strings.Join(c.Upstreams, " ") != "10.0.0.1:53 [fd00::1]:5353 dns.example:53" ||
		c.MaxAnswers != 16 || c.NegativeTTL != 5*time.Second {
		t.Errorf("Validate filled in %+v", c)
	}
	// Unset upstreams stay unset: the agent reads the host's resolvers
	// then. (An empty list here once made every agent ignore
	// --resolv-conf and refuse all names outside the mesh.)
	var unset Config
	if err := unset.Validate(); err != nil || unset.Upstreams != nil {
		t.Errorf("Validate of unset upstreams: %v, %#v; want nil", err, unset.Upstreams)
	}
	none := Config{Upstreams: []string{}}
	if err := none.Validate(); err != nil || none.Upstreams == nil {
		t.Errorf("Validate of no upstreams: %v, %#v; want empty, not nil", err, none.Upstreams)
	}
}

// TestAllowQuerier: clients the agent does not serve are refused, for
// mesh names and forwarded names alike.
func TestAllowQuerier(t *testing.T) {
	local := netip.MustParseAddr("127.0.0.1")
	s := newTestServer(t, Config{AllowQuerier: func(a netip.Addr) bool { return a == local }, Upstreams: []string{"127.0.0.1:1"}})
	for _, name := range []string{"n1.node.mesh.internal.", "example.org."} {
		req := new(miekg.Msg)
		req.SetQuestion(name, miekg.TypeA)
		w := newRecorder("udp", fromPeer)
		s.ServeDNS(w, req)
		if w.msg == nil || w.msg.Rcode != miekg.RcodeRefused || len(w.msg.Answer) != 0 {
			t.Errorf("%s from a peer: %v, want REFUSED", name, w.msg)
		}
	}
	req := new(miekg.Msg)
	req.SetQuestion("n1.node.mesh.internal.", miekg.TypeA)
	w := newRecorder("udp", fromLocal)
	s.ServeDNS(w, req)
	if w.msg == nil || w.msg.Rcode != miekg.RcodeSuccess || len(w.msg.Answer) != 1 {
		t.Errorf("from the local host: %v, want one answer", w.msg)
	}
}
