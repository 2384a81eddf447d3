package ui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// session is one logged-in browser. Its fields but flash never change.
type session struct {
	id      string
	token   string // the admin token's bearer secret "ID.VALUE"; never rendered or logged
	tokenID string // the admin token's id, which may be shown
	csrf    string
	expires time.Time

	// flash is a message for the next page, set after a change; guarded by
	// sessionStore.mu.
	flash string
}

// sessionStore keeps the sessions in memory.
type sessionStore struct {
	ttl time.Duration
	max int
	now func() time.Time

	// mu guards byID.
	mu   sync.Mutex
	byID map[string]*session
}

func newSessionStore(ttl time.Duration, max int, now func() time.Time) *sessionStore {
	return &sessionStore{ttl: ttl, max: max, now: now, byID: map[string]*session{}}
}

// randomToken returns 256 random bits, base64url.
func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// create opens a session for an admin token and sweeps expired ones.
func (s *sessionStore) create(token, tokenID string) *session {
	now := s.now()
	ss := &session{id: randomToken(), token: token, tokenID: tokenID, csrf: randomToken(), expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	for len(s.byID) >= s.max {
		s.dropOldestLocked()
	}
	s.byID[ss.id] = ss
	return ss
}

// get returns the live session with id, or nil.
func (s *sessionStore) get(id string) *session {
	if id == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ss := s.byID[id]
	if ss == nil {
		return nil
	}
	if !s.now().Before(ss.expires) {
		delete(s.byID, id)
		return nil
	}
	return ss
}

// delete ends the session with id.
func (s *sessionStore) delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
}

// len returns the number of sessions kept.
func (s *sessionStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID)
}

// setFlash leaves msg for the session's next page.
func (s *sessionStore) setFlash(ss *session, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.flash = msg
}

// popFlash returns and clears the session's message.
func (s *sessionStore) popFlash(ss *session) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := ss.flash
	ss.flash = ""
	return msg
}

// sweepLocked drops expired sessions. s.mu must be held.
func (s *sessionStore) sweepLocked(now time.Time) {
	for id, ss := range s.byID {
		if !now.Before(ss.expires) {
			delete(s.byID, id)
		}
	}
}

// dropOldestLocked drops the session that expires first. s.mu must be
// held.
func (s *sessionStore) dropOldestLocked() {
	var oldest *session
	for _, ss := range s.byID {
		if oldest == nil || ss.expires.Before(oldest.expires) {
			oldest = ss
		}
	}
	if oldest != nil {
		delete(s.byID, oldest.id)
	}
}

// equalSecret compares two secrets in constant time.
func equalSecret(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
