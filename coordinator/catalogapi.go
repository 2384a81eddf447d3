package coordinator

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wiremesh/wiremesh/acl"
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
	// The proof covers the services as decoded: a re-encoding of them is
	// what the agent's ServicesContent computed before sending.
	content, err := wire.ServicesContent(req.Services)
	if err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error(), nil)
		return
	}
	at, err := c.proof.CheckServices(req.PublicKey, req.ContentProof, content, time.Now())
	if err != nil {
		c.refuseProof(w, r, node, err)
		return
	}
	if !c.acceptReport(w, r, node, "services", at) {
		return
	}
	before := c.state.Load()
	pol := before.compiled.Policy()
	ver, err := c.store.SetServices(r.Context(), node, req.Services, func(svc string) string { return pol.Refused(node.Name, node.Tags, svc) })
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	if ver != 0 {
		if err := c.publish(r.Context()); err != nil {
			c.log.Error("publish after services report", "err", err)
		}
		c.log.Info("services changed", "node", node.Name, "services", len(req.Services))
		c.checkTestsAfterReport(context.WithoutCancel(r.Context()), before, node.Name)
	}
	w.WriteHeader(http.StatusNoContent)
}

// checkTestsAfterReport runs the active policy's tests after node's
// report changed its services. Only instances the owners allow count, so
// only such a node (the admin let it provide the service) can change what
// the tests see, say by running it on a port the rules do not open. If
// the tests passed before and fail now, the report stays, but it is not
// silent: the coordinator logs an error and audits policy.tests-failing.
func (c *Coordinator) checkTestsAfterReport(ctx context.Context, before *snapshot, node string) {
	now := c.state.Load()
	if now.compiled.Policy() != before.compiled.Policy() || before.compiled.RunTests() != nil {
		return // another policy, or tests that already failed
	}
	err := now.compiled.RunTests()
	if err == nil {
		return
	}
	c.log.Error("a services report makes the active policy's tests fail", "node", node, "version", now.policy.Version, "err", err)
	detail, _, _ := strings.Cut(err.Error(), "\n")
	if err := c.store.AddAudit(ctx, node, "policy.tests-failing", strconv.FormatUint(now.policy.Version, 10), detail); err != nil {
		c.log.Error("audit", "err", err)
	}
}

// handleServices lists every service with its instances and their
// reported health, the instances the policy refuses included (marked),
// so that admins see them.
func (c *Coordinator) handleServices(w http.ResponseWriter, r *http.Request) {
	nodes, err := c.store.AdminNodes(r.Context())
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	pol := c.state.Load().compiled.Policy()
	byName := map[string]*wire.CatalogService{}
	for _, n := range nodes {
		online := c.isOnline(n)
		for _, sv := range withRefused(pol, n).Services {
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

// withRefused returns n with each service the policy p does not let it
// provide marked with the reason (wire.Service.Refused). n is not changed.
func withRefused(p *acl.Policy, n wire.Node) wire.Node {
	shared := true
	for i, sv := range n.Services {
		why := p.Refused(n.Name, n.Tags, sv.Name)
		if why == "" {
			continue
		}
		if shared { // the listing's nodes are shared
			n.Services, shared = slices.Clone(n.Services), false
		}
		n.Services[i].Refused = why
	}
	return n
}
