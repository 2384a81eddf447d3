package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// dirNames lists dir, failing the test if it cannot.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func checkFile(t *testing.T, path, want string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Errorf("%s holds %q, want %q", path, b, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != mode {
		t.Errorf("%s mode %v, want %v", path, fi.Mode(), mode)
	}
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	for _, step := range []struct {
		data string
		mode os.FileMode
	}{
		{"first", 0o600},
		{"second, longer than the first", 0o600},
		{"", 0o640}, // the mode is the one asked for, not the umask's
		{"3", 0o666},
		{"back to private", 0o600},
	} {
		if err := Write(path, []byte(step.data), step.mode); err != nil {
			t.Fatalf("Write(%q, %v): %v", step.data, step.mode, err)
		}
		checkFile(t, path, step.data, step.mode)
		if names := dirNames(t, dir); !slices.Equal(names, []string{"f"}) {
			t.Errorf("dir holds %v after Write, want only f", names)
		}
	}
}

func TestWriteFails(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	aDir := filepath.Join(dir, "adir")
	if err := os.Mkdir(aDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
	}{
		{"parent is a file", filepath.Join(notDir, "f")},
		{"parent missing", filepath.Join(dir, "missing", "f")},
		{"target is a directory", aDir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(tc.path, []byte("new"), 0o600)
			if err == nil {
				t.Fatal("Write succeeded")
			}
			if !strings.HasPrefix(err.Error(), "write "+tc.path) {
				t.Errorf("error %q, want it to name %s", err, tc.path)
			}
			// Nothing was left behind and nothing was changed.
			if names := dirNames(t, dir); !slices.Equal(names, []string{"adir", "file"}) {
				t.Errorf("dir holds %v after a failed Write", names)
			}
			if names := dirNames(t, aDir); len(names) != 0 {
				t.Errorf("directory target holds %v after a failed Write", names)
			}
			checkFile(t, notDir, "keep", 0o600)
		})
	}
}

// Concurrent writers each leave a whole file: the result is one of them.
func TestWriteConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	var wg sync.WaitGroup
	want := map[string]bool{}
	for i := range 20 {
		data := fmt.Sprintf("writer %d: %0*d", i, 1000+i, i)
		want[data] = true
		wg.Go(func() {
			if err := Write(path, []byte(data), 0o600); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !want[string(b)] {
		t.Errorf("file holds %.40q..., which no writer wrote", b)
	}
	if names := dirNames(t, dir); !slices.Equal(names, []string{"f"}) {
		t.Errorf("dir holds %v, want only f", names)
	}
}
