// Package ui is the coordinator's web UI: server-rendered pages under /ui/
// for the admin of a mesh. It gets every piece of data by calling the admin
// JSON API in-process, with the admin token of the logged-in session as the
// bearer, so that everything it shows and does goes through the one
// versioned API and its authentication.
//
// A login session maps a random id, sent as the cookie wiremesh_session,
// to the admin token it was opened with and a CSRF token that every POST
// must carry. The sessions are kept by Config.Sessions, the coordinator's
// database, so that every coordinator serving the UI knows them.
package ui

import (
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"time"
)

// Prefix is the path the UI is served under.
const Prefix = "/ui/"

// Config configures a UI.
type Config struct {
	// API is the coordinator's admin JSON API; the UI serves requests for
	// /v1/... with it in-process. Required.
	API http.Handler
	// Sessions keeps the login sessions. Required.
	Sessions Sessions
	// Logger receives the UI's logs. Nil: slog.Default().
	Logger *slog.Logger
	// SecureCookies marks the session cookies Secure, so that browsers send
	// them over HTTPS only. DefaultConfig sets it; false only for tests
	// over plain HTTP.
	SecureCookies bool
	// SessionTTL is how long a session lasts after login. Zero: 12 h.
	SessionTTL time.Duration
	// MaxSessions bounds the sessions kept at once, by every coordinator
	// sharing Sessions; the oldest goes first. Zero: 1000.
	MaxSessions int
	// PageSize is how many nodes or audit entries one page lists, at most
	// 1000. Zero: 100.
	PageSize int
	// PollInterval is how often the pages' script refreshes live parts.
	// Zero: 2 s.
	PollInterval time.Duration
	// Now returns the current time. Nil: time.Now.
	Now func() time.Time
}

// DefaultConfig returns a Config with every default filled in but API
// and Sessions.
func DefaultConfig() Config {
	return Config{
		SecureCookies: true,
		SessionTTL:    12 * time.Hour,
		MaxSessions:   1000,
		PageSize:      100,
		PollInterval:  2 * time.Second,
	}
}

// Validate checks c and fills in defaults.
func (c *Config) Validate() error {
	if c.API == nil {
		return errors.New("ui: the admin API handler is required")
	}
	if c.Sessions == nil {
		return errors.New("ui: a session store is required")
	}
	if c.SessionTTL < 0 || c.PageSize < 0 || c.MaxSessions < 0 || c.PollInterval < 0 {
		return errors.New("ui: negative session TTL, page size, session limit or poll interval")
	}
	if c.PageSize > maxPage {
		return fmt.Errorf("ui: page size %d: at most %d", c.PageSize, maxPage)
	}
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = d.SessionTTL
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = d.MaxSessions
	}
	if c.PageSize == 0 {
		c.PageSize = d.PageSize
	}
	if c.PollInterval == 0 {
		c.PollInterval = d.PollInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// UI is the web UI's HTTP handler. Create it with New.
type UI struct {
	cfg    Config
	log    *slog.Logger
	api    *apiClient
	pages  map[string]*template.Template // by page name
	mux    *http.ServeMux
	origin *http.CrossOriginProtection
}

// New returns a UI for cfg.
func New(cfg Config) (*UI, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pages, err := parsePages()
	if err != nil {
		return nil, fmt.Errorf("ui: %w", err)
	}
	u := &UI{
		cfg:    cfg,
		log:    cfg.Logger,
		api:    newAPIClient(cfg.API),
		pages:  pages,
		origin: http.NewCrossOriginProtection(),
	}
	u.mux = u.routes()
	return u, nil
}

// ServeHTTP serves the UI's pages under Prefix.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	u.mux.ServeHTTP(w, r)
}

// routes returns the UI's request router.
func (u *UI) routes() *http.ServeMux {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", staticHandler(static)))
	mux.HandleFunc("GET /ui/login", u.handleLoginPage)
	mux.HandleFunc("POST /ui/login", u.handleLogin)
	mux.HandleFunc("POST /ui/logout", u.post(u.handleLogout))
	mux.HandleFunc("GET /ui/{$}", u.get(u.handleOverview))
	mux.HandleFunc("GET /ui/nodes", u.get(u.handleNodes))
	mux.HandleFunc("GET /ui/nodes/{name}", u.get(u.handleNode))
	mux.HandleFunc("GET /ui/nodes/{name}/tags", u.get(u.handleTagsForm))
	mux.HandleFunc("POST /ui/nodes/{name}/tags", u.post(u.handleSetTags))
	mux.HandleFunc("POST /ui/nodes/{name}/expiry", u.post(u.handleSetExpiry))
	mux.HandleFunc("GET /ui/nodes/{name}/{action}", u.get(u.handleNodeConfirm))
	mux.HandleFunc("POST /ui/nodes/{name}/{action}", u.post(u.handleNodeAction))
	mux.HandleFunc("GET /ui/map", u.get(u.handleMap))
	mux.HandleFunc("GET /ui/services", u.get(u.handleServices))
	mux.HandleFunc("GET /ui/policy", u.get(u.handlePolicy))
	mux.HandleFunc("POST /ui/policy", u.post(u.handlePolicyPost))
	mux.HandleFunc("GET /ui/policy/history", u.get(u.handleHistory))
	mux.HandleFunc("GET /ui/policy/history/{version}", u.get(u.handleVersion))
	mux.HandleFunc("GET /ui/policy/rollback/{version}", u.get(u.handleRollbackConfirm))
	mux.HandleFunc("POST /ui/policy/rollback/{version}", u.post(u.handleRollback))
	mux.HandleFunc("GET /ui/keys", u.get(u.handleKeys))
	mux.HandleFunc("POST /ui/keys", u.post(u.handleCreateKey))
	mux.HandleFunc("GET /ui/keys/{id}/revoke", u.get(u.handleRevokeConfirm))
	mux.HandleFunc("POST /ui/keys/{id}/revoke", u.post(u.handleRevoke))
	mux.HandleFunc("GET /ui/audit", u.get(u.handleAudit))
	mux.HandleFunc("/ui/", u.handleNotFound)
	return mux
}

// staticHandler serves the embedded assets; they change only with the
// binary, so browsers may keep them for an hour.
func staticHandler(fsys fs.FS) http.Handler {
	fileServer := http.FileServerFS(fsys)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fileServer.ServeHTTP(w, r)
	})
}
