package node

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

var cmpNet = cmp.Options{
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
}

// newStatePath returns a path for a state dir that does not exist yet.
// (t.TempDir itself is 0755, which a state dir must not be.)
func newStatePath(t *testing.T) string { return filepath.Join(t.TempDir(), "state") }

func mustOpenStateDir(t *testing.T, path string) *stateDir {
	t.Helper()
	s, err := openStateDir(path)
	if err != nil {
		t.Fatalf("openStateDir: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpenStateDirCreates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "state")
	s := mustOpenStateDir(t, path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o700 {
		t.Errorf("state dir mode %#o, want 0700", m)
	}
	b, err := os.ReadFile(s.file(lockFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file holds %q, want our pid %d", got, os.Getpid())
	}
}

func TestOpenStateDirRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T) string
		wantErr []string
	}{
		{
			name: "group-readable",
			setup: func(t *testing.T) string {
				p := filepath.Join(t.TempDir(), "s")
				if err := os.Mkdir(p, 0o700); err != nil {
					t.Fatal(err)
				}
				os.Chmod(p, 0o750)
				return p
			},
			wantErr: []string{"mode 0750", "chmod 700"},
		},
		{
			name: "world-readable",
			setup: func(t *testing.T) string {
				p := filepath.Join(t.TempDir(), "s")
				os.Mkdir(p, 0o700)
				os.Chmod(p, 0o755)
				return p
			},
			wantErr: []string{"chmod 700"},
		},
		{
			name: "a file",
			setup: func(t *testing.T) string {
				p := filepath.Join(t.TempDir(), "s")
				os.WriteFile(p, nil, 0o600)
				return p
			},
			wantErr: []string{"not a directory"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.setup(t)
			s, err := openStateDir(p)
			if err == nil {
				s.Close()
				t.Fatal("openStateDir succeeded")
			}
			for _, w := range append(tc.wantErr, p) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestOpenStateDirLock(t *testing.T) {
	path := newStatePath(t)
	s, err := openStateDir(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = openStateDir(path)
	if err == nil || !strings.Contains(err.Error(), "in use by another agent") || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Errorf("second openStateDir: %v, want \"in use by another agent\" with our pid", err)
	}
	s.Close()
	s2, err := openStateDir(path)
	if err != nil {
		t.Fatalf("openStateDir after Close: %v", err)
	}
	s2.Close()
}

func testIdentity(t *testing.T) Identity {
	return Identity{
		Coordinator: "https://127.0.0.1:8443",
		Pins:        credential.Pins{{Kind: credential.PinCA, Sum: [32]byte{1, 2, 3}}},
		Credential:  credential.NewSecret("nd").String(),
		Node: wire.Node{
			ID: 7, Name: "a", PublicKey: mustKey(t).PublicKey().String(),
			Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.7/32"), netip.MustParsePrefix("fd77:6d65:7368::7/128")},
			Tags:      []string{"tag:web"},
			Created:   time.UnixMilli(1_780_000_000_000),
		},
		Prefixes: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("fd77:6d65:7368::/48")},
	}
}

func mustKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testNetmap(t *testing.T) *wire.Netmap {
	id := testIdentity(t)
	return &wire.Netmap{
		Version: 42,
		Self:    id.Node,
		Peers: []wire.Node{{
			ID: 8, Name: "b", PublicKey: mustKey(t).PublicKey().String(),
			Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.8/32")},
			Endpoints: []string{"192.0.2.8:51820"},
			Created:   time.UnixMilli(1_780_000_000_123),
			LastSeen:  time.UnixMilli(1_780_000_100_000),
		}},
		Prefixes:          id.Prefixes,
		KeepAliveInterval: wire.Duration(15 * time.Second),
	}
}

func fileMode(t *testing.T, p string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestStateRoundTrip(t *testing.T) {
	s := mustOpenStateDir(t, newStatePath(t))

	if _, ok, err := s.loadKey(); ok || err != nil {
		t.Errorf("loadKey on an empty dir: ok %v, err %v; want none", ok, err)
	}
	if _, ok, err := s.loadIdentity(); ok || err != nil {
		t.Errorf("loadIdentity on an empty dir: ok %v, err %v; want none", ok, err)
	}
	if nm, err := s.loadNetmap(); nm != nil || err != nil {
		t.Errorf("loadNetmap on an empty dir: %v, %v; want nil", nm, err)
	}

	key := mustKey(t)
	id := testIdentity(t)
	nm := testNetmap(t)
	if err := s.saveKey(key); err != nil {
		t.Fatal(err)
	}
	if err := s.saveIdentity(id); err != nil {
		t.Fatal(err)
	}
	if err := s.saveNetmap(nm); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{keyFile, identityFile, netmapFile} {
		if m := fileMode(t, s.file(f)); m != 0o600 {
			t.Errorf("%s mode %#o, want 0600", f, m)
		}
	}

	gotKey, ok, err := s.loadKey()
	if err != nil || !ok || gotKey != key {
		t.Errorf("loadKey: ok %v, err %v, same key %v", ok, err, gotKey == key)
	}
	gotID, ok, err := s.loadIdentity()
	if err != nil || !ok {
		t.Fatalf("loadIdentity: ok %v, err %v", ok, err)
	}
	if diff := cmp.Diff(id, gotID, cmpNet); diff != "" {
		t.Errorf("identity round trip (-saved +loaded):\n%s", diff)
	}
	gotNM, err := s.loadNetmap()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(nm, gotNM, cmpNet); diff != "" {
		t.Errorf("netmap round trip (-saved +loaded):\n%s", diff)
	}

	// A newer netmap replaces the cache.
	nm2 := testNetmap(t)
	nm2.Version, nm2.Peers = 43, nil
	if err := s.saveNetmap(nm2); err != nil {
		t.Fatal(err)
	}
	if got, err := s.loadNetmap(); err != nil || got.Version != 43 || len(got.Peers) != 0 {
		t.Errorf("after replacing: %+v, %v", got, err)
	}
	if ents, _ := os.ReadDir(s.path); len(ents) != 4 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("state dir holds %v, want the lock, key, identity and netmap only", names)
	}
}

func TestStateFileModeRefused(t *testing.T) {
	s := mustOpenStateDir(t, newStatePath(t))
	if err := s.saveKey(mustKey(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.saveIdentity(testIdentity(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.saveNetmap(testNetmap(t)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file string
		load func() error
	}{
		{keyFile, func() error { _, _, err := s.loadKey(); return err }},
		{identityFile, func() error { _, _, err := s.loadIdentity(); return err }},
		{netmapFile, func() error { _, err := s.loadNetmap(); return err }},
	} {
		for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
			if err := os.Chmod(s.file(tc.file), mode); err != nil {
				t.Fatal(err)
			}
			err := tc.load()
			if err == nil || !strings.Contains(err.Error(), "chmod 600") || !strings.Contains(err.Error(), s.file(tc.file)) {
				t.Errorf("%s with mode %#o: %v, want a refusal naming the file and \"chmod 600\"", tc.file, mode, err)
			}
		}
		os.Chmod(s.file(tc.file), 0o600)
		if err := tc.load(); err != nil {
			t.Errorf("%s with mode 0600: %v", tc.file, err)
		}
	}
}

func TestStateCorrupt(t *testing.T) {
	good := testIdentity(t)
	noCred := good
	noCred.Credential = ""
	noAddrs := good
	noAddrs.Node.Addresses = nil
	for _, tc := range []struct {
		name     string
		file     string
		contents string
		load     func(*stateDir) error
	}{
		{"identity not JSON", identityFile, "{", loadIdentityErr},
		{"identity unknown field", identityFile, `{"coordinator":"https://c:1","extra":1}`, loadIdentityErr},
		{"identity trailing data", identityFile, mustJSON(t, good) + "{}", loadIdentityErr},
		{"identity without credential", identityFile, mustJSON(t, noCred), loadIdentityErr},
		{"identity without addresses", identityFile, mustJSON(t, noAddrs), loadIdentityErr},
		{"identity empty", identityFile, "", loadIdentityErr},
		{"key not base64", keyFile, "not a key\n", func(s *stateDir) error { _, _, err := s.loadKey(); return err }},
		{"key short", keyFile, "AAAA\n", func(s *stateDir) error { _, _, err := s.loadKey(); return err }},
		{"netmap not JSON", netmapFile, `{"version":`, func(s *stateDir) error { _, err := s.loadNetmap(); return err }},
		{"netmap unknown field", netmapFile, `{"version":1,"peer":[]}`, func(s *stateDir) error { _, err := s.loadNetmap(); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustOpenStateDir(t, newStatePath(t))
			if err := os.WriteFile(s.file(tc.file), []byte(tc.contents), 0o600); err != nil {
				t.Fatal(err)
			}
			err := tc.load(s)
			if err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), s.file(tc.file)) {
				t.Errorf("load: %v, want \"corrupt\" naming %s", err, s.file(tc.file))
			}
		})
	}
}

func loadIdentityErr(s *stateDir) error { _, _, err := s.loadIdentity(); return err }

func mustJSON(t *testing.T, id Identity) string {
	t.Helper()
	s := mustOpenStateDir(t, newStatePath(t))
	if err := s.saveIdentity(id); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.file(identityFile))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestStateReadMissingIsNotExist(t *testing.T) {
	s := mustOpenStateDir(t, newStatePath(t))
	if _, err := s.read("nope"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("read of a missing file: %v, want os.ErrNotExist", err)
	}
}

// TestNetmapCache: the cache writes the first netmap at once, and when
// it stops, the last one it was given, however fast they came.
func TestNetmapCache(t *testing.T) {
	s, err := openStateDir(filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := newNetmapCache(s, testLogger(t, "cache"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.run(ctx) }()
	version := func() uint64 {
		nm, err := s.loadNetmap()
		if err != nil {
			t.Fatal(err)
		}
		if nm == nil {
			return 0
		}
		return nm.Version
	}
	nm := testNetmap(t)
	nm.Version = 1
	c.save(nm)
	deadline := time.Now().Add(waitFor)
	for version() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("first netmap not written within %v", waitFor)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for v := uint64(2); v <= 50; v++ {
		next := *nm
		next.Version = v
		c.save(&next)
	}
	cancel()
	<-done
	if v := version(); v != 50 {
		t.Errorf("after stopping the cache holds version %d, want the last, 50", v)
	}
}
