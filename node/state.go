package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/atomicfile"
	"github.com/wiremesh/wiremesh/internal/statedir"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Files in a state dir.
const (
	keyFile      = "private.key" // WireGuard private key, base64, 0600
	identityFile = "node.json"   // Identity, 0600
	netmapFile   = "netmap.json" // last netmap, 0600
	lockFile     = "agent.lock"  // flock'd by the running agent; holds its pid
	// SocketName is the agent's local API socket in its state dir.
	SocketName = "agent.sock"
)

// Identity is what enrollment gave a node, kept in the state dir.
type Identity struct {
	// Coordinator is the coordinator's https URL.
	Coordinator string `json:"coordinator"`
	// Coordinators are the URLs of every coordinator of the mesh (several
	// share a database), from the join key and then the netmaps; the
	// agent tries the others when one is unreachable. Empty: Coordinator
	// alone.
	Coordinators []string `json:"coordinators,omitempty"`
	// Pins are the pins the coordinator is trusted by: the join key's,
	// then those of the last netmap that carried any. (One pin is a string,
	// as node.json had before pin sets.)
	Pins credential.Pins `json:"pin"`
	// Credential is the node's bearer secret.
	Credential string `json:"credential"`
	// Node is the node as enrolled.
	Node wire.Node `json:"node"`
	// Prefixes are the overlay prefixes.
	Prefixes []netip.Prefix `json:"prefixes"`
	// CoordinatorKey is the coordinator's proof key, which the agent makes
	// its proofs of the node's private key for. Empty: enrolled before
	// proofs; the agent fetches it from the coordinator and keeps it here.
	CoordinatorKey string `json:"coordinator_key,omitempty"`
}

// urls returns the coordinator URLs of id, Coordinator first.
func (id Identity) urls() []string {
	out := []string{id.Coordinator}
	for _, u := range id.Coordinators {
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}

// stateDir is an agent's state directory, locked for its lifetime.
type stateDir struct {
	path string
	lock *os.File
}

// openStateDir creates (0700) or checks the state dir and locks it so that
// a second agent cannot use it at the same time.
func openStateDir(path string) (*stateDir, error) {
	if err := statedir.Make(path); err != nil {
		return nil, err
	}
	f, err := statedir.Lock(path, lockFile, "agent")
	if err != nil {
		return nil, err
	}
	return &stateDir{path: path, lock: f}, nil
}

// Close releases the lock.
func (s *stateDir) Close() error { return s.lock.Close() }

func (s *stateDir) file(name string) string { return filepath.Join(s.path, name) }

// read returns the contents of a state file, checking that only the owner
// can read it. A missing file gives os.ErrNotExist.
func (s *stateDir) read(name string) ([]byte, error) {
	p := s.file(name)
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if m := fi.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %#o; want 0600 (chmod 600 %s)", p, m, p)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return b, nil
}

// loadKey returns the stored private key; ok is false if there is none.
func (s *stateDir) loadKey() (k wgtypes.Key, ok bool, err error) {
	b, err := s.read(keyFile)
	if errors.Is(err, os.ErrNotExist) {
		return k, false, nil
	}
	if err != nil {
		return k, false, err
	}
	k, err = wgtypes.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return k, false, fmt.Errorf("corrupt %s: %w (move it away to make a new key and re-enroll)", s.file(keyFile), err)
	}
	return k, true, nil
}

func (s *stateDir) saveKey(k wgtypes.Key) error {
	return atomicfile.Write(s.file(keyFile), []byte(k.String()+"\n"), 0o600)
}

func (s *stateDir) removeKey() error {
	if err := os.Remove(s.file(keyFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// loadIdentity returns the stored identity; ok is false if there is none.
func (s *stateDir) loadIdentity() (id Identity, ok bool, err error) {
	b, err := s.read(identityFile)
	if errors.Is(err, os.ErrNotExist) {
		return id, false, nil
	}
	if err != nil {
		return id, false, err
	}
	if err := decodeStrict(b, &id); err != nil {
		return id, false, fmt.Errorf("corrupt %s: %w", s.file(identityFile), err)
	}
	if id.Coordinator == "" || id.Credential == "" || len(id.Pins) == 0 || len(id.Node.Addresses) == 0 {
		return id, false, fmt.Errorf("corrupt %s: missing coordinator, pin, credential or addresses", s.file(identityFile))
	}
	return id, true, nil
}

func (s *stateDir) saveIdentity(id Identity) error {
	b, _ := json.MarshalIndent(id, "", "  ")
	return atomicfile.Write(s.file(identityFile), append(b, '\n'), 0o600)
}

// loadNetmap returns the cached netmap, or nil if there is none. A corrupt
// cache is reported, not fatal: the coordinator sends a fresh one.
func (s *stateDir) loadNetmap() (*wire.Netmap, error) {
	b, err := s.read(netmapFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var nm wire.Netmap
	if err := decodeStrict(b, &nm); err != nil {
		return nil, fmt.Errorf("corrupt %s: %w", s.file(netmapFile), err)
	}
	return &nm, nil
}

func (s *stateDir) saveNetmap(nm *wire.Netmap) error {
	b, _ := json.Marshal(nm)
	return atomicfile.Write(s.file(netmapFile), append(b, '\n'), 0o600)
}

// cacheInterval is the least time between two writes of the netmap cache.
const cacheInterval = time.Second

// netmapCache writes the netmaps the agent applies to its state dir, in
// the background and at most one per cacheInterval: the netmap stream
// never waits for the disk, and a burst of deltas costs one write with its
// fsyncs, not one each. The last netmap is written when run returns, so a
// stopped agent's cache is its last netmap; a killed one's is at most
// cacheInterval behind, and the coordinator sends the current one anyway.
type netmapCache struct {
	state *stateDir
	log   *slog.Logger
	wake  chan struct{} // 1-buffered

	mu   sync.Mutex
	next *wire.Netmap // guarded by mu; applied, not yet written
}

func newNetmapCache(s *stateDir, log *slog.Logger) *netmapCache {
	return &netmapCache{state: s, log: log, wake: make(chan struct{}, 1)}
}

// save has nm written soon. Netmaps are not changed once applied.
func (c *netmapCache) save(nm *wire.Netmap) {
	c.mu.Lock()
	c.next = nm
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run writes what save hands it until ctx is done, then the last of it.
func (c *netmapCache) run(ctx context.Context) {
	defer c.write()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		c.write()
		select {
		case <-ctx.Done():
			return
		case <-time.After(cacheInterval):
		}
	}
}

func (c *netmapCache) write() {
	c.mu.Lock()
	nm := c.next
	c.next = nil
	c.mu.Unlock()
	if nm == nil {
		return
	}
	if err := c.state.saveNetmap(nm); err != nil {
		c.log.Error("cannot cache netmap; the data path keeps working", "err", err)
	}
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("malformed JSON at byte %d: %w", se.Offset, err)
		}
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
