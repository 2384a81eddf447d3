package coordinator

import (
	"net/http"

	"github.com/wiremesh/wiremesh/wire"
)

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
