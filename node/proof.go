package node

import (
	"context"
	"fmt"
	"time"

	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// coordinatorKey returns the coordinator's proof key: the one enrollment
// gave, or else the one fetched from the coordinator (a node.json from
// before proofs lacks it), kept in node.json from then on. An empty key
// with a nil error: the coordinator predates proofs and takes requests
// without.
func (a *Agent) coordinatorKey(ctx context.Context) (string, error) {
	a.mu.Lock()
	k := a.coordKey
	a.mu.Unlock()
	if k != "" {
		return k, nil
	}
	return a.fetchCoordinatorKey(ctx)
}

// fetchCoordinatorKey asks the coordinator for its proof key and keeps it.
func (a *Agent) fetchCoordinatorKey(ctx context.Context) (string, error) {
	k, err := a.ctl.coordinatorKey(ctx)
	if client.CodeOf(err) == wire.CodeNotFound {
		a.log.Warn("the coordinator takes no proofs of this node's key: upgrade it", "url", a.id.Coordinator)
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("fetch the coordinator's proof key: %w", err)
	}
	a.mu.Lock()
	changed := a.coordKey != k
	a.coordKey = k
	a.mu.Unlock()
	if changed {
		if err := a.saveIdentity(); err != nil {
			a.log.Warn("cannot keep the coordinator's proof key; fetching it again at the next start", "err", err)
		}
	}
	return k, nil
}

// refreshCoordinatorKey fetches the proof key again after the coordinator
// refused a proof, and reports whether it changed (a coordinator whose
// proof key was replaced), so that a retry can help.
func (a *Agent) refreshCoordinatorKey(ctx context.Context) bool {
	a.mu.Lock()
	old := a.coordKey
	a.mu.Unlock()
	k, err := a.fetchCoordinatorKey(ctx)
	if err != nil {
		a.log.Warn("proof refused; cannot fetch the coordinator's proof key again", "err", err)
		return false
	}
	if k != old {
		a.log.Info("the coordinator's proof key changed", "node", a.id.Node.Name)
	}
	return k != old
}

// netmapProof returns the node's current public key and the proof of the
// next netmap request made with its private key; the proof is "" for a
// coordinator without a proof key. Its times never go backwards, so that
// a clock stepped back does not make the coordinator refuse a proof as
// older than the last.
func (a *Agent) netmapProof(coordKey string) (pub, proof string, err error) {
	a.mu.Lock()
	key := a.key
	at := max(a.cfg.Clock().Unix(), a.lastProof)
	if coordKey != "" {
		a.lastProof = at
	}
	a.mu.Unlock()
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
func (a *Agent) servicesProof(coordKey string, req *wire.ServicesReport) error {
	a.mu.Lock()
	key := a.key
	at := max(a.cfg.Clock().UnixNano(), a.lastReport+1)
	if coordKey != "" {
		a.lastReport = at
	}
	a.mu.Unlock()
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
func (a *Agent) saveIdentity() error {
	a.idMu.Lock()
	defer a.idMu.Unlock()
	a.mu.Lock()
	id := a.id
	id.Node.PublicKey = a.key.PublicKey().String()
	id.CoordinatorKey = a.coordKey
	id.Pins = a.pins
	a.mu.Unlock()
	return a.state.saveIdentity(id)
}
