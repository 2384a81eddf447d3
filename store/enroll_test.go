package store

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

func testEnrollAddresses(t *testing.T, e *engine) {
	s, _ := e.open(t)
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

func testEnrollNames(t *testing.T, e *engine) {
	s, _ := e.open(t)
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
func testEnrollNameFromHostnameIsValid(t *testing.T, e *engine) {
	s, _ := e.open(t)
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

// A refused enrollment changes nothing: no node, no use of the key, no new
// state version.
func testEnrollFailureIsAtomic(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
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

// A proven enrollment of a public key that the same join key enrolled for
// a node that has never streamed is the retry of an attempt whose answer
// was lost: the node comes back with a new credential, the old one stops
// working, and no key use or node is added. Without the proof, with
// another join key, after the node streamed or with the key revoked, it is
// refused as before.
func testEnrollRetry(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	once := newJoinKey(t, s, wire.CreateJoinKeyRequest{})
	first := mustEnroll(t, s, once, EnrollParams{Hostname: "h"})
	pub := first.node.PublicKey
	if _, _, _, err := s.Enroll(ctx, once, EnrollParams{PublicKey: pub, Hostname: "h"}); !hasCode(err, wire.CodeKeyUsed) {
		t.Errorf("unproven retry: %v, want code %s", err, wire.CodeKeyUsed)
	}
	again := mustEnroll(t, s, once, EnrollParams{PublicKey: pub, Hostname: "h", Proven: true})
	if diff := cmp.Diff(first.node, again.node, cmpNet); diff != "" {
		t.Errorf("proven retry returned another node (-first +retry):\n%s", diff)
	}
	if again.cred == first.cred {
		t.Error("proven retry returned the lost credential, want a new one")
	}
	if n, err := s.NodeByCredential(ctx, again.cred); err != nil || n.ID != first.node.ID {
		t.Errorf("the new credential: %v, %v", n.ID, err)
	}
	if _, err := s.NodeByCredential(ctx, first.cred); err == nil {
		t.Error("the lost credential still works")
	}
	if n, k := len(mustNodes(t, s)), joinKeyByID(t, s, once.ID); n != 1 || k.Uses != 1 {
		t.Errorf("%d nodes and %d key uses after the retry, want 1 and 1", n, k.Uses)
	}

	other := newJoinKey(t, s, wire.CreateJoinKeyRequest{Reusable: true})
	for _, proven := range []bool{false, true} {
		if _, _, _, err := s.Enroll(ctx, other, EnrollParams{PublicKey: pub, Proven: proven}); !errors.Is(err, ErrConflict) || !hasCode(err, wire.CodeAlreadyEnrolled) {
			t.Errorf("proven %v, with another join key: %v, want ErrConflict with code %s", proven, err, wire.CodeAlreadyEnrolled)
		}
	}
	if err := s.SetOnline(ctx, []int64{first.node.ID}, time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Enroll(ctx, once, EnrollParams{PublicKey: pub, Proven: true}); !errors.Is(err, ErrDenied) {
		t.Errorf("proven, after the node streamed: %v, want the used key refused", err)
	}
	if _, _, _, err := s.Enroll(ctx, credential.NewSecret("jk"), EnrollParams{PublicKey: pub, Proven: true}); !errors.Is(err, ErrDenied) {
		t.Errorf("proven, with an unknown join key: %v, want ErrDenied", err)
	}
	revoked := mustEnroll(t, s, other, EnrollParams{Hostname: "r"})
	if err := s.RevokeJoinKey(ctx, "test", other.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.Enroll(ctx, other, EnrollParams{PublicKey: revoked.node.PublicKey, Proven: true}); !hasCode(err, wire.CodeRevoked) {
		t.Errorf("proven, with the key revoked: %v, want code %s", err, wire.CodeRevoked)
	}
	if n, err := s.NodeByCredential(ctx, again.cred); err != nil || n.ID != first.node.ID {
		t.Errorf("refused retries changed the credential: %v, %v", n.ID, err)
	}
}

// hasCode reports whether err carries code.
func hasCode(err error, code wire.ErrorCode) bool {
	c, ok := Code(err)
	return ok && c == code
}

// A full prefix refuses enrollment cleanly; the store keeps working.
func testEnrollPrefixFull(t *testing.T, e *engine) {
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
			s := e.mustOpenAt(t, e.fresh(t), tc.p4, tc.p6)
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

func testConcurrentEnroll(t *testing.T, e *engine) {
	s, _ := e.open(t)
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

// A one-time join key used at the same moment through two stores on one
// database (two coordinators) admits exactly one node; the other is told
// that the key was used.
func testOneTimeKeyTwoStores(t *testing.T, e *engine) {
	ctx := context.Background()
	a, loc := e.open(t)
	b := e.mustOpenAt(t, loc, netip.Prefix{}, netip.Prefix{})
	const rounds = 20
	for round := range rounds {
		key := newJoinKey(t, a, wire.CreateJoinKeyRequest{})
		pubs := []string{newPublicKey(t), newPublicKey(t)}
		errs := make([]error, 2)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, s := range []*DB{a, b} {
			wg.Go(func() {
				<-start
				_, _, _, errs[i] = s.Enroll(ctx, key, EnrollParams{PublicKey: pubs[i]})
			})
		}
		close(start)
		wg.Wait()
		admitted := 0
		for _, err := range errs {
			if err == nil {
				admitted++
			} else if code, _ := Code(err); !errors.Is(err, ErrDenied) || code != wire.CodeKeyUsed {
				t.Errorf("round %d: %v, want ErrDenied with code %s", round, err, wire.CodeKeyUsed)
			}
		}
		if admitted != 1 {
			t.Errorf("round %d: one one-time key admitted %d nodes, want 1", round, admitted)
		}
	}
	if n := len(mustNodes(t, b)); n != rounds {
		t.Errorf("%d nodes after %d rounds, want %d", n, rounds, rounds)
	}
}
