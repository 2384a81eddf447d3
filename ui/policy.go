package ui

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/wire"
)

// policyTemplate is the editor's text when no policy is set yet.
const policyTemplate = `{
  // Rules only accept; what no rule accepts is denied.
  "acls": [
    // {"action": "accept", "src": ["tag:web"], "dst": ["tag:api:443"], "proto": "tcp"},
  ],
}
`

// policyData is the policy editor's data.
type policyData struct {
	Text   string
	Active wire.Policy
	// Action is what was asked: "", "validate", "check" or "save".
	Action string
	// Checked: the text was checked; Valid: it passed.
	Checked, Valid bool
	Errors         []wire.PolicyError
	// Lines is the numbered text with the lines that have errors marked;
	// shown when there are errors.
	Lines []codeLine
	// Changes are the access changes saving would make (or made).
	Changes     []wire.AccessChange
	ShowChanges bool
	// Providers are the reported services the policy lets their nodes
	// provide, or no longer ("services" owners).
	Providers []wire.ProviderChange
	// Saved is the version a save made. Nil: nothing saved.
	Saved *wire.Policy
	// Message is an API error not tied to a line.
	Message string
}

// codeLine is one line of the numbered view of a policy text.
type codeLine struct {
	N      int
	Text   string
	Errors []string // the messages at this line; empty for a good line
}

func (u *UI) handlePolicy(w http.ResponseWriter, r *http.Request, s *session) {
	var d policyData
	if _, err := u.api.call(r.Context(), s.token, http.MethodGet, wire.PathPolicy, nil, &d.Active); err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	d.Text = d.Active.Text
	if d.Active.Version == 0 {
		d.Text = policyTemplate
	}
	u.render(w, r, s, http.StatusOK, "policy", "Policy", d)
}

// handlePolicyPost validates, checks or saves the submitted text and shows
// the editor again with the result.
func (u *UI) handlePolicyPost(w http.ResponseWriter, r *http.Request, s *session) {
	d := policyData{Text: normalizeNewlines(r.PostForm.Get("text")), Action: r.PostForm.Get("action")}
	switch d.Action {
	case "validate", "check", "save":
	default:
		u.render(w, r, s, http.StatusBadRequest, "error", "Bad request", errorData{Message: "unknown policy action"})
		return
	}
	req := wire.SetPolicyRequest{Text: d.Text}
	var check wire.PolicyCheck
	if _, err := u.api.call(r.Context(), s.token, http.MethodPost, wire.PathPolicy+"/check", req, &check); err != nil {
		u.policyFailed(w, r, s, &d, err)
		return
	}
	d.Checked, d.Valid, d.Errors = true, check.Valid, check.Errors
	d.Changes, d.Providers, d.ShowChanges = check.Changes, check.Providers, d.Action != "validate" && check.Valid
	if d.Action == "save" && check.Valid {
		var p wire.Policy
		if _, err := u.api.call(r.Context(), s.token, http.MethodPut, wire.PathPolicy, req, &p); err != nil {
			u.policyFailed(w, r, s, &d, err)
			return
		}
		d.Saved = &p
		u.log.Info("ui: policy set", "version", p.Version, "token", s.tokenID)
	}
	u.policyPage(w, r, s, http.StatusOK, &d)
}

// policyFailed shows an API error in the editor: a rejected policy's
// problems at their lines, any other message above the text.
func (u *UI) policyFailed(w http.ResponseWriter, r *http.Request, s *session, d *policyData, err error) {
	st := statusOf(err)
	if st == http.StatusUnauthorized || st == 0 || st >= 500 {
		u.apiFailed(w, r, s, err)
		return
	}
	d.Checked = true
	var errs []wire.PolicyError
	var ae *client.Error
	if errors.As(err, &ae) && ae.Code == wire.CodePolicyInvalid && json.Unmarshal(ae.Detail, &errs) == nil && len(errs) > 0 && errs[0].Text != "" {
		d.Errors = errs
	} else {
		d.Message = err.Error()
	}
	u.policyPage(w, r, s, st, d)
}

// policyPage renders the editor with d, marking error lines and loading
// the active version.
func (u *UI) policyPage(w http.ResponseWriter, r *http.Request, s *session, code int, d *policyData) {
	if len(d.Errors) > 0 {
		d.Lines = numberLines(d.Text, d.Errors)
	}
	if _, err := u.api.call(r.Context(), s.token, http.MethodGet, wire.PathPolicy, nil, &d.Active); err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	u.render(w, r, s, code, "policy", "Policy", d)
}

// numberLines is text as numbered lines with each error at its line. An
// error past the end (e.g. an unexpected end of input) marks the last line.
func numberLines(text string, errs []wire.PolicyError) []codeLine {
	lines := splitLines(text)
	out := make([]codeLine, max(len(lines), 1))
	for i := range out {
		out[i].N = i + 1
		if i < len(lines) {
			out[i].Text = lines[i]
		}
	}
	for _, e := range errs {
		if e.Line <= 0 {
			continue
		}
		i := min(e.Line, len(out)) - 1
		out[i].Errors = append(out[i].Errors, fmt.Sprintf("%d:%d: %s", e.Line, e.Column, e.Message))
	}
	return out
}

// normalizeNewlines turns the CRLF line ends browsers submit into LF, so
// that line numbers and stored texts match what was typed.
func normalizeNewlines(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			continue
		}
		out = append(out, s[i])
	}
	return string(out)
}

// historyData is the policy history page's data.
type historyData struct {
	Versions []wire.Policy
	Active   uint64
}

func (u *UI) handleHistory(w http.ResponseWriter, r *http.Request, s *session) {
	var d historyData
	if _, err := u.api.call(r.Context(), s.token, http.MethodGet, wire.PathPolicy+"/history", nil, &d.Versions); err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	for _, v := range d.Versions {
		d.Active = max(d.Active, v.Version)
	}
	u.render(w, r, s, http.StatusOK, "history", "Policy history", d)
}

// policyVersion fetches the text of one policy version: GET
// PathPolicy?version=N. Version 0 is the empty text.
func (u *UI) policyVersion(r *http.Request, s *session, v uint64) (wire.Policy, error) {
	if v == 0 {
		return wire.Policy{}, nil
	}
	var p wire.Policy
	if _, err := u.api.call(r.Context(), s.token, http.MethodGet, wire.PathPolicy+"?version="+strconv.FormatUint(v, 10), nil, &p); err != nil {
		return p, err
	}
	if p.Version != v {
		return p, &client.Error{Status: http.StatusNotImplemented, Message: fmt.Sprintf("the coordinator answered version %d when asked for version %d: it cannot show older versions", p.Version, v)}
	}
	return p, nil
}

// versionData is the data of a version's diff page and of the rollback
// confirmation.
type versionData struct {
	From, To       wire.Policy // the diff goes from From to To
	Diff           []diffLine
	Added, Removed int
	Active         wire.Policy
	CanRollback    bool
	RollbackTo     uint64
}

// versionParam reads the {version} path element.
func versionParam(r *http.Request) (uint64, bool) {
	v, err := strconv.ParseUint(r.PathValue("version"), 10, 64)
	return v, err == nil && v > 0
}

// handleVersion shows what a version changed from the one before it.
func (u *UI) handleVersion(w http.ResponseWriter, r *http.Request, s *session) {
	v, ok := versionParam(r)
	if !ok {
		u.handleNotFound(w, r)
		return
	}
	d, err := u.versionDiff(r, s, v-1, v)
	if err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	d.CanRollback = d.Active.Version != v
	u.render(w, r, s, http.StatusOK, "version", fmt.Sprintf("Policy version %d", v), d)
}

// versionDiff fetches versions from and to and the active one and diffs
// from's text against to's.
func (u *UI) versionDiff(r *http.Request, s *session, from, to uint64) (versionData, error) {
	var d versionData
	var err error
	if d.From, err = u.policyVersion(r, s, from); err != nil {
		return d, err
	}
	if d.To, err = u.policyVersion(r, s, to); err != nil {
		return d, err
	}
	if _, err = u.api.call(r.Context(), s.token, http.MethodGet, wire.PathPolicy, nil, &d.Active); err != nil {
		return d, err
	}
	d.Diff = diffLines(splitLines(d.From.Text), splitLines(d.To.Text))
	d.Added, d.Removed = diffStats(d.Diff)
	return d, nil
}

// handleRollbackConfirm shows what rolling back to a version would change
// in the active text.
func (u *UI) handleRollbackConfirm(w http.ResponseWriter, r *http.Request, s *session) {
	v, ok := versionParam(r)
	if !ok {
		u.handleNotFound(w, r)
		return
	}
	var active wire.Policy
	if _, err := u.api.call(r.Context(), s.token, http.MethodGet, wire.PathPolicy, nil, &active); err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	d, err := u.versionDiff(r, s, active.Version, v)
	if err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	d.RollbackTo = v
	u.render(w, r, s, http.StatusOK, "rollback", fmt.Sprintf("Roll back to version %d?", v), d)
}

func (u *UI) handleRollback(w http.ResponseWriter, r *http.Request, s *session) {
	v, ok := versionParam(r)
	if !ok {
		u.handleNotFound(w, r)
		return
	}
	var p wire.Policy
	if _, err := u.api.call(r.Context(), s.token, http.MethodPost, wire.PathPolicy+"/rollback", wire.RollbackRequest{Version: v}, &p); err != nil {
		u.rollbackFailed(w, r, s, v, err)
		return
	}
	u.log.Info("ui: policy rolled back", "to", v, "version", p.Version, "token", s.tokenID)
	u.setFlash(r, s, fmt.Sprintf("Rolled back to version %d: the active policy is now version %d.", v, p.Version))
	http.Redirect(w, r, "/ui/policy", http.StatusSeeOther)
}

// rollbackFailed shows a refused rollback (its tests no longer pass) in
// the editor, with the old text and its problems at their lines.
func (u *UI) rollbackFailed(w http.ResponseWriter, r *http.Request, s *session, v uint64, err error) {
	old, verr := u.policyVersion(r, s, v)
	if statusOf(err) != http.StatusBadRequest || verr != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	d := &policyData{Text: old.Text, Action: "rollback"}
	u.policyFailed(w, r, s, d, err)
}
