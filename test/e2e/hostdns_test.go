package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/wiremesh/wiremesh/test/lab"
)

// upstreamZone is the zone of the lab's upstream resolver: one name with an
// address, every other name NXDOMAIN with the zone's SOA.
const (
	upstreamZone = "corp.example."
	upstreamName = "www.corp.example."
	upstreamAddr = "192.0.2.10"
)

// startZoneServer runs a DNS server for upstreamZone on h's address, port
// 53, over UDP and TCP: the host's usual resolver, as far as the agents in
// the lab know.
func startZoneServer(t *testing.T, h *lab.Host) {
	t.Helper()
	soa, err := miekg.NewRR(upstreamZone + " 60 IN SOA ns." + upstreamZone + " admin." + upstreamZone + " 1 60 60 60 60")
	if err != nil {
		t.Fatal(err)
	}
	handler := miekg.HandlerFunc(func(w miekg.ResponseWriter, req *miekg.Msg) {
		resp := new(miekg.Msg)
		resp.SetReply(req)
		resp.Authoritative, resp.RecursionAvailable = true, true
		switch q := req.Question[0]; {
		case strings.EqualFold(q.Name, upstreamName) && q.Qtype == miekg.TypeA:
			rr, _ := miekg.NewRR(upstreamName + " 300 IN A " + upstreamAddr)
			resp.Answer = append(resp.Answer, rr)
		case strings.EqualFold(q.Name, upstreamName):
			resp.Ns = append(resp.Ns, soa)
		default:
			resp.Rcode = miekg.RcodeNameError
			resp.Ns = append(resp.Ns, soa)
		}
		w.WriteMsg(resp)
	})
	addr := net.JoinHostPort(h.Addr.String(), "53")
	pc, err := h.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	l, err := h.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	for _, srv := range []*miekg.Server{{PacketConn: pc, Handler: handler}, {Listener: l, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() { defer close(done); srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { srv.Shutdown(); <-done })
	}
}

// getent resolves name with the host's own resolver (glibc, through its
// /etc/resolv.conf), as any program on the host does, and returns the
// addresses it got.
func getent(t *testing.T, h *lab.Host, name string) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := h.Run(ctx, "getent", "ahostsv4", name)
	if err != nil {
		return nil, err
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 0 && !slices.Contains(got, f[0]) { // one line a socket type
			got = append(got, f[0])
		}
	}
	return got, nil
}

// TestHostDNS: with nothing but the host's resolv.conf, an agent answers
// mesh names itself and forwards every other name to the host's resolver,
// passing its NXDOMAIN through; an unreachable resolver gives SERVFAIL
// within the client's timeout. Then the recipes of docs/dns.md for making
// the agent part of the host's resolution (plain resolv.conf, dnsmasq) run
// end to end, checked with getent, which resolves as every program does.
func TestHostDNS(t *testing.T) {
	lab.Require(t, "dig", "getent", "dnsmasq", "sh")
	m := newMesh(t)
	up := m.lab.AddHost("dns")
	startZoneServer(t, up)
	hostResolv := []byte("nameserver " + up.Addr.String() + "\n")

	// The host's resolv.conf names its usual resolver; the agent is
	// started with the default --resolv-conf (the harness's /dev/null is
	// overridden by the later flag).
	a1 := m.agentHost("a1")
	if err := a1.host.WriteEtc("resolv.conf", hostResolv); err != nil {
		t.Fatal(err)
	}
	a1.start(t, "--join", m.joinKey, "--resolv-conf", "/etc/resolv.conf")
	if err := a1.proc.WaitLog(`"upstreams":1`, time.Second); err != nil {
		t.Fatalf("a1 did not take the resolver of its resolv.conf: %v", err)
	}
	self := "a1.node.mesh.internal."
	r := a1.dig(t, self, "A")
	if r.status != "NOERROR" || !r.hasFlag("aa") || !slices.Equal(addrs(r.answer), []string{a1.addr(t, false).String()}) {
		t.Errorf("mesh name %s: want the agent's own authoritative answer %s, got:\n%s", self, a1.addr(t, false), r.raw)
	}
	r = a1.dig(t, upstreamName, "A")
	if r.status != "NOERROR" || !slices.Equal(addrs(r.answer), []string{upstreamAddr}) {
		t.Errorf("%s: want the upstream's %s, got:\n%s", upstreamName, upstreamAddr, r.raw)
	}
	r = a1.dig(t, "nope."+upstreamZone, "A")
	if r.status != "NXDOMAIN" || len(r.authority) != 1 || r.authority[0].Header().Name != upstreamZone {
		t.Errorf("nope.%s: want the upstream's NXDOMAIN with its SOA, got:\n%s", upstreamZone, r.raw)
	}

	t.Run("unreachable upstream", func(t *testing.T) {
		a := m.agentHost("a2")
		// An address on the lab's switch that no host holds: queries to it
		// go nowhere.
		if err := a.host.WriteEtc("resolv.conf", []byte("nameserver 198.51.100.250\n")); err != nil {
			t.Fatal(err)
		}
		a.start(t, "--join", m.joinKey, "--resolv-conf", "/etc/resolv.conf")
		const clientTimeout = 5 * time.Second
		start := time.Now()
		r, err := a.tryDig(upstreamName, "A", fmt.Sprintf("+time=%d", int(clientTimeout.Seconds())))
		took := time.Since(start)
		if err != nil || r.status != "SERVFAIL" || took >= clientTimeout {
			t.Errorf("with an unreachable upstream: want SERVFAIL within dig's %s, got %v after %s:\n%s", clientTimeout, err, took.Round(time.Millisecond), r.raw)
		}
		if r := a.dig(t, "a1.node.mesh.internal.", "A"); r.status != "NOERROR" || len(r.answer) != 1 {
			t.Errorf("mesh names with an unreachable upstream:\n%s", r.raw)
		}
	})

	// docs/dns.md, "Plain resolv.conf": the recipe's commands, run on the
	// host as written, with /etc/wiremesh replaced by a directory of the
	// test's (the machine's own /etc is not the lab's to change).
	t.Run("plain resolv.conf recipe", func(t *testing.T) {
		a := m.agentHost("a3")
		if err := a.host.WriteEtc("resolv.conf", hostResolv); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		recipe := strings.NewReplacer("/etc/wiremesh", dir).Replace(
			`cp /etc/resolv.conf /etc/wiremesh/upstream.conf
printf 'nameserver 127.0.0.1\nsearch mesh.internal\n' > /etc/resolv.conf`)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := a.host.Run(ctx, "sh", "-ec", recipe); err != nil {
			t.Fatalf("recipe: %v: %s", err, out)
		}
		a.start(t, "--join", m.joinKey, "--resolv-conf", filepath.Join(dir, "upstream.conf"))
		checkHostResolves(t, a, 53, "a1.node", a1)
	})

	// docs/dns.md, "dnsmasq": dnsmasq is the host's resolver on
	// 127.0.0.1:53 and sends the mesh domain to the agent on port 8600.
	t.Run("dnsmasq recipe", func(t *testing.T) {
		a := m.agentHost("a4")
		if err := a.host.WriteEtc("resolv.conf", []byte("nameserver 127.0.0.1\n")); err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(t.TempDir(), "dnsmasq.conf")
		// The recipe's line, and what a host's dnsmasq has anyway: its
		// upstream resolver, a port, no other sources.
		text := "server=/mesh.internal/127.0.0.1#8600\n" +
			"no-resolv\nno-hosts\nserver=" + up.Addr.String() + "\nlisten-address=127.0.0.1\nbind-interfaces\n"
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		d := a.host.Start(t, "dnsmasq", nil, "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--pid-file=", "--user=root", "--conf-file="+conf)
		if err := d.WaitLog("started", 10*time.Second); err != nil {
			t.Fatalf("dnsmasq: %v\n%s", err, d.Log())
		}
		a.start(t, "--join", m.joinKey, "--dns-port", "8600")
		checkHostResolves(t, a, 8600, "a1.node.mesh.internal", a1)
	})
}

// checkHostResolves checks, with the host's own resolver, that name (the
// mesh name of peer) and the upstream's name resolve on a's host, whose
// agent serves DNS on port.
func checkHostResolves(t *testing.T, a *agent, port int, name string, peer *agent) {
	t.Helper()
	want := peer.addr(t, false).String()
	// The agent's catalog follows its netmap: wait until its own server
	// answers the peer's name, then ask the way the host does.
	fqdn := peer.name + ".node.mesh.internal."
	waitFor(t, 5*time.Second, a.name+" serves "+fqdn, func() bool {
		r, err := digAt(a, port, fqdn)
		return err == nil && slices.Equal(addrs(r.answer), []string{want})
	})
	if got, err := getent(t, a.host, name); err != nil || !slices.Equal(got, []string{want}) {
		t.Errorf("getent %s on %s: %v %v, want %s", name, a.name, got, err, want)
	}
	if got, err := getent(t, a.host, strings.TrimSuffix(upstreamName, ".")); err != nil || !slices.Equal(got, []string{upstreamAddr}) {
		t.Errorf("getent %s on %s: %v %v, want %s", upstreamName, a.name, got, err, upstreamAddr)
	}
}

// digAt asks the agent's DNS server on its host's loopback at port.
func digAt(a *agent, port int, name string) (digResult, error) {
	return a.tryDig(name, "A", "-p", strconv.Itoa(port))
}
