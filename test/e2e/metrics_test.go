package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/wiremesh/wiremesh/node"
	"github.com/wiremesh/wiremesh/test/lab"
)

// Default metrics addresses of the daemons, inside their hosts.
const (
	coordMetrics = "127.0.0.1:9471"
	agentMetrics = "127.0.0.1:9472"
)

// metricsPolicy lets web reach api on tcp/8080 only: a ping is denied.
const metricsPolicy = `{"services": {"jobs": ["tag:api"]}, "acls": [{"action": "accept", "src": ["tag:web"], "dst": ["tag:api:8080"], "proto": "tcp"}]}`

// scrape is one scrape of a /metrics endpoint.
type scrape struct {
	text     string
	families map[string]*dto.MetricFamily
}

// scrapeMetrics GETs http://addr/metrics from inside host, checks the
// answer with promtool and parses it.
func scrapeMetrics(t *testing.T, host *lab.Host, addr string) scrape {
	t.Helper()
	tr := &http.Transport{DialContext: host.DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s on %s: %v", addr, host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s on %s: %s %v\n%s", addr, host, resp.Status, err, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := exec.CommandContext(ctx, "promtool", "check", "metrics")
	check.Stdin = bytes.NewReader(body)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics on %s's metrics: %v\n%s", host, err, out)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse %s's metrics: %v", host, err)
	}
	return scrape{text: string(body), families: fams}
}

// value returns the sum of the series of name whose labels include the
// name=value pairs of labels, and whether there was any.
func (s scrape) value(name string, labels ...string) (float64, bool) {
	mf := s.families[name]
	if mf == nil {
		return 0, false
	}
	sum, found := 0.0, false
	for _, m := range mf.GetMetric() {
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			has := false
			for _, lp := range m.GetLabel() {
				has = has || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
			}
			ok = ok && has
		}
		if !ok {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, found
}

// want fails the test unless the series exists and cond holds for it.
func (s scrape) want(t *testing.T, what string, cond func(float64) bool, name string, labels ...string) {
	t.Helper()
	v, ok := s.value(name, labels...)
	if !ok {
		t.Errorf("%s: no series %s%v", what, name, labels)
		return
	}
	if !cond(v) {
		t.Errorf("%s: %s%v = %v", what, name, labels, v)
	}
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
func gt(min float64) func(float64) bool  { return func(v float64) bool { return v > min } }

// flows runs `wiremesh flows --json` on the agent's host.
func (a *agent) flows(t *testing.T) []node.FlowRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := a.host.Run(ctx, bin, "flows", "--json", "--state-dir", a.stateDir)
	if err != nil {
		t.Fatalf("flows on %s: %v\n%s", a.name, err, out)
	}
	return parseFlows(t, out)
}

func parseFlows(t *testing.T, b []byte) []node.FlowRecord {
	t.Helper()
	var recs []node.FlowRecord
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var r node.FlowRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("flow record %q: %v", sc.Text(), err)
		}
		recs = append(recs, r)
	}
	return recs
}

// findFlow returns the first record match accepts.
func findFlow(recs []node.FlowRecord, match func(node.FlowRecord) bool) (node.FlowRecord, bool) {
	for _, r := range recs {
		if match(r) {
			return r, true
		}
	}
	return node.FlowRecord{}, false
}

// TestMetrics scrapes the coordinator's and the agents' metrics (checked
// with promtool) around real traffic, then checks the flow records of a
// denied ping and an allowed connection in `wiremesh flows` and the flow
// log file.
func TestMetrics(t *testing.T) {
	lab.Require(t, "promtool", "dig")
	m := newBareMesh(t)
	dir := t.TempDir()
	services := filepath.Join(dir, "services.hujson")
	if err := os.WriteFile(services, []byte(`{"services": [{"name": "jobs", "port": 9000, "checks": [{"id": "jobs-ttl", "ttl": "30s"}]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	flowFile := filepath.Join(dir, "flows.jsonl")
	jk := func(tag string) string { return strings.TrimSpace(m.cli("keys", "create", "--tag", tag)) }
	web := m.addAgent("web", "--join", jk("tag:web"))
	api := m.addAgent("api", "--join", jk("tag:api"), "--config", services, "--log-new-flows", "--flow-log", flowFile)
	m.setPolicy(metricsPolicy)
	waitFor(t, 10*time.Second, "web and api peers", func() bool {
		return web.hasPeer(api.publicKey(t)) && api.hasPeer(web.publicKey(t))
	})
	server(t, api, 8080)
	if !canTCP(t, web, api, 8080, 5*time.Second) {
		t.Fatal("web cannot reach api:8080")
	}
	if canPing(t, web, api) {
		t.Fatal("a ping from web to api passed; the policy denies it")
	}
	api.dig(t, "web.node.mesh.internal", "A")
	api.dig(t, "nope.node.mesh.internal", "A")

	t.Run("coordinator", func(t *testing.T) {
		var s scrape
		waitFor(t, 10*time.Second, "the service report", func() bool {
			s = scrapeMetrics(t, m.coordHost, coordMetrics)
			v, _ := s.value("wiremesh_coordinator_services")
			return v == 1
		})
		s.want(t, "both agents online", eq(2), "wiremesh_coordinator_nodes", "state", "online")
		s.want(t, "no agent offline", eq(0), "wiremesh_coordinator_nodes", "state", "offline")
		s.want(t, "one stream per agent", eq(2), "wiremesh_coordinator_netmap_streams")
		s.want(t, "enrollments", eq(2), "wiremesh_coordinator_enrollments_total", "result", "ok")
		s.want(t, "first netmaps", gt(1), "wiremesh_coordinator_netmap_pushes_total", "trigger", "connect")
		s.want(t, "deltas after changes", gt(0), "wiremesh_coordinator_netmap_pushes_total", "trigger", "delta")
		s.want(t, "push latency observed", gt(0), "wiremesh_coordinator_netmap_push_latency_seconds")
		s.want(t, "policy compiles", gt(0), "wiremesh_coordinator_policy_compile_seconds")
		s.want(t, "admin requests by route", gt(0), "wiremesh_coordinator_api_requests_total", "route", "PUT /v1/policy", "code", "200")
		s.want(t, "request durations", gt(0), "wiremesh_coordinator_api_request_duration_seconds", "route", "POST /v1/enroll")
		s.want(t, "policy version", eq(1), "wiremesh_coordinator_policy_version")
		s.want(t, "process metrics", gt(0), "process_resident_memory_bytes")
	})

	t.Run("agent", func(t *testing.T) {
		if out, err := api.host.Run(context.Background(), bin, "checks", "pass", "jobs-ttl", "--state-dir", api.stateDir); err != nil {
			t.Fatalf("checks pass: %v\n%s", err, out)
		}
		var s scrape
		waitFor(t, 10*time.Second, "gossip between web and api", func() bool {
			s = scrapeMetrics(t, api.host, agentMetrics)
			v, _ := s.value("wiremesh_agent_gossip_members", "status", "alive")
			return v == 2
		})
		s.want(t, "node info", eq(1), "wiremesh_agent_info", "node", "api")
		s.want(t, "connected", eq(1), "wiremesh_agent_coordinator_connected")
		s.want(t, "netmap version", gt(0), "wiremesh_agent_netmap_version")
		s.want(t, "one peer", eq(1), "wiremesh_agent_peers")
		s.want(t, "bytes from web", gt(0), "wiremesh_agent_peer_receive_bytes_total", "peer", "web")
		s.want(t, "bytes to web", gt(0), "wiremesh_agent_peer_transmit_bytes_total", "peer", "web")
		s.want(t, "recent handshake", func(v float64) bool { return v >= 0 && v < 120 }, "wiremesh_agent_peer_handshake_age_seconds", "peer", "web")
		s.want(t, "accepted packets", gt(0), "wiremesh_agent_packets_accepted_total")
		s.want(t, "the denied ping", gt(0), "wiremesh_agent_packets_dropped_total", "reason", "no_rule")
		s.want(t, "no malformed packets", eq(0), "wiremesh_agent_packets_dropped_total", "reason", "malformed")
		s.want(t, "tracked flows", gt(0), "wiremesh_agent_conntrack_entries")
		s.want(t, "DNS answers", gt(0), "wiremesh_agent_dns_queries_total", "qtype", "A", "rcode", "NOERROR", "origin", "mesh")
		s.want(t, "DNS NXDOMAIN", eq(1), "wiremesh_agent_dns_queries_total", "qtype", "A", "rcode", "NXDOMAIN", "origin", "mesh")
		s.want(t, "the passing check", eq(1), "wiremesh_agent_checks", "status", "passing")
		s.want(t, "the check's status", eq(1), "wiremesh_agent_check_status", "check", "jobs-ttl", "status", "passing")
		s.want(t, "gossip traffic", gt(0), "wiremesh_agent_gossip_receive_bytes_total")
		s.want(t, "flow records", gt(0), "wiremesh_agent_flow_records_total", "event", "denied")
		s.want(t, "new-flow records", gt(0), "wiremesh_agent_flow_records_total", "event", "new")
		s.want(t, "go runtime", gt(0), "go_goroutines")

		// A query counts once, in its series.
		before, _ := s.value("wiremesh_agent_dns_queries_total", "qtype", "SRV")
		api.dig(t, "jobs.service.mesh.internal", "SRV")
		after, _ := scrapeMetrics(t, api.host, agentMetrics).value("wiremesh_agent_dns_queries_total", "qtype", "SRV")
		if after != before+1 {
			t.Errorf("SRV queries went from %v to %v after one dig, want +1", before, after)
		}

		w := scrapeMetrics(t, web.host, agentMetrics)
		w.want(t, "web: bytes from api", gt(0), "wiremesh_agent_peer_receive_bytes_total", "peer", "api")
		w.want(t, "web: nothing denied", eq(0), "wiremesh_agent_packets_dropped_total", "reason", "no_rule")
	})

	t.Run("flows", func(t *testing.T) {
		recs := api.flows(t)
		denied, ok := findFlow(recs, func(r node.FlowRecord) bool { return r.Event == "denied" && r.Proto == "icmp" })
		if !ok {
			t.Fatalf("no denied ping in api's flows:\n%+v", recs)
		}
		webAddr, apiAddr := web.addr(t, false).String(), api.addr(t, false).String()
		if denied.Peer != "web" || denied.Src != webAddr || denied.Dst != apiAddr || denied.Why != "no rule" || denied.Policy != 1 || denied.Time.IsZero() {
			t.Errorf("denied ping recorded as %+v; want from web (%s) to %s, why \"no rule\", policy 1", denied, webAddr, apiAddr)
		}
		conn, ok := findFlow(recs, func(r node.FlowRecord) bool { return r.Event == "new" && r.Proto == "tcp" && r.Port == 8080 })
		if !ok {
			t.Fatalf("no new flow to tcp/8080 in api's flows (--log-new-flows):\n%+v", recs)
		}
		if conn.Peer != "web" || conn.Src != webAddr || conn.Rule == nil || *conn.Rule != 0 || conn.SrcPort == 0 {
			t.Errorf("new flow recorded as %+v; want from web with rule 0", conn)
		}
		if _, ok := findFlow(web.flows(t), func(r node.FlowRecord) bool { return r.Event == "new" }); ok {
			t.Error("web records new flows without --log-new-flows")
		}

		// The file holds the same records, 0600.
		b, err := os.ReadFile(flowFile)
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(flowFile); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("flow log mode %v (%v), want 0600", fi.Mode(), err)
		}
		if fileRecs := parseFlows(t, b); len(fileRecs) < 2 || !strings.Contains(string(b), `"peer":"web"`) {
			t.Errorf("flow log file:\n%s", b)
		}

		// The human output names the peer in aligned columns.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := api.host.Run(ctx, bin, "flows", "--state-dir", api.stateDir)
		if err != nil {
			t.Fatalf("flows: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(string(out), "no rule") || !strings.Contains(string(out), "rule 0") {
			t.Errorf("flows output:\n%s", out)
		}

		// --follow prints a new denied ping as it happens.
		start := time.Now()
		fctx, fcancel := context.WithCancel(context.Background())
		defer fcancel()
		follow := exec.CommandContext(fctx, "ip", "netns", "exec", api.host.NS, bin, "flows", "--follow", "--json", "--state-dir", api.stateDir)
		stdout, err := follow.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := follow.Start(); err != nil {
			t.Fatal(err)
		}
		got := make(chan node.FlowRecord, 64)
		defer func() {
			fcancel()
			for range got {
			}
			follow.Wait()
		}()
		go func() {
			defer close(got)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var r node.FlowRecord
				if json.Unmarshal(sc.Bytes(), &r) == nil {
					got <- r
				}
			}
		}()
		canPing(t, web, api)
		timeout := time.After(10 * time.Second)
		for {
			select {
			case r, ok := <-got:
				if !ok {
					t.Fatal("wiremesh flows --follow ended")
				}
				if r.Event == "denied" && r.Proto == "icmp" && r.Peer == "web" && !r.Time.Before(start) {
					return
				}
			case <-timeout:
				t.Fatal("wiremesh flows --follow did not show the denied ping within 10 s")
			}
		}
	})
}
