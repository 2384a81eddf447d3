package store

import (
	"context"
	"slices"
	"testing"
)

// A new store has one gossip key; rotation adds a primary before it, and
// retirement leaves the primary alone.
func testGossipKeys(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	keys := func() []string {
		t.Helper()
		st, err := s.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.GossipKeys
	}
	first := keys()
	if len(first) != 1 || len(first[0]) != 44 {
		t.Fatalf("keyring of a new store %q, want one base64 AES-256 key", first)
	}
	info, err := s.RotateGossipKey(ctx, "admin")
	if err != nil || info.Count != 2 || info.PrimaryCreated.IsZero() {
		t.Fatalf("RotateGossipKey = %+v, %v; want 2 keys", info, err)
	}
	rotated := keys()
	if len(rotated) != 2 || rotated[1] != first[0] || rotated[0] == first[0] {
		t.Fatalf("keyring after rotation %q, want a new primary before %q", rotated, first[0])
	}
	if info, err := s.RetireGossipKeys(ctx, "admin"); err != nil || info.Count != 1 {
		t.Fatalf("RetireGossipKeys = %+v, %v; want 1 key", info, err)
	}
	if got := keys(); !slices.Equal(got, rotated[:1]) {
		t.Errorf("keyring after retirement %q, want %q", got, rotated[:1])
	}
	entries, err := s.Audit(ctx, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Action != "gossip.retire" || entries[1].Action != "gossip.rotate" {
		t.Errorf("audit %+v, want gossip.rotate then gossip.retire", entries)
	}
}
