package coordinator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestEnrollAddresses(t *testing.T) {
	s, _ := openTestStore(t)
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	var got [][]netip.Prefix
	for range 3 {
		got = append(got, mustEnroll(t, s, key, EnrollParams{Hostname: "h"}).node.Addresses)
	}
	want := [][]netip.Prefix{
		{pfx("100.64.0.1/32"), pfx("fd77:6d65:7368::1/128")},
		{pfx("100.64.0.2/32"), pfx("fd77:6d65:7368::2/128")},
		{pfx("100.64.0.3/32"), pfx("fd77:6d65:7368::3/128")},
	}
	if diff := cmp.Diff(want, got, cmpNet); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]netip.Prefix{DefaultPrefix4, DefaultPrefix6}, s.Prefixes(), cmpNet); diff != "" {
		t.Errorf("Prefixes() (-want +got):\n%s", diff)
	}
}

func TestEnrollNames(t *testing.T) {
	s, _ := openTestStore(t)
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	for _, step := range []struct {
		p       EnrollParams
		want    string
		wantErr error
	}{
		{p: EnrollParams{Name: "web"}, want: "web"},
		{p: EnrollParams{Name: "web"}, wantErr: ErrConflict},
		{p: EnrollParams{Name: "web", Hostname: "other"}, wantErr: ErrConflict}, // a taken name is refused, not renamed
		{p: EnrollParams{Hostname: "h.example.com"}, want: "h"},
		{p: EnrollParams{Hostname: "h"}, want: "h-2"},
		{p: EnrollParams{Hostname: "H.lan"}, want: "h-3"},
		{p: EnrollParams{Name: "h-4"}, want: "h-4"},
		{p: EnrollParams{Hostname: "h"}, want: "h-5"},
		{p: EnrollParams{}, want: "node"},
		{p: EnrollParams{Hostname: "---"}, want: "node-2"},
		{p: EnrollParams{Hostname: "My_Box 2.local"}, want: "my-box-2"},
		{p: EnrollParams{Hostname: strings.Repeat("x", 70)}, want: strings.Repeat("x", 50)},
		{p: EnrollParams{Name: "Upper"}, wantErr: ErrInvalid},
		{p: EnrollParams{Name: "-dash"}, wantErr: ErrInvalid},
		{p: EnrollParams{Name: "a.b"}, wantErr: ErrInvalid},
		{p: EnrollParams{Name: strings.Repeat("x", 64)}, wantErr: ErrInvalid},
	} {
		step.p.PublicKey = newPublicKey(t)
		n, _, _, err := s.Enroll(context.Background(), key, step.p)
		switch {
		case step.wantErr != nil && !errors.Is(err, step.wantErr):
			t.Errorf("Enroll(name %q, hostname %q) = %q, %v; want %v", step.p.Name, step.p.Hostname, n.Name, err, step.wantErr)
		case step.wantErr == nil && err != nil:
			t.Errorf("Enroll(name %q, hostname %q): %v", step.p.Name, step.p.Hostname, err)
		case step.wantErr == nil && n.Name != step.want:
			t.Errorf("Enroll(name %q, hostname %q) named the node %q, want %q", step.p.Name, step.p.Hostname, n.Name, step.want)
		}
	}
}

// A name made from a host name must be a valid node name (a DNS label),
// whatever the host name.
func TestEnrollNameFromHostnameIsValid(t *testing.T) {
	s, _ := openTestStore(t)
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	for _, h := range []string{
		strings.Repeat("a", 49) + "-bcd", // cut at 50 bytes right after a '-'
		strings.Repeat("a", 49) + "_bcd",
		"ünïcode",
		"-x-",
		strings.Repeat("-", 80),
	} {
		n := mustEnroll(t, s, key, EnrollParams{Hostname: h}).node
		if err := ValidName(n.Name); err != nil {
			t.Errorf("host name %q gave node name %q: %v", h, n.Name, err)
		}
	}
}

func TestJoinKeyRules(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
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

// A refused enrollment changes nothing: no node, no use of the key, no new
// state version.
func TestEnrollFailureIsAtomic(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	first := mustEnroll(t, s, newJoinKey(t, s, wire.CreateJoinKeyRequest{}), EnrollParams{Name: "taken"})
	once := newJoinKey(t, s, wire.CreateJoinKeyRequest{})
	before := mustVersion(t, s)

	for _, tc := range []struct {
		name string
		p    EnrollParams
	}{
		{"name taken", EnrollParams{Name: "taken", PublicKey: newPublicKey(t)}},
		{"public key already enrolled", EnrollParams{Name: "fresh", PublicKey: first.node.PublicKey}},
	} {
		if _, _, _, err := s.Enroll(ctx, once, tc.p); !errors.Is(err, ErrConflict) {
			t.Errorf("%s: %v, want ErrConflict", tc.name, err)
		}
	}
	if n := len(mustNodes(t, s)); n != 1 {
		t.Errorf("%d nodes after refused enrollments, want 1", n)
	}
	if k := joinKeyByID(t, s, once.ID); k.Uses != 0 {
		t.Errorf("one-time key has %d uses after refused enrollments, want 0", k.Uses)
	}
	if v := mustVersion(t, s); v != before {
		t.Errorf("version moved from %d to %d on refused enrollments", before, v)
	}
	n := mustEnroll(t, s, once, EnrollParams{Name: "fresh"}).node
	if want := pfx("100.64.0.2/32"); n.Addresses[0] != want {
		t.Errorf("address %s, want %s (refused enrollments must not use addresses)", n.Addresses[0], want)
	}
}

func TestDeleteNode(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	a := mustEnroll(t, s, key, EnrollParams{Name: "a"})
	b := mustEnroll(t, s, key, EnrollParams{Name: "b"})

	got, err := s.NodeByCredential(ctx, b.cred)
	if err != nil || got.Name != "b" {
		t.Fatalf("NodeByCredential(b) = %q, %v", got.Name, err)
	}
	before := mustVersion(t, s)
	ver, err := s.DeleteNode(ctx, "test", "b")
	if err != nil {
		t.Fatal(err)
	}
	if ver <= before {
		t.Errorf("DeleteNode returned version %d, want more than %d", ver, before)
	}
	if _, err := s.NodeByCredential(ctx, b.cred); !errors.Is(err, ErrDenied) {
		t.Errorf("deleted node's credential: %v, want ErrDenied", err)
	}
	if got, err := s.NodeByCredential(ctx, a.cred); err != nil || got.Name != "a" {
		t.Errorf("other node's credential: %q, %v", got.Name, err)
	}
	if _, err := s.DeleteNode(ctx, "test", "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleting again: %v, want ErrNotFound", err)
	}
	if nodes := mustNodes(t, s); len(nodes) != 1 || nodes[0].Name != "a" {
		t.Errorf("nodes after delete: %+v, want only a", nodes)
	}

	// The name is free again, but the address is not handed out again.
	c := mustEnroll(t, s, key, EnrollParams{Name: "b"}).node
	if diff := cmp.Diff([]netip.Prefix{pfx("100.64.0.3/32"), pfx("fd77:6d65:7368::3/128")}, c.Addresses, cmpNet); diff != "" {
		t.Errorf("address after delete (-want +got):\n%s", diff)
	}
	if c.ID == b.node.ID {
		t.Errorf("node id %d reused", c.ID)
	}
}

func TestNodeByCredentialWrongSecret(t *testing.T) {
	s, _ := openTestStore(t)
	a := mustEnroll(t, s, newJoinKey(t, s, wire.CreateJoinKeyRequest{}), EnrollParams{})
	for name, bad := range map[string]credential.Secret{
		"wrong value": {ID: a.cred.ID, Value: credential.NewSecret("nd").Value},
		"unknown id":  credential.NewSecret("nd"),
	} {
		if _, err := s.NodeByCredential(context.Background(), bad); !errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v, want ErrDenied", name, err)
		}
	}
}

func TestStoreSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	s, path := openTestStore(t)
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true, Tags: []string{"tag:x"}})
	newJoinKey(t, s, wire.CreateJoinKeyRequest{Expiry: wire.Duration(time.Hour)})
	adm, err := s.CreateAdminToken(ctx, "test", "")
	if err != nil {
		t.Fatal(err)
	}
	a := mustEnroll(t, s, key, EnrollParams{Name: "a"})
	mustEnroll(t, s, key, EnrollParams{Name: "b"})
	if _, err := s.SetEndpoints(ctx, a.node.ID, []string{"192.0.2.1:51820"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteNode(ctx, "test", "b"); err != nil {
		t.Fatal(err)
	}
	nodes, ver, err := s.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := s.JoinKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := OpenStore(path, netip.Prefix{}, netip.Prefix{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if err := s2.CheckIntegrity(ctx); err != nil {
		t.Error(err)
	}
	nodes2, ver2, err := s2.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(nodes, nodes2, cmpNet); diff != "" {
		t.Errorf("nodes after reopen (-before +after):\n%s", diff)
	}
	if ver2 != ver {
		t.Errorf("version after reopen %d, want %d", ver2, ver)
	}
	keys2, err := s2.JoinKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(keys, keys2); diff != "" {
		t.Errorf("join keys after reopen (-before +after):\n%s", diff)
	}
	if got, err := s2.NodeByCredential(ctx, a.cred); err != nil || got.Name != "a" {
		t.Errorf("credential after reopen: %q, %v", got.Name, err)
	}
	if err := s2.CheckAdminToken(ctx, adm); err != nil {
		t.Errorf("admin token after reopen: %v", err)
	}
	c, _, ver3, err := s2.Enroll(ctx, key, EnrollParams{PublicKey: newPublicKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if ver3 <= ver {
		t.Errorf("version after reopen and enroll %d, want more than %d", ver3, ver)
	}
	if want := pfx("100.64.0.3/32"); c.Addresses[0] != want {
		t.Errorf("address after reopen %s, want %s (the deleted node's address must not come back)", c.Addresses[0], want)
	}
}

func TestOpenStorePrefixes(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/db"
	p4, p6 := pfx("10.99.0.0/16"), pfx("fd00:99::/64")
	s, err := OpenStore(path, p4, p6)
	if err != nil {
		t.Fatal(err)
	}
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	n := mustEnroll(t, s, key, EnrollParams{}).node
	if diff := cmp.Diff([]netip.Prefix{pfx("10.99.0.1/32"), pfx("fd00:99::1/128")}, n.Addresses, cmpNet); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	s.Close()

	for _, tc := range []struct {
		name    string
		p4, p6  netip.Prefix
		wantErr string
	}{
		{name: "as created", p4: p4, p6: p6},
		{name: "unspecified"},
		{name: "other IPv4", p4: pfx("10.98.0.0/16"), wantErr: "differs"},
		{name: "default IPv4", p4: DefaultPrefix4, p6: p6, wantErr: "differs"},
		{name: "other IPv6", p6: pfx("fd00:98::/64"), wantErr: "differs"},
	} {
		s, err := OpenStore(path, tc.p4, tc.p6)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: OpenStore error %v, want %q", tc.name, err, tc.wantErr)
			}
			if err == nil {
				s.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if diff := cmp.Diff([]netip.Prefix{p4, p6}, s.Prefixes(), cmpNet); diff != "" {
			t.Errorf("%s: Prefixes() (-want +got):\n%s", tc.name, diff)
		}
		if err := s.CheckIntegrity(ctx); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		s.Close()
	}
}

// A full prefix refuses enrollment cleanly; the store keeps working.
func TestEnrollPrefixFull(t *testing.T) {
	for _, tc := range []struct {
		name   string
		p4, p6 netip.Prefix
		fits   int
	}{
		{"IPv4 /29", pfx("10.0.0.0/29"), pfx("fd00::/64"), 6},
		{"IPv6 smaller than IPv4", pfx("10.0.0.0/24"), pfx("fd00::/125"), 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, err := OpenStore(t.TempDir()+"/db", tc.p4, tc.p6)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
			admitted := 0
			for i := range tc.fits + 2 {
				n, _, _, err := s.Enroll(ctx, key, EnrollParams{PublicKey: newPublicKey(t)})
				if err != nil {
					if !errors.Is(err, ErrConflict) {
						t.Errorf("enrollment %d: %v, want ErrConflict (prefix full)", i+1, err)
					}
					continue
				}
				admitted++
				for _, a := range n.Addresses {
					if !tc.p4.Contains(a.Addr()) && !tc.p6.Contains(a.Addr()) {
						t.Errorf("node %s got %s outside the overlay prefixes", n.Name, a)
					}
				}
			}
			nodes, _, err := s.Nodes(ctx)
			if err != nil {
				t.Fatalf("Nodes after filling the prefix: %v", err)
			}
			if len(nodes) != admitted || admitted > tc.fits {
				t.Errorf("%d enrollments succeeded, %d nodes stored; want the same, at most %d", admitted, len(nodes), tc.fits)
			}
		})
	}
}

func TestSetEndpoints(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	a := mustEnroll(t, s, newJoinKey(t, s, wire.CreateJoinKeyRequest{}), EnrollParams{})
	for _, step := range []struct {
		eps     []string
		changed bool
	}{
		{nil, false},
		{[]string{}, false},
		{[]string{"192.0.2.1:51820"}, true},
		{[]string{"192.0.2.1:51820"}, false},
		{[]string{"192.0.2.1:51820", "[2001:db8::1]:51820"}, true},
		{[]string{"[2001:db8::1]:51820", "192.0.2.1:51820"}, true}, // order is preference
		{nil, true},
		{[]string{}, false},
	} {
		before := mustVersion(t, s)
		ver, err := s.SetEndpoints(ctx, a.node.ID, step.eps)
		if err != nil {
			t.Fatal(err)
		}
		if got := ver != 0; got != step.changed {
			t.Errorf("SetEndpoints(%q) = version %d, want changed=%v", step.eps, ver, step.changed)
		}
		if step.changed && ver <= before {
			t.Errorf("SetEndpoints(%q) = version %d, want more than %d", step.eps, ver, before)
		}
		if !step.changed && mustVersion(t, s) != before {
			t.Errorf("SetEndpoints(%q) without change moved the version", step.eps)
		}
		got := mustNodes(t, s)[0].Endpoints
		if diff := cmp.Diff(step.eps, got, cmpEmptyNil); diff != "" {
			t.Errorf("endpoints after SetEndpoints(%q) (-want +got):\n%s", step.eps, diff)
		}
	}
}

var cmpEmptyNil = cmp.FilterValues(func(a, b []string) bool { return len(a) == 0 && len(b) == 0 }, cmp.Comparer(func(_, _ []string) bool { return true }))

func TestTouchKeepsVersion(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	a := mustEnroll(t, s, newJoinKey(t, s, wire.CreateJoinKeyRequest{}), EnrollParams{})
	before := mustVersion(t, s)
	seen := time.UnixMilli(time.Now().UnixMilli())
	if err := s.Touch(ctx, a.node.ID, seen); err != nil {
		t.Fatal(err)
	}
	if v := mustVersion(t, s); v != before {
		t.Errorf("Touch moved the version from %d to %d", before, v)
	}
	if got := mustNodes(t, s)[0].LastSeen; !got.Equal(seen) {
		t.Errorf("LastSeen = %v, want %v", got, seen)
	}
}

func TestCheckAdminToken(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	tok, err := s.CreateAdminToken(ctx, "test", "")
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

func TestVersionIncreases(t *testing.T) {
	ctx := context.Background()
	s, _ := openTestStore(t)
	last := mustVersion(t, s)
	step := func(name string, fn func() error) {
		t.Helper()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		v := mustVersion(t, s)
		if v <= last {
			t.Errorf("%s: version %d, want more than %d", name, v, last)
		}
		last = v
	}
	var key credential.Secret
	step("create join key", func() (err error) {
		_, key, err = s.CreateJoinKey(ctx, "test", wire.CreateJoinKeyRequest{Reusable: true})
		return err
	})
	step("enroll", func() error {
		_, _, _, err := s.Enroll(ctx, key, EnrollParams{Name: "a", PublicKey: newPublicKey(t)})
		return err
	})
	step("revoke", func() error { return s.RevokeJoinKey(ctx, "test", key.ID) })
	step("admin token", func() error { _, err := s.CreateAdminToken(ctx, "test", ""); return err })
	step("delete", func() error { _, err := s.DeleteNode(ctx, "test", "a"); return err })
}

func TestConcurrentEnroll(t *testing.T) {
	s, _ := openTestStore(t)
	key := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	const n = 50
	pubs := make([]string, n)
	for i := range pubs {
		pubs[i] = newPublicKey(t)
	}
	nodes := make([]wire.Node, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			nodes[i], _, _, errs[i] = s.Enroll(context.Background(), key, EnrollParams{PublicKey: pubs[i], Hostname: "h"})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent enrollments failed: %v", err)
	}
	var names, addrs []string
	for _, nd := range nodes {
		names = append(names, nd.Name)
		for _, a := range nd.Addresses {
			addrs = append(addrs, a.String())
		}
	}
	wantNames := []string{"h"}
	wantAddrs := []string{}
	for i := 1; i <= n; i++ {
		if i > 1 {
			wantNames = append(wantNames, fmt.Sprintf("h-%d", i))
		}
		wantAddrs = append(wantAddrs, fmt.Sprintf("100.64.0.%d/32", i), fmt.Sprintf("fd77:6d65:7368::%x/128", i))
	}
	for _, ss := range [][]string{names, addrs, wantNames, wantAddrs} {
		sort.Strings(ss)
	}
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantAddrs, addrs); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	if k := joinKeyByID(t, s, key.ID); k.Uses != n {
		t.Errorf("key uses = %d, want %d", k.Uses, n)
	}
	if err := s.CheckIntegrity(context.Background()); err != nil {
		t.Error(err)
	}
}
