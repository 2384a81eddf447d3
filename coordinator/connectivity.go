package coordinator

import (
	"net/http"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// connectivity keeps what each node last reported about how it reaches
// the mesh (NAT type, home relay, paths to its peers). It lives in memory:
// agents report again on every new netmap stream, so a coordinator
// restart loses it only until they reconnect.
type connectivity struct {
	mu    sync.Mutex
	nodes map[int64]wire.Connectivity // guarded by mu
}

func (cs *connectivity) set(id int64, c wire.Connectivity) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.nodes == nil {
		cs.nodes = map[int64]wire.Connectivity{}
	}
	cs.nodes[id] = c
}

// get returns node id's last report; nil: none.
func (cs *connectivity) get(id int64) *wire.Connectivity {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	c, ok := cs.nodes[id]
	if !ok {
		return nil
	}
	return &c
}

// retain forgets the reports of the nodes keep says are gone.
func (cs *connectivity) retain(keep func(id int64) bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for id := range cs.nodes {
		if !keep(id) {
			delete(cs.nodes, id)
		}
	}
}

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
	c.conns.set(node.ID, conn)
	if err := c.offerEndpoints(r.Context(), node, req.Endpoints); err != nil {
		c.writeStoreError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
