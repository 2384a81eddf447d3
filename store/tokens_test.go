package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

func testCheckAdminToken(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	_, tok, err := s.CreateAdminToken(ctx, "test", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.ID, "ad") {
		t.Errorf("admin token id %q, want prefix ad", tok.ID)
	}
	if err := s.CheckAdminToken(ctx, tok); err != nil {
		t.Errorf("valid token: %v", err)
	}
	jk := newJoinKey(t, s, wire.CreateJoinKeyRequest{})
	for name, bad := range map[string]credential.Secret{
		"wrong value":  {ID: tok.ID, Value: credential.NewSecret("ad").Value},
		"unknown id":   credential.NewSecret("ad"),
		"join key":     jk,
		"empty secret": {},
	} {
		if err := s.CheckAdminToken(ctx, bad); !errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v, want ErrDenied", name, err)
		}
	}
}

// TestAuditDetails: the audit log says what each change was, not only
// that it happened: a join key's kind, tags and lifetimes, an enrolled
// node's key and what its join key gave it, an admin token's comment.
func testAuditDetails(t *testing.T, e *engine) {
	s, _ := e.open(t)
	ctx := context.Background()
	if _, _, err := s.CreateAdminToken(ctx, "admin", "ci deploys"); err != nil {
		t.Fatal(err)
	}
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true, Tags: []string{"tag:web", "tag:api"}, Expiry: wire.Duration(24 * time.Hour), NodeExpiry: wire.Duration(720 * time.Hour)})
	pub := newPublicKey(t)
	mustEnroll(t, s, key, EnrollParams{Name: "web-1", PublicKey: pub})
	entries, err := s.Audit(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	details := map[string]string{}
	for _, e := range entries {
		details[e.Action] = e.Detail
	}
	for action, want := range map[string][]string{
		"admintoken.create": {"ci deploys"},
		"joinkey.create":    {"reusable", "tags tag:web,tag:api", "expires 20", "node expiry 720h0m0s"},
		"node.enroll":       {"key " + pub, "tags tag:web,tag:api", "expires in 720h0m0s"},
	} {
		for _, w := range want {
			if !strings.Contains(details[action], w) {
				t.Errorf("audit %s detail %q; want it to say %q", action, details[action], w)
			}
		}
	}
}

// Admin tokens are revoked once; the last valid one cannot be.
func testRevokeAdminToken(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	first, sec1, err := s.CreateAdminToken(ctx, "test", "one")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeAdminToken(ctx, "test", sec1.ID); !errors.Is(err, ErrConflict) {
		t.Errorf("revoking the only token: %v, want ErrConflict", err)
	}
	_, sec2, err := s.CreateAdminToken(ctx, "test", "two")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeAdminToken(ctx, "test", sec1.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckAdminToken(ctx, sec1); !errors.Is(err, ErrDenied) {
		t.Errorf("revoked token: %v, want ErrDenied", err)
	}
	for name, tc := range map[string]struct {
		id   string
		want error
	}{
		"again":   {sec1.ID, ErrConflict},
		"unknown": {"adnope", ErrNotFound},
		"last":    {sec2.ID, ErrConflict},
	} {
		if err := s.RevokeAdminToken(ctx, "test", tc.id); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	toks, err := s.AdminTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 2 || toks[1].ID != first.ID || toks[1].Revoked.IsZero() || !toks[1].Created.Equal(first.Created) || toks[1].Comment != "one" {
		t.Errorf("tokens %+v; want two, the first (%+v) revoked, as created", toks, first)
	}
}
