package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRelayFlags: `wiremesh relay` refuses a bad command line naming the
// flag, before it writes anything; without an identity it asks for --join.
func TestRelayFlags(t *testing.T) {
	ok := []string{"--name", "eu-1", "--listen", "127.0.0.1:0", "--advertise-url", "https://192.0.2.1:443", "--stun-listen", ""}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--advertise-url", "https://192.0.2.1:443"}, "--name is required"},
		{[]string{"--name", "eu-1"}, "--advertise-url is required"},
		{[]string{"--name", "eu-1", "--advertise-url", "http://192.0.2.1"}, `bad --advertise-url "http://192.0.2.1"`},
		{[]string{"--name", "EU 1", "--advertise-url", "https://192.0.2.1"}, `relay name "EU 1"`},
		{[]string{"--name", "eu-1", "--advertise-url", "https://192.0.2.1", "--listen", "443"}, `bad --listen "443"`},
		{append(ok, "--stun-listen", ":65535"), `bad STUN listen address ":65535"`},
		{append(ok, "--tls-cert", "/x.pem"), "give --tls-cert and --tls-key together"},
		{append(ok, "--join", "x", "--join-file", "/nonexistent"), "not both"},
		{append(ok, "--join", "wmjoin1-whatever"), "--join"},
	} {
		dir := filepath.Join(t.TempDir(), "state")
		root := newRoot()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs(append([]string{"relay", "--state-dir", dir}, tc.args...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("relay %v: %v; want an error containing %q", tc.args, err, tc.want)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("relay %v: the state dir was created (%v)", tc.args, err)
		}
	}
	root := newRoot()
	root.SetArgs(append([]string{"relay", "--state-dir", filepath.Join(t.TempDir(), "state")}, ok...))
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "enroll with --join or --join-file") {
		t.Errorf("relay without an identity or a join key: %v", err)
	}
}
