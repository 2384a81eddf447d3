package coordinator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"

	"github.com/wiremesh/wiremesh/wire"
)

// RotateNodeKey replaces node id's public key old with new, if old is
// still its key and new is nobody's.
func (s *Store) RotateNodeKey(ctx context.Context, id int64, old, new string) (uint64, error) {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var name, cur string
		if err := tx.QueryRowContext(ctx, "SELECT name, public_key FROM nodes WHERE id = ?", id).Scan(&name, &cur); err != nil {
			return fmt.Errorf("read node: %w", err)
		}
		if cur != old {
			return fmt.Errorf("%w: the node's key is no longer %s", ErrConflict, old)
		}
		var other string
		err := tx.QueryRowContext(ctx, "SELECT name FROM nodes WHERE public_key = ?", new).Scan(&other)
		if err == nil {
			return fmt.Errorf("%w: key already used by node %q", ErrConflict, other)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("check key: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE nodes SET public_key = ? WHERE id = ?", new, id); err != nil {
			return fmt.Errorf("rotate key: %w", err)
		}
		return audit(ctx, tx, s.now(), name, "node.rotate-key", name, new)
	})
}

// handleRotateKey replaces the calling node's WireGuard public key, if
// the caller proves it holds the current private key, and pushes it to
// its peers before it answers, so that the agent can switch
// its private key knowing its peers are (about to be) told.
func (c *Coordinator) handleRotateKey(w http.ResponseWriter, r *http.Request) {
	var req wire.RotateKeyRequest
	node, ok := c.nodeAuth(w, r, &req, func() string { return req.PublicKey })
	if !ok {
		return
	}
	if err := validPublicKey(req.NewPublicKey); err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error(), nil)
		return
	}
	// The credential and the current public key are not enough: whoever
	// rotates must hold the current private key.
	if err := c.proof.CheckRotation(req.PublicKey, req.NewPublicKey, req.Proof); err != nil {
		c.refuseProof(w, r, node, err)
		return
	}
	if _, err := c.store.RotateNodeKey(r.Context(), node.ID, req.PublicKey, req.NewPublicKey); err != nil {
		c.writeStoreError(w, err)
		return
	}
	if err := c.publish(r.Context()); err != nil {
		c.log.Error("publish after key rotation", "err", err)
	}
	c.log.Info("node key rotated", "node", node.Name)
	node.PublicKey = req.NewPublicKey
	writeJSON(w, http.StatusOK, node)
}
