package e2e

import (
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wiremesh/wiremesh/relay"
	"github.com/wiremesh/wiremesh/wire"
)

// TestConnectivityHostile is issue 13's scenario 9 on namespace hosts,
// against the coordinator's relay and real agents:
//
//   - a client with a key the mesh never enrolled is refused by the relay;
//   - a member's key in an attacker's hands (the node "mole", enrolled,
//     nobody's peer, its agent stopped) attaches, yet gets none of the
//     packets two relayed peers exchange, and what it sends them (junk, a
//     made-up WireGuard data packet) costs them no packet;
//   - forged pongs sent to a public agent's socket in its peer's name are
//     dropped and counted, and its direct path to that peer stays put.
//
// A relay that alters what it forwards is node/bind's
// TestTamperingRelayCausesDrops, on real wireguard-go devices.
func TestConnectivityHostile(t *testing.T) {
	m := newInternetMesh(t)
	// The mole is nobody's peer: whatever reaches it leaked.
	m.setPolicy(`{"acls": [{"action": "accept", "src": ["node:h1", "node:h2", "node:pub"], "dst": ["node:h1:*", "node:h2:*", "node:pub:*"]}]}`)
	a, b, _ := hardPair(t, m)
	pub := m.onHost(m.lab.AddPublicHost("pub"))
	mole := m.onHost(m.lab.AddPublicHost("mole"))
	rogue := m.lab.AddPublicHost("rogue")
	peered(t, a, b)
	peered(t, pub, a)
	if err := mole.proc.WaitLog(`"msg":"netmap applied"`, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	molePriv, _ := agentKey(t, mole)
	mole.stop(t)
	_, bPub := agentKey(t, b)
	relays := agentNetmap(t, a).Relays
	if len(relays) != 1 {
		t.Fatalf("relay map %+v, want the coordinator's relay", relays)
	}
	desc := relays[0]

	// No valid proof: refused.
	stranger, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	cs := attach(t, rogue, desc, stranger)
	waitFor(t, 15*time.Second, "the stranger to be refused", func() bool { return errors.Is(cs.c.Err(), relay.ErrRefused) })

	// A member's key: attached, but only its own packets come to it.
	cm := attach(t, rogue, desc, molePriv)
	waitFor(t, 15*time.Second, "the mole to attach", cm.c.Connected)
	waitFor(t, 15*time.Second, "a and b relayed", func() bool { return a.relayedTo(t, b.name) && b.relayedTo(t, a.name) })
	junk := make([]byte, 64)
	rand.Read(junk)
	fakeData := append([]byte{4, 0, 0, 0}, junk[:60]...) // a WireGuard data header on nonsense
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				cm.c.Send(bPub, junk)
				cm.c.Send(bPub, fakeData)
			}
		}
	}()
	a.ping(t, b.addr(t, false), 40, 50*time.Millisecond) // fails on any loss
	b.ping(t, a.addr(t, false), 40, 50*time.Millisecond)
	close(stop)
	<-sent
	select {
	case p := <-cm.got:
		t.Errorf("the mole received %d bytes from %x while a and b talked through the relay", len(p.pkt), p.src[:4])
	default:
	}

	// Forged pongs in a's name at pub's socket.
	waitFor(t, 15*time.Second, "pub and a direct", func() bool { return pub.path(t, a.name).Kind == wire.PathKindDirect })
	before := pub.path(t, a.name)
	_, aPub := agentKey(t, a)
	dropped := func() float64 {
		v, _ := scrapeMetrics(t, pub.host, agentMetrics).value("wiremesh_agent_disco_dropped_total", "reason", "bad_seal")
		return v
	}
	was := dropped()
	const forged = 20
	err = rogue.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(pub.host.Addr, 51820)))
		if err != nil {
			return err
		}
		defer c.Close()
		for range forged {
			// magic | sender key | nonce (24) | a "sealed" pong of the
			// right length: type, txid, address, tag.
			msg := append([]byte("wmdisc"), aPub[:]...)
			body := make([]byte, 24+1+12+18+16)
			rand.Read(body)
			if _, err := c.Write(append(msg, body...)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the forged pongs counted", func() bool { return dropped()-was >= forged })
	after := pub.path(t, a.name)
	if after.Kind != before.Kind || after.Addr != before.Addr || !after.Since.Equal(before.Since) {
		t.Errorf("pub's path to a changed after forged pongs: %+v, was %+v", after, before)
	}
	pub.ping(t, a.addr(t, false), 10, 100*time.Millisecond)
}
