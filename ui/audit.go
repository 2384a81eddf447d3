package ui

import (
	"net/http"

	"github.com/wiremesh/wiremesh/wire"
)

// auditData is the audit log page's data.
type auditData struct {
	Entries     []wire.AuditEntry
	After, Next string // cursors of this page and the next ("": none)
	Limit       int
	// Names are the comments of the admin tokens, by id: an actor is
	// shown as its id and the comment of its token.
	Names map[string]string
}

func (u *UI) handleAudit(w http.ResponseWriter, r *http.Request, s *session) {
	limit, after := u.pageParams(r)
	d := auditData{After: after, Limit: limit}
	h, err := u.api.call(r.Context(), s.token, http.MethodGet, pagePath(wire.PathAudit, limit, after), nil, &d.Entries)
	if err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	d.Next = nextCursor(h)
	d.Names = u.tokenNames(r, s)
	u.render(w, r, s, http.StatusOK, "audit", "Audit log", d)
}

// tokenNames returns the comments of the admin tokens by id; none if they
// cannot be listed (the page then shows ids only).
func (u *UI) tokenNames(r *http.Request, s *session) map[string]string {
	var toks []wire.AdminToken
	if _, err := u.api.call(r.Context(), s.token, http.MethodGet, wire.PathAdminTokens, nil, &toks); err != nil {
		u.log.Warn("ui: admin tokens for the audit page", "err", err)
		return nil
	}
	names := make(map[string]string, len(toks))
	for _, t := range toks {
		if t.Comment != "" {
			names[t.ID] = t.Comment
		}
	}
	return names
}
