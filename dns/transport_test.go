package dns

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

// newBigServer returns a test server whose snapshot has service "big"
// with one passing instance on each of n nodes big0..big(n-1).
func newBigServer(t testing.TB, cfg Config, n int) *Server {
	t.Helper()
	s := newTestServer(t, cfg)
	var nodes []NodeRecord
	var insts []Instance
	for i := range n {
		name := fmt.Sprintf("big%d", i)
		nodes = append(nodes, NodeRecord{Name: name, Alive: true, Addrs: []netip.Addr{
			netip.AddrFrom4([4]byte{100, 64, 1 + byte(i/256), byte(i)}),
			netip.MustParseAddr(fmt.Sprintf("fd77:6d65:7368::1:%x", i)),
		}})
		insts = append(insts, Instance{Service: "big", Node: name, Port: uint16(8000 + i)})
	}
	snap, err := NewSnapshot(nodes, insts, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetSnapshot(snap)
	return s
}

func TestTruncation(t *testing.T) {
	s := newBigServer(t, Config{MaxAnswers: -1}, 100)
	for _, tt := range []struct {
		proto   string
		qtype   uint16
		edns    uint16
		limit   int
		answers int // all fit: 100; else TC
	}{
		{"udp", miekg.TypeA, 0, 512, 0},
		{"udp", miekg.TypeAAAA, 0, 512, 0},
		{"udp", miekg.TypeSRV, 0, 512, 0},
		{"udp", miekg.TypeA, 1232, 1232, 0},
		{"udp", miekg.TypeA, 4096, 1232, 0}, // the server's own cap
		{"udp", miekg.TypeA, 100, 512, 0},   // below the minimum: 512
		{"tcp", miekg.TypeA, 0, 65535, 100},
		{"tcp", miekg.TypeSRV, 0, 65535, 100},
	} {
		name := fmt.Sprintf("%s/%s/edns%d", tt.proto, miekg.TypeToString[tt.qtype], tt.edns)
		w := ask(t, s, tt.proto, fromPeer, "big.service.mesh.internal.", tt.qtype, tt.edns)
		m := w.msg
		if len(w.wire) > tt.limit {
			t.Errorf("%s: %d bytes, limit %d", name, len(w.wire), tt.limit)
		}
		if tt.answers == 100 {
			if m.Truncated || len(m.Answer) != 100 {
				t.Errorf("%s: %d answers tc=%v, want all 100", name, len(m.Answer), m.Truncated)
			}
		} else if !m.Truncated || len(m.Answer) == 0 || len(m.Answer) >= 100 {
			t.Errorf("%s: %d answers tc=%v, want some with TC", name, len(m.Answer), m.Truncated)
		}
		if (m.IsEdns0() != nil) != (tt.edns > 0) {
			t.Errorf("%s: OPT %v, want echoed only when asked", name, m.IsEdns0())
		} else if o := m.IsEdns0(); o != nil && o.UDPSize() != maxUDPSize {
			t.Errorf("%s: OPT buffer size %d, want %d", name, o.UDPSize(), maxUDPSize)
		}
		if tt.qtype == miekg.TypeSRV {
			checkSRVGlue(t, name, m)
		}
	}
	// Room to spare: no TC, an OPT echoed.
	s = newBigServer(t, Config{MaxAnswers: -1}, 40)
	m := ask(t, s, "udp", fromPeer, "big.service.mesh.internal.", miekg.TypeA, 1232).msg
	if m.Truncated || len(m.Answer) != 40 || m.IsEdns0() == nil {
		t.Errorf("40 A records with EDNS0 1232: %d answers tc=%v opt=%v, want all without TC", len(m.Answer), m.Truncated, m.IsEdns0())
	}
	m = ask(t, s, "udp", fromPeer, "big.service.mesh.internal.", miekg.TypeA, 0).msg
	if !m.Truncated {
		t.Errorf("40 A records without EDNS0: %d answers without TC", len(m.Answer))
	}
}

// checkSRVGlue fails unless each SRV target has its A and AAAA records
// among the additionals and nothing else is there.
func checkSRVGlue(t *testing.T, name string, m *miekg.Msg) {
	t.Helper()
	glue := map[string]int{}
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != miekg.TypeOPT {
			glue[rr.Header().Name]++
		}
	}
	for _, rr := range m.Answer {
		target := rr.(*miekg.SRV).Target
		if glue[target] != 2 {
			t.Errorf("%s: SRV target %s has %d additional records, want 2", name, target, glue[target])
		}
		delete(glue, target)
	}
	if len(glue) > 0 {
		t.Errorf("%s: additional records without an SRV: %v", name, glue)
	}
}

// startUpstream runs a resolver on 127.0.0.1 (UDP and TCP, same port)
// that answers every A query with 192.0.2.1.
func startUpstream(t *testing.T) string {
	t.Helper()
	h := miekg.HandlerFunc(func(w miekg.ResponseWriter, r *miekg.Msg) {
		m := new(miekg.Msg)
		m.SetReply(r)
		m.RecursionAvailable = true
		rr, _ := miekg.NewRR(r.Question[0].Name + " 300 IN A 192.0.2.1")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*miekg.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() { defer close(done); srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { srv.Shutdown(); <-done })
	}
	return addr
}

// deadUpstream returns a UDP address nothing listens on.
func deadUpstream(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestForward(t *testing.T) {
	up := startUpstream(t)
	s := newTestServer(t, Config{Upstreams: []string{deadUpstream(t), up}, ForwardTimeout: time.Second})
	for _, proto := range []string{"udp", "tcp"} {
		req := new(miekg.Msg)
		req.SetQuestion("www.example.com.", miekg.TypeA)
		w := newRecorder(proto, fromPeer)
		s.ServeDNS(w, req)
		if w.msg == nil || w.err != nil {
			t.Fatalf("%s: no reply: %v", proto, w.err)
		}
		if d := diff(w.msg.Answer, []string{"www.example.com. 300 IN A 192.0.2.1"}, true, t); d != "" || w.msg.Id != req.Id {
			t.Errorf("%s: id %d want %d, answer (-want +got):\n%s", proto, w.msg.Id, req.Id, d)
		}
	}
	// Mesh names are never forwarded, and names are not leaked upstream.
	m := ask(t, s, "udp", fromPeer, "nope.mesh.internal.", miekg.TypeA, 0).msg
	if m.Rcode != miekg.RcodeNameError || !m.RecursionAvailable {
		t.Errorf("mesh name with upstreams: %s ra=%v, want NXDOMAIN with RA", rcode(m), m.RecursionAvailable)
	}
	// A reverse name outside the overlay prefixes is forwarded.
	m = ask(t, s, "udp", fromPeer, "1.2.0.192.in-addr.arpa.", miekg.TypeA, 0).msg
	if len(m.Answer) != 1 {
		t.Errorf("foreign reverse name: %v, want forwarded", m)
	}

	s = newTestServer(t, Config{Upstreams: []string{deadUpstream(t)}, ForwardTimeout: 200 * time.Millisecond})
	if m := ask(t, s, "udp", fromPeer, "www.example.com.", miekg.TypeA, 0).msg; m.Rcode != miekg.RcodeServerFailure {
		t.Errorf("all upstreams down: %s, want SERVFAIL", rcode(m))
	}
}

func TestReadResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(path, []byte("# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver fd00::53\noptions ndots:2\n"), 0o644)
	got, err := ReadResolvConf(path)
	if err != nil || strings.Join(got, " ") != "10.0.0.2:53 [fd00::53]:53" {
		t.Errorf("ReadResolvConf = %q, %v", got, err)
	}
	if _, err := ReadResolvConf(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("ReadResolvConf of a missing file: no error")
	}
}

// TestListenMalformed sends garbage to a real server and checks that it
// drops it or answers FORMERR, then still answers over UDP and TCP.
func TestListenMalformed(t *testing.T) {
	s := newTestServer(t, Config{})
	addr, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	good := new(miekg.Msg)
	good.SetQuestion("n1.node.mesh.internal.", miekg.TypeA)
	twoQ := good.Copy()
	twoQ.Question = append(twoQ.Question, twoQ.Question[0])
	noQ := good.Copy()
	noQ.Question = nil
	goodWire, _ := good.Pack()
	var inputs = map[string][]byte{
		"garbage":        []byte("hello, world"),
		"short header":   goodWire[:5],
		"header only":    goodWire[:12],
		"truncated name": goodWire[:20],
		"empty":          {},
		"huge counts":    append([]byte{0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, goodWire[12:]...),
		"pointer loop":   append(append([]byte{}, goodWire[:12]...), 0xc0, 12, 0, 1, 0, 1),
		"two questions":  mustPack(t, twoQ),
		"no question":    mustPack(t, noQ),
		"response":       mustPack(t, (&miekg.Msg{MsgHdr: miekg.MsgHdr{Response: true}, Question: good.Question})),
	}
	buf := make([]byte, 65535)
	for name, b := range inputs {
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := conn.Read(buf)
		if err != nil {
			continue // dropped
		}
		m := new(miekg.Msg)
		// Garbage whose header reads as another opcode gets NOTIMP.
		if err := m.Unpack(buf[:n]); err != nil || m.Rcode != miekg.RcodeFormatError && m.Rcode != miekg.RcodeNotImplemented ||
			len(m.Answer)+len(m.Ns)+len(m.Extra) > 0 {
			t.Errorf("%s: reply %v (%v), want FORMERR, NOTIMP or nothing", name, m, err)
		}
	}
	for _, proto := range []string{"udp", "tcp"} {
		c := &miekg.Client{Net: proto, Timeout: 2 * time.Second}
		m, _, err := c.Exchange(good, addr.String())
		if err != nil {
			t.Fatalf("%s after garbage: %v", proto, err)
		}
		if d := diff(m.Answer, []string{"n1.node.mesh.internal. 60 IN A 100.64.0.1"}, true, t); d != "" {
			t.Errorf("%s after garbage (-want +got):\n%s", proto, d)
		}
	}
}

func mustPack(t *testing.T, m *miekg.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTruncationOverTheWire checks that a real client sees TC over UDP
// and gets every record by retrying over TCP.
func TestTruncationOverTheWire(t *testing.T) {
	s := newBigServer(t, Config{MaxAnswers: -1}, 100)
	addr, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	q := new(miekg.Msg)
	q.SetQuestion("big.service.mesh.internal.", miekg.TypeSRV)
	m, _, err := (&miekg.Client{Net: "udp"}).Exchange(q, addr.String())
	if err != nil || !m.Truncated {
		t.Fatalf("UDP: tc=%v err=%v, want TC", m != nil && m.Truncated, err)
	}
	m, _, err = (&miekg.Client{Net: "tcp"}).Exchange(q, addr.String())
	if err != nil || m.Truncated || len(m.Answer) != 100 || len(m.Extra) != 200 {
		t.Fatalf("TCP: err=%v, want 100 SRV and 200 additional records", err)
	}
}

func TestCloseTwiceAndServeAfterClose(t *testing.T) {
	s := newTestServer(t, Config{})
	if _, err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Listen("127.0.0.1:0"); err == nil {
		t.Error("Listen after Close: no error")
	}
}
