package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func newForTest(t *testing.T, dir string) (*Coordinator, Files) {
	t.Helper()
	c, f, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0", AdvertiseURL: "https://127.0.0.1:1", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, f
}

func TestDataDirFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c, f := newForTest(t, dir)
	pin, proofKey := c.Pins(), c.PublicProofKey()
	c.Close()

	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o700 {
		t.Errorf("data dir mode %#o, want 0700", m)
	}
	for _, name := range []string{"admin.token", "ca.key", "tls.key", "ca.crt", "tls.crt", "proof.key"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s mode %#o, want 0600", name, m)
		}
	}
	wantCreated := []string{"admin.token", "ca.crt", "proof.key", "tls.crt", "wiremesh.db"}
	var created []string
	for _, p := range f.Created {
		if filepath.Dir(p) != dir {
			t.Errorf("created %s outside the data dir", p)
		}
		created = append(created, filepath.Base(p))
	}
	slices.Sort(created)
	if diff := cmp.Diff(wantCreated, created); diff != "" {
		t.Errorf("Files.Created (-want +got):\n%s", diff)
	}
	if f.AdminToken != filepath.Join(dir, "admin.token") || f.CACert != filepath.Join(dir, "ca.crt") || f.ProofKey != filepath.Join(dir, "proof.key") {
		t.Errorf("Files = %+v", f)
	}

	tok := readAdminToken(t, dir)
	if tok.URL != "https://127.0.0.1:1" || !tok.Pins.Equal(pin) {
		t.Errorf("admin token carries %s %s, want the advertised URL and %s", tok.URL, tok.Pins, pin)
	}
	before, err := os.ReadFile(f.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	beforeInfo, _ := os.Stat(f.AdminToken)
	if !strings.HasSuffix(string(before), "\n") || strings.Count(string(before), "\n") != 1 {
		t.Errorf("admin.token %q: want one line", before)
	}

	// A second start reuses everything.
	c2, f2 := newForTest(t, dir)
	defer c2.Close()
	if !c2.Pins().Equal(pin) {
		t.Errorf("pin changed across restarts: %s, then %s", pin, c2.Pins())
	}
	if c2.PublicProofKey() != proofKey {
		t.Errorf("proof key changed across restarts: %s, then %s", proofKey, c2.PublicProofKey())
	}
	if len(f2.Created) != 0 {
		t.Errorf("second start created %v", f2.Created)
	}
	after, _ := os.ReadFile(f.AdminToken)
	afterInfo, _ := os.Stat(f.AdminToken)
	if string(after) != string(before) || !afterInfo.ModTime().Equal(beforeInfo.ModTime()) {
		t.Errorf("second start rewrote admin.token")
	}
	if err := c2.Store().CheckAdminToken(context.Background(), tok.Secret); err != nil {
		t.Errorf("first admin token after restart: %v", err)
	}
}

// A data dir whose admin.token was removed gets a new, working token; the
// old one keeps working.
func TestAdminTokenRecreated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c, _ := newForTest(t, dir)
	old := readAdminToken(t, dir)
	c.Close()
	if err := os.Remove(filepath.Join(dir, "admin.token")); err != nil {
		t.Fatal(err)
	}
	c2, f := newForTest(t, dir)
	defer c2.Close()
	if !slices.Contains(f.Created, f.AdminToken) {
		t.Errorf("Created %v does not list the new admin.token", f.Created)
	}
	tok := readAdminToken(t, dir)
	if tok.Secret == old.Secret {
		t.Error("same admin token written twice")
	}
	ctx := context.Background()
	if err := c2.Store().CheckAdminToken(ctx, tok.Secret); err != nil {
		t.Errorf("new token: %v", err)
	}
	if err := c2.Store().CheckAdminToken(ctx, old.Secret); err != nil {
		t.Errorf("old token: %v", err)
	}
}

func TestNewRefusesOtherPrefix(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c, _ := newForTest(t, dir)
	c.Close()
	_, _, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0", Prefix4: netip.MustParsePrefix("10.0.0.0/8"), Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "differs") {
		t.Errorf("New with another prefix: %v, want a refusal", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
		want    func(Config) bool
	}{
		{name: "no data dir", cfg: Config{Listen: "127.0.0.1:8443"}, wantErr: "data dir is required"},
		{name: "bad listen", cfg: Config{DataDir: "d", Listen: "8443"}, wantErr: "bad listen address"},
		{name: "all addresses, no URL", cfg: Config{DataDir: "d", Listen: ":8443"}, wantErr: "advertise URL is required when listening on \":8443\" (all addresses): give --advertise-url https://HOST:PORT"},
		{name: "unspecified, no URL", cfg: Config{DataDir: "d", Listen: "0.0.0.0:8443"}, wantErr: "advertise URL is required"},
		{name: "URL from listen", cfg: Config{DataDir: "d", Listen: "10.0.0.1:8443"},
			want: func(c Config) bool { return c.AdvertiseURL == "https://10.0.0.1:8443" }},
		{name: "trailing slash", cfg: Config{DataDir: "d", Listen: ":8443", AdvertiseURL: "https://c.example:8443/"},
			want: func(c Config) bool { return c.AdvertiseURL == "https://c.example:8443" }},
		{name: "http URL", cfg: Config{DataDir: "d", Listen: ":1", AdvertiseURL: "http://c:1"}, wantErr: "bad advertise URL"},
		{name: "URL with path", cfg: Config{DataDir: "d", Listen: ":1", AdvertiseURL: "https://c:1/api"}, wantErr: "bad advertise URL"},
		{name: "IPv6 as IPv4 prefix", cfg: Config{DataDir: "d", Listen: "127.0.0.1:1", Prefix4: netip.MustParsePrefix("fd00::/64")}, wantErr: "bad IPv4 overlay prefix"},
		{name: "IPv4 /31", cfg: Config{DataDir: "d", Listen: "127.0.0.1:1", Prefix4: netip.MustParsePrefix("10.0.0.0/31")}, wantErr: "bad IPv4 overlay prefix"},
		{name: "IPv4 as IPv6 prefix", cfg: Config{DataDir: "d", Listen: "127.0.0.1:1", Prefix6: netip.MustParsePrefix("10.0.0.0/8")}, wantErr: "bad IPv6 overlay prefix"},
		{name: "cert without key", cfg: Config{DataDir: "d", Listen: "127.0.0.1:1", TLSCert: "c.pem"}, wantErr: "together"},
		{name: "defaults", cfg: Config{DataDir: "d", Listen: "127.0.0.1:1"},
			want: func(c Config) bool { return c.KeepAlive == 15*time.Second && c.Logger != nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			err := cfg.Validate()
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("Validate() = %v, want %q", err, tc.wantErr)
				}
			case err != nil:
				t.Errorf("Validate(): %v", err)
			case !tc.want(cfg):
				t.Errorf("Validate() left %+v", cfg)
			}
		})
	}
}

// TestDataDirRefused: a data dir that group or others can access is
// refused with the fix, and nothing is written in it.
func TestDataDirRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{DataDir: dir, Listen: "127.0.0.1:0", AdvertiseURL: "https://127.0.0.1:1", MetricsListen: "", Logger: slog.New(slog.DiscardHandler)}
	for name, start := range map[string]func(Config) (*Coordinator, Files, error){"New": New, "Start": Start} {
		c, _, err := start(cfg)
		if err == nil {
			c.Close()
			t.Fatalf("%s with a 0755 data dir: no error", name)
		}
		if want := "chmod 700 " + dir; !strings.Contains(err.Error(), want) {
			t.Errorf("%s with a 0755 data dir: %v; want the fix %q", name, err, want)
		}
		assertEmpty(t, dir)
	}
}

// assertEmpty fails unless dir is empty.
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("%s holds %v, want nothing written", dir, names)
	}
}

// TestDataDirFilesFixed: a database and a key that group or others could
// read (as an older coordinator left them under umask 022) are made 0600
// at start, with a warning; so are the database's -wal and -shm files,
// whatever the umask.
func TestDataDirFilesFixed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c, _ := newForTest(t, dir)
	c.Close()
	for _, name := range []string{"wiremesh.db", "proof.key"} {
		if err := os.Chmod(filepath.Join(dir, name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old := unix.Umask(0)
	defer unix.Umask(old)
	var logs strings.Builder
	c, _, err := New(Config{DataDir: dir, Listen: "127.0.0.1:0", AdvertiseURL: "https://127.0.0.1:1", Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, name := range []string{"wiremesh.db", "wiremesh.db-wal", "wiremesh.db-shm", "proof.key", "admin.token", lockFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("%s mode %#o, want 0600", name, m)
		}
	}
	for _, name := range []string{"wiremesh.db", "proof.key"} {
		if !strings.Contains(logs.String(), filepath.Join(dir, name)+" mode=0644") {
			t.Errorf("no warning about %s in the logs:\n%s", name, logs.String())
		}
	}
}

// TestDataDirBusyPort: Start binds its ports before it writes anything: a
// busy API or metrics port leaves a new data dir unmade and an existing
// empty one empty.
func TestDataDirBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	empty := t.TempDir()
	if err := os.Chmod(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "data")
	for _, tc := range []struct{ listen, metrics, want string }{
		{busy.Addr().String(), "", "--listen"},
		{"127.0.0.1:0", busy.Addr().String(), "--metrics-listen"},
	} {
		for _, dir := range []string{empty, missing} {
			c, _, err := Start(Config{DataDir: dir, Listen: tc.listen, MetricsListen: tc.metrics, AdvertiseURL: "https://127.0.0.1:1", Logger: slog.New(slog.DiscardHandler)})
			if err == nil {
				c.Close()
				t.Fatalf("Start on busy %s: no error", busy.Addr())
			}
			if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start on busy %s: %v; want it to say so and name %s", busy.Addr(), err, tc.want)
			}
		}
		assertEmpty(t, empty)
		if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the data dir was made (%v)", err)
		}
	}
}

// TestDataDirLocked: a second coordinator on the data dir of a running one
// is refused, naming the lock and the first one's pid; once the first
// closes, it starts.
func TestDataDirLocked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cfg := Config{DataDir: dir, Listen: "127.0.0.1:0", AdvertiseURL: "https://127.0.0.1:1", MetricsListen: "", Logger: slog.New(slog.DiscardHandler)}
	first, _, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = Start(cfg)
	want := fmt.Sprintf("data dir %s is in use by another coordinator (pid %d holds %s)", dir, os.Getpid(), filepath.Join(dir, lockFile))
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("second coordinator: %v; want %q", err, want)
	}
	first.Close()
	second, _, err := Start(cfg)
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	second.Close()
}

func TestPlural(t *testing.T) {
	for n, want := range map[int]string{1: "1 more problem", 2: "2 more problems"} {
		if got := plural(n, "more problem"); got != want {
			t.Errorf("plural(%d) = %q, want %q", n, got, want)
		}
	}
}
