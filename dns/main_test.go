package dns

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	miekg "github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a miekg.ResponseWriter that keeps the reply, packed and
// unpacked again as a client would see it, in the CoreDNS dnstest shape.
type recorder struct {
	remote net.Addr
	msg    *miekg.Msg
	wire   []byte
	err    error
}

// newRecorder returns a recorder for a query from addr (IP:PORT) over
// proto ("udp" or "tcp").
func newRecorder(proto, addr string) *recorder {
	ap := netip.MustParseAddrPort(addr)
	if proto == "tcp" {
		return &recorder{remote: net.TCPAddrFromAddrPort(ap)}
	}
	return &recorder{remote: net.UDPAddrFromAddrPort(ap)}
}

func (r *recorder) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr { return r.remote }
func (r *recorder) WriteMsg(m *miekg.Msg) error {
	b, err := m.Pack()
	if err != nil {
		r.err = err
		return err
	}
	r.wire = b
	r.msg = new(miekg.Msg)
	r.err = r.msg.Unpack(b)
	return r.err
}
func (r *recorder) Write(b []byte) (int, error) {
	r.wire = b
	r.msg = new(miekg.Msg)
	r.err = r.msg.Unpack(b)
	return len(b), r.err
}
func (r *recorder) Close() error        { return nil }
func (r *recorder) TsigStatus() error   { return nil }
func (r *recorder) TsigTimersOnly(bool) {}
func (r *recorder) Hijack()             {}
func (r *recorder) Network() string     { return r.remote.Network() }

// zone returns rrs as zone-file lines with single spaces, OPT left out.
func zone(rrs []miekg.RR) []string {
	var out []string
	for _, rr := range rrs {
		if rr.Header().Rrtype == miekg.TypeOPT {
			continue
		}
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	return out
}

// canon parses zone-file lines and prints them as zone does.
func canon(t *testing.T, lines ...string) []string {
	t.Helper()
	var rrs []miekg.RR
	for _, l := range lines {
		rr, err := miekg.NewRR(l)
		if err != nil {
			t.Fatalf("bad test record %q: %v", l, err)
		}
		rrs = append(rrs, rr)
	}
	return zone(rrs)
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// Test catalog: web has one healthy instance on each of n1 (passing) and
// n2 (warning); its instances on n3 (critical), dead (node down) and
// hidden (invisible to other nodes) are never served to 100.64.0.9.
var (
	testNodes = []NodeRecord{
		{Name: "n1", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd77:6d65:7368::1")}, Alive: true, RTT: 30 * time.Millisecond},
		{Name: "n2", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.2")}, Alive: true, RTT: 10 * time.Millisecond},
		{Name: "N3", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.3")}, Alive: true, RTT: 20 * time.Millisecond},
		{Name: "dead", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.4")}},
		{Name: "hidden", Addrs: []netip.Addr{netip.MustParseAddr("100.64.0.5")}, Alive: true},
	}
	testInstances = []Instance{
		{Service: "web", Node: "n1", Port: 80, Tags: []string{"v1", "Primary"}},
		{Service: "web", Node: "n2", Port: 8080, Tags: []string{"v2"}, Health: Warning},
		{Service: "web", Node: "n3", Port: 80, Tags: []string{"v1"}, Health: Critical},
		{Service: "web", Node: "dead", Port: 80, Tags: []string{"v1"}},
		{Service: "web", Node: "hidden", Port: 80, Tags: []string{"v1"}},
		{Service: "db", Node: "n3", Port: 5432, Health: Critical},
		{Service: "secret", Node: "hidden", Port: 443},
	}
)

// visibleTest hides node "hidden" from everyone but the local host.
func visibleTest(q netip.Addr, node string) bool { return node != "hidden" || q.IsLoopback() }

// newTestServer returns a Server with cfg's unset fields defaulted, a
// seeded shuffle, and the test catalog.
func newTestServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Rand == nil {
		cfg.Rand = rand.NewPCG(1, 2)
	}
	if cfg.Prefixes == nil {
		cfg.Prefixes = []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd77:6d65:7368::/48")}
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	snap, err := NewSnapshot(testNodes, testInstances, visibleTest)
	if err != nil {
		t.Fatalf("NewSnapshot: %v", err)
	}
	s.SetSnapshot(snap)
	return s
}

// ask sends one question to s as a client at addr over proto and returns
// the reply.
func ask(t testing.TB, s *Server, proto, addr, name string, qtype uint16, edns uint16) *recorder {
	t.Helper()
	req := new(miekg.Msg)
	req.SetQuestion(name, qtype)
	if edns > 0 {
		req.SetEdns0(edns, false)
	}
	w := newRecorder(proto, addr)
	s.ServeDNS(w, req)
	if w.err != nil {
		t.Fatalf("%s %s: reply: %v", name, miekg.TypeToString[qtype], w.err)
	}
	if w.msg == nil {
		t.Fatalf("%s %s: no reply", name, miekg.TypeToString[qtype])
	}
	return w
}

// diff compares got against want zone lines, ignoring order unless
// ordered.
func diff(got []miekg.RR, want []string, ordered bool, t *testing.T) string {
	g, w := zone(got), canon(t, want...)
	if !ordered {
		g, w = sorted(g), sorted(w)
	}
	return cmp.Diff(w, g)
}

func rcode(m *miekg.Msg) string { return fmt.Sprint(miekg.RcodeToString[m.Rcode]) }
