package coordinator

import (
	"net/http"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// handleConnectivity takes an agent's connectivity report: its endpoint
// candidates go to its peers' netmaps (spaced out like every endpoint
// change), the rest to admin views.
func (c *Coordinator) handleConnectivity(w http.ResponseWriter, r *http.Request) {
	var req wire.ConnectivityReport
	node, ok := c.nodeAuth(w, r, &req, func() string { return req.PublicKey })
	if !ok {
		return
	}
	if err := req.Check(); err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "connectivity report: "+err.Error(), nil)
		return
	}
	content, err := wire.ConnectivityContent(req)
	if err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error(), nil)
		return
	}
	at, err := c.proof.CheckConnectivity(req.PublicKey, req.ContentProof, content, time.Now())
	if err != nil {
		c.refuseProof(w, r, node, err)
		return
	}
	if !c.acceptReport(w, r, node, "connectivity", at) {
		return
	}
	conn := req.Connectivity
	conn.Reported = time.Now().UTC()
	if err := c.store.SetConnectivity(r.Context(), node.ID, conn); err != nil {
		c.writeStoreError(w, err)
		return
	}
	if err := c.offerEndpoints(r.Context(), node, req.Endpoints); err != nil {
		c.writeStoreError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
