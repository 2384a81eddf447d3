package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// coordinatorKey returns the coordinator's proof key: the one enrollment
// gave, or else the one fetched from the coordinator (a node.json from
// before proofs lacks it), kept in node.json from then on. An empty key
// with a nil error: the coordinator predates proofs and takes requests
// without.
func (c *control) coordinatorKey(ctx context.Context) (string, error) {
	c.mu.Lock()
	k := c.coordKey
	c.mu.Unlock()
	if k != "" {
		return k, nil
	}
	return c.fetchCoordinatorKey(ctx)
}

// fetchCoordinatorKey asks the coordinator for its proof key and keeps it.
func (c *control) fetchCoordinatorKey(ctx context.Context) (string, error) {
	k, err := c.api.coordinatorKey(ctx)
	if client.CodeOf(err) == wire.CodeNotFound {
		c.log.Warn("the coordinator takes no proofs of this node's key: upgrade it", "url", c.id.Coordinator)
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("fetch the coordinator's proof key: %w", err)
	}
	c.mu.Lock()
	changed := c.coordKey != k
	c.coordKey = k
	c.mu.Unlock()
	if changed {
		if err := c.saveIdentity(); err != nil {
			c.log.Warn("cannot keep the coordinator's proof key; fetching it again at the next start", "err", err)
		}
	}
	return k, nil
}

// refreshCoordinatorKey fetches the proof key again after the coordinator
// refused a proof, and reports whether it changed (a coordinator whose
// proof key was replaced), so that a retry can help.
func (c *control) refreshCoordinatorKey(ctx context.Context) bool {
	c.mu.Lock()
	old := c.coordKey
	c.mu.Unlock()
	k, err := c.fetchCoordinatorKey(ctx)
	if err != nil {
		c.log.Warn("proof refused; cannot fetch the coordinator's proof key again", "err", err)
		return false
	}
	if k != old {
		c.log.Info("the coordinator's proof key changed", "node", c.id.Node.Name)
	}
	return k != old
}

// netmapProof returns the node's current public key and the proof of the
// next netmap request made with its private key; the proof is "" for a
// coordinator without a proof key. Its times never go backwards, so that
// a clock stepped back does not make the coordinator refuse a proof as
// older than the last.
func (c *control) netmapProof(coordKey string) (pub, proof string, err error) {
	c.mu.Lock()
	key := c.key
	at := max(c.clock().Unix(), c.lastProof)
	if coordKey != "" {
		c.lastProof = at
	}
	c.mu.Unlock()
	if coordKey == "" {
		return key.PublicKey().String(), "", nil
	}
	proof, err = credential.NetmapProof(key, coordKey, time.Unix(at, 0))
	return key.PublicKey().String(), proof, err
}

// servicesProof fills in the node's current public key and the proofs of
// the services report req made now with its private key: the one that
// covers its content (wire.ServicesContent) and the one older
// coordinators check; none for a coordinator without a proof key. Each
// report's time is at least a nanosecond after the last one's, so that the
// coordinator, which refuses a time not after one it accepted, takes
// reports made in the same instant or after the clock stepped back.
func (c *control) servicesProof(coordKey string, req *wire.ServicesReport) error {
	c.mu.Lock()
	key := c.key
	at := max(c.clock().UnixNano(), c.lastReport+1)
	if coordKey != "" {
		c.lastReport = at
	}
	c.mu.Unlock()
	req.PublicKey = key.PublicKey().String()
	if coordKey == "" {
		return nil
	}
	content, err := wire.ServicesContent(req.Services)
	if err != nil {
		return err
	}
	if req.ContentProof, err = credential.ServicesProof(key, coordKey, time.Unix(0, at), content); err != nil {
		return err
	}
	req.Proof, err = credential.LegacyServicesProof(key, coordKey, time.Unix(0, at))
	return err
}

// isProofRefusal reports whether err is the coordinator refusing a proof
// as wrong (another proof key, say); isClockRefusal, for its time.
func isProofRefusal(err error) bool { return client.CodeOf(err) == wire.CodeProofInvalid }

func isClockRefusal(err error) bool { return client.CodeOf(err) == wire.CodeProofTime }

// isProtocolRefusal reports whether err is the coordinator refusing this
// agent's protocol version, too old or too new for it.
func isProtocolRefusal(err error) bool {
	c := client.CodeOf(err)
	return c == wire.CodeProtocolTooOld || c == wire.CodeProtocolTooNew
}

// saveIdentity writes node.json with the node's current public key, the
// coordinator's proof key and its pins.
func (c *control) saveIdentity() error {
	c.idMu.Lock()
	defer c.idMu.Unlock()
	c.mu.Lock()
	id := c.id
	id.Node.PublicKey = c.key.PublicKey().String()
	id.CoordinatorKey = c.coordKey
	id.Pins = c.pins
	id.Coordinators = c.urls
	c.mu.Unlock()
	return c.state.saveIdentity(id)
}

// enrollProof proves key to the coordinator ctl talks to, for an
// enrollment (wire.EnrollRequest.Proof).
func enrollProof(ctx context.Context, ctl *controlClient, key wgtypes.Key) (string, error) {
	ck, err := ctl.coordinatorKey(ctx)
	if err != nil {
		return "", err
	}
	return credential.EnrollProof(key, ck, time.Now())
}

// isEnrolledRefusal reports whether err is an enrollment refused because
// the public key is enrolled, or the one-time join key used: perhaps by
// an earlier attempt whose answer was lost.
func isEnrolledRefusal(err error) bool {
	c := client.CodeOf(err)
	return errors.Is(err, ErrRefused) && (c == wire.CodeAlreadyEnrolled || c == wire.CodeKeyUsed)
}
