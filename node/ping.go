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
	"github.com/wiremesh/wiremesh/node/bind"
	"github.com/wiremesh/wiremesh/wire"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
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
	// Pongs are the paths that answered a path probe sent beside the
	// echo requests, in order of arrival. Empty: none answered.
	Pongs []PathPong `json:"pongs,omitempty"`
	// DirectTried counts the peer's direct addresses probed.
	DirectTried int `json:"direct_tried"`
	// WhyNotDirect says, when no direct address answered, why not (for
	// a person). Empty: one did.
	WhyNotDirect string `json:"why_not_direct,omitempty"`
}

// PathPong is one path that answered a path probe.
type PathPong struct {
	Kind  string        `json:"kind"`            // wire.PathKindDirect or wire.PathKindRelay
	Addr  string        `json:"addr,omitempty"`  // the address that answered (direct)
	Relay string        `json:"relay,omitempty"` // the relay it answered through
	RTT   wire.Duration `json:"rtt"`
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
	probed := make(chan struct{})
	go func() { // waited for below
		defer close(probed)
		a.data.probePaths(ctx, peer.PublicKey, &res)
	}()
	before, _ := a.data.engine.Stats()
	rtts, err := echo(ctx, dst, req.Count)
	<-probed
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

// pathProbeTimeout bounds the wait for the answers of a path probe.
const pathProbeTimeout = 2 * time.Second

// probePaths pings the peer with public key pub on every direct address
// and through its relay at once, and fills in which answered and, if no
// direct one did, why.
func (d *dataPath) probePaths(ctx context.Context, pub string, res *PingResult) {
	key, err := wgtypes.ParseKey(pub)
	if err != nil {
		return
	}
	var status bind.PathStatus
	for _, ps := range d.bind.Paths() {
		if ps.Peer == key {
			status = ps
		}
	}
	res.DirectTried = len(status.Candidates)
	if d.relayOnly {
		res.DirectTried = 0
	}
	ctx, cancel := context.WithTimeout(ctx, pathProbeTimeout)
	defer cancel()
	pr, _ := d.bind.Ping(ctx, key) // no answer: said below
	direct := false
	for _, ans := range pr.Answers {
		p := PathPong{Kind: string(ans.Kind), RTT: wire.Duration(ans.RTT), Relay: ans.Relay}
		if ans.Kind == bind.PathDirect {
			p.Addr, direct = ans.Addr.String(), true
		}
		res.Pongs = append(res.Pongs, p)
	}
	if !direct {
		res.WhyNotDirect = directFailure(res.DirectTried, d.relayOnly, d.bind.NAT())
	}
}

// directFailure says why no direct address of a peer answered, given
// how many were tried and this node's NAT type.
func directFailure(tried int, relayOnly bool, nat bind.NATType) string {
	switch {
	case relayOnly:
		return "direct: not tried (--relay-only)"
	case tried == 0:
		return "direct: the peer has no candidates (it has not reported any)"
	}
	why := "direct: no answer from " + candidates(tried)
	switch nat {
	case bind.NATHard:
		why += "; this node is behind a hard NAT (a new port for every destination): only peers on public addresses or behind easy NATs can answer directly"
	case bind.NATUDPBlocked:
		why += "; UDP is blocked here (no STUN server answered this node)"
	case bind.NATEasy:
		why += "; this node is behind an easy NAT, so the peer's network is in the way (a hard NAT, or a firewall)"
	}
	return why
}

// candidates says "1 candidate" or "N candidates".
func candidates(n int) string {
	if n == 1 {
		return "1 candidate"
	}
	return fmt.Sprintf("%d candidates", n)
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
