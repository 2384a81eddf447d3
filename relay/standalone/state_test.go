package standalone

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"go.uber.org/goleak"
	"golang.org/x/crypto/curve25519"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// One key pair serves as the relay's node key (its proofs to the
// coordinator) and as its relay proof key (the key nodes prove theirs to):
// its public half is the WireGuard public key of its private half, and
// proofs made either way check.
func TestOneKeyServesBoth(t *testing.T) {
	dir := t.TempDir()
	key, made, err := loadKey(dir)
	if err != nil || !made {
		t.Fatalf("loadKey: %v, made %v", err, made)
	}
	again, made, err := loadKey(dir)
	if err != nil || made || again.PublicKey() != key.PublicKey() {
		t.Fatalf("second loadKey: %v, made %v, key %s want %s", err, made, again.PublicKey(), key.PublicKey())
	}
	if fi, err := os.Stat(filepath.Join(dir, keyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}
	priv := privateBytes(key)
	wgPub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil || base64.StdEncoding.EncodeToString(wgPub) != key.PublicKey() {
		t.Fatalf("WireGuard public key %x (%v), proof public key %s: they differ", wgPub, err, key.PublicKey())
	}

	// As a node key: a netmap proof to a coordinator.
	coord, _ := credential.NewProofKey()
	proof, err := credential.NetmapProof(priv, coord.PublicKey(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := coord.CheckNetmap(key.PublicKey(), proof, time.Now()); err != nil {
		t.Errorf("the coordinator refuses the relay's netmap proof: %v", err)
	}
	// As a relay key: a node's proof of its key.
	node, _ := credential.NewProofKey()
	nodePriv := privateBytes(node)
	nonce := make([]byte, credential.RelayNonceLen)
	rand.Read(nonce)
	mac, err := credential.RelayProof(nodePriv, key.PublicKey(), nonce)
	if err != nil {
		t.Fatal(err)
	}
	nodePub, _ := base64.StdEncoding.DecodeString(node.PublicKey())
	if err := key.CheckRelay([32]byte(nodePub), nonce, mac); err != nil {
		t.Errorf("the relay refuses a node's proof: %v", err)
	}
}
