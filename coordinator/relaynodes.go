package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
)

// A relay node is a standalone relay (`wiremesh relay`) enrolled with a
// relay join key. It is nobody's peer, in no policy view and no DNS; its
// description is in every agent's relay map, and its own netmap carries
// the keys of the nodes that may attach to it instead of peers.

// maxRelaySTUN bounds the STUN servers a relay may name.
const maxRelaySTUN = 4

// checkRelay reports what is wrong with relay node name's description of
// itself, r, for a node of public key pub.
func (c *Coordinator) checkRelay(r *wire.Relay, name, pub string) error {
	u, err := url.Parse(r.URL)
	switch {
	case r.Name != name:
		return fmt.Errorf("%w: relay name %q differs from the node name %q", store.ErrInvalid, r.Name, name)
	case !c.cfg.NoRelay && r.Name == c.cfg.RelayName:
		return fmt.Errorf("%w: relay name %q is the coordinator's own relay's; choose another", store.ErrConflict, r.Name)
	case err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil:
		return fmt.Errorf("%w: relay %s: bad URL %q: want https://HOST:PORT", store.ErrInvalid, name, r.URL)
	case r.Key != pub:
		return fmt.Errorf("%w: relay %s: its proof key must be its node key %s", store.ErrInvalid, name, pub)
	case len(r.STUN) > maxRelaySTUN:
		return fmt.Errorf("%w: relay %s: %d STUN servers, at most %d", store.ErrInvalid, name, len(r.STUN), maxRelaySTUN)
	}
	if err := wire.CheckNodeName(r.Name); err != nil {
		return fmt.Errorf("%w: relay: %w", store.ErrInvalid, err)
	}
	if len(r.Pins) == 0 {
		return fmt.Errorf("%w: relay %s: no certificate pin", store.ErrInvalid, name)
	}
	if _, err := credential.ParsePins(r.Pins); err != nil {
		return fmt.Errorf("%w: relay %s: pins: %w", store.ErrInvalid, name, err)
	}
	for _, s := range r.STUN {
		host, port, err := net.SplitHostPort(s)
		if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
			return fmt.Errorf("%w: relay %s: bad STUN server %q: want HOST:PORT", store.ErrInvalid, name, s)
		}
	}
	return nil
}

// relaySet is what a snapshot knows of relay nodes.
type relaySet struct {
	nodes []wire.Node   // the relay nodes, by id
	byID  map[int64]int // node id → index in nodes
	// relays is the relay map of agents' netmaps: the embedded relay
	// and every relay node's description, by name.
	relays []wire.Relay
	// clients are the public keys of the agents, which may attach to a
	// relay node.
	clients []string
}

// splitRelays parts nodes into agents and relay nodes; embedded is the
// coordinator's own relay map entry (none with --no-relay).
func (c *Coordinator) splitRelays(nodes []wire.Node, embedded []wire.Relay) (agents []wire.Node, rs relaySet) {
	rs.byID = map[int64]int{}
	rs.relays = slices.Clone(embedded)
	for _, n := range nodes {
		if n.Relay == nil {
			agents = append(agents, n)
			rs.clients = append(rs.clients, n.PublicKey)
			continue
		}
		rs.byID[n.ID] = len(rs.nodes)
		rs.nodes = append(rs.nodes, n)
		if slices.ContainsFunc(rs.relays, func(r wire.Relay) bool { return r.Name == n.Relay.Name }) {
			// Only the embedded relay, renamed after the node enrolled.
			c.log.Error("relay node left out of the relay map: its name is the coordinator's relay's", "node", n.Name)
			continue
		}
		rs.relays = append(rs.relays, *n.Relay)
	}
	slices.SortFunc(rs.relays, func(a, b wire.Relay) int { return cmp.Compare(a.Name, b.Name) })
	return agents, rs
}

// relayNetmap is relay node i's netmap: itself, the keys that may attach,
// the coordinator's pins; no peers, rules, gossip or relay map.
func (c *Coordinator) relayNetmap(s *snapshot, i int) *wire.Netmap {
	return &wire.Netmap{
		Version:           s.version,
		Self:              s.relayNodes.nodes[i],
		Prefixes:          c.store.Prefixes(),
		KeepAliveInterval: wire.Duration(c.cfg.KeepAlive),
		PolicyVersion:     s.policy.Version,
		CoordinatorPins:   c.pins.Strings(),
		RelayClients:      s.relayNodes.clients,
	}
}

// describeRelay stores and publishes the description a netmap request
// carries; an agent may send none.
func (c *Coordinator) describeRelay(ctx context.Context, node wire.Node, r *wire.Relay) error {
	if r == nil {
		return nil
	}
	if node.Relay == nil {
		return fmt.Errorf("%w: node %s is an agent: only a relay node (enrolled with a relay join key) may describe a relay", store.ErrForbidden, node.Name)
	}
	if err := c.checkRelay(r, node.Name, node.PublicKey); err != nil {
		return err
	}
	ver, err := c.store.SetRelay(ctx, node.ID, *r)
	if err != nil || ver == 0 {
		return err
	}
	if err := c.publish(ctx); err != nil {
		c.log.Error("publish after relay change", "err", err)
	}
	return nil
}
