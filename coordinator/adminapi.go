package coordinator

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/wiremesh/wiremesh/acl"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
)

// page reads a paginated list's ?after=ID&limit=N. It writes the error
// answer and returns false when they are malformed.
func page(w http.ResponseWriter, r *http.Request) (after int64, limit int, ok bool) {
	q := r.URL.Query()
	limit = wire.DefaultPageSize
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > wire.MaxPageSize {
			writeError(w, http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("bad limit %q: want 1..%d", s, wire.MaxPageSize), nil)
			return 0, 0, false
		}
		limit = n
	}
	if s := q.Get("after"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("bad cursor after=%q: use the Link header of the previous page", s), nil)
			return 0, 0, false
		}
		after = n
	}
	return after, limit, true
}

// setNext names the next page in a Link header.
func setNext(w http.ResponseWriter, r *http.Request, after int64, limit int) {
	q := url.Values{"after": {strconv.FormatInt(after, 10)}, "limit": {strconv.Itoa(limit)}}
	w.Header().Set("Link", fmt.Sprintf("<%s?%s>; rel=\"next\"", r.URL.Path, q.Encode()))
}

// adminNode returns the node called name as the admin listing shows it:
// online state, services with their reported health, refusals under the
// active policy. Every admin answer that carries a node uses it, so that
// each shows the same state.
func (c *Coordinator) adminNode(ctx context.Context, name string) (wire.Node, error) {
	all, err := c.store.AdminNodes(ctx)
	if err != nil {
		return wire.Node{}, err
	}
	i := slices.IndexFunc(all, func(n wire.Node) bool { return n.Name == name })
	if i < 0 {
		return wire.Node{}, fmt.Errorf("%w: no node named %q", store.ErrNotFound, name)
	}
	n := withRefused(c.state.Load().compiled.Policy(), all[i])
	n.Online = c.isOnline(n)
	return n, nil
}

// handleNode answers one node with its peers and its access under the
// active policy.
func (c *Coordinator) handleNode(w http.ResponseWriter, r *http.Request) {
	n, err := c.adminNode(r.Context(), r.PathValue("name"))
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	s := c.state.Load()
	d := wire.NodeDetail{Node: n, Peers: []string{}, Reaches: []wire.Access{}, ReachedBy: []wire.Access{}}
	s.compiled.Peers(n.ID, func(j int) {
		p := s.node(j)
		d.Peers = append(d.Peers, p.Name)
		d.Reaches = appendAccess(d.Reaches, p.Name, s.compiled.Access(n.ID, p.ID))
		d.ReachedBy = appendAccess(d.ReachedBy, p.Name, s.compiled.Access(p.ID, n.ID))
	})
	writeJSON(w, http.StatusOK, d)
}

func appendAccess(dst []wire.Access, node string, grants []acl.Grant) []wire.Access {
	for _, g := range grants {
		dst = append(dst, wire.Access{Node: node, Proto: acl.ProtoName(g.Proto), Ports: g.Ports, Text: node + " " + g.String()})
	}
	return dst
}

func (c *Coordinator) handleExpireNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var req wire.ExpireRequest
	if r.ContentLength != 0 && !decodeBody(w, r, &req, true) { // the body is optional
		return
	}
	if req.Never && !req.At.IsZero() {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, `give "at" or "never", not both`, nil)
		return
	}
	if _, err := c.store.ExpireNode(r.Context(), actor(r), name, req.At, req.Never); err != nil {
		c.writeStoreError(w, err)
		return
	}
	if err := c.publish(r.Context()); err != nil {
		c.log.Error("publish after expire", "err", err)
	}
	n, err := c.adminNode(r.Context(), name)
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	if !n.Expires.IsZero() && !n.Expires.After(time.Now()) {
		c.log.Info("node expired", "node", name)
	} else {
		c.log.Info("node expiry set", "node", name, "expires", n.Expires)
	}
	writeJSON(w, http.StatusOK, n)
}

func (c *Coordinator) handleAudit(w http.ResponseWriter, r *http.Request) {
	before, limit, ok := page(w, r)
	if !ok {
		return
	}
	entries, err := c.store.Audit(r.Context(), before, limit)
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	if len(entries) == limit {
		setNext(w, r, entries[len(entries)-1].ID, limit)
	}
	writeJSON(w, http.StatusOK, entries)
}

func (c *Coordinator) handleAdminTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := c.store.AdminTokens(r.Context())
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toks)
}

func (c *Coordinator) handleCreateAdminToken(w http.ResponseWriter, r *http.Request) {
	var req wire.CreateAdminTokenRequest
	if !decodeBody(w, r, &req, true) {
		return
	}
	t, sec, err := c.store.CreateAdminToken(r.Context(), actor(r), req.Comment)
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	tok := c.bundle(sec).Encode(credential.AdminTokenPrefix)
	writeJSON(w, http.StatusCreated, wire.CreateAdminTokenResponse{
		Token:      t,
		AdminToken: tok,
	})
}

func (c *Coordinator) handleRevokeAdminToken(w http.ResponseWriter, r *http.Request) {
	if err := c.store.RevokeAdminToken(r.Context(), actor(r), r.PathValue("id")); err != nil {
		c.writeStoreError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
