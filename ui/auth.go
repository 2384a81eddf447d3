package ui

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// Cookie names.
const (
	sessionCookie = "wiremesh_session"
	loginCookie   = "wiremesh_login" // the login form's double-submit CSRF token
)

// maxForm bounds a form body: a policy text of the API's 1 MiB limit,
// form-encoded, fits.
const maxForm = 4 << 20

// handler is a page handler of a logged-in session.
type handler func(w http.ResponseWriter, r *http.Request, s *session)

// get wraps a page that only reads: without a session it redirects to the
// login page (or, for a fragment, answers 401 so the script reloads).
func (u *UI) get(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := u.session(r)
		if err != nil {
			u.unavailable(w, r, err)
			return
		}
		if s == nil {
			if r.URL.Query().Has("fragment") {
				http.Error(w, "not logged in", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		h(w, r.WithContext(withRemoteAddr(r.Context(), r.RemoteAddr)), s)
	}
}

// post wraps a change: it needs a session, a same-origin request and the
// session's CSRF token in the form field csrf or the X-CSRF-Token header.
// Anything else is refused with 403 before h runs.
func (u *UI) post(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if err := u.origin.Check(r); err != nil {
			u.forbidden(w, r, "cross-origin request refused")
			return
		}
		s, err := u.session(r)
		if err != nil {
			u.unavailable(w, r, err)
			return
		}
		if s == nil {
			u.forbidden(w, r, "not logged in (or the session expired): log in again")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			u.forbidden(w, r, "unreadable form")
			return
		}
		tok := r.PostForm.Get("csrf")
		if tok == "" {
			tok = r.Header.Get("X-CSRF-Token")
		}
		if !equalSecret(s.csrf, tok) {
			u.log.Warn("ui: request without a valid CSRF token refused", "path", r.URL.Path, "addr", r.RemoteAddr)
			u.forbidden(w, r, "missing or wrong CSRF token: reload the page and try again")
			return
		}
		h(w, r.WithContext(withRemoteAddr(r.Context(), r.RemoteAddr)), s)
	}
}

// forbidden answers 403 with a page that says why.
func (u *UI) forbidden(w http.ResponseWriter, r *http.Request, why string) {
	u.render(w, r, nil, http.StatusForbidden, "error", "Refused", errorData{Message: why})
}

// errorData is the error page's data.
type errorData struct {
	Message string
}

// setCookie sets a cookie on the UI's paths with the UI's flags.
func (u *UI) setCookie(w http.ResponseWriter, name, value, path string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: path, MaxAge: maxAge,
		HttpOnly: true, Secure: u.cfg.SecureCookies, SameSite: http.SameSiteStrictMode,
	})
}

// loginData is the login page's data.
type loginData struct {
	CSRF    string
	Next    string
	Message string
}

func (u *UI) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	if s, _ := u.session(r); s != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	u.loginForm(w, r, http.StatusOK, "")
}

// loginForm renders the login page with a new double-submit token.
func (u *UI) loginForm(w http.ResponseWriter, r *http.Request, code int, msg string) {
	tok := randomToken()
	u.setCookie(w, loginCookie, tok, "/ui/login", 3600)
	w.Header().Set("Cache-Control", "no-store")
	next := r.URL.Query().Get("next")
	if r.Method == http.MethodPost {
		next = r.PostForm.Get("next")
	}
	u.render(w, r, nil, code, "login", "Log in", loginData{CSRF: tok, Next: safeNext(next), Message: msg})
}

func (u *UI) handleLogin(w http.ResponseWriter, r *http.Request) {
	if err := u.origin.Check(r); err != nil {
		u.forbidden(w, r, "cross-origin request refused")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		u.loginForm(w, r, http.StatusBadRequest, "unreadable form")
		return
	}
	c, err := r.Cookie(loginCookie)
	if err != nil || !equalSecret(c.Value, r.PostForm.Get("csrf")) {
		u.loginForm(w, r, http.StatusForbidden, "The login form expired or was not sent from this page: try again.")
		return
	}
	sec, err := parseToken(r.PostForm.Get("token"))
	if err != nil {
		u.loginForm(w, r, http.StatusBadRequest, err.Error())
		return
	}
	ctx := withRemoteAddr(r.Context(), r.RemoteAddr)
	if _, err := u.api.call(ctx, sec.String(), http.MethodGet, wire.PathPolicy, nil, nil); err != nil {
		u.log.Info("ui: login refused", "addr", r.RemoteAddr, "why", err.Error())
		code := http.StatusUnauthorized
		if st := statusOf(err); st != http.StatusUnauthorized && st != http.StatusForbidden {
			code = http.StatusBadGateway
		}
		u.loginForm(w, r, code, "The coordinator refused this token: "+err.Error())
		return
	}
	id, err := u.cfg.Sessions.CreateSession(ctx, Session{Token: sec, CSRF: randomToken(), Expires: u.cfg.Now().Add(u.cfg.SessionTTL)}, u.cfg.MaxSessions)
	if err != nil {
		u.log.Error("ui: session not kept", "token", sec.ID, "err", err)
		u.loginForm(w, r, http.StatusServiceUnavailable, "The coordinator cannot keep login sessions right now: try again in a moment.")
		return
	}
	u.setCookie(w, sessionCookie, id, Prefix, int(u.cfg.SessionTTL.Seconds()))
	u.setCookie(w, loginCookie, "", "/ui/login", -1)
	u.log.Info("ui: logged in", "token", sec.ID, "addr", r.RemoteAddr)
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

// parseToken reads what an admin pasted: an admin token string
// (wmadmin1-…) or its bare secret (ID.VALUE). Anything else gets the
// admin token parser's error, which names what it is instead.
func parseToken(text string) (credential.Secret, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return credential.Secret{}, errors.New("paste an admin token (wmadmin1-…, as in admin.token)")
	}
	if sec, err := credential.ParseSecret(text); err == nil {
		return sec, nil
	}
	b, err := credential.ParseAdminToken(text)
	if err != nil {
		return credential.Secret{}, err
	}
	return b.Secret, nil
}

// safeNext returns next if it is a UI path on this site, else the
// overview.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return Prefix
	}
	return next
}

func (u *UI) handleLogout(w http.ResponseWriter, r *http.Request, s *session) {
	if err := u.cfg.Sessions.DeleteSession(r.Context(), s.id); err != nil {
		// The session still works: say so rather than pretend.
		u.unavailable(w, r, err)
		return
	}
	u.setCookie(w, sessionCookie, "", Prefix, -1)
	u.log.Info("ui: logged out", "token", s.tokenID, "addr", r.RemoteAddr)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// apiFailed shows an API error in the page. A refused token ends the
// session and sends the browser to the login page.
func (u *UI) apiFailed(w http.ResponseWriter, r *http.Request, s *session, err error) {
	st := statusOf(err)
	switch {
	case st == http.StatusUnauthorized:
		if err := u.cfg.Sessions.DeleteSession(r.Context(), s.id); err != nil {
			u.log.Warn("ui: session of a refused token not deleted", "token", s.tokenID, "err", err)
		}
		u.setCookie(w, sessionCookie, "", Prefix, -1)
		if r.URL.Query().Has("fragment") {
			http.Error(w, "session ended", http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	case st >= 400 && st < 500:
	default:
		u.log.Error("ui: admin API call failed", "path", r.URL.Path, "err", err)
		st = http.StatusBadGateway
	}
	if r.URL.Query().Has("fragment") {
		http.Error(w, err.Error(), st)
		return
	}
	u.render(w, r, s, st, "error", "Error", errorData{Message: err.Error()})
}
