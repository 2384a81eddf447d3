package ui

import (
	"net/http"
	"net/url"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// durationChoice is one option of a select of durations.
type durationChoice struct {
	Value, Label string
	D            time.Duration
}

// choose returns the duration of the choice whose value is v; false if
// there is none.
func choose(choices []durationChoice, v string) (time.Duration, bool) {
	for _, c := range choices {
		if c.Value == v {
			return c.D, true
		}
	}
	return 0, false
}

// expiryChoices are the join key lifetimes the form offers, by value.
var expiryChoices = []durationChoice{
	{"1h", "1 hour", time.Hour},
	{"24h", "1 day", 24 * time.Hour},
	{"168h", "7 days", 7 * 24 * time.Hour},
	{"720h", "30 days", 30 * 24 * time.Hour},
	{"never", "never", 0},
}

// nodeExpiryChoices are the lifetimes, from enrollment, that the form
// offers for the nodes a key admits.
var nodeExpiryChoices = []durationChoice{
	{"none", "none", 0},
	{"1h", "1 hour", time.Hour},
	{"24h", "1 day", 24 * time.Hour},
	{"168h", "7 days", 7 * 24 * time.Hour},
	{"720h", "30 days", 30 * 24 * time.Hour},
	{"2160h", "90 days", 90 * 24 * time.Hour},
}

// keysData is the join keys page's data.
type keysData struct {
	Keys       []wire.JoinKey
	Expiry     []durationChoice // expiryChoices, for the form
	NodeExpiry []durationChoice // nodeExpiryChoices, for the form
	Created    *createdKey
	Form       keyForm // the form as last submitted
	Message    string  // an API error about the form
}

// keyForm is the create form's fields.
type keyForm struct {
	Reusable   bool
	Expiry     string
	Tags       string
	Ephemeral  bool
	NodeExpiry string
}

// newKeyForm is the create form as first shown.
var newKeyForm = keyForm{Expiry: "24h", NodeExpiry: "none"}

// createdKey is a key just made: the only time its secret is shown.
type createdKey struct {
	Key     wire.JoinKey
	Command string
}

func (u *UI) handleKeys(w http.ResponseWriter, r *http.Request, s *session) {
	u.keysPage(w, r, s, http.StatusOK, keysData{Form: newKeyForm})
}

// keysPage renders the join keys page around d, listing the keys.
func (u *UI) keysPage(w http.ResponseWriter, r *http.Request, s *session, code int, d keysData) {
	if _, err := u.api.call(r.Context(), s.token, http.MethodGet, wire.PathJoinKeys, nil, &d.Keys); err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	d.Expiry, d.NodeExpiry = expiryChoices, nodeExpiryChoices
	u.render(w, r, s, code, "keys", "Join keys", d)
}

func (u *UI) handleCreateKey(w http.ResponseWriter, r *http.Request, s *session) {
	f := keyForm{
		Reusable: r.PostForm.Get("reusable") == "on", Expiry: r.PostForm.Get("expiry"), Tags: r.PostForm.Get("tags"),
		Ephemeral: r.PostForm.Get("ephemeral") == "on", NodeExpiry: r.PostForm.Get("node_expiry"),
	}
	req := wire.CreateJoinKeyRequest{Reusable: f.Reusable, Ephemeral: f.Ephemeral}
	if tags := parseTags(f.Tags); len(tags) > 0 {
		req.Tags = tags
	}
	expiry, ok := choose(expiryChoices, f.Expiry)
	if !ok {
		u.keysPage(w, r, s, http.StatusBadRequest, keysData{Form: f, Message: "choose an expiry from the list"})
		return
	}
	nodeExpiry, ok := choose(nodeExpiryChoices, f.NodeExpiry)
	if !ok {
		u.keysPage(w, r, s, http.StatusBadRequest, keysData{Form: f, Message: "choose a node lifetime from the list"})
		return
	}
	req.Expiry, req.NodeExpiry = wire.Duration(expiry), wire.Duration(nodeExpiry)
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
	u.keysPage(w, r, s, http.StatusCreated, keysData{Form: newKeyForm, Created: created})
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
	u.setFlash(r, s, "Join key "+id+" revoked: it admits no more nodes.")
	http.Redirect(w, r, "/ui/keys", http.StatusSeeOther)
}
