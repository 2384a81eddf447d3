package store

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/wire"
)

// Policies are numbered from 1; the newest is active and in the state.
func testPolicies(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	if p, err := s.ActivePolicy(ctx); err != nil || p.Version != 0 {
		t.Fatalf("ActivePolicy of a new store = %+v, %v; want none", p, err)
	}
	p1, err := s.SetPolicy(ctx, "alice", `{"acls": []}`, "first")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := s.SetPolicy(ctx, "bob", `{"acls": [{}]}`, "second")
	if err != nil {
		t.Fatal(err)
	}
	if p1.Version != 1 || p2.Version != 2 {
		t.Errorf("versions %d, %d; want 1, 2", p1.Version, p2.Version)
	}
	if p, err := s.ActivePolicy(ctx); err != nil || !cmp.Equal(p, p2) {
		t.Errorf("ActivePolicy = %+v, %v; want %+v", p, err, p2)
	}
	if p, err := s.PolicyVersion(ctx, 1); err != nil || !cmp.Equal(p, p1) {
		t.Errorf("PolicyVersion(1) = %+v, %v; want %+v", p, err, p1)
	}
	if _, err := s.PolicyVersion(ctx, 9); !errors.Is(err, ErrNotFound) {
		t.Errorf("PolicyVersion(9): %v, want ErrNotFound", err)
	}
	hist, err := s.PolicyHistory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p1.Text, p2.Text = "", ""
	if diff := cmp.Diff([]wire.Policy{p2, p1}, hist); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	st, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Policy.Version != 2 || st.Policy.Text != `{"acls": [{}]}` {
		t.Errorf("state's policy %+v, want version 2", st.Policy)
	}
}
