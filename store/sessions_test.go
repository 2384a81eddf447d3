package store

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
)

// newSession returns a session of a new admin token, expiring after ttl
// on s's clock.
func newSession(s *DB, ttl time.Duration) Session {
	return Session{Token: credential.NewSecret("ad"), CSRF: newSessionID(), Expires: s.now().Add(ttl).Truncate(time.Millisecond)}
}

func mustCreateSession(t *testing.T, s Store, sess Session, limit int) string {
	t.Helper()
	id, err := s.CreateSession(context.Background(), sess, limit)
	if err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	return id
}

// sessionLive reports whether id is a live session on s.
func sessionLive(t *testing.T, s Store, id string) bool {
	t.Helper()
	_, err := s.Session(context.Background(), id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		t.Fatalf("Session: %v", err)
	}
	return err == nil
}

// A session is what was created, under a new 256-bit id, until it expires
// or is deleted; its message is shown once.
func testSessions(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	now := time.Now()
	s.now = func() time.Time { return now }
	want := newSession(s, time.Hour)
	id := mustCreateSession(t, s, want, 10)
	if len(id) != 43 {
		t.Errorf("session id %q: want 256 bits, base64url", id)
	}
	got, err := s.Session(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	want.ID = id
	if got.Expires.Equal(want.Expires) {
		got.Expires = want.Expires
	}
	if got != want {
		t.Fatalf("Session = %+v; want %+v", got, want)
	}

	if err := s.SetSessionFlash(ctx, id, "Node a deleted."); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Session(ctx, id)
	if got.Flash != "Node a deleted." {
		t.Errorf("flash %q after SetSessionFlash", got.Flash)
	}
	if ok, err := s.TakeSessionFlash(ctx, id, "another message"); ok || err != nil {
		t.Errorf("TakeSessionFlash of a message not set = %t, %v", ok, err)
	}
	if ok, err := s.TakeSessionFlash(ctx, id, got.Flash); !ok || err != nil {
		t.Errorf("TakeSessionFlash = %t, %v; want true", ok, err)
	}
	if ok, _ := s.TakeSessionFlash(ctx, id, got.Flash); ok {
		t.Error("a message was taken twice")
	}
	if got, _ := s.Session(ctx, id); got.Flash != "" {
		t.Errorf("flash %q after it was taken", got.Flash)
	}

	for name, bad := range map[string]string{"unknown": newSessionID(), "empty": "", "the hash": sessionHash(id)} {
		if sessionLive(t, s, bad) {
			t.Errorf("%s id opens a session", name)
		}
	}
	now = want.Expires.Add(-time.Millisecond)
	if !sessionLive(t, s, id) {
		t.Fatal("session ended before it expires")
	}
	now = want.Expires
	if sessionLive(t, s, id) {
		t.Fatal("session lives once it expired")
	}

	now = time.Now()
	id = mustCreateSession(t, s, newSession(s, time.Hour), 10)
	if err := s.DeleteSession(ctx, id); err != nil {
		t.Fatal(err)
	}
	if sessionLive(t, s, id) {
		t.Fatal("session lives after DeleteSession")
	}
	if err := s.DeleteSession(ctx, id); err != nil {
		t.Errorf("deleting a deleted session: %v", err)
	}

	for name, tc := range map[string]struct {
		sess  Session
		limit int
	}{
		"no token":   {Session{CSRF: "x", Expires: now.Add(time.Hour)}, 10},
		"no csrf":    {Session{Token: credential.NewSecret("ad"), Expires: now.Add(time.Hour)}, 10},
		"expired":    {Session{Token: credential.NewSecret("ad"), CSRF: "x", Expires: now}, 10},
		"zero limit": {newSession(s, time.Hour), 0},
	} {
		if _, err := s.CreateSession(ctx, tc.sess, tc.limit); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// At most limit sessions are kept: a new one drops the expired ones and
// then those that expire first.
func testSessionLimit(t *testing.T, e *engine) {
	s, _ := e.open(t)
	now := time.Now()
	s.now = func() time.Time { return now }
	var ids []string
	for i := range 4 {
		ids = append(ids, mustCreateSession(t, s, newSession(s, time.Hour+time.Duration(i)*time.Minute), 3))
	}
	for i, id := range ids {
		if live := sessionLive(t, s, id); live != (i > 0) {
			t.Errorf("session %d of 4 with a limit of 3: live %t", i, live)
		}
	}
	// The second expires first now: with a limit of 3, a new session
	// drops it alone; then only expired ones go.
	now = now.Add(time.Hour + 90*time.Second)
	fifth := mustCreateSession(t, s, newSession(s, time.Hour), 3)
	if n := countRows(t, s, "ui_sessions"); n != 3 {
		t.Errorf("%d sessions kept after one expired, want 3", n)
	}
	if !sessionLive(t, s, ids[2]) || !sessionLive(t, s, ids[3]) || !sessionLive(t, s, fifth) {
		t.Error("a session that had not expired was dropped")
	}
	now = now.Add(time.Hour)
	mustCreateSession(t, s, newSession(s, time.Hour), 3)
	if n := countRows(t, s, "ui_sessions"); n != 1 {
		t.Errorf("%d sessions kept once all others expired, want 1", n)
	}
}

// countRows counts the rows of table in s's database.
func countRows(t *testing.T, s *DB, table string) int {
	t.Helper()
	var n int
	if err := s.q().row(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The database holds nothing that logs in by itself: neither the session
// id nor the admin token's secret nor the CSRF token is in it, in any
// form an attacker could use without the cookie; a row altered in the
// database does not open.
func testSessionsAtRest(t *testing.T, e *engine) {
	ctx := context.Background()
	s, loc := e.open(t)
	a, b := newSession(s, time.Hour), newSession(s, time.Hour)
	idA, idB := mustCreateSession(t, s, a, 10), mustCreateSession(t, s, b, 10)
	rows, err := e.raw(t, loc).QueryContext(ctx, "SELECT hash, token_id, sealed, expires, flash FROM ui_sessions")
	if err != nil {
		t.Fatal(err)
	}
	var dump strings.Builder
	for rows.Next() {
		var cols [5]string
		if err := rows.Scan(&cols[0], &cols[1], &cols[2], &cols[3], &cols[4]); err != nil {
			t.Fatal(err)
		}
		dump.WriteString(strings.Join(cols[:], " ") + "\n")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	for name, secret := range map[string]string{
		"session id": idA, "token secret": a.Token.Value, "csrf token": a.CSRF,
		"other session id": idB, "other token secret": b.Token.Value, "other csrf token": b.CSRF,
	} {
		if strings.Contains(dump.String(), secret) {
			t.Errorf("the database holds the %s:\n%s", name, dump.String())
		}
	}
	if !strings.Contains(dump.String(), a.Token.ID) {
		t.Errorf("the admin token's id %s is not in the database:\n%s", a.Token.ID, dump.String())
	}

	// One session's sealed secrets moved to another, or its token id
	// changed, do not open.
	db := e.raw(t, loc)
	update := func(query string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, e.d.rebind(query), args...); err != nil {
			t.Fatal(err)
		}
	}
	update("UPDATE ui_sessions SET sealed = (SELECT sealed FROM ui_sessions WHERE hash = ?) WHERE hash = ?", sessionHash(idA), sessionHash(idB))
	if sessionLive(t, s, idB) {
		t.Error("session b opens with session a's sealed secrets")
	}
	update("UPDATE ui_sessions SET token_id = ? WHERE hash = ?", b.Token.ID, sessionHash(idA))
	if sessionLive(t, s, idA) {
		t.Error("session a opens with another token id")
	}
}

// A session made through one store works through another on the same
// database, and a logout through either ends it for both; revoking its
// admin token ends it too.
func testSessionsShared(t *testing.T, e *engine) {
	ctx := context.Background()
	a, loc := e.open(t)
	b := e.mustOpenAt(t, loc, netip.Prefix{}, netip.Prefix{})
	_, tok, err := a.CreateAdminToken(ctx, "test", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.CreateAdminToken(ctx, "test", "another, so that tok can be revoked"); err != nil {
		t.Fatal(err)
	}
	sess := newSession(a, time.Hour)
	sess.Token = tok
	id := mustCreateSession(t, a, sess, 10)
	got, err := b.Session(ctx, id)
	if err != nil || got.Token != tok || got.CSRF != sess.CSRF {
		t.Fatalf("the other store's Session = %+v, %v; want token %s and CSRF %s", got, err, tok.ID, sess.CSRF)
	}
	if err := b.SetSessionFlash(ctx, id, "done"); err != nil {
		t.Fatal(err)
	}
	if got, _ := a.Session(ctx, id); got.Flash != "done" {
		t.Errorf("flash %q set through the other store, want done", got.Flash)
	}
	if err := b.DeleteSession(ctx, id); err != nil {
		t.Fatal(err)
	}
	if sessionLive(t, a, id) {
		t.Error("a session deleted through one store lives on in the other")
	}

	id = mustCreateSession(t, a, sess, 10)
	other := mustCreateSession(t, a, newSession(a, time.Hour), 10)
	if err := b.RevokeAdminToken(ctx, "test", tok.ID); err != nil {
		t.Fatal(err)
	}
	if sessionLive(t, a, id) {
		t.Error("a session of a revoked admin token lives on")
	}
	if !sessionLive(t, a, other) {
		t.Error("revoking one admin token ended another token's session")
	}
}
