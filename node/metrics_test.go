package node

import (
	"encoding/binary"
	"github.com/wiremesh/wiremesh/node/bind"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/wiremesh/wiremesh/filter"
	"github.com/wiremesh/wiremesh/health"
	"github.com/wiremesh/wiremesh/service"
	"github.com/wiremesh/wiremesh/wire"
)

// statsEngine is an Engine with fixed counters.
type statsEngine struct{ stats map[string]PeerStats }

func (e *statsEngine) Apply(*wire.Netmap) error             { return nil }
func (e *statsEngine) Stats() (map[string]PeerStats, error) { return e.stats, nil }
func (e *statsEngine) Close() error                         { return nil }
func (e *statsEngine) SetPrivateKey(wgtypes.Key) error      { return nil }

// tcp4 makes an IPv4 TCP SYN from src to dst:port.
func tcp4(src, dst netip.Addr, port uint16) []byte {
	b := make([]byte, 40)
	b[0], b[9], b[8] = 0x45, wire.ProtoTCP, 64
	binary.BigEndian.PutUint16(b[2:], 40)
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[20:], 40000)
	binary.BigEndian.PutUint16(b[22:], port)
	b[32], b[33] = 5<<4, 0x02 // data offset, SYN
	return b
}

func TestAgentMetrics(t *testing.T) {
	f, err := filter.New(filter.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.SetRules(testFlowRules())
	f.Inbound(tcp4(alice, self, 22))
	f.Inbound(tcp4(alice, self, 23))
	f.Inbound(tcp4(alice, self, 24))
	f.Inbound([]byte{0x45})
	f.Inbound(tcp4(alice, netip.MustParseAddr("172.31.0.2"), 22))

	runner := health.New(health.DefaultConfig())
	defer runner.Close()
	svc := newServices("", runner, slog.New(slog.DiscardHandler))
	if err := svc.register([]service.Definition{{Name: "web", Port: 80, Protocol: service.TCP, Checks: []service.CheckDef{
		{ID: "web:1", Kind: service.KindTTL, TTL: time.Hour, SuccessBeforePassing: 1, FailuresBeforeCritical: 1},
		{ID: "web:2", Kind: service.KindTTL, TTL: time.Hour, SuccessBeforePassing: 1, FailuresBeforeCritical: 1},
	}}}); err != nil {
		t.Fatal(err)
	}
	if err := runner.ReportTTL("web:1", health.Passing, ""); err != nil {
		t.Fatal(err)
	}

	handshake := time.Now().Add(-30 * time.Second)
	a := &Agent{
		cfg: Config{Version: "1.2.3"}, log: slog.New(slog.DiscardHandler),
		data: &dataPath{
			bind: testBind(t), relays: newRelays([32]byte{}, nil, slog.New(slog.DiscardHandler)),
			filter: f,
			engine: &statsEngine{stats: map[string]PeerStats{
				"keyA": {RxBytes: 1000, TxBytes: 2000, LastHandshake: handshake},
			}},
			netmap: &wire.Netmap{
				Version: 9, PolicyVersion: 4, Rules: make([]wire.FilterRule, 2), Self: wire.Node{Name: "me"},
				Peers: []wire.Node{{Name: "alice", PublicKey: "keyA"}, {Name: "bob", PublicKey: "keyB"}},
			},
		},
		ctl: &control{connected: true}, mesh: &mesh{},
	}
	a.svc.Store(svc)
	a.dnsCount.observe(miekg.TypeA, miekg.RcodeSuccess, false)
	a.dnsCount.observe(miekg.TypeA, miekg.RcodeSuccess, false)
	a.dnsCount.observe(miekg.TypeSRV, miekg.RcodeNameError, false)
	a.dnsCount.observe(miekg.TypeMX, miekg.RcodeServerFailure, true)
	a.dnsCount.observe(65000, 12, false) // an unknown type, an unassigned code
	a.dnsCount.observe(65001, 99, false) // the same series

	reg := a.metricsRegistry()
	want := `
# HELP wiremesh_agent_coordinator_connected 1 while the netmap stream from the coordinator is open, else 0.
# TYPE wiremesh_agent_coordinator_connected gauge
wiremesh_agent_coordinator_connected 1
# HELP wiremesh_agent_info Always 1: the node's name and the agent's version.
# TYPE wiremesh_agent_info gauge
wiremesh_agent_info{node="me",version="1.2.3"} 1
# HELP wiremesh_agent_netmap_version Version of the netmap in force (0: none yet).
# TYPE wiremesh_agent_netmap_version gauge
wiremesh_agent_netmap_version 9
# HELP wiremesh_agent_policy_version Version of the access policy in force (0: none, all inbound traffic denied).
# TYPE wiremesh_agent_policy_version gauge
wiremesh_agent_policy_version 4
# HELP wiremesh_agent_inbound_rules Compiled inbound rules of this node.
# TYPE wiremesh_agent_inbound_rules gauge
wiremesh_agent_inbound_rules 2
# HELP wiremesh_agent_peers Peers in the netmap.
# TYPE wiremesh_agent_peers gauge
wiremesh_agent_peers 2
# HELP wiremesh_agent_peer_receive_bytes_total Bytes received from the peer over WireGuard (as wgctrl counts them).
# TYPE wiremesh_agent_peer_receive_bytes_total counter
wiremesh_agent_peer_receive_bytes_total{peer="alice"} 1000
wiremesh_agent_peer_receive_bytes_total{peer="bob"} 0
# HELP wiremesh_agent_peer_transmit_bytes_total Bytes sent to the peer over WireGuard (as wgctrl counts them).
# TYPE wiremesh_agent_peer_transmit_bytes_total counter
wiremesh_agent_peer_transmit_bytes_total{peer="alice"} 2000
wiremesh_agent_peer_transmit_bytes_total{peer="bob"} 0
# HELP wiremesh_agent_packets_accepted_total Inbound packets the filter let in.
# TYPE wiremesh_agent_packets_accepted_total counter
wiremesh_agent_packets_accepted_total 1
# HELP wiremesh_agent_packets_dropped_total Inbound packets the filter dropped, by reason: no_rule, malformed, fragment, not_own_address.
# TYPE wiremesh_agent_packets_dropped_total counter
wiremesh_agent_packets_dropped_total{reason="fragment"} 0
wiremesh_agent_packets_dropped_total{reason="malformed"} 1
wiremesh_agent_packets_dropped_total{reason="no_rule"} 2
wiremesh_agent_packets_dropped_total{reason="not_own_address"} 1
# HELP wiremesh_agent_conntrack_entries Flows the filter tracks now (opened by either side).
# TYPE wiremesh_agent_conntrack_entries gauge
wiremesh_agent_conntrack_entries 1
# HELP wiremesh_agent_dns_queries_total DNS queries answered, by question type, response code and origin (mesh: answered from the catalog; upstream: forwarded, with the upstream's code, or SERVFAIL/REFUSED when none answered).
# TYPE wiremesh_agent_dns_queries_total counter
wiremesh_agent_dns_queries_total{origin="mesh",qtype="A",rcode="NOERROR"} 2
wiremesh_agent_dns_queries_total{origin="mesh",qtype="SRV",rcode="NXDOMAIN"} 1
wiremesh_agent_dns_queries_total{origin="mesh",qtype="other",rcode="other"} 2
wiremesh_agent_dns_queries_total{origin="upstream",qtype="MX",rcode="SERVFAIL"} 1
# HELP wiremesh_agent_checks Health checks of local services by status: passing, warning, critical.
# TYPE wiremesh_agent_checks gauge
wiremesh_agent_checks{status="critical"} 1
wiremesh_agent_checks{status="passing"} 1
wiremesh_agent_checks{status="warning"} 0
# HELP wiremesh_agent_check_status 1 for a check's current status, 0 for the others.
# TYPE wiremesh_agent_check_status gauge
wiremesh_agent_check_status{check="web:1",service="web",status="critical"} 0
wiremesh_agent_check_status{check="web:1",service="web",status="passing"} 1
wiremesh_agent_check_status{check="web:1",service="web",status="warning"} 0
wiremesh_agent_check_status{check="web:2",service="web",status="critical"} 1
wiremesh_agent_check_status{check="web:2",service="web",status="passing"} 0
wiremesh_agent_check_status{check="web:2",service="web",status="warning"} 0
# HELP wiremesh_agent_path_changes_total Changes of a peer's path kind (direct, relay, none) or direct address.
# TYPE wiremesh_agent_path_changes_total counter
wiremesh_agent_path_changes_total 0
# HELP wiremesh_agent_nat_type Always 1: this node's NAT type as STUN found it (unknown, none, easy, hard, udp_blocked).
# TYPE wiremesh_agent_nat_type gauge
wiremesh_agent_nat_type{nat="unknown"} 1
# HELP wiremesh_agent_path_transmit_bytes_total WireGuard bytes sent to peers, by path: direct, relay (a packet sent on both while a path changes counts on both).
# TYPE wiremesh_agent_path_transmit_bytes_total counter
wiremesh_agent_path_transmit_bytes_total{path="direct"} 0
wiremesh_agent_path_transmit_bytes_total{path="relay"} 0
`
	names := []string{
		"wiremesh_agent_coordinator_connected", "wiremesh_agent_info", "wiremesh_agent_netmap_version",
		"wiremesh_agent_policy_version", "wiremesh_agent_inbound_rules", "wiremesh_agent_peers",
		"wiremesh_agent_peer_receive_bytes_total", "wiremesh_agent_peer_transmit_bytes_total",
		"wiremesh_agent_packets_accepted_total", "wiremesh_agent_packets_dropped_total", "wiremesh_agent_conntrack_entries",
		"wiremesh_agent_dns_queries_total", "wiremesh_agent_checks", "wiremesh_agent_check_status",
		"wiremesh_agent_path_changes_total", "wiremesh_agent_nat_type", "wiremesh_agent_path_transmit_bytes_total",
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// Handshake age: only for a peer that had one, about 30 s.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "wiremesh_agent_peer_handshake_age_seconds":
			if ms := mf.GetMetric(); len(ms) != 1 || ms[0].GetGauge().GetValue() < 29 || ms[0].GetGauge().GetValue() > 60 {
				t.Errorf("handshake age: %v, want one peer at about 30 s", ms)
			}
		case "wiremesh_agent_peer_last_handshake_timestamp_seconds":
			if ms := mf.GetMetric(); len(ms) != 1 || int64(ms[0].GetGauge().GetValue()) != handshake.Unix() {
				t.Errorf("handshake time: %v, want %d", ms, handshake.Unix())
			}
		case "wiremesh_agent_gossip_members":
			t.Errorf("gossip metrics without a serf member: %v", mf)
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// testBind returns a bind that is never opened.
func testBind(t *testing.T) *bind.Bind {
	t.Helper()
	b, err := bind.New(bind.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAgentMetricsBeforeNetmap: a scrape before the first netmap, and with
// the filter off, answers what is known.
func TestAgentMetricsBeforeNetmap(t *testing.T) {
	a := &Agent{log: slog.New(slog.DiscardHandler), ctl: &control{}, mesh: &mesh{}, data: &dataPath{engine: &statsEngine{}, bind: testBind(t), relays: newRelays([32]byte{}, nil, slog.New(slog.DiscardHandler))}}
	n, err := testutil.GatherAndCount(a.metricsRegistry(), "wiremesh_agent_coordinator_connected", "wiremesh_agent_netmap_version", "wiremesh_agent_packets_accepted_total")
	if err != nil || n != 1 {
		t.Errorf("before a netmap: %d series, %v; want only coordinator_connected", n, err)
	}
}

// TestDNSCountsNoAllocs: counting a query is allocation-free.
func TestDNSCountsNoAllocs(t *testing.T) {
	var d dnsCounts
	if n := testing.AllocsPerRun(1000, func() { d.observe(miekg.TypeAAAA, miekg.RcodeNameError, true) }); n != 0 {
		t.Errorf("observe allocates %v times", n)
	}
}
