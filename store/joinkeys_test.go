package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/report"
	"github.com/wiremesh/wiremesh/wire"
)

func testJoinKeyRules(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }

	t.Run("one-time", func(t *testing.T) {
		key := newJoinKey(t, s, wire.CreateJoinKeyRequest{})
		mustEnroll(t, s, key, EnrollParams{})
		_, _, _, err := s.Enroll(ctx, key, EnrollParams{PublicKey: newPublicKey(t)})
		if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "already used") {
			t.Errorf("second use: %v, want ErrDenied saying it was already used", err)
		}
		if k := joinKeyByID(t, s, key.ID); k.Uses != 1 {
			t.Errorf("Uses = %d, want 1", k.Uses)
		}
	})
	t.Run("reusable", func(t *testing.T) {
		key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true, Tags: []string{"tag:web", "tag:prod"}})
		for range 5 {
			n := mustEnroll(t, s, key, EnrollParams{}).node
			if diff := cmp.Diff([]string{"tag:web", "tag:prod"}, n.Tags); diff != "" {
				t.Errorf("node tags (-want +got):\n%s", diff)
			}
		}
		if k := joinKeyByID(t, s, key.ID); k.Uses != 5 || !k.Reusable {
			t.Errorf("listed key %+v, want reusable with 5 uses", k)
		}
	})
	t.Run("expired", func(t *testing.T) {
		key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true, Expiry: wire.Duration(time.Hour)})
		if k := joinKeyByID(t, s, key.ID); !k.Expires.Equal(now.Add(time.Hour)) {
			t.Errorf("Expires = %v, want %v", k.Expires, now.Add(time.Hour))
		}
		start := now
		t.Cleanup(func() { now = start })
		now = start.Add(time.Hour - time.Millisecond)
		mustEnroll(t, s, key, EnrollParams{})
		now = start.Add(time.Hour)
		_, _, _, err := s.Enroll(ctx, key, EnrollParams{PublicKey: newPublicKey(t)})
		if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "expired") {
			t.Errorf("enroll at expiry: %v, want ErrDenied saying it expired", err)
		}
	})
	t.Run("revoked", func(t *testing.T) {
		key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
		mustEnroll(t, s, key, EnrollParams{})
		if err := s.RevokeJoinKey(ctx, "test", key.ID); err != nil {
			t.Fatal(err)
		}
		_, _, _, err := s.Enroll(ctx, key, EnrollParams{PublicKey: newPublicKey(t)})
		if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("enroll with revoked key: %v, want ErrDenied saying it was revoked", err)
		}
		if k := joinKeyByID(t, s, key.ID); !k.Revoked.Equal(now) {
			t.Errorf("Revoked = %v, want %v", k.Revoked, now)
		}
		if err := s.RevokeJoinKey(ctx, "test", key.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("second revoke: %v, want ErrNotFound", err)
		}
	})
	t.Run("unknown or wrong secret", func(t *testing.T) {
		key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
		for name, bad := range map[string]credential.Secret{
			"unknown id":   credential.NewSecret("jk"),
			"wrong secret": {ID: key.ID, Value: credential.NewSecret("jk").Value},
			"empty":        {},
		} {
			_, _, _, err := s.Enroll(ctx, bad, EnrollParams{PublicKey: newPublicKey(t)})
			if !errors.Is(err, ErrDenied) {
				t.Errorf("%s: %v, want ErrDenied", name, err)
			}
		}
		if k := joinKeyByID(t, s, key.ID); k.Uses != 0 {
			t.Errorf("refused attempts counted as uses: %d", k.Uses)
		}
	})
	t.Run("bad tags", func(t *testing.T) {
		for _, tag := range []string{"web", "tag:", "tag:Web", "tag:-x", "tag:a b"} {
			if _, _, err := s.CreateJoinKey(ctx, "test", wire.CreateJoinKeyRequest{Tags: []string{tag}}); !errors.Is(err, ErrInvalid) {
				t.Errorf("CreateJoinKey(tag %q): %v, want ErrInvalid", tag, err)
			}
		}
	})
}

// testBadJoinKeyTakesNoWriteLock: while another connection holds the
// lock a change takes (SQLite's write lock: a long write, a backup, an
// operator's sqlite3; on PostgreSQL the version row's: another
// coordinator's change), a bad join key is refused at once instead of
// queueing for the lock; a valid one waits for it.
func testBadJoinKeyTakesNoWriteLock(t *testing.T, e *engine) {
	s, loc := e.open(t)
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	ctx := context.Background()
	conn, err := e.raw(t, loc).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	release, err := e.holdWriteLock(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	denied, slowest := 0, time.Duration(0)
	for name, bad := range map[string]credential.Secret{
		"unknown id":   credential.NewSecret("jk"),
		"wrong secret": {ID: key.ID, Value: credential.NewSecret("jk").Value},
	} {
		tctx, cancel := context.WithTimeout(ctx, time.Second)
		start := time.Now()
		_, _, _, err := s.Enroll(tctx, bad, EnrollParams{PublicKey: newPublicKey(t)})
		cancel()
		slowest = max(slowest, time.Since(start))
		if !errors.Is(err, ErrDenied) {
			t.Errorf("%s with the write lock held elsewhere: %v after %v, want ErrDenied at once", name, err, time.Since(start))
		} else {
			denied++
		}
	}
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, _, _, err = s.Enroll(tctx, key, EnrollParams{PublicKey: newPublicKey(t)})
	cancel()
	report.Add(t, report.Row{Fault: e.name + ": the write lock held by another connection", Check: "bad join keys denied without waiting for it (a valid one waits)",
		Figure: fmt.Sprintf("%d of 2 denied, slowest after %s; the valid one waited: %v", denied, slowest.Round(10*time.Microsecond), err != nil),
		Target: "2 of 2 before the 1 s deadline; waited", Met: denied == 2 && err != nil})
	if err == nil {
		t.Error("a valid enrollment succeeded while another connection held the write lock")
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	mustEnroll(t, s, key, EnrollParams{})
}

func testCreateJoinKeyRefusesBadNodeExpiry(t *testing.T, e *engine) {
	s, _ := e.open(t)
	for _, req := range []wire.CreateJoinKeyRequest{
		{NodeExpiry: wire.Duration(-time.Second)},
		{NodeExpiry: wire.Duration(time.Microsecond)},
	} {
		if _, _, err := s.CreateJoinKey(context.Background(), "test", req); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateJoinKey(node expiry %s) = %v, want ErrInvalid", time.Duration(req.NodeExpiry), err)
		}
	}
}
