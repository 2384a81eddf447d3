package coordinator

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/relay"
	"github.com/wiremesh/wiremesh/relay/stun"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
)

// DefaultRelayName names the coordinator's embedded relay in the relay map
// unless Config.RelayName says otherwise.
const DefaultRelayName = "coordinator"

// DefaultSTUNListen is where the embedded STUN server listens unless
// Config.STUNListen says otherwise; it also answers on the next port.
const DefaultSTUNListen = ":3478"

// newRelay makes the embedded relay: nodes attach with a proof of their
// key to the coordinator's proof key, and only enrolled, unexpired nodes
// may (relayAllowed).
func (c *Coordinator) newRelay() (*relay.Server, error) {
	cfg := relay.DefaultServerConfig()
	cfg.Key = c.proof
	cfg.Allowed = c.relayAllowed
	cfg.Logger = c.log.With("sub", "relay")
	return relay.NewServer(cfg)
}

// relayAllowed says whether the node with public key k may attach to the
// embedded relay: it is in the current snapshot and not expired.
func (c *Coordinator) relayAllowed(k [32]byte) bool {
	s := c.state.Load()
	i, ok := s.byKey[k]
	if !ok {
		return false
	}
	exp := s.node(i).Expires
	return exp.IsZero() || time.Now().Before(exp)
}

// ownRelay is the embedded relay's entry in the relay map: at the
// coordinator's URL, trusted by its pins, with its STUN servers; nil with
// Config.NoRelay.
func (c *Coordinator) ownRelay() (*wire.Relay, error) {
	if c.cfg.NoRelay {
		return nil, nil
	}
	r := &wire.Relay{Name: c.cfg.RelayName, URL: c.cfg.AdvertiseURL, Pins: c.pins.Strings(), Key: c.proof.PublicKey()}
	if c.cfg.STUNListen != "" {
		u, err := url.Parse(c.cfg.AdvertiseURL)
		if err != nil {
			return nil, fmt.Errorf("advertise URL: %w", err)
		}
		_, port, err := net.SplitHostPort(c.cfg.STUNListen)
		if err != nil {
			return nil, fmt.Errorf("bad STUN listen address %q: %w", c.cfg.STUNListen, err)
		}
		p, _ := strconv.Atoi(port)
		r.STUN = []string{net.JoinHostPort(u.Hostname(), strconv.Itoa(p)), net.JoinHostPort(u.Hostname(), strconv.Itoa(p+1))}
	}
	return r, nil
}

// embeddedRelays are the relays of the coordinators serving the mesh, by
// their URLs. Coordinators that left their relay names at the default
// share one name; all but the first (by URL) get a suffix, -2, -3…, so
// that every coordinator makes the same relay map.
func embeddedRelays(cos []store.Coordinator) []wire.Relay {
	var out []wire.Relay
	taken := map[string]bool{}
	for _, co := range cos {
		if co.Relay == nil {
			continue
		}
		r := *co.Relay
		for n, name := 2, r.Name; taken[r.Name]; n++ {
			r.Name = name + "-" + strconv.Itoa(n)
		}
		taken[r.Name] = true
		out = append(out, r)
	}
	return out
}

// listenSTUN binds the STUN server's two UDP sockets: at addr and at the
// next port, so that agents can tell an endpoint-dependent (hard) NAT
// from an easy one by the addresses the two report.
func listenSTUN(addr string) ([]net.PacketConn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("bad STUN listen address %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p >= 65535 {
		return nil, fmt.Errorf("bad STUN listen address %q: want a port from 1 to 65534 (it also takes the next one)", addr)
	}
	var pcs []net.PacketConn
	for _, q := range []int{p, p + 1} {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(q)))
		if err != nil {
			for _, o := range pcs {
				o.Close()
			}
			return nil, fmt.Errorf("STUN: %w (choose another port with --stun-listen, or \"\" for none)", err)
		}
		pcs = append(pcs, pc)
	}
	return pcs, nil
}

// serveSTUN answers STUN on pcs until ctx is done; the returned func
// waits for the servers to end and closes the sockets.
func (c *Coordinator) serveSTUN(ctx context.Context, pcs []net.PacketConn) (wait func()) {
	var wg sync.WaitGroup
	log := c.log.With("sub", "stun")
	for _, pc := range pcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := stun.Serve(ctx, pc, log); err != nil {
				log.Error("STUN server stopped", "addr", pc.LocalAddr().String(), "err", err)
			}
		}()
	}
	return func() {
		for _, pc := range pcs {
			pc.Close()
		}
		wg.Wait()
	}
}

// keyOf decodes a node's base64 public key; ok is false for a bad one.
func keyOf(s string) (k [32]byte, ok bool) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 32 {
		return k, false
	}
	return [32]byte(b), true
}
