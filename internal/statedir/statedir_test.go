package statedir

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestMake(t *testing.T) {
	fresh := filepath.Join(t.TempDir(), "a", "state")
	if err := Make(fresh); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o700 {
		t.Errorf("made state dir mode %v, want 0700", fi.Mode().Perm())
	}
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := Make(open); err == nil || !strings.Contains(err.Error(), "chmod 700 "+open) {
		t.Errorf("Make of a 0750 dir: %v, want a refusal naming chmod 700", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Make(file); err == nil {
		t.Error("Make of a file succeeded")
	}
}

// A second lock of one dir is refused with the holder's pid until the
// first is released.
func TestLock(t *testing.T) {
	dir := t.TempDir()
	f, err := Lock(dir, "x.lock", "relay")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Lock(dir, "x.lock", "relay")
	if want := "in use by another relay (pid " + strconv.Itoa(os.Getpid()) + ")"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("second Lock: %v, want %q", err, want)
	}
	f.Close()
	f2, err := Lock(dir, "x.lock", "relay")
	if err != nil {
		t.Fatalf("Lock after the first was released: %v", err)
	}
	f2.Close()
}
