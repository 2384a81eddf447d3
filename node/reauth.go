package node

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// isIdentityRefusal reports whether err is the coordinator refusing the
// node's credential as unknown (the node was deleted) or expired: enrolling
// again with a join key helps, retrying does not.
func isIdentityRefusal(err error) bool {
	if !errors.Is(err, ErrRefused) {
		return false
	}
	c := client.CodeOf(err)
	return c == wire.CodeUnauthorized || c == wire.CodeExpired
}

// reauthenticate runs when the agent has a stored identity and a join key:
// it enrolls the node again, under a new key and keeping the state dir,
// when the coordinator refuses the stored identity, or always with
// Config.ForceReauth. An identity the coordinator accepts is kept.
func (a *Agent) reauthenticate(ctx context.Context) error {
	old := a.ctl.id.Node.Name
	why := "the old node stays on the coordinator (--force-reauth); delete it with wiremesh nodes delete " + old
	if !a.cfg.ForceReauth {
		err := a.checkIdentity(ctx)
		switch {
		case err == nil:
			a.log.Info("already enrolled and the coordinator accepts this node; ignoring the join key (add --force-reauth to enroll again)", "node", old)
			return nil
		case isIdentityRefusal(err):
			why = fmt.Sprintf("the coordinator refused the old node %s (deleted or expired): %v", old, err)
		default:
			a.log.Warn("could not check this node's identity with the coordinator; keeping it", "node", old, "err", err)
			return nil
		}
	}
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	name, hostname := a.cfg.Name, a.cfg.Hostname
	if name == "" || name == old {
		name, hostname = "", old // the old name if it is free, else one made from it
	}
	id, err := a.enroll(ctx, key, name, hostname)
	if err != nil {
		return fmt.Errorf("enroll node %s again: %w", old, err)
	}
	if err := a.state.replaceIdentity(key, id); err != nil {
		return fmt.Errorf("enroll node %s again: the coordinator admitted %s but the state dir %s was not updated: %w", old, id.Node.Name, a.cfg.StateDir, err)
	}
	if err := a.data.setKey(key); err != nil { // the interface, the bind's probes and the relays
		return fmt.Errorf("enroll node %s again: %w", old, err)
	}
	a.ctl.setIdentity(id, key)
	a.log.Info("re-enrolled with a new key, keeping the state dir", "node", id.Node.Name, "old_node", old, "addr", id.Node.Addresses[0].Addr().String(), "why", why)
	return nil
}

// checkIdentity opens one netmap stream with the stored identity and
// returns nil once the coordinator sends a netmap, which is discarded.
func (a *Agent) checkIdentity(ctx context.Context) error {
	api, err := newControlClient(a.ctl.id.urls(), a.ctl.coordinatorPins, a.log)
	if err != nil {
		return err
	}
	defer api.close()
	a.ctl.api = api // for the proof key; Run sets its own
	defer func() { a.ctl.api = nil }()
	ctx, cancel := context.WithTimeout(ctx, a.cfg.EnrollTimeout)
	defer cancel()
	req, err := a.mapRequest(ctx)
	if err != nil {
		return err
	}
	accepted := false
	err = api.stream(ctx, a.ctl.id.Credential, req, nil, func(*wire.Netmap) { accepted = true; cancel() })
	if accepted {
		return nil
	}
	if err == nil {
		err = errors.New("netmap stream ended before a netmap")
	}
	return err
}

// replaceIdentity makes key and id the state dir's, in an order that
// leaves it usable after a crash at any point: the key as a rotation file
// first, then node.json naming its public key (an agent started now
// adopts the rotation file when the coordinator refuses the old key),
// then private.key. The netmap cache of the old node goes.
func (s *stateDir) replaceIdentity(key wgtypes.Key, id Identity) error {
	if err := s.saveNextKey(key); err != nil {
		return err
	}
	if err := s.saveIdentity(id); err != nil {
		return err
	}
	if err := s.saveKey(key); err != nil {
		return err
	}
	s.removeNextKey()
	if err := os.Remove(s.file(netmapFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
