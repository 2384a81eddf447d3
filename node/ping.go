package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/wiremesh/wiremesh/gossip"
	"github.com/wiremesh/wiremesh/wire"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Ping limits.
const (
	maxPingCount = 100
	pingTimeout  = time.Second
	pingInterval = 200 * time.Millisecond
)

// PingRequest asks the agent to probe a node over the overlay.
type PingRequest struct {
	// Node is a peer's name or overlay address.
	Node string `json:"node"`
	// Count is the number of probes, 1..100. Zero: 3.
	Count int `json:"count,omitempty"`
}

// PingResult says what the probes found and what is in the way.
type PingResult struct {
	Node    string          `json:"node"`
	Addr    string          `json:"addr,omitempty"`
	Sent    int             `json:"sent"`
	RTTs    []wire.Duration `json:"rtts,omitempty"` // of the answered probes
	Verdict string          `json:"verdict"`        // "ok", "policy" or "network"
	Why     string          `json:"why"`            // for a person
}

// ping probes req.Node with ICMP echo requests through the overlay and
// tells whether the policy or the network is in the way when they go
// unanswered.
func (a *Agent) ping(ctx context.Context, req PingRequest) (PingResult, error) {
	if req.Count == 0 {
		req.Count = 3
	}
	if req.Count < 1 || req.Count > maxPingCount {
		return PingResult{}, fmt.Errorf("bad count %d: want 1..%d", req.Count, maxPingCount)
	}
	res := PingResult{Node: req.Node}
	nm := a.data.current()
	peer, ok := findPeer(nm, req.Node)
	if !ok {
		res.Verdict = "policy"
		res.Why = fmt.Sprintf("%s is not a peer of this node: it does not exist, or the policy lets neither of you open flows to the other", req.Node)
		return res, nil
	}
	res.Node = peer.Name
	var dst netip.Addr
	for _, p := range peer.Addresses {
		if p.Addr().Is4() {
			dst = p.Addr()
		}
	}
	res.Addr = dst.String()
	before, _ := a.data.engine.Stats()
	rtts, err := echo(ctx, dst, req.Count)
	if err != nil {
		return res, err
	}
	res.Sent = req.Count
	for _, d := range rtts {
		res.RTTs = append(res.RTTs, wire.Duration(d))
	}
	after, _ := a.data.engine.Stats()
	failed := false
	if m := a.mesh.member.Load(); m != nil {
		for _, mi := range m.Members() {
			failed = failed || mi.Name == peer.Name && mi.Status == gossip.Failed
		}
	}
	res.Verdict, res.Why = pingVerdict(peer.Name, len(rtts), req.Count, before[peer.PublicKey], after[peer.PublicKey], failed)
	return res, nil
}

// pingVerdict explains a ping's outcome from the answers, the peer's
// WireGuard counters before and after the probes, and its gossip state.
// Traffic from the peer during the probes (gossip probes it every
// 400 ms) shows it is alive and reachable, so unanswered probes mean its
// policy drops them.
func pingVerdict(name string, answered, sent int, before, after PeerStats, gossipFailed bool) (verdict, why string) {
	switch {
	case answered > 0:
		return "ok", fmt.Sprintf("%d of %d probes answered", answered, sent)
	case gossipFailed:
		return "network", fmt.Sprintf("%s is down or cut off: gossip marks it failed (endpoint %s)", name, orNone(after.Endpoint))
	case after.RxBytes > before.RxBytes:
		return "policy", fmt.Sprintf("%s is alive (WireGuard traffic came from it during the probes) but answered no probe: its policy does not let ICMP from this node in", name)
	}
	return "network", fmt.Sprintf("nothing came from %s during the probes: the network is in the way (it is down, or its endpoint %s is unreachable)", name, orNone(after.Endpoint))
}

func orNone(s string) string {
	if s == "" {
		return "(none known)"
	}
	return s
}

// findPeer finds a netmap peer by name or overlay address.
func findPeer(nm *wire.Netmap, s string) (wire.Node, bool) {
	if nm == nil {
		return wire.Node{}, false
	}
	ad, adErr := netip.ParseAddr(s)
	for _, p := range nm.Peers {
		if p.Name == s {
			return p, true
		}
		for _, pa := range p.Addresses {
			if adErr == nil && pa.Addr() == ad {
				return p, true
			}
		}
	}
	return wire.Node{}, false
}

// echo sends count ICMP echo requests to dst, pingInterval apart, and
// returns the round-trip times of those answered within pingTimeout.
func echo(ctx context.Context, dst netip.Addr, count int) ([]time.Duration, error) {
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("ping: %w", err)
	}
	defer c.Close()
	id := rand.IntN(1 << 16)
	sent := map[int]time.Time{}
	var rtts []time.Duration
	to := &net.IPAddr{IP: dst.AsSlice()}
	buf := make([]byte, 1500)
	for seq := range count {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("wiremesh ping")}}
		b, _ := msg.Marshal(nil)
		sent[seq] = time.Now()
		if _, err := c.WriteTo(b, to); err != nil {
			return nil, fmt.Errorf("ping %s: %w", dst, err)
		}
		deadline := time.Now().Add(pingInterval)
		if seq == count-1 {
			deadline = time.Now().Add(pingTimeout)
		}
		for ctx.Err() == nil {
			c.SetReadDeadline(deadline)
			n, from, err := c.ReadFrom(buf)
			if isTimeout(err) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("ping %s: %w", dst, err)
			}
			m, err := icmp.ParseMessage(1, buf[:n]) // 1: ICMP for IPv4
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply || from.String() != dst.String() {
				continue
			}
			e, ok := m.Body.(*icmp.Echo)
			if !ok || e.ID != id {
				continue
			}
			if t, ok := sent[e.Seq]; ok {
				rtts = append(rtts, time.Since(t))
				delete(sent, e.Seq)
			}
		}
	}
	return rtts, ctx.Err()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// handlePing serves POST /v1/ping on the local API.
func (a *Agent) handlePing(w http.ResponseWriter, r *http.Request) {
	var req PingRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		replyLocal(w, fmt.Errorf("bad ping request: %w", err), nil)
		return
	}
	res, err := a.ping(r.Context(), req)
	replyLocal(w, err, res)
}
