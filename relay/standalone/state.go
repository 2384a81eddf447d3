package standalone

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/atomicfile"
	"github.com/wiremesh/wiremesh/wire"
)

// Files of the state dir, each 0600.
const (
	keyFile      = "relay.key"     // the X25519 private key, base64
	identityFile = "identity.json" // Identity
	netmapFile   = "netmap.json"   // the last netmap
)

// Identity is what enrollment gave the relay.
type Identity struct {
	// Coordinator is the coordinator's https URL.
	Coordinator string `json:"coordinator"`
	// Pins are the coordinator's pins: the join key's, then those of the
	// last netmap that carried any.
	Pins credential.Pins `json:"pins"`
	// Credential is the relay node's bearer secret.
	Credential string `json:"credential"`
	// Node is the relay node as enrolled.
	Node wire.Node `json:"node"`
	// CoordinatorKey is the key the relay makes its netmap proofs for.
	CoordinatorKey string `json:"coordinator_key"`
}

// LockFile is the file of the state dir a running relay holds an flock
// on (statedir.Lock).
const LockFile = "relay.lock"

// loadKey returns the relay's key pair, made on the first start.
func loadKey(dir string) (key *credential.ProofKey, made bool, err error) {
	path := filepath.Join(dir, keyFile)
	b, err := os.ReadFile(path)
	if err == nil {
		if key, err = credential.ParseProofKey(strings.TrimSpace(string(b))); err != nil {
			return nil, false, fmt.Errorf("%s: %w", path, err)
		}
		return key, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("read key: %w", err)
	}
	if key, err = credential.NewProofKey(); err != nil {
		return nil, false, err
	}
	if err := atomicfile.Write(path, []byte(key.EncodePrivate()+"\n"), 0o600); err != nil {
		return nil, false, err
	}
	return key, true, nil
}

// privateBytes is key's private half as a node key, for proofs.
func privateBytes(key *credential.ProofKey) [32]byte {
	b, _ := base64.StdEncoding.DecodeString(key.EncodePrivate())
	return [32]byte(b)
}

// readJSON decodes the file name in dir into v; ok is false if it does
// not exist.
func readJSON(dir, name string, v any) (ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
	}
	return true, nil
}

// writeJSON writes v to the file name in dir, atomically, 0600.
func writeJSON(dir, name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, name), append(b, '\n'), 0o600)
}
