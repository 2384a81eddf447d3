package coordinator

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
)

// maxBody bounds every request body.
const maxBody = 1 << 20

// Handler returns the coordinator's HTTP API.
func (c *Coordinator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.PathHealth, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET "+wire.PathCoordinatorKey, c.handleCoordinatorKey)
	mux.HandleFunc("POST "+wire.PathEnroll, c.handleEnroll)
	mux.HandleFunc("POST "+wire.PathNetmap, c.handleNetmap)
	mux.HandleFunc("GET "+wire.PathNodes, c.admin(c.handleNodes))
	mux.HandleFunc("DELETE "+wire.PathNodes+"/{name}", c.admin(c.handleDeleteNode))
	mux.HandleFunc("GET "+wire.PathJoinKeys, c.admin(c.handleJoinKeys))
	mux.HandleFunc("POST "+wire.PathJoinKeys, c.admin(c.handleCreateJoinKey))
	mux.HandleFunc("DELETE "+wire.PathJoinKeys+"/{id}", c.admin(c.handleRevokeJoinKey))
	mux.HandleFunc("PUT "+wire.PathNodes+"/{name}/tags", c.admin(c.handleSetTags))
	mux.HandleFunc("GET "+wire.PathNodes+"/{name}", c.admin(c.handleNode))
	mux.HandleFunc("POST "+wire.PathNodes+"/{name}/expire", c.admin(c.handleExpireNode))
	mux.HandleFunc("GET "+wire.PathAudit, c.admin(c.handleAudit))
	mux.HandleFunc("GET "+wire.PathAdminTokens, c.admin(c.handleAdminTokens))
	mux.HandleFunc("POST "+wire.PathAdminTokens, c.admin(c.handleCreateAdminToken))
	mux.HandleFunc("DELETE "+wire.PathAdminTokens+"/{id}", c.admin(c.handleRevokeAdminToken))
	mux.HandleFunc("GET "+wire.PathPolicy, c.admin(c.handleGetPolicy))
	mux.HandleFunc("PUT "+wire.PathPolicy, c.admin(c.handleSetPolicy))
	mux.HandleFunc("POST "+wire.PathPolicy+"/check", c.admin(c.handleCheckPolicy))
	mux.HandleFunc("GET "+wire.PathPolicy+"/history", c.admin(c.handlePolicyHistory))
	mux.HandleFunc("POST "+wire.PathPolicy+"/rollback", c.admin(c.handleRollback))
	mux.HandleFunc("PUT "+wire.PathServicesReport, c.handleServicesReport)
	mux.HandleFunc("PUT "+wire.PathConnectivity, c.handleConnectivity)
	if c.relay != nil {
		mux.Handle("GET "+wire.PathRelay, c.relay)
	}
	mux.HandleFunc("POST "+wire.PathRotateKey, c.handleRotateKey)
	mux.HandleFunc("GET "+wire.PathServices, c.admin(c.handleServices))
	mux.HandleFunc("POST "+wire.PathGossipRotate, c.admin(c.handleGossipRotate))
	mux.HandleFunc("POST "+wire.PathGossipRetire, c.admin(c.handleGossipRetire))
	c.mountUI(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, wire.CodeNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path), nil)
	})
	return mux
}

// bearer returns the secret of the request's bearer token: a bare secret
// (ID.VALUE), or a whole admin token or join key string, so that
// `Authorization: Bearer $(cat admin.token)` works.
func bearer(r *http.Request) (credential.Secret, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return credential.Secret{}, errors.New("missing bearer token")
	}
	tok = strings.TrimSpace(tok)
	switch {
	case strings.HasPrefix(tok, credential.AdminTokenPrefix):
		b, err := credential.ParseAdminToken(tok)
		return b.Secret, err
	case strings.HasPrefix(tok, credential.JoinKeyPrefix):
		b, err := credential.ParseJoinKey(tok)
		return b.Secret, err
	}
	return credential.ParseSecret(tok)
}

type actorKey struct{}

// admin wraps h so that only a valid admin token reaches it.
func (c *Coordinator) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sec, err := bearer(r)
		if err == nil {
			err = c.store.CheckAdminToken(r.Context(), sec)
			if err != nil && !errors.Is(err, store.ErrDenied) {
				c.writeStoreError(w, err) // the database, not the token
				return
			}
		}
		if err != nil {
			if _, nerr := c.store.NodeByCredential(r.Context(), sec); nerr == nil {
				writeError(w, http.StatusForbidden, wire.CodeForbidden, "a node credential cannot call the admin API", nil)
				return
			}
			writeError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "admin token required: "+err.Error(), nil)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, sec.ID)))
	}
}

func actor(r *http.Request) string {
	a, _ := r.Context().Value(actorKey{}).(string)
	return a
}

// writeError writes the API's error body: every error carries a code
// (wire.Error), which is what clients branch on.
func writeError(w http.ResponseWriter, status int, code wire.ErrorCode, msg string, detail any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(wire.Error{Code: code, Error: msg, Detail: detail})
}

// writeStoreError maps a store error to its status and code: the code a
// store error carries (store.Code), else its sentinel's.
func (c *Coordinator) writeStoreError(w http.ResponseWriter, err error) {
	status, code := http.StatusInternalServerError, wire.CodeInternal
	switch {
	case errors.Is(err, store.ErrNotFound):
		status, code = http.StatusNotFound, wire.CodeNotFound
	case errors.Is(err, store.ErrConflict):
		status, code = http.StatusConflict, wire.CodeConflict
	case errors.Is(err, store.ErrDenied):
		status, code = http.StatusUnauthorized, wire.CodeUnauthorized
	case errors.Is(err, store.ErrInvalid):
		status, code = http.StatusBadRequest, wire.CodeBadRequest
	case errors.Is(err, store.ErrForbidden):
		status, code = http.StatusForbidden, wire.CodeForbidden
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// The request ended under it (the coordinator shuts down, or
		// the client left): nothing is wrong with what it asked.
		status, code = http.StatusServiceUnavailable, wire.CodeUnavailable
	case store.Unavailable(err):
		// PostgreSQL restarting or out of reach: worth a retry.
		c.log.Warn("request failed: database unavailable", "err", err)
		status, code = http.StatusServiceUnavailable, wire.CodeUnavailable
	}
	if sc, ok := store.Code(err); ok {
		code = sc
	}
	msg := err.Error()
	if status == http.StatusInternalServerError {
		c.log.Error("request failed", "err", err)
		msg = "internal error"
	}
	writeError(w, status, code, msg, nil)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// decodeBody reads one JSON value from the body into v. strict refuses
// unknown fields (admin API); the agent protocol tolerates them so newer
// agents can talk to older coordinators. It writes the error answer and
// returns false on failure.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, strict bool) bool {
	body := http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(body)
	if strict {
		dec.DisallowUnknownFields()
	}
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON value")
	}
	if err == nil {
		return true
	}
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, wire.CodeTooLarge, fmt.Sprintf("request body larger than %d bytes", mbe.Limit), nil)
	case errors.As(err, &se):
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, err), map[string]int64{"offset": se.Offset})
	case errors.As(err, &te):
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("bad JSON at byte %d: field %q: want %s", te.Offset, te.Field, te.Type), map[string]any{"offset": te.Offset, "field": te.Field})
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "empty request body: want a JSON object", nil)
	default:
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "bad JSON: "+err.Error(), nil)
	}
	return false
}

func (c *Coordinator) handleEnroll(w http.ResponseWriter, r *http.Request) {
	// The rate limit comes before any work; a bad join key (401) costs
	// its source more than an attempt does: see ratelimit.go.
	src := sourceOf(r)
	attempt := c.admitEnroll(w, src)
	if attempt == nil {
		return
	}
	defer attempt.done()
	key, err := bearer(r)
	if err != nil {
		attempt.fail()
		writeError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "join key required: "+err.Error(), nil)
		return
	}
	var req wire.EnrollRequest
	if !decodeBody(w, r, &req, false) {
		return
	}
	if !c.checkProtocol(w, req.ProtocolVersion) {
		return
	}
	if err := validPublicKey(req.PublicKey); err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error(), nil)
		return
	}
	if req.Relay != nil {
		if err := c.checkRelay(req.Relay, req.Name, req.PublicKey); err != nil {
			c.writeStoreError(w, err)
			return
		}
	}
	if req.Proof != "" {
		if err := c.proof.CheckEnroll(req.PublicKey, req.Proof, time.Now()); err != nil {
			code := wire.CodeProofInvalid
			if errors.Is(err, credential.ErrProofTime) {
				code = wire.CodeProofTime
			}
			writeError(w, http.StatusForbidden, code, err.Error(), nil)
			return
		}
	}
	node, cred, _, err := c.store.Enroll(r.Context(), key, store.EnrollParams{PublicKey: req.PublicKey, Name: req.Name, Hostname: req.Hostname, Relay: req.Relay, Proven: req.Proof != ""})
	if err != nil {
		if errors.Is(err, store.ErrDenied) {
			attempt.fail()
		}
		c.logEnrollRefused(r, err.Error())
		c.writeStoreError(w, err)
		return
	}
	if err := c.publish(r.Context()); err != nil {
		c.log.Error("publish after enroll", "err", err)
	}
	c.log.Info("node enrolled", "node", node.Name, "addr", node.Addresses[0].Addr().String())
	writeJSON(w, http.StatusOK, wire.EnrollResponse{Node: node, Credential: cred.String(), Prefixes: c.store.Prefixes(), CoordinatorKey: c.proof.PublicKey()})
}

func validPublicKey(k string) error {
	b, err := decodeKey(k)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("bad public key %q: want 32 bytes in base64", k)
	}
	return nil
}

// handleNetmap streams the caller's netmap: one at once, another after
// every change that alters it (a change that leaves it as it was, but for
// its version, sends nothing), keep-alives in between. It ends when the
// node is deleted or expires.
func (c *Coordinator) handleNetmap(w http.ResponseWriter, r *http.Request) {
	var req wire.MapRequest
	node, ok := c.netmapAuth(w, r, &req)
	if !ok {
		return
	}
	eps, err := requestEndpoints(r, req)
	if err != nil {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, err.Error(), nil)
		return
	}
	if !c.state.Load().has(node.ID) {
		// Enrolled a moment ago through another coordinator, whose
		// announcement has not arrived yet.
		if err := c.catchUp(r.Context()); err != nil {
			c.writeStoreError(w, err)
			return
		}
	}
	if err := c.offerEndpoints(r.Context(), node, eps); err != nil {
		c.writeStoreError(w, err)
		return
	}
	if err := c.describeRelay(r.Context(), node, req.Relay); err != nil {
		c.writeStoreError(w, err)
		return
	}
	if err := c.store.SetAgentVersion(r.Context(), node.ID, req.Version); err != nil {
		c.log.Warn("agent version not recorded", "node", node.Name, "err", err)
	}
	c.setOnline(r.Context(), node.ID, 1)
	defer c.setOnline(r.Context(), node.ID, -1)
	// Last seen is when the stream ends (a deferred call's arguments
	// would be evaluated now). It runs before the node counts as offline,
	// so the ephemeral sweep never sees an offline node with an old time.
	defer func() { c.store.Touch(context.WithoutCancel(r.Context()), node.ID, time.Now()) }()
	c.log.Info("netmap stream opened", "node", node.Name, "addr", r.RemoteAddr)
	defer c.log.Info("netmap stream closed", "node", node.Name)

	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	send := func(m wire.MapMessage) error {
		rc.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
		if err := enc.Encode(m); err != nil {
			return err
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if err := rc.Flush(); err != nil {
			return err
		}
		// An expired deadline would reset an idle HTTP/2 stream.
		return rc.SetWriteDeadline(time.Time{})
	}
	keepAlive := time.NewTicker(c.cfg.KeepAlive)
	defer keepAlive.Stop()
	// last is the digest of the last whole netmap sent, if no delta went
	// after it: the stream keeps 32 bytes, where keeping the netmap would
	// hold its peers (~26 MiB over 1,000 agents of ~59 peers and 10 of
	// 999).
	var last *[sha256.Size]byte
	sent := false
	// An older agent knows sources by address only.
	legacy := req.ProtocolVersion < wire.ProtocolSrcPeers
	// whole sends nm, s's netmap, unless it is the last one sent but for
	// its version; false: the stream broke.
	whole := func(s *snapshot, nm *wire.Netmap) bool {
		dg := nm.Digest()
		if last != nil && dg == *last {
			// The change left this node's netmap as it was: the agent
			// keeps the one it has (an older Version is fine, it only
			// refuses older ones than its own), and the keep-alives go
			// on as if nothing happened.
			c.metrics.netmapSkipped()
			return true
		}
		if legacy {
			resolved := *nm
			resolved.Rules = nm.FilterRules()
			nm = &resolved
		}
		if err := send(wire.MapMessage{Netmap: nm}); err != nil {
			return false
		}
		c.metrics.netmapSent(s, sent)
		last, sent = &dg, true
		keepAlive.Reset(c.cfg.KeepAlive)
		return true
	}
	delta := func(s *snapshot, d *wire.NetmapDelta) bool {
		if d == nil {
			c.metrics.netmapSkipped() // nothing this node sees changed
			return true
		}
		if legacy && d.Policy != nil {
			d.Policy.Rules = wire.ResolveRules(d.Policy.Rules, s.addrs)
		}
		if err := send(wire.MapMessage{Delta: d}); err != nil {
			return false
		}
		c.metrics.netmapDeltaSent(s)
		last = nil
		keepAlive.Reset(c.cfg.KeepAlive)
		return true
	}
	cur := c.state.Load()
	nm, ok := c.netmapFor(cur, node.ID)
	if !ok {
		return
	}
	if dg, ok := heldNetmap(req, nm); ok {
		// The agent holds this netmap already (a coordinator died, or the
		// stream broke): it resumes with it at the current version.
		if err := send(wire.MapMessage{Delta: &wire.NetmapDelta{Version: nm.Version}}); err != nil {
			return
		}
		c.metrics.netmapResumed()
		last, sent = &dg, true
	} else if !whole(cur, nm) {
		return
	}
	for {
		select {
		case <-cur.changed:
		case <-keepAlive.C:
			if err := send(wire.MapMessage{KeepAlive: true}); err != nil {
				return
			}
			continue
		case <-r.Context().Done():
			return
		}
		prev := cur
		to, all, d := c.streamDelta(cur, node.ID)
		cur = to
		if !all && (d == nil || req.Deltas) {
			if !delta(cur, d) {
				return
			}
			continue
		}
		if req.Deltas {
			if d, ok := policyDelta(prev, cur, node.ID); ok {
				if !delta(cur, d) {
					return
				}
				continue
			}
		}
		nm, ok := c.netmapFor(cur, node.ID)
		if !ok {
			return // deleted or expired: the agent's next request is refused
		}
		if req.Deltas {
			// The agent has prev's netmap: send it what differs, if a
			// delta can say it.
			if old, ok := c.netmapFor(prev, node.ID); ok {
				if d, ok := diffNetmap(old, nm); ok {
					if !delta(cur, d) {
						return
					}
					continue
				}
			}
		}
		if !whole(cur, nm) {
			return
		}
	}
}

// heldNetmap reports whether req names nm, but for its version, as the
// netmap its agent holds (MapRequest.HaveDigest, with deltas), and returns
// nm's digest if so.
func heldNetmap(req wire.MapRequest, nm *wire.Netmap) ([sha256.Size]byte, bool) {
	if !req.Deltas || req.HaveDigest == "" {
		return [sha256.Size]byte{}, false
	}
	dg := nm.Digest()
	return dg, req.HaveDigest == hex.EncodeToString(dg[:])
}

// requestEndpoints returns where the node's WireGuard can be reached: the
// endpoints it names, then the address this request came from with its
// listen port; an error says what in the request is wrong.
func requestEndpoints(r *http.Request, req wire.MapRequest) ([]string, error) {
	if err := wire.CheckEndpoints(req.Endpoints); err != nil {
		return nil, err
	}
	eps := slices.Clone(req.Endpoints)
	if req.ListenPort < 0 || req.ListenPort > 65535 {
		return nil, fmt.Errorf("bad listen port %d", req.ListenPort)
	}
	if req.ListenPort > 0 {
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			obs := net.JoinHostPort(host, strconv.Itoa(req.ListenPort))
			if !slices.Contains(eps, obs) {
				eps = append(eps, obs)
			}
		}
	}
	return eps, nil
}

// offerEndpoints stores eps as node's endpoints and publishes them, unless
// they are unchanged or the endpoint gate holds them (endpointGate).
func (c *Coordinator) offerEndpoints(ctx context.Context, node wire.Node, eps []string) error {
	if !c.endpoints.offer(node.ID, node.Endpoints, eps) {
		return nil
	}
	ver, err := c.store.SetEndpoints(ctx, node.ID, eps)
	if err != nil {
		return err
	}
	if ver != 0 {
		return c.publish(ctx)
	}
	return nil
}

func (c *Coordinator) handleNodes(w http.ResponseWriter, r *http.Request) {
	after, limit, ok := page(w, r)
	if !ok {
		return
	}
	all, err := c.store.AdminNodes(r.Context())
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	nodes := slices.Clone(pageOf(all, after, limit))
	pol := c.state.Load().compiled.Policy()
	for i := range nodes {
		nodes[i] = withRefused(pol, nodes[i])
		nodes[i].Online = c.isOnline(nodes[i])
	}
	if len(nodes) == limit {
		setNext(w, r, nodes[len(nodes)-1].ID, limit)
	}
	writeJSON(w, http.StatusOK, nodes)
}

func (c *Coordinator) handleDeleteNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := c.store.DeleteNode(r.Context(), actor(r), name); err != nil {
		c.writeStoreError(w, err)
		return
	}
	if err := c.publish(r.Context()); err != nil {
		c.log.Error("publish after delete", "err", err)
	}
	c.log.Info("node deleted", "node", name)
	w.WriteHeader(http.StatusNoContent)
}

func (c *Coordinator) handleJoinKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := c.store.JoinKeys(r.Context())
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, keys)
}

func (c *Coordinator) handleCreateJoinKey(w http.ResponseWriter, r *http.Request) {
	var req wire.CreateJoinKeyRequest
	if !decodeBody(w, r, &req, true) {
		return
	}
	k, sec, err := c.store.CreateJoinKey(r.Context(), actor(r), req)
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	jk := c.bundle(sec).Encode(credential.JoinKeyPrefix)
	writeJSON(w, http.StatusCreated, wire.CreateJoinKeyResponse{Key: k, JoinKey: jk})
}

func (c *Coordinator) handleRevokeJoinKey(w http.ResponseWriter, r *http.Request) {
	if err := c.store.RevokeJoinKey(r.Context(), actor(r), r.PathValue("id")); err != nil {
		c.writeStoreError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func decodeKey(k string) ([]byte, error) { return base64.StdEncoding.DecodeString(k) }
