package ui

import (
	"net/http"
	"net/url"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// expiryChoices are the join key lifetimes the form offers, by value.
var expiryChoices = []struct {
	Value, Label string
	D            time.Duration
}{
	{"1h", "1 hour", time.Hour},
	{"24h", "1 day", 24 * time.Hour},
	{"168h", "7 days", 7 * 24 * time.Hour},
	{"720h", "30 days", 30 * 24 * time.Hour},
	{"never", "never", 0},
}

// keysData is the join keys page's data.
type keysData struct {
	Keys    []wire.JoinKey
	Expiry  any // expiryChoices, for the form
	Created *createdKey
	Form    keyForm // the form as last submitted
	Message string  // an API error about the form
}

// keyForm is the create form's fields.
type keyForm struct {
	Reusable bool
	Expiry   string
	Tags     string
}

// createdKey is a key just made: the only time its secret is shown.
type createdKey struct {
	Key     wire.JoinKey
	Command string
}

func (u *UI) handleKeys(w http.ResponseWriter, r *http.Request, s *session) {
	u.keysPage(w, r, s, http.StatusOK, keysData{Form: keyForm{Expiry: "24h"}})
}

// keysPage renders the join keys page around d, listing the keys.
func (u *UI) keysPage(w http.ResponseWriter, r *http.Request, s *session, code int, d keysData) {
	if _, err := u.api.call(r.Context(), s.token, http.MethodGet, wire.PathJoinKeys, nil, &d.Keys); err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	d.Expiry = expiryChoices
	u.render(w, r, s, code, "keys", "Join keys", d)
}

func (u *UI) handleCreateKey(w http.ResponseWriter, r *http.Request, s *session) {
	f := keyForm{Reusable: r.PostForm.Get("reusable") == "on", Expiry: r.PostForm.Get("expiry"), Tags: r.PostForm.Get("tags")}
	req := wire.CreateJoinKeyRequest{Reusable: f.Reusable}
	if tags := parseTags(f.Tags); len(tags) > 0 {
		req.Tags = tags
	}
	found := false
	for _, c := range expiryChoices {
		if c.Value == f.Expiry {
			req.Expiry, found = wire.Duration(c.D), true
		}
	}
	if !found {
		u.keysPage(w, r, s, http.StatusBadRequest, keysData{Form: f, Message: "choose an expiry from the list"})
		return
	}
	var resp wire.CreateJoinKeyResponse
	_, err := u.api.call(r.Context(), s.token, http.MethodPost, wire.PathJoinKeys, req, &resp)
	if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusConflict {
		u.keysPage(w, r, s, st, keysData{Form: f, Message: err.Error()})
		return
	}
	if err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	u.log.Info("ui: join key created", "key", resp.Key.ID, "token", s.tokenID)
	created := &createdKey{Key: resp.Key, Command: "wiremesh agent --join " + resp.JoinKey}
	u.keysPage(w, r, s, http.StatusCreated, keysData{Form: keyForm{Expiry: "24h"}, Created: created})
}

// keyConfirmData is the revoke confirmation's data.
type keyConfirmData struct {
	Key wire.JoinKey
}

func (u *UI) handleRevokeConfirm(w http.ResponseWriter, r *http.Request, s *session) {
	var keys []wire.JoinKey
	if _, err := u.api.call(r.Context(), s.token, http.MethodGet, wire.PathJoinKeys, nil, &keys); err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	for _, k := range keys {
		if k.ID == r.PathValue("id") {
			u.render(w, r, s, http.StatusOK, "key-confirm", "Revoke "+k.ID+"?", keyConfirmData{Key: k})
			return
		}
	}
	u.render(w, r, s, http.StatusNotFound, "error", "Not found", errorData{Message: "No join key " + r.PathValue("id") + "."})
}

func (u *UI) handleRevoke(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	if _, err := u.api.call(r.Context(), s.token, http.MethodDelete, wire.PathJoinKeys+"/"+url.PathEscape(id), nil, nil); err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	u.log.Info("ui: join key revoked", "key", id, "token", s.tokenID)
	u.sessions.setFlash(s, "Join key "+id+" revoked: it admits no more nodes.")
	http.Redirect(w, r, "/ui/keys", http.StatusSeeOther)
}
