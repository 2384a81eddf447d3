package ui

import (
	"net/http"

	"github.com/wiremesh/wiremesh/wire"
)

// servicesData is the services page's data.
type servicesData struct {
	Services []wire.CatalogService
}

func (u *UI) handleServices(w http.ResponseWriter, r *http.Request, s *session) {
	var d servicesData
	if _, err := u.api.call(r.Context(), s.token, http.MethodGet, wire.PathServices, nil, &d.Services); err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	if r.URL.Query().Get("fragment") == "list" {
		u.renderFragment(w, r, s, "services", "list", d)
		return
	}
	u.render(w, r, s, http.StatusOK, "services", "Services", d)
}
