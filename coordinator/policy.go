package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/wiremesh/wiremesh/acl"
	"github.com/wiremesh/wiremesh/wire"
)

// maxChanges bounds the access changes a check returns.
const maxChanges = 10000

// handleGetPolicy answers the active policy, or with ?version=N that
// version (with its text).
func (c *Coordinator) handleGetPolicy(w http.ResponseWriter, r *http.Request) {
	var p wire.Policy
	var err error
	if s := r.URL.Query().Get("version"); s != "" {
		v, perr := strconv.ParseUint(s, 10, 64)
		if perr != nil || v == 0 {
			writeError(w, http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("bad version %q: want a policy version from 1", s), nil)
			return
		}
		p, err = c.store.PolicyVersion(r.Context(), v)
	} else {
		p, err = c.store.ActivePolicy(r.Context())
	}
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// validate parses text and runs its tests against the nodes of s, with
// the services the candidate policy lets each provide (whatever the active
// one allows). It returns the compiled policy, or the problems found.
func validate(s *snapshot, req wire.SetPolicyRequest) (*acl.Compiled, []wire.PolicyError) {
	file := req.File
	if file == "" {
		file = "policy.hujson"
	}
	p, err := acl.Parse(file, []byte(req.Text))
	if err == nil {
		compiled := acl.Compile(p, s.aclNodes)
		if err = compiled.RunTests(); err == nil {
			return compiled, nil
		}
	}
	var list acl.ErrorList
	if !errors.As(err, &list) {
		return nil, []wire.PolicyError{{Message: err.Error(), Text: err.Error()}}
	}
	out := make([]wire.PolicyError, len(list))
	for i, e := range list {
		out[i] = wire.PolicyError{Line: e.Pos.Line, Column: e.Pos.Col, Message: e.Msg, Text: e.Error()}
	}
	return nil, out
}

func policyRejected(w http.ResponseWriter, errs []wire.PolicyError) {
	msg := "policy rejected: " + errs[0].Text
	if len(errs) > 1 {
		msg += fmt.Sprintf(" (and %s)", plural(len(errs)-1, "more problem"))
	}
	writeError(w, http.StatusBadRequest, wire.CodePolicyInvalid, msg, errs)
}

func (c *Coordinator) handleSetPolicy(w http.ResponseWriter, r *http.Request) {
	var req wire.SetPolicyRequest
	if !decodeBody(w, r, &req, true) {
		return
	}
	if len(req.Comment) > 200 {
		writeError(w, http.StatusBadRequest, wire.CodeBadRequest, "comment longer than 200 bytes", nil)
		return
	}
	s := c.state.Load()
	compiled, errs := validate(s, req)
	if errs != nil {
		policyRejected(w, errs)
		return
	}
	c.setPolicy(w, r, req.Text, req.Comment, acl.ProviderChanges(s.compiled, compiled))
}

// setPolicy makes text the active policy. providers are the reported
// services it lets their nodes provide, or no longer: each is audited
// (service.allowed, service.refused), the admin as the actor.
func (c *Coordinator) setPolicy(w http.ResponseWriter, r *http.Request, text, comment string, providers []acl.ProviderChange) {
	p, err := c.store.SetPolicy(r.Context(), actor(r), text, comment)
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	if err := c.publish(r.Context()); err != nil {
		c.log.Error("publish after policy change", "err", err)
	}
	for _, ch := range providers {
		action, detail := "service.refused", fmt.Sprintf("on %s, by policy version %d", ch.Node, p.Version)
		if ch.Allowed {
			action = "service.allowed"
		}
		if err := c.store.AddAudit(context.WithoutCancel(r.Context()), actor(r), action, ch.Service, detail); err != nil {
			c.log.Error("audit", "err", err)
		}
	}
	c.log.Info("policy set", "version", p.Version, "author", p.Author)
	writeJSON(w, http.StatusOK, p)
}

func (c *Coordinator) handleCheckPolicy(w http.ResponseWriter, r *http.Request) {
	var req wire.SetPolicyRequest
	if !decodeBody(w, r, &req, true) {
		return
	}
	s := c.state.Load()
	out := wire.PolicyCheck{ActiveVersion: s.policy.Version}
	compiled, errs := validate(s, req)
	if errs != nil {
		out.Errors = errs
		writeJSON(w, http.StatusOK, out)
		return
	}
	out.Valid = true
	for _, ch := range acl.Diff(s.compiled, compiled) {
		if len(out.Changes) == maxChanges {
			break
		}
		out.Changes = append(out.Changes, wire.AccessChange{Gained: ch.Gained, Src: ch.Src, Dst: ch.Dst, Proto: ch.Proto, Ports: ch.Ports, Text: ch.String()})
	}
	for _, ch := range acl.ProviderChanges(s.compiled, compiled) {
		if len(out.Providers) == maxChanges {
			break
		}
		out.Providers = append(out.Providers, wire.ProviderChange{Allowed: ch.Allowed, Node: ch.Node, Service: ch.Service, Text: ch.String()})
	}
	writeJSON(w, http.StatusOK, out)
}

func (c *Coordinator) handlePolicyHistory(w http.ResponseWriter, r *http.Request) {
	h, err := c.store.PolicyHistory(r.Context())
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

func (c *Coordinator) handleRollback(w http.ResponseWriter, r *http.Request) {
	var req wire.RollbackRequest
	if !decodeBody(w, r, &req, true) {
		return
	}
	old, err := c.store.PolicyVersion(r.Context(), req.Version)
	if err != nil {
		c.writeStoreError(w, err)
		return
	}
	// The inventory may have changed since: the old policy's tests must
	// still pass.
	s := c.state.Load()
	compiled, errs := validate(s, wire.SetPolicyRequest{Text: old.Text, File: "policy v" + strconv.FormatUint(old.Version, 10)})
	if errs != nil {
		policyRejected(w, errs)
		return
	}
	c.setPolicy(w, r, old.Text, fmt.Sprintf("rollback to %d", old.Version), acl.ProviderChanges(s.compiled, compiled))
}

func (c *Coordinator) handleSetTags(w http.ResponseWriter, r *http.Request) {
	var req wire.SetTagsRequest
	if !decodeBody(w, r, &req, true) {
		return
	}
	name := r.PathValue("name")
	if _, err := c.store.SetTags(r.Context(), actor(r), name, req.Tags); err != nil {
		c.writeStoreError(w, err)
		return
	}
	if err := c.publish(r.Context()); err != nil {
		c.log.Error("publish after tag change", "err", err)
	}
	c.log.Info("node tagged", "node", name, "tags", req.Tags)
	w.WriteHeader(http.StatusNoContent)
}

// plural returns "1 problem", "2 problems".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
