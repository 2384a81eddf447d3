package coordinator

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// nodeAuth authenticates an agent request by its node credential and
// checks that publicKey is the node's key. It writes the error answer and
// returns false on failure.
func (c *Coordinator) nodeAuth(w http.ResponseWriter, r *http.Request, body any, publicKey func() string) (wire.Node, bool) {
	cred, err := bearer(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "node credential required: "+err.Error(), nil)
		return wire.Node{}, false
	}
	node, err := c.store.NodeByCredential(r.Context(), cred)
	if err != nil {
		c.writeStoreError(w, err)
		return wire.Node{}, false
	}
	if !decodeBody(w, r, body, false) {
		return wire.Node{}, false
	}
	if publicKey() != node.PublicKey {
		writeError(w, http.StatusForbidden, wire.CodeKeyMismatch, "public key does not match the node's credential", nil)
		return wire.Node{}, false
	}
	return node, true
}

// handleServicesReport takes an agent's services and their health.
func (c *Coordinator) handleServicesReport(w http.ResponseWriter, r *http.Request) {
	var req wire.ServicesReport
	node, ok := c.nodeAuth(w, r, &req, func() string { return req.PublicKey })
	if !ok {
		return
	}
	if _, err := c.proof.CheckServices(req.PublicKey, req.Proof, time.Now()); err != nil {
		c.refuseProof(w, r, node, err)
		return
	}
	ver, err := c.store.SetServices(r.Context(), node.ID, req.Services)
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	if ver != 0 {
		if err := c.publish(r.Context()); err != nil {
			c.log.Error("publish after services report", "err", err)
		}
		c.log.Info("services changed", "node", node.Name, "services", len(req.Services))
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleServices lists every service with its instances and their
// reported health.
func (c *Coordinator) handleServices(w http.ResponseWriter, r *http.Request) {
	nodes, err := c.store.AdminNodes(r.Context())
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	byName := map[string]*wire.CatalogService{}
	for _, n := range nodes {
		online := c.isOnline(n.ID)
		for _, sv := range n.Services {
			cs := byName[sv.Name]
			if cs == nil {
				cs = &wire.CatalogService{Name: sv.Name}
				byName[sv.Name] = cs
			}
			cs.Instances = append(cs.Instances, wire.ServiceInstance{Node: n.Name, Addresses: n.Addresses, Online: online, Service: sv})
		}
	}
	out := make([]wire.CatalogService, 0, len(byName))
	for _, cs := range byName {
		out = append(out, *cs)
	}
	slices.SortFunc(out, func(a, b wire.CatalogService) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, out)
}

func (c *Coordinator) handleGossipRotate(w http.ResponseWriter, r *http.Request) {
	info, err := c.store.RotateGossipKey(r.Context(), actor(r))
	c.gossipChanged(w, r, info, err, "gossip key rotated")
}

func (c *Coordinator) handleGossipRetire(w http.ResponseWriter, r *http.Request) {
	info, err := c.store.RetireGossipKeys(r.Context(), actor(r))
	c.gossipChanged(w, r, info, err, "old gossip keys retired")
}

func (c *Coordinator) gossipChanged(w http.ResponseWriter, r *http.Request, info wire.GossipKeys, err error, msg string) {
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	if err := c.publish(r.Context()); err != nil {
		c.log.Error("publish after gossip key change", "err", err)
	}
	c.log.Info(msg, "keys", info.Count)
	writeJSON(w, http.StatusOK, info)
}
