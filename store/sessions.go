package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/wiremesh/wiremesh/credential"
)

// Web UI login sessions live in the database, so that every coordinator
// serving the UI knows them: a load balancer needs no stickiness, and a
// logout on one coordinator ends the session on all.
//
// What the database holds must not log anyone in by itself: a copy of it
// (a backup, a read-only account, a leak through another bug) must give
// neither a live session nor the admin token behind one. So the session
// id, the cookie only the browser holds, is never stored: its SHA-256 is
// the key a cookie is looked up by. The admin token's secret and the
// session's CSRF token are stored sealed (AES-256-GCM) under a key derived
// from the session id with HKDF-SHA-256 and a label of its own, which the
// stored hash does not reveal: the coordinator recovers the token only
// while the browser presents its cookie, then checks it with the admin API
// on every call, so a revoked token ends the session's access at once.
// The admin token's id (not a secret: the UI and the audit log show it)
// stays clear, so that revoking a token deletes its sessions too.

// Session is a web UI login: whoever presents ID acts with admin token
// Token.
type Session struct {
	// ID is the secret the browser holds as its cookie: 256 random bits
	// that CreateSession makes. Only its SHA-256 is stored.
	ID string
	// Token is the admin token the session logged in with. Its id is
	// stored in clear, its secret sealed.
	Token credential.Secret
	// CSRF is the token every change the session makes must carry;
	// stored sealed.
	CSRF string
	// Expires is when the session ends.
	Expires time.Time
	// Flash is a message for the session's next page; "": none.
	Flash string
}

// sessionSealLabel is the HKDF label of the key a session's secrets are
// sealed under; the lookup hash is a plain SHA-256, so neither gives the
// other.
const sessionSealLabel = "wiremesh ui session seal v1"

// sessionHash is the key a session is stored under.
func sessionHash(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// sessionAEAD returns the cipher that seals session id's secrets.
func sessionAEAD(id string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, []byte(id), nil, sessionSealLabel, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealed is what a session seals.
type sealed struct {
	Token string `json:"token"`
	CSRF  string `json:"csrf"`
}

// seal seals s's token and CSRF token under a key derived from s.ID,
// bound to the token's id (which is stored beside it).
func seal(s Session) (string, error) {
	aead, err := sessionAEAD(s.ID)
	if err != nil {
		return "", err
	}
	plain, err := json.Marshal(sealed{Token: s.Token.String(), CSRF: s.CSRF})
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return base64.StdEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, []byte(s.Token.ID))), nil
}

// unseal opens what seal sealed for session id and token id tokenID.
func unseal(id, tokenID, text string) (sealed, error) {
	var out sealed
	b, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		return out, err
	}
	aead, err := sessionAEAD(id)
	if err != nil {
		return out, err
	}
	if len(b) < aead.NonceSize() {
		return out, errors.New("too short")
	}
	plain, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], []byte(tokenID))
	if err != nil {
		return out, err
	}
	err = json.Unmarshal(plain, &out)
	return out, err
}

// newSessionID returns 256 random bits, base64url.
func newSessionID() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// CreateSession stores session s under a new id, which it returns (s.ID
// is ignored). It first drops the expired sessions and, so that at most
// limit remain with the new one, those that expire first. Logins on
// several coordinators at the same moment may each leave limit.
func (s *DB) CreateSession(ctx context.Context, sess Session, limit int) (string, error) {
	now := s.now()
	switch {
	case limit < 1:
		return "", fmt.Errorf("%w: session limit %d: at least 1", ErrInvalid, limit)
	case sess.Token.ID == "" || sess.Token.Value == "" || sess.CSRF == "":
		return "", fmt.Errorf("%w: a session needs an admin token and a CSRF token", ErrInvalid)
	case !sess.Expires.After(now):
		return "", fmt.Errorf("%w: session expires at %s, before now", ErrInvalid, sess.Expires.Format(time.RFC3339))
	}
	sess.ID = newSessionID()
	box, err := seal(sess)
	if err != nil {
		return "", fmt.Errorf("seal session: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	q := conn{s.d, tx}
	_, err = q.exec(ctx, `DELETE FROM ui_sessions WHERE expires <= ?
		OR hash NOT IN (SELECT hash FROM ui_sessions ORDER BY expires DESC, hash LIMIT ?)`, now.UnixMilli(), limit-1)
	if err != nil {
		return "", fmt.Errorf("drop old sessions: %w", err)
	}
	_, err = q.exec(ctx, "INSERT INTO ui_sessions(hash, token_id, sealed, expires) VALUES(?, ?, ?, ?)",
		sessionHash(sess.ID), sess.Token.ID, box, sess.Expires.UnixMilli())
	if err != nil {
		return "", fmt.Errorf("insert session: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("commit: %w", err)
	}
	return sess.ID, nil
}

// Session returns the unexpired session with id, or ErrNotFound.
func (s *DB) Session(ctx context.Context, id string) (Session, error) {
	var tokenID, box, flash string
	var expires int64
	err := s.q().row(ctx, "SELECT token_id, sealed, expires, flash FROM ui_sessions WHERE hash = ? AND expires > ?",
		sessionHash(id), s.now().UnixMilli()).Scan(&tokenID, &box, &expires, &flash)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, fmt.Errorf("%w: no such session, or it expired", ErrNotFound)
	}
	if err != nil {
		return Session{}, fmt.Errorf("read session: %w", err)
	}
	// Only a row changed in the database fails to open or parse.
	sl, err := unseal(id, tokenID, box)
	if err != nil {
		return Session{}, fmt.Errorf("%w: session of admin token %s does not open: %v", ErrNotFound, tokenID, err)
	}
	tok, err := credential.ParseSecret(sl.Token)
	if err != nil || tok.ID != tokenID {
		return Session{}, fmt.Errorf("%w: session of admin token %s holds another token", ErrNotFound, tokenID)
	}
	return Session{ID: id, Token: tok, CSRF: sl.CSRF, Expires: fromMillis(expires), Flash: flash}, nil
}

// SetSessionFlash leaves msg for session id's next page. A session that
// is gone is no error.
func (s *DB) SetSessionFlash(ctx context.Context, id, msg string) error {
	if _, err := s.q().exec(ctx, "UPDATE ui_sessions SET flash = ? WHERE hash = ?", msg, sessionHash(id)); err != nil {
		return fmt.Errorf("set session message: %w", err)
	}
	return nil
}

// TakeSessionFlash clears session id's message if it is still msg, and
// reports whether it did: of two pages that read one message, one shows
// it, and a message left meanwhile stays for the next page.
func (s *DB) TakeSessionFlash(ctx context.Context, id, msg string) (bool, error) {
	if msg == "" {
		return false, nil
	}
	res, err := s.q().exec(ctx, "UPDATE ui_sessions SET flash = '' WHERE hash = ? AND flash = ?", sessionHash(id), msg)
	if err != nil {
		return false, fmt.Errorf("take session message: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("take session message: %w", err)
	}
	return n == 1, nil
}

// DeleteSession ends session id, on every coordinator. A session that is
// gone is no error.
func (s *DB) DeleteSession(ctx context.Context, id string) error {
	if _, err := s.q().exec(ctx, "DELETE FROM ui_sessions WHERE hash = ?", sessionHash(id)); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}
