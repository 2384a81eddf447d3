package coordinator

import (
	"net/http"

	"github.com/wiremesh/wiremesh/ui"
)

// mountUI adds the web UI to mux at ui.Prefix and sends GET / there. The
// UI calls the admin API through mux itself, in-process, with the admin
// token of each browser session; the sessions live in the database, so
// that every coordinator on it serves them.
func (c *Coordinator) mountUI(mux *http.ServeMux) {
	cfg := ui.DefaultConfig()
	cfg.API = mux
	cfg.Sessions = uiSessions{c.store}
	cfg.Logger = c.log
	u, err := ui.New(cfg)
	if err != nil {
		// Only a broken template in the binary gets here.
		c.log.Error("web UI disabled", "err", err)
		return
	}
	mux.Handle(ui.Prefix, u)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ui.Prefix, http.StatusFound)
	})
}
