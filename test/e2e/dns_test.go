package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/wiremesh/wiremesh/wire"
)

// digResult is dig's answer, parsed: the status, the flags and the records
// of each section.
type digResult struct {
	status     string
	flags      []string
	answer     []miekg.RR
	authority  []miekg.RR
	additional []miekg.RR
	raw        string
}

func (r digResult) hasFlag(f string) bool { return slices.Contains(r.flags, f) }

// dig asks the agent's own DNS server (on its host's loopback) with dig
// and parses the output; extra are dig options such as +tcp.
func (a *agent) dig(t *testing.T, name, qtype string, extra ...string) digResult {
	t.Helper()
	r, err := a.tryDig(name, qtype, extra...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (a *agent) tryDig(name, qtype string, extra ...string) (digResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	args := append([]string{"dig", "@127.0.0.1", "+tries=1", "+time=2", "+nocookie", "+ignore", name, qtype}, extra...)
	out, err := a.host.Run(ctx, args...)
	if err != nil {
		return digResult{}, fmt.Errorf("dig on %s: %w", a.name, err)
	}
	return parseDig(string(out))
}

// parseDig reads dig's default output.
func parseDig(out string) (digResult, error) {
	r := digResult{raw: out}
	var sec *[]miekg.RR
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, ";; ->>HEADER<<-"):
			_, st, _ := strings.Cut(line, "status: ")
			r.status, _, _ = strings.Cut(st, ",")
		case strings.HasPrefix(line, ";; flags:"):
			f, _, _ := strings.Cut(strings.TrimPrefix(line, ";; flags:"), ";")
			r.flags = strings.Fields(f)
		case line == ";; ANSWER SECTION:":
			sec = &r.answer
		case line == ";; AUTHORITY SECTION:":
			sec = &r.authority
		case line == ";; ADDITIONAL SECTION:":
			sec = &r.additional
		case line == "" || strings.HasPrefix(line, ";"):
			if line == "" {
				sec = nil
			}
		case sec != nil:
			rr, err := miekg.NewRR(line)
			if err != nil {
				return r, fmt.Errorf("dig output line %q: %w", line, err)
			}
			*sec = append(*sec, rr)
		}
	}
	if r.status == "" {
		return r, fmt.Errorf("no header in dig output:\n%s", out)
	}
	return r, nil
}

// addrs returns the A and AAAA addresses in rrs, sorted.
func addrs(rrs []miekg.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch rr := rr.(type) {
		case *miekg.A:
			out = append(out, rr.A.String())
		case *miekg.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	slices.Sort(out)
	return out
}

// srvs returns the SRV records in rrs as "PORT TARGET", sorted.
func srvs(rrs []miekg.RR) []string {
	var out []string
	for _, rr := range rrs {
		if s, ok := rr.(*miekg.SRV); ok {
			out = append(out, fmt.Sprintf("%d %s", s.Port, s.Target))
		}
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// healthServer is an HTTP server on a host whose /healthz answers with a
// status code the test sets.
type healthServer struct {
	code atomic.Int32
}

func startHealthServer(t *testing.T, a *agent, port int) *healthServer {
	t.Helper()
	ln, err := a.host.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	hs := &healthServer{}
	hs.code.Store(http.StatusOK)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(hs.code.Load()))
	}), ReadHeaderTimeout: time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return hs
}

// servicesFile writes a services file and returns its path.
func servicesFile(t *testing.T, text string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "services.hujson")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// startUpstream runs a DNS server on h answering every A query for
// example.org with 192.0.2.1, and returns its address.
func startUpstream(t *testing.T, m *mesh) string {
	t.Helper()
	pc, err := m.coordHost.ListenPacket("udp", m.coordHost.Addr.String()+":5353")
	if err != nil {
		t.Fatal(err)
	}
	srv := &miekg.Server{PacketConn: pc, Handler: miekg.HandlerFunc(func(w miekg.ResponseWriter, req *miekg.Msg) {
		resp := new(miekg.Msg)
		resp.SetReply(req)
		resp.RecursionAvailable = true
		if q := req.Question[0]; strings.EqualFold(q.Name, "example.org.") && q.Qtype == miekg.TypeA {
			rr, _ := miekg.NewRR("example.org. 300 IN A 192.0.2.1")
			resp.Answer = append(resp.Answer, rr)
		}
		w.WriteMsg(resp)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { srv.Shutdown(); <-done })
	return pc.LocalAddr().String()
}

// servicePolicy lets everyone reach web and jobs, web reach db, and ping;
// nodes tagged like a service provide it.
const servicePolicy = `{
"services": {"web": ["tag:web"], "jobs": ["tag:jobs"], "db": ["tag:db"]},
"acls": [
  {"action": "accept", "src": ["*"], "dst": ["svc:web", "svc:jobs"], "proto": "tcp"},
  {"action": "accept", "src": ["svc:web"], "dst": ["svc:db"], "proto": "tcp"},
  {"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "icmp"},
]}`

// TestServiceDNS checks every name form and record type from a client
// node's agent with dig, over UDP and TCP, with truncation; visibility by
// policy; NXDOMAIN with SOA versus an empty answer; forwarding; the admin
// listings of services and their health; and malformed packets.
func TestServiceDNS(t *testing.T) {
	m := newBareMesh(t)
	m.setPolicy(servicePolicy)
	upstream := startUpstream(t, m)

	// Five web instances with long node names, so that an SRV answer
	// with its addresses does not fit 512 bytes.
	names := []string{"web-instance-one-with-a-long-name-for-dns", "web-instance-two-with-a-long-name-for-dns",
		"web-instance-three-with-a-long-name-for-dn", "web-instance-four-with-a-long-name-for-dns", "web-instance-five-with-a-long-name-for-dns"}
	var webs []*agent
	for i, name := range names {
		tags := `["v1"]`
		if i == 0 {
			tags = `["v2", "primary"]`
		}
		extra, key := "", []string{"tag:web"}
		switch i {
		case 1:
			extra, key = `{"name": "jobs", "port": 9000, "checks": [{"ttl": "30s"}]},`, append(key, "tag:jobs")
		case 2:
			extra, key = `{"name": "db", "port": 5432},`, append(key, "tag:db")
		}
		f := servicesFile(t, `{"services": [
  {"name": "web", "port": 8080, "tags": `+tags+`, "checks": [{"http": "http://127.0.0.1:8080/healthz", "interval": "1s"}]},
  `+extra+`
]}`)
		a := m.addAgent(fmt.Sprintf("w%d", i+1), "--name", name, "--config", f, "--join", m.tagKey(key...))
		startHealthServer(t, a, 8080)
		webs = append(webs, a)
	}
	client := m.addAgent("c1", "--dns-upstream", upstream)
	noUp := webs[0] // started with an empty resolv.conf: no upstreams

	const zone = "mesh.internal."
	var web4, web6, webSRV []string
	for i, w := range webs {
		web4 = append(web4, w.addr(t, false).String())
		web6 = append(web6, w.addr(t, true).String())
		webSRV = append(webSRV, fmt.Sprintf("8080 %s.node.%s", names[i], zone))
	}
	web4, web6, webSRV = sorted(web4...), sorted(web6...), sorted(webSRV...)
	primary4 := webs[0].addr(t, false).String()
	v1 := slices.DeleteFunc(slices.Clone(web4), func(s string) bool { return s == primary4 })
	took := waitFor(t, 20*time.Second, "five healthy web instances in the client's DNS", func() bool {
		r, err := client.tryDig("web.service."+zone, "A")
		return err == nil && slices.Equal(addrs(r.answer), web4)
	})
	t.Logf("five instances in DNS %s after the last agent started", took.Round(time.Millisecond))

	for _, tt := range []struct {
		name, qtype string
		opts        []string
		status      string
		answer      []string // addresses or SRV "PORT TARGET"; nil: none
		soa         bool     // an SOA in the authority section
	}{
		{name: "web.service." + zone, qtype: "A", answer: web4},
		{name: "web.service." + zone, qtype: "A", opts: []string{"+tcp"}, answer: web4},
		{name: "WEB.Service.Mesh.Internal.", qtype: "A", answer: web4},
		{name: "web.service." + zone, qtype: "AAAA", answer: web6},
		{name: "web.service." + zone, qtype: "SRV", answer: webSRV},
		{name: "web.service." + zone, qtype: "SRV", opts: []string{"+tcp"}, answer: webSRV},
		{name: "_web._tcp.service." + zone, qtype: "SRV", answer: webSRV},
		{name: "primary.web.service." + zone, qtype: "A", answer: []string{primary4}},
		{name: "v1.web.service." + zone, qtype: "A", answer: v1},
		{name: "_web._primary.service." + zone, qtype: "SRV", answer: []string{webSRV[slices.Index(webSRV, "8080 "+names[0]+".node."+zone)]}},
		{name: "web.service.near." + zone, qtype: "A", answer: web4},
		{name: names[2] + ".node." + zone, qtype: "A", answer: []string{webs[2].addr(t, false).String()}},
		{name: names[2] + ".node." + zone, qtype: "AAAA", answer: []string{webs[2].addr(t, true).String()}},
		{name: "nope.service." + zone, qtype: "A", status: "NXDOMAIN", soa: true},
		{name: "nope.node." + zone, qtype: "A", status: "NXDOMAIN", soa: true},
		{name: "what.ever." + zone, qtype: "A", status: "NXDOMAIN", soa: true},
		// jobs has a ttl check that never passed: known, no healthy instance.
		{name: "jobs.service." + zone, qtype: "A", status: "NOERROR", soa: true},
		// db is on w3, which the client may not reach: it does not exist for it.
		{name: "db.service." + zone, qtype: "A", status: "NXDOMAIN", soa: true},
		{name: "example.org.", qtype: "A", answer: []string{"192.0.2.1"}},
	} {
		r := client.dig(t, tt.name, tt.qtype, tt.opts...)
		what := fmt.Sprintf("%s %s %v", tt.name, tt.qtype, tt.opts)
		if tt.status == "" {
			tt.status = "NOERROR"
		}
		got := addrs(r.answer)
		if tt.qtype == "SRV" {
			got = srvs(r.answer)
		}
		if r.status != tt.status || !slices.Equal(got, tt.answer) {
			t.Errorf("%s: %s %v, want %s %v\n%s", what, r.status, got, tt.status, tt.answer, r.raw)
		}
		if hasSOA := len(r.authority) == 1 && r.authority[0].Header().Rrtype == miekg.TypeSOA; hasSOA != tt.soa {
			t.Errorf("%s: authority %v, want SOA: %v", what, r.authority, tt.soa)
		}
		if tt.qtype == "SRV" && len(tt.answer) > 0 {
			// Every SRV target comes with its addresses.
			var targets []string
			for _, rr := range r.additional {
				if rr.Header().Rrtype == miekg.TypeA {
					targets = append(targets, rr.Header().Name)
				}
			}
			if len(targets) != len(tt.answer) {
				t.Errorf("%s: %d A records in the additional section for %d SRV records\n%s", what, len(targets), len(tt.answer), r.raw)
			}
		}
	}

	// Reverse lookup in the overlay prefix.
	for _, v6 := range []bool{false, true} {
		ad := webs[3].addr(t, v6)
		rev, _ := miekg.ReverseAddr(ad.String())
		r := client.dig(t, rev, "PTR")
		if len(r.answer) != 1 || r.answer[0].(*miekg.PTR).Ptr != names[3]+".node."+zone {
			t.Errorf("PTR of %s: %v\n%s", ad, r.answer, r.raw)
		}
	}

	// Truncation: without EDNS0 the SRV answer exceeds 512 bytes and is
	// trimmed by whole instances with TC set; over TCP it is complete.
	r := client.dig(t, "web.service."+zone, "SRV", "+noedns")
	if !r.hasFlag("tc") || len(r.answer) == 0 || len(r.answer) >= len(names) {
		t.Errorf("SRV without EDNS0: flags %v, %d answers; want tc and fewer than %d\n%s", r.flags, len(r.answer), len(names), r.raw)
	}
	for _, rr := range r.answer {
		if !slices.Contains(webSRV, fmt.Sprintf("%d %s", rr.(*miekg.SRV).Port, rr.(*miekg.SRV).Target)) {
			t.Errorf("truncated answer has a bad record %v", rr)
		}
	}
	r = client.dig(t, "web.service."+zone, "SRV", "+noedns", "+tcp")
	if r.hasFlag("tc") || !slices.Equal(srvs(r.answer), webSRV) {
		t.Errorf("SRV over TCP: flags %v, %v\n%s", r.flags, srvs(r.answer), r.raw)
	}

	// Visibility follows the policy: web instances may reach db. Wait for
	// the state this needs: w1's own view of w3's health (the client's
	// view above says nothing about it).
	db := []string{webs[2].addr(t, false).String()}
	waitFor(t, 10*time.Second, "db passing in w1's DNS", func() bool {
		r, err := noUp.tryDig("db.service."+zone, "A")
		return err == nil && slices.Equal(addrs(r.answer), db)
	})
	// No upstream: names outside the mesh are refused.
	if r := noUp.dig(t, "example.org.", "A"); r.status != "REFUSED" {
		t.Errorf("example.org without upstreams: %s, want REFUSED", r.status)
	}

	// Malformed packets over UDP and TCP: no crash, and answers go on.
	sendGarbage(t, client)
	if r := client.dig(t, "web.service."+zone, "A"); !slices.Equal(addrs(r.answer), web4) {
		t.Errorf("after malformed packets: %v\n%s", addrs(r.answer), r.raw)
	}
	if client.proc.Exited() {
		t.Fatalf("agent exited after malformed DNS packets:\n%s", client.proc.Log())
	}

	// The coordinator lists services with their health, and nodes with
	// their services. Its health comes from the agents' reports, not from
	// gossip: wait for the last report rather than take the client's DNS
	// as a sign of it.
	health := map[string][]string{}
	servicesHealthy := func() bool {
		var svcs []wire.CatalogService
		if err := json.Unmarshal([]byte(m.cli("services", "list", "--json")), &svcs); err != nil {
			t.Fatal(err)
		}
		clear(health)
		for _, cs := range svcs {
			for _, in := range cs.Instances {
				health[cs.Name] = append(health[cs.Name], in.Health)
			}
		}
		return slices.Equal(health["web"], []string{"passing", "passing", "passing", "passing", "passing"}) &&
			slices.Equal(health["jobs"], []string{"critical"}) && slices.Equal(health["db"], []string{"passing"})
	}
	start := time.Now()
	for !servicesHealthy() && time.Since(start) < 10*time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	if !servicesHealthy() {
		t.Errorf("services list: %v", health)
	}
	if out := m.cli("services", "list"); !strings.Contains(out, "jobs") || !strings.Contains(out, "critical") {
		t.Errorf("services list table:\n%s", out)
	}
	if out := m.cli("nodes", "list"); !strings.Contains(out, "web(passing),jobs(critical)") && !strings.Contains(out, "jobs(critical),web(passing)") {
		t.Errorf("nodes list does not show w2's services and health:\n%s", out)
	}
	m.assertNoSecrets(t)
}

// sendGarbage sends malformed DNS messages to a's DNS server over UDP and
// TCP from inside its host.
func sendGarbage(t *testing.T, a *agent) {
	t.Helper()
	msgs := [][]byte{{}, {0x12}, {0x12, 0x34, 0x01, 0x00, 0x00, 0x01}, make([]byte, 12), bytesRepeat(0xff, 600),
		append([]byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, 63, 'x')}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, network := range []string{"udp", "tcp"} {
		for _, b := range msgs {
			c, err := a.host.DialContext(ctx, network, "127.0.0.1:53")
			if err != nil {
				t.Fatal(err)
			}
			if network == "tcp" {
				b = append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)
			}
			c.Write(b)
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			buf := make([]byte, 1500)
			if n, err := c.Read(buf); err == nil && n >= 4 && network == "udp" {
				var m miekg.Msg
				if m.Unpack(buf[:n]) == nil && m.Rcode != miekg.RcodeFormatError {
					t.Errorf("malformed %x over udp: rcode %s, want FORMERR or no answer", b, miekg.RcodeToString[m.Rcode])
				}
			}
			c.Close()
		}
	}
}

func bytesRepeat(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// TestFailover: with three instances of a service, a SIGKILLed agent drops
// out of every other agent's answers within 5 s and comes back within 5 s
// of its restart; a failing HTTP check drops an instance within its
// interval + 1 s; with the coordinator down, answers and failover keep
// working from the cached catalog and gossip.
func TestFailover(t *testing.T) {
	m := newBareMesh(t)
	m.setPolicy(servicePolicy)
	var webs []*agent
	var hs []*healthServer
	f := servicesFile(t, `{"services": [{"name": "web", "port": 8080,
  "checks": [{"http": "http://127.0.0.1:8080/healthz", "interval": "1s", "timeout": "500ms"}]}]}`)
	for i := range 3 {
		a := m.addAgent(fmt.Sprintf("h%d", i+1), "--config", f, "--join", m.tagKey("tag:web"))
		hs = append(hs, startHealthServer(t, a, 8080))
		webs = append(webs, a)
	}
	client := m.addAgent("c1")
	const name = "web.service.mesh.internal."
	answers := func(a *agent) []string {
		r, err := a.tryDig(name, "A")
		if err != nil {
			return nil
		}
		return addrs(r.answer)
	}
	all := sorted(webs[0].addr(t, false).String(), webs[1].addr(t, false).String(), webs[2].addr(t, false).String())
	observers := []*agent{client, webs[0], webs[1], webs[2]}
	waitFor(t, 20*time.Second, "three instances everywhere", func() bool {
		for _, o := range observers {
			if !slices.Equal(answers(o), all) {
				return false
			}
		}
		return true
	})

	// waitAll polls every observer until want holds for its answers and
	// returns how long each took.
	waitAll := func(what string, obs []*agent, limit time.Duration, want func([]string) bool) {
		t.Helper()
		start := time.Now()
		took := map[string]time.Duration{}
		for len(took) < len(obs) {
			for _, o := range obs {
				if _, done := took[o.name]; !done && want(answers(o)) {
					took[o.name] = time.Since(start)
				}
			}
			if time.Since(start) > limit && len(took) < len(obs) {
				t.Fatalf("%s: not within %s at every agent (done: %v)", what, limit, took)
			}
			time.Sleep(50 * time.Millisecond)
		}
		var parts []string
		for _, o := range obs {
			parts = append(parts, fmt.Sprintf("%s %s", o.name, took[o.name].Round(time.Millisecond)))
		}
		t.Logf("%s: %s", what, strings.Join(parts, ", "))
	}
	without := func(a *agent) func([]string) bool {
		ad := a.addr(t, false).String()
		return func(got []string) bool { return len(got) > 0 && !slices.Contains(got, ad) }
	}
	with := func(a *agent) func([]string) bool {
		ad := a.addr(t, false).String()
		return func(got []string) bool { return slices.Contains(got, ad) }
	}

	// Every agent sees every other alive in gossip, with an RTT estimate.
	waitFor(t, 10*time.Second, "gossip alive with RTT estimates", func() bool {
		for _, o := range observers {
			st := o.status(t)
			if len(st.Peers) != 3 || st.Gossip == nil || st.Gossip.Members != 4 {
				return false
			}
			for _, p := range st.Peers {
				if p.Gossip != "alive" || p.RTT <= 0 {
					return false
				}
			}
		}
		return true
	})

	// Rotate the gossip key and retire the old one: the pool holds
	// together, as the kills and restarts below show.
	keys := func(a *agent) int {
		var nm wire.Netmap
		b, _ := os.ReadFile(filepath.Join(a.stateDir, "netmap.json"))
		if json.Unmarshal(b, &nm) != nil || nm.Gossip == nil {
			return 0
		}
		return len(nm.Gossip.Keys)
	}
	m.cli("gossip", "rotate")
	waitFor(t, 5*time.Second, "two gossip keys everywhere", func() bool {
		return !slices.ContainsFunc(observers, func(a *agent) bool { return keys(a) != 2 })
	})
	m.cli("gossip", "retire")
	waitFor(t, 5*time.Second, "one gossip key everywhere", func() bool {
		return !slices.ContainsFunc(observers, func(a *agent) bool { return keys(a) != 1 })
	})
	for _, o := range observers {
		if !strings.Contains(o.proc.Log(), "gossip keys changed") {
			t.Errorf("%s did not change its gossip keys", o.name)
		}
	}

	// SIGKILL h2: gone everywhere else within 5 s.
	webs[1].proc.Kill()
	others := []*agent{client, webs[0], webs[2]}
	waitAll("h2 SIGKILLed → gone from answers", others, 5*time.Second, without(webs[1]))
	// Restart it: back within 5 s.
	restart := time.Now()
	webs[1].start(t, "--config", f)
	t.Logf("h2 agent restarted in %s", time.Since(restart).Round(time.Millisecond))
	waitAll("h2 restarted → back in answers", others, 5*time.Second, with(webs[1]))

	// A failing HTTP check: gone within one interval + 1 s.
	hs[2].code.Store(http.StatusInternalServerError)
	waitAll("h3 check fails → gone from answers", []*agent{client, webs[0], webs[1]}, 2*time.Second, without(webs[2]))
	hs[2].code.Store(http.StatusOK)
	waitAll("h3 check passes → back in answers", []*agent{client, webs[0], webs[1]}, 3*time.Second, with(webs[2]))

	// Coordinator down: answers and failover go on from the cached catalog
	// and gossip.
	m.coord.Kill()
	if _, err := m.coord.Wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := answers(client); !slices.Equal(got, all) {
		t.Fatalf("coordinator down: %v, want %v", got, all)
	}
	webs[0].proc.Kill()
	waitAll("coordinator down, h1 SIGKILLed → gone from answers", []*agent{client, webs[1], webs[2]}, 5*time.Second, without(webs[0]))
	hs[1].code.Store(http.StatusInternalServerError)
	waitAll("coordinator down, h2 check fails → gone from answers", []*agent{client, webs[2]}, 2*time.Second, without(webs[1]))
	webs[0].start(t, "--config", f)
	waitAll("coordinator down, h1 restarted from cache → back in answers", []*agent{client, webs[2]}, 5*time.Second, with(webs[0]))
}
