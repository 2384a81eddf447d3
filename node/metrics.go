package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/wiremesh/wiremesh/filter"
	"github.com/wiremesh/wiremesh/gossip"
	"github.com/wiremesh/wiremesh/health"
	"github.com/wiremesh/wiremesh/node/bind"
	"github.com/wiremesh/wiremesh/wire"
)

// The agent's metrics are computed when they are scraped, from what the
// agent keeps anyway (the engine's, filter's, runner's and serf member's
// counters and state), so that nothing is counted twice and the packet
// path carries no metric code. Only DNS queries are counted for metrics,
// in fixed arrays (dnsCounts). docs/observability.md lists them.

// metricsServer serves /metrics on Config.MetricsListen.
type metricsServer struct {
	srv *http.Server
	wg  sync.WaitGroup // the Serve goroutine
}

// listenMetrics binds Config.MetricsListen and serves the agent's metrics
// there until close; nil (and no error) when it is empty.
func (a *Agent) listenMetrics() (*metricsServer, error) {
	if a.cfg.MetricsListen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", a.cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w (choose another with --metrics-listen, or \"\" for none)", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metricsRegistry(), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	m := &metricsServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	a.log.Info("metrics listening", "addr", ln.Addr().String())
	return m, nil
}

// close stops serving and waits for the serving goroutine. Safe on nil.
func (m *metricsServer) close() {
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m.srv.Shutdown(ctx)
	m.wg.Wait()
}

// metricsRegistry returns a registry of the agent's metrics and the Go
// runtime's and process's.
func (a *Agent) metricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&agentCollector{a: a},
	)
	return reg
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("wiremesh_agent_"+name, help, labels, nil)
}

// Descriptions of the agent's metrics.
var (
	infoDesc           = desc("info", "Always 1: the node's name and the agent's version.", "node", "version")
	connectedDesc      = desc("coordinator_connected", "1 while the netmap stream from the coordinator is open, else 0.")
	netmapVersionDesc  = desc("netmap_version", "Version of the netmap in force (0: none yet).")
	policyVersionDesc  = desc("policy_version", "Version of the access policy in force (0: none, all inbound traffic denied).")
	rulesDesc          = desc("inbound_rules", "Compiled inbound rules of this node.")
	peersDesc          = desc("peers", "Peers in the netmap.")
	peerRxDesc         = desc("peer_receive_bytes_total", "Bytes received from the peer over WireGuard (as wgctrl counts them).", "peer")
	peerTxDesc         = desc("peer_transmit_bytes_total", "Bytes sent to the peer over WireGuard (as wgctrl counts them).", "peer")
	peerHandshakeDesc  = desc("peer_last_handshake_timestamp_seconds", "Unix time of the last completed handshake with the peer; absent before the first.", "peer")
	peerAgeDesc        = desc("peer_handshake_age_seconds", "Seconds since the last completed handshake with the peer; absent before the first.", "peer")
	acceptedDesc       = desc("packets_accepted_total", "Inbound packets the filter let in.")
	droppedDesc        = desc("packets_dropped_total", "Inbound packets the filter dropped, by reason: no_rule, malformed, fragment, not_own_address.", "reason")
	conntrackDesc      = desc("conntrack_entries", "Flows the filter tracks now (opened by either side).")
	evictedDesc        = desc("conntrack_evictions_total", "Live tracked flows pushed out of a full connection table bucket.")
	flowRecordsDesc    = desc("flow_records_total", "Flow records kept, by event: denied, new.", "event")
	flowSuppressedDesc = desc("flow_records_suppressed_total", "Flow records (and packet-denied log lines) the rate limiters refused, by event: denied, new.", "event")
	flowLostDesc       = desc("flow_records_lost_total", "Flow records lost because the agent fell behind the filter.")
	dnsQueriesDesc     = desc("dns_queries_total", "DNS queries answered, by question type, response code and origin (mesh: answered from the catalog; upstream: forwarded, with the upstream's code, or SERVFAIL/REFUSED when none answered).", "qtype", "rcode", "origin")
	checksDesc         = desc("checks", "Health checks of local services by status: passing, warning, critical.", "status")
	checkStatusDesc    = desc("check_status", "1 for a check's current status, 0 for the others.", "service", "check", "status")
	membersDesc        = desc("gossip_members", "Serf members this agent knows, itself included, by status: alive, failed, left.", "status")
	gossipRxDesc       = desc("gossip_receive_bytes_total", "Gossip payload bytes received (UDP and TCP).")
	gossipTxDesc       = desc("gossip_transmit_bytes_total", "Gossip payload bytes sent (UDP and TCP).")
	gossipRxPktDesc    = desc("gossip_receive_packets_total", "Gossip UDP packets received.")
	gossipTxPktDesc    = desc("gossip_transmit_packets_total", "Gossip UDP packets sent.")
	pathTxDesc         = desc("path_transmit_bytes_total", "WireGuard bytes sent to peers, by path: direct, relay (a packet sent on both while a path changes counts on both).", "path")
	pathRxDesc         = desc("path_receive_bytes_total", "WireGuard bytes received from peers, by path: direct, relay.", "path")
	pathTxPktDesc      = desc("path_transmit_packets_total", "WireGuard packets sent to peers, by path: direct, relay.", "path")
	pathRxPktDesc      = desc("path_receive_packets_total", "WireGuard packets received from peers, by path: direct, relay.", "path")
	pathChangesDesc    = desc("path_changes_total", "Changes of a peer's path kind (direct, relay, none) or direct address.")
	pathsDesc          = desc("peer_paths", "Peers by the kind of their current path: direct, relay, none.", "path")
	discoDroppedDesc   = desc("disco_dropped_total", "Path probe messages dropped, by reason: unknown_key, bad_seal, malformed, pong_unexpected, pong_wrong_key, pong_wrong_addr, pong_late.", "reason")
	relayDropsDesc     = desc("relay_dropped_packets_total", "Relayed WireGuard packets dropped: queue full, sender not a peer, or too large.")
	repairsDesc        = desc("session_repairs_total", "Handshakes started because a peer's packets arrived but did not decrypt (a session that worked one way only).")
	relayConnectedDesc = desc("relay_connected", "1 while the agent is attached to the relay, else 0.", "relay")
	relayHomeDesc      = desc("relay_home", "1 for the relay this node prefers (its home relay), 0 for the others.", "relay")
	natDesc            = desc("nat_type", "Always 1: this node's NAT type as STUN found it (unknown, none, easy, hard, udp_blocked).", "nat")
)

// agentCollector collects the agent's metrics at scrape time.
type agentCollector struct{ a *Agent }

// Describe sends every metric's description.
func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		infoDesc, connectedDesc, netmapVersionDesc, policyVersionDesc, rulesDesc, peersDesc,
		peerRxDesc, peerTxDesc, peerHandshakeDesc, peerAgeDesc,
		acceptedDesc, droppedDesc, conntrackDesc, evictedDesc, flowRecordsDesc, flowSuppressedDesc, flowLostDesc,
		dnsQueriesDesc, checksDesc, checkStatusDesc,
		membersDesc, gossipRxDesc, gossipTxDesc, gossipRxPktDesc, gossipTxPktDesc,
		pathTxDesc, pathRxDesc, pathTxPktDesc, pathRxPktDesc, pathChangesDesc, pathsDesc,
		discoDroppedDesc, relayDropsDesc, repairsDesc, relayConnectedDesc, relayHomeDesc, natDesc,
	} {
		ch <- d
	}
}

// Collect reads the agent's state. It runs on the metrics server's
// goroutines, after Run has made the engine, filter and services.
func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	nm := a.data.current()
	connected, _ := a.ctl.streamState()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(connectedDesc, boolValue(connected))
	if nm != nil {
		gauge(infoDesc, 1, nm.Self.Name, a.cfg.Version)
		gauge(netmapVersionDesc, float64(nm.Version))
		gauge(policyVersionDesc, float64(nm.PolicyVersion))
		gauge(rulesDesc, float64(len(nm.Rules)))
		gauge(peersDesc, float64(len(nm.Peers)))
		if stats, err := a.data.engine.Stats(); err != nil {
			a.log.Debug("metrics: no WireGuard counters", "err", err)
		} else {
			now := time.Now()
			for _, p := range nm.Peers {
				s := stats[p.PublicKey]
				counter(peerRxDesc, float64(s.RxBytes), p.Name)
				counter(peerTxDesc, float64(s.TxBytes), p.Name)
				if !s.LastHandshake.IsZero() {
					gauge(peerHandshakeDesc, float64(s.LastHandshake.UnixMilli())/1e3, p.Name)
					gauge(peerAgeDesc, max(0, now.Sub(s.LastHandshake).Seconds()), p.Name)
				}
			}
		}
	}
	if a.data.filter != nil {
		fs := a.data.filter.Stats()
		counter(acceptedDesc, float64(fs.Accepted))
		for v := filter.DropNoRule; v < filter.NumVerdicts; v++ {
			counter(droppedDesc, float64(fs.Dropped[v]), strings.ReplaceAll(v.String(), " ", "_"))
		}
		gauge(conntrackDesc, float64(fs.Conns))
		counter(evictedDesc, float64(fs.Evicted))
		counter(flowSuppressedDesc, float64(fs.Suppressed), eventDenied)
		counter(flowSuppressedDesc, float64(fs.NewFlowsSuppressed), eventNew)
		counter(flowLostDesc, float64(fs.FlowsLost))
	}
	if a.data.flows != nil {
		denied, added := a.data.flows.counts()
		counter(flowRecordsDesc, float64(denied), eventDenied)
		counter(flowRecordsDesc, float64(added), eventNew)
	}
	a.dnsCount.collect(func(qtype, rcode, origin string, n uint64) { counter(dnsQueriesDesc, float64(n), qtype, rcode, origin) })
	if svc := a.svc.Load(); svc != nil {
		collectChecks(svc.runner.Results(), gauge)
	}
	if m := a.mesh.member.Load(); m != nil {
		collectGossip(m, gauge, counter)
	}
	a.data.collectPaths(gauge, counter)
}

// collectPaths emits the bind's traffic by path, path changes and drops,
// the peers by path kind, the relays' connections and the NAT type.
func (d *dataPath) collectPaths(gauge, counter func(*prometheus.Desc, float64, ...string)) {
	s := d.bind.Stats()
	for _, t := range []struct {
		path   string
		tx, rx bind.Traffic
	}{{"direct", s.DirectTx, s.DirectRx}, {"relay", s.RelayTx, s.RelayRx}} {
		counter(pathTxDesc, float64(t.tx.Bytes), t.path)
		counter(pathRxDesc, float64(t.rx.Bytes), t.path)
		counter(pathTxPktDesc, float64(t.tx.Packets), t.path)
		counter(pathRxPktDesc, float64(t.rx.Packets), t.path)
	}
	counter(pathChangesDesc, float64(s.PathChanges))
	for r, n := range s.DiscoDropped {
		counter(discoDroppedDesc, float64(n), bind.DropReason(r).String())
	}
	counter(relayDropsDesc, float64(s.RelayDrops))
	counter(repairsDesc, float64(s.SessionRepairs))
	kinds := map[bind.PathKind]int{}
	for _, ps := range d.bind.Paths() {
		kinds[ps.Kind]++
	}
	for _, k := range []bind.PathKind{bind.PathDirect, bind.PathRelay, bind.PathNone} {
		gauge(pathsDesc, float64(kinds[k]), string(k))
	}
	home := d.relays.Home()
	for _, r := range d.relays.states() {
		gauge(relayConnectedDesc, boolValue(r.Connected), r.Name)
		gauge(relayHomeDesc, boolValue(r.Name == home), r.Name)
	}
	gauge(natDesc, 1, string(d.bind.NAT()))
}

// collectChecks emits the checks by status and each check's status.
func collectChecks(results []health.Result, gauge func(*prometheus.Desc, float64, ...string)) {
	statuses := []wire.Health{wire.Passing, wire.Warning, wire.Critical}
	by := map[wire.Health]int{}
	for _, r := range results {
		by[r.Status]++
		for _, st := range statuses {
			gauge(checkStatusDesc, boolValue(r.Status == st), r.Service, r.CheckID, st.String())
		}
	}
	for _, st := range statuses {
		gauge(checksDesc, float64(by[st]), st.String())
	}
}

// collectGossip emits the serf member's view and traffic.
func collectGossip(m *gossip.Member, gauge, counter func(*prometheus.Desc, float64, ...string)) {
	by := map[gossip.Status]int{}
	for _, mi := range m.Members() {
		by[mi.Status]++
	}
	for _, st := range []gossip.Status{gossip.Alive, gossip.Failed, gossip.Left} {
		gauge(membersDesc, float64(by[st]), st.String())
	}
	gs := m.Stats()
	counter(gossipRxDesc, float64(gs.BytesReceived))
	counter(gossipTxDesc, float64(gs.BytesSent))
	counter(gossipRxPktDesc, float64(gs.PacketsReceived))
	counter(gossipTxPktDesc, float64(gs.PacketsSent))
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// DNS query counters: fixed arrays indexed by question type (the common
// ones, then "other"), response code and origin, so that counting a query
// is one atomic add.
var dnsTypes = [...]uint16{
	miekg.TypeA, miekg.TypeAAAA, miekg.TypeSRV, miekg.TypePTR, miekg.TypeSOA, miekg.TypeNS,
	miekg.TypeCNAME, miekg.TypeTXT, miekg.TypeMX, miekg.TypeHTTPS, miekg.TypeSVCB, miekg.TypeANY,
}

const (
	numDNSTypes  = len(dnsTypes) + 1 // + other
	numDNSRcodes = 24                // codes 0-23 have a slot each; higher ones share one
)

// dnsCounts counts answered DNS queries for the metrics.
type dnsCounts struct {
	n [numDNSTypes][numDNSRcodes + 1][2]atomic.Uint64
}

// observe counts one query; it is dns.Config.Observe.
func (d *dnsCounts) observe(qtype uint16, rcode int, forwarded bool) {
	t := len(dnsTypes)
	for i, dt := range dnsTypes {
		if dt == qtype {
			t = i
			break
		}
	}
	r := numDNSRcodes
	if rcode >= 0 && rcode < numDNSRcodes {
		r = rcode
	}
	o := 0
	if forwarded {
		o = 1
	}
	d.n[t][r][o].Add(1)
}

// collect calls emit for every series with a non-zero count: question
// type and response code by name, or "other" for those without one.
func (d *dnsCounts) collect(emit func(qtype, rcode, origin string, n uint64)) {
	type key struct{ qtype, rcode, origin string }
	sums := map[key]uint64{}
	var order []key
	for t := range d.n {
		qtype := "other"
		if t < len(dnsTypes) {
			qtype = miekg.TypeToString[dnsTypes[t]]
		}
		for r := range d.n[t] {
			rcode := "other"
			if s, ok := miekg.RcodeToString[r]; ok && r < numDNSRcodes {
				rcode = s
			}
			for o, origin := range []string{"mesh", "upstream"} {
				if n := d.n[t][r][o].Load(); n > 0 {
					k := key{qtype, rcode, origin}
					if _, ok := sums[k]; !ok {
						order = append(order, k)
					}
					sums[k] += n
				}
			}
		}
	}
	for _, k := range order {
		emit(k.qtype, k.rcode, k.origin, sums[k])
	}
}
