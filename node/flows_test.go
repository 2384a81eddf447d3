package node

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/filter"
	"github.com/wiremesh/wiremesh/wire"
)

var (
	alice = netip.MustParseAddr("100.64.0.2")
	self  = netip.MustParseAddr("100.64.0.1")
)

func testFlowRules() *filter.Rules {
	return filter.CompilePolicy(4, []netip.Prefix{netip.PrefixFrom(self, 32)}, []wire.FilterRule{
		{Srcs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10")}, Protos: []uint8{wire.ProtoICMP}},
		{Srcs: []netip.Prefix{netip.PrefixFrom(alice, 32)}, Protos: []uint8{wire.ProtoTCP}, Ports: []wire.PortRange{{First: 22, Last: 22}}},
	})
}

func TestFlowFormat(t *testing.T) {
	l, err := newFlowLog(4, "", func(a netip.Addr) string {
		if a == alice {
			return "alice"
		}
		return ""
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rs := testFlowRules()
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	one := 1
	for _, tc := range []struct {
		name string
		in   filter.Flow
		want FlowRecord
	}{
		{"denied tcp", filter.Flow{Verdict: filter.DropNoRule, Src: alice, Dst: self, Proto: wire.ProtoTCP, Ports: true, SrcPort: 4000, DstPort: 23, Rules: rs, Suppressed: 3},
			FlowRecord{Time: now, Event: "denied", Src: "100.64.0.2", Peer: "alice", SrcPort: 4000, Dst: "100.64.0.1", Port: 23, Proto: "tcp", Why: "no rule", Policy: 4, Suppressed: 3}},
		{"new tcp", filter.Flow{Verdict: filter.Accept, Src: alice, Dst: self, Proto: wire.ProtoTCP, Ports: true, SrcPort: 4000, DstPort: 22, Rules: rs},
			FlowRecord{Time: now, Event: "new", Src: "100.64.0.2", Peer: "alice", SrcPort: 4000, Dst: "100.64.0.1", Port: 22, Proto: "tcp", Rule: &one, Policy: 4}},
		{"mesh port", filter.Flow{Verdict: filter.Accept, Src: alice, Dst: self, Proto: wire.ProtoUDP, Ports: true, SrcPort: 7946, DstPort: 7946, Always: true, Rules: rs},
			FlowRecord{Time: now, Event: "new", Src: "100.64.0.2", Peer: "alice", SrcPort: 7946, Dst: "100.64.0.1", Port: 7946, Proto: "udp", Why: "mesh port", Policy: 4}},
		{"unknown peer icmp", filter.Flow{Verdict: filter.DropNoRule, Src: netip.MustParseAddr("100.64.0.9"), Dst: self, Proto: wire.ProtoICMPv6, Rules: filter.Compile(nil, nil)},
			FlowRecord{Time: now, Event: "denied", Src: "100.64.0.9", Dst: "100.64.0.1", Proto: "icmpv6", Why: "no rule"}},
		{"malformed", filter.Flow{Verdict: filter.DropMalformed, Rules: rs},
			FlowRecord{Time: now, Event: "denied", Why: "malformed", Policy: 4}},
	} {
		if diff := cmp.Diff(tc.want, l.format(&tc.in, now)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

// startFlowLog runs a flow log keeping keep records until the test ends.
func startFlowLog(t *testing.T, keep int, path string) (*flowLog, context.CancelFunc) {
	t.Helper()
	l, err := newFlowLog(keep, path, func(netip.Addr) string { return "alice" }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go l.run(ctx)
	t.Cleanup(func() {
		cancel()
		<-l.done
		l.closeFile()
	})
	return l, cancel
}

// send hands the log a denied packet to port and waits until it is stored.
func (l *flowLog) sendAndWait(t *testing.T, port uint16) {
	t.Helper()
	_, before, _ := l.since(^uint64(0))
	l.in <- filter.Flow{Verdict: filter.DropNoRule, Src: alice, Dst: self, Proto: wire.ProtoTCP, Ports: true, SrcPort: 1, DstPort: port, Rules: testFlowRules()}
	deadline := time.Now().Add(waitFor)
	for {
		if _, n, _ := l.since(^uint64(0)); n > before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("record not stored")
		}
		time.Sleep(time.Millisecond)
	}
}

func ports(t *testing.T, lines []string) []uint16 {
	t.Helper()
	var out []uint16
	for _, line := range lines {
		var r FlowRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		out = append(out, r.Port)
	}
	return out
}

func TestFlowRing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.jsonl")
	l, _ := startFlowLog(t, 3, path)
	for p := range uint16(5) {
		l.sendAndWait(t, 100+p)
	}
	lines, next, _ := l.since(0)
	var got []string
	for _, b := range lines {
		got = append(got, string(b))
	}
	if diff := cmp.Diff([]uint16{102, 103, 104}, ports(t, got)); diff != "" || next != 5 {
		t.Errorf("kept records (-want +got):\n%s; next %d, want 5", diff, next)
	}
	if lines, _, _ := l.since(4); len(lines) != 1 {
		t.Errorf("since(4) = %d lines, want 1", len(lines))
	}
	if denied, added := l.counts(); denied != 5 || added != 0 {
		t.Errorf("counts = %d, %d; want 5, 0", denied, added)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint16{100, 101, 102, 103, 104}, ports(t, strings.Split(strings.TrimSpace(string(b)), "\n"))); diff != "" {
		t.Errorf("flow log file (-want +got):\n%s", diff)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("flow log file mode: %v %v, want 0600", fi.Mode(), err)
	}
}

func TestFlowsAPI(t *testing.T) {
	l, stop := startFlowLog(t, 10, "")
	mux := http.NewServeMux()
	l.handle(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close() // waits for every handler: none may outlive its request
	for p := range uint16(3) {
		l.sendAndWait(t, 200+p)
	}
	get := func(query string) []string {
		t.Helper()
		resp, err := http.Get(srv.URL + "/v1/flows" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/x-ndjson" {
			t.Fatalf("GET %s: %s %s", query, resp.Status, ct)
		}
		var lines []string
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines = append(lines, sc.Text())
		}
		return lines
	}
	if diff := cmp.Diff([]uint16{200, 201, 202}, ports(t, get(""))); diff != "" {
		t.Errorf("all records (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint16{202}, ports(t, get("?n=1"))); diff != "" {
		t.Errorf("?n=1 (-want +got):\n%s", diff)
	}
	if resp, err := http.Get(srv.URL + "/v1/flows?n=x"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("?n=x: %v %v, want 400", resp.Status, err)
	} else {
		resp.Body.Close()
	}

	// Following: the kept records, then new ones as they come, until the
	// client goes away.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/flows?follow=1&n=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() uint16 {
		t.Helper()
		if !sc.Scan() {
			t.Fatalf("follow ended: %v", sc.Err())
		}
		return ports(t, []string{sc.Text()})[0]
	}
	if p := next(); p != 202 {
		t.Errorf("first followed record to port %d, want 202", p)
	}
	l.sendAndWait(t, 203)
	l.sendAndWait(t, 204)
	if p, q := next(), next(); p != 203 || q != 204 {
		t.Errorf("followed records to ports %d, %d; want 203, 204", p, q)
	}
	cancel()
	resp.Body.Close()

	// A follower also ends when the agent stops.
	resp, err = http.Get(srv.URL + "/v1/flows?follow=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	stop()
	if lines := len(ports(t, readAll(t, resp))); lines != 5 {
		t.Errorf("follower got %d records before the agent stopped, want 5", lines)
	}
}

func readAll(t *testing.T, resp *http.Response) []string {
	t.Helper()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}
