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
	u.render(w, r, s, http.StatusOK, "audit", "Audit log", d)
}
