package ui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"time"

	"github.com/wiremesh/wiremesh/credential"
)

// Session is a login as Sessions keep it: whoever presents ID, as the
// cookie wiremesh_session, acts with admin token Token.
type Session struct {
	// ID is the secret the browser holds; CreateSession makes it.
	ID string
	// Token is the admin token the session logged in with; every page
	// calls the admin API with it, so a revoked token ends the session.
	Token credential.Secret
	// CSRF is the token every POST of the session must carry.
	CSRF string
	// Expires is when the session ends.
	Expires time.Time
	// Flash is a message for the session's next page; "": none.
	Flash string
}

// ErrNoSession is what Sessions.Session returns for an id that is not a
// live session.
var ErrNoSession = errors.New("no such session, or it expired")

// Sessions keeps the UI's login sessions where every coordinator serving
// the UI finds them, so that a load balancer in front of several needs no
// stickiness; the coordinator's store keeps them in its database. Its
// methods are safe for concurrent use.
type Sessions interface {
	// CreateSession stores s under a new random id (s.ID is ignored) and
	// returns the id. It drops expired sessions and keeps at most limit,
	// the new one included, dropping those that expire first.
	CreateSession(ctx context.Context, s Session, limit int) (string, error)
	// Session returns the unexpired session with id, or ErrNoSession.
	Session(ctx context.Context, id string) (Session, error)
	// SetSessionFlash leaves msg for session id's next page.
	SetSessionFlash(ctx context.Context, id, msg string) error
	// TakeSessionFlash clears session id's message if it is still msg,
	// and reports whether it did: of two pages that read one message,
	// one shows it.
	TakeSessionFlash(ctx context.Context, id, msg string) (bool, error)
	// DeleteSession ends session id everywhere; a session that is gone
	// is no error.
	DeleteSession(ctx context.Context, id string) error
}

// session is one logged-in browser, as one request read it.
type session struct {
	id      string
	token   string // the admin token's bearer secret "ID.VALUE"; never rendered or logged
	tokenID string // the admin token's id, which may be shown
	csrf    string
	flash   string // the message for this page, if it shows one
}

// session returns the request's live session; nil and no error without
// one.
func (u *UI) session(r *http.Request) (*session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, nil
	}
	s, err := u.cfg.Sessions.Session(r.Context(), c.Value)
	if errors.Is(err, ErrNoSession) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &session{id: s.ID, token: s.Token.String(), tokenID: s.Token.ID, csrf: s.CSRF, flash: s.Flash}, nil
}

// setFlash leaves msg for s's next page. A message lost to a failing
// session store only goes unshown: the change it reports is done.
func (u *UI) setFlash(r *http.Request, s *session, msg string) {
	if err := u.cfg.Sessions.SetSessionFlash(r.Context(), s.id, msg); err != nil {
		u.log.Warn("ui: session message not kept", "token", s.tokenID, "err", err)
	}
}

// takeFlash returns s's message and clears it, or "" if another page
// showed it meanwhile.
func (u *UI) takeFlash(r *http.Request, s *session) string {
	if s.flash == "" {
		return ""
	}
	ok, err := u.cfg.Sessions.TakeSessionFlash(r.Context(), s.id, s.flash)
	if err != nil {
		// Shown now, and maybe again on the next page.
		u.log.Warn("ui: session message not cleared", "token", s.tokenID, "err", err)
		return s.flash
	}
	if !ok {
		return ""
	}
	return s.flash
}

// unavailable answers a request whose sessions cannot be read or written
// with 503: the browser should try again, not log in again.
func (u *UI) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	u.log.Error("ui: session store failed", "path", r.URL.Path, "err", err)
	const msg = "Login sessions cannot be read or kept right now: try again in a moment."
	if r.URL.Query().Has("fragment") {
		http.Error(w, msg, http.StatusServiceUnavailable)
		return
	}
	u.render(w, r, nil, http.StatusServiceUnavailable, "error", "Unavailable", errorData{Message: msg})
}

// randomToken returns 256 random bits, base64url.
func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// equalSecret compares two secrets in constant time.
func equalSecret(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
