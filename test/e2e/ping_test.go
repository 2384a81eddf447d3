package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/node"
)

// TestPing: `wiremesh ping` answers from a peer, and names the policy or
// the network when nothing answers.
func TestPing(t *testing.T) {
	m := newBareMesh(t)
	m.setPolicy(`{"acls": [
  {"action": "accept", "src": ["node:a"], "dst": ["node:b:*"], "proto": "icmp"},
  {"action": "accept", "src": ["node:a"], "dst": ["node:c:443"], "proto": "tcp"},
]}`)
	a, b, c := m.addAgent("a"), m.addAgent("b"), m.addAgent("c")
	m.addAgent("d")
	for _, p := range []*agent{b, c} {
		waitFor(t, 5*time.Second, "a's peer "+p.name, func() bool { return a.hasPeer(p.publicKey(t)) })
	}
	ping := func(target string) (node.PingResult, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := a.host.Run(ctx, bin, "ping", target, "--json", "-c", "3", "--state-dir", a.stateDir)
		var res node.PingResult // the first JSON value; an error line may follow
		if jerr := json.NewDecoder(bytes.NewReader(out)).Decode(&res); jerr != nil {
			t.Fatalf("ping %s: %v: %s", target, jerr, out)
		}
		return res, err == nil
	}
	if res, ok := ping("b"); !ok || res.Verdict != "ok" || len(res.RTTs) != 3 {
		t.Errorf("ping b: %+v (exit ok %v), want 3 answers", res, ok)
	}
	if res, ok := ping(b.addr(t, false).String()); !ok || res.Node != "b" {
		t.Errorf("ping b by address: %+v", res)
	}
	// c is a peer (a may reach its tcp/443) but lets no ICMP in.
	waitFor(t, 10*time.Second, "c alive in a's gossip", func() bool {
		for _, p := range a.status(t).Peers {
			if p.Name == "c" {
				return p.Gossip == "alive"
			}
		}
		return false
	})
	if res, ok := ping("c"); ok || res.Verdict != "policy" {
		t.Errorf("ping c: %+v (exit ok %v), want the policy named", res, ok)
	}
	// c counts what it dropped from a, in its peer list.
	for _, p := range c.status(t).Peers {
		if p.Name == "a" && p.Denied < 3 {
			t.Errorf("c's status: %d packets denied from a, want at least the 3 probes", p.Denied)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := c.host.Run(ctx, bin, "status", "--state-dir", c.stateDir); err != nil || !strings.Contains(string(out), "DENIED") {
		t.Errorf("wiremesh status on c: %v\n%s", err, out)
	}
	// d is no peer of a at all.
	if res, ok := ping("d"); ok || res.Verdict != "policy" || res.Sent != 0 {
		t.Errorf("ping d: %+v, want not a peer", res)
	}
	// b gone: the network is in the way.
	b.proc.Kill()
	waitFor(t, 10*time.Second, "b failed in a's gossip", func() bool {
		for _, p := range a.status(t).Peers {
			if p.Name == "b" {
				return p.Gossip == "failed"
			}
		}
		return false
	})
	if res, ok := ping("b"); ok || res.Verdict != "network" {
		t.Errorf("ping b after SIGKILL: %+v, want the network named", res)
	}
}
