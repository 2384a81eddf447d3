package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/atomicfile"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// nextKeyFile holds a key being rotated to: written before the
// coordinator is told, removed once the rotation is settled, so that an
// agent that dies in between can finish it.
const nextKeyFile = "private.key.next"

func (s *stateDir) saveNextKey(k wgtypes.Key) error {
	return atomicfile.Write(s.file(nextKeyFile), []byte(k.String()+"\n"), 0o600)
}

// loadNextKey returns the key of an unfinished rotation, if any.
func (s *stateDir) loadNextKey() (wgtypes.Key, bool) {
	b, err := s.read(nextKeyFile)
	if err != nil {
		return wgtypes.Key{}, false
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
	return k, err == nil
}

func (s *stateDir) removeNextKey() { os.Remove(s.file(nextKeyFile)) }

// privateKey returns the node's current WireGuard private key.
func (c *control) privateKey() wgtypes.Key {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.key
}

// publicKey returns the node's current public key, base64.
func (c *control) publicKey() string { return c.privateKey().PublicKey().String() }

// keepKey makes k the node's key, in memory and in the state dir.
func (c *control) keepKey(k wgtypes.Key) error {
	c.mu.Lock()
	c.key = k
	c.mu.Unlock()
	return errors.Join(c.state.saveKey(k), c.saveIdentity())
}

// RotateKey replaces the node's WireGuard key: it makes a new one, tells
// the coordinator (which pushes it to the peers before it answers), then
// switches the interface to it and keeps it. The request proves, with the
// current private key, that this node asks for the new key. It returns the
// new public key. Rotations run one at a time.
func (a *Agent) RotateKey(ctx context.Context) (string, error) {
	a.rotateMu.Lock()
	defer a.rotateMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ck, err := a.ctl.coordinatorKey(ctx)
	if err != nil {
		return "", fmt.Errorf("rotate key: %w", err)
	}
	old := a.ctl.privateKey()
	next, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	req := wire.RotateKeyRequest{PublicKey: old.PublicKey().String(), NewPublicKey: next.PublicKey().String()}
	if ck != "" {
		if req.Proof, err = credential.RotationProof(old, ck, req.NewPublicKey); err != nil {
			return "", fmt.Errorf("rotate key: %w", err)
		}
	}
	if err := a.state.saveNextKey(next); err != nil {
		return "", fmt.Errorf("rotate key: %w", err)
	}
	if err := a.ctl.call(ctx, http.MethodPost, wire.PathRotateKey, req); err != nil {
		if errors.Is(err, ErrRefused) {
			a.state.removeNextKey() // the coordinator kept the old key
			return "", fmt.Errorf("rotate key: %w", err)
		}
		// The answer may be lost after the coordinator took the new key,
		// which it publishes before answering: if the netmap has it, adopt
		// it. Otherwise the rotation file stays, and a later netmap (or the
		// refusal of the old key) settles it.
		if a.data.selfKey() == req.NewPublicKey {
			if err := a.adoptKey(next); err != nil {
				return "", err
			}
			a.log.Info("key rotated; the coordinator's answer was lost", "node", a.ctl.id.Node.Name, "err", err)
			return req.NewPublicKey, nil
		}
		return "", fmt.Errorf("rotate key: %w", err)
	}
	if err := a.adoptKey(next); err != nil {
		return "", err
	}
	a.log.Info("key rotated", "node", a.ctl.id.Node.Name)
	return next.PublicKey().String(), nil
}

// adoptKey makes k the node's key: on the interface, in memory and in the
// state dir, then drops the rotation file.
func (a *Agent) adoptKey(k wgtypes.Key) error {
	if err := a.data.setKey(k); err != nil {
		return fmt.Errorf("rotate key: the coordinator has the new key but the interface does not: %w", err)
	}
	if err := a.ctl.keepKey(k); err != nil {
		return fmt.Errorf("rotate key: keep the new key (it is in %s): %w", a.state.file(nextKeyFile), err)
	}
	a.state.removeNextKey()
	return nil
}

// finishRotation settles a rotation an earlier run left behind, once the
// coordinator's netmap tells which key it has: the one in the rotation
// file is adopted, or the file dropped.
func (a *Agent) finishRotation(coordinatorKey string) {
	if !a.rotateMu.TryLock() {
		return // a rotation is running; it settles the file itself
	}
	defer a.rotateMu.Unlock()
	next, ok := a.state.loadNextKey()
	if !ok {
		return
	}
	if next.PublicKey().String() != coordinatorKey {
		a.state.removeNextKey()
		return
	}
	if err := a.adoptKey(next); err != nil {
		a.log.Error("unfinished key rotation", "err", err)
		return
	}
	a.log.Info("finished an interrupted key rotation", "node", a.ctl.id.Node.Name)
}

// resumeRotation adopts the key of an unfinished rotation after the
// coordinator refused the current one, and reports whether it did: an
// agent that died after the coordinator took its new key, but before it
// kept it, starts with the old one.
func (a *Agent) resumeRotation() bool {
	a.rotateMu.Lock()
	defer a.rotateMu.Unlock()
	next, ok := a.state.loadNextKey()
	if !ok || next == a.ctl.privateKey() {
		return false
	}
	if err := a.adoptKey(next); err != nil {
		a.log.Error("unfinished key rotation", "err", err)
		return false
	}
	a.log.Info("resumed an interrupted key rotation", "node", a.ctl.id.Node.Name)
	return true
}

// rotateKeys rotates the key every Config.KeyRotation until ctx is done.
func (a *Agent) rotateKeys(ctx context.Context) {
	if a.cfg.KeyRotation <= 0 {
		return
	}
	t := time.NewTicker(a.cfg.KeyRotation)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := a.RotateKey(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("scheduled key rotation failed; retrying at the next", "err", err)
		}
	}
}

// handleRotateKey serves POST /v1/rotate-key on the local API.
func (a *Agent) handleRotateKey(w http.ResponseWriter, r *http.Request) {
	pub, err := a.RotateKey(r.Context())
	replyLocal(w, err, map[string]string{"public_key": pub})
}
