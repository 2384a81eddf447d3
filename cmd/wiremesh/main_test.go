package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// TestEnvFlags: every flag can come from its WIREMESH_* variable, a flag on
// the command line wins, and a bad value is an error naming the variable.
func TestEnvFlags(t *testing.T) {
	t.Setenv("WIREMESH_STATE_DIR", "/nonexistent/wiremesh-env-test")
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"status"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/wiremesh-env-test/agent.sock") {
		t.Fatalf("status with WIREMESH_STATE_DIR: %v; want an error naming the socket in that dir", err)
	}

	root = newRoot()
	root.SetArgs([]string{"status", "--state-dir", "/nonexistent/from-flag"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "/nonexistent/from-flag/") {
		t.Fatalf("flag did not win over the environment: %v", err)
	}

	t.Setenv("WIREMESH_LISTEN_PORT", "not-a-port")
	root = newRoot()
	root.SetArgs([]string{"agent"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "WIREMESH_LISTEN_PORT") {
		t.Fatalf("bad env value: %v; want an error naming WIREMESH_LISTEN_PORT", err)
	}
}

func TestBytesText(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 40: "3.0 TiB"} {
		if got := bytesText(n); got != want {
			t.Errorf("bytesText(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestCompletion: `wiremesh completion bash` prints a bash completion
// script that knows the verbs.
func TestCompletion(t *testing.T) {
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"completion", "bash"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "bash completion") || !strings.Contains(s, "__start_wiremesh") {
		t.Fatalf("completion bash printed:\n%.300s", s)
	}
	root = newRoot()
	out.Reset()
	root.SetOut(&out)
	root.SetArgs([]string{"__complete", "nodes", ""})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"list", "get", "delete", "tag", "expire"} {
		if !strings.Contains(out.String(), verb) {
			t.Errorf("completion of `nodes ` lacks %q:\n%s", verb, out.String())
		}
	}
}

func TestJoinFileFlag(t *testing.T) {
	root := newRoot()
	root.SetArgs([]string{"agent", "--join", "x", "--join-file", "/nonexistent/key", "--state-dir", t.TempDir()})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("--join with --join-file: %v", err)
	}
	root = newRoot()
	root.SetArgs([]string{"agent", "--join-file", "/nonexistent/key", "--state-dir", t.TempDir()})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "/nonexistent/key") {
		t.Errorf("missing --join-file: %v", err)
	}
}

// TestAgentEndpointFlag: the agent refuses more than wire.MaxEndpoints
// --endpoint flags, or one that is not an IP:port literal, with the
// coordinator's message and before it writes anything.
func TestAgentEndpointFlag(t *testing.T) {
	many := make([]string, 0, 2*(wire.MaxEndpoints+1))
	for i := range wire.MaxEndpoints + 1 {
		many = append(many, "--endpoint", fmt.Sprintf("192.0.2.%d:51820", i+1))
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{many, "--endpoint: 9 endpoints given: at most 8 are allowed"},
		{[]string{"--endpoint", "vpn.example.com:51820"}, `--endpoint: bad endpoint "vpn.example.com:51820": want an IP:port literal`},
		{[]string{"--endpoint", "0.0.0.0:51820"}, `--endpoint: bad endpoint "0.0.0.0:51820": the unspecified address`},
	} {
		dir := filepath.Join(t.TempDir(), "state")
		root := newRoot()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs(append([]string{"agent", "--state-dir", dir, "--join", "wmjoin1-whatever"}, tc.args...))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("agent %v: %v; want an error containing %q", tc.args, err, tc.want)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("agent %v: the state dir was created (%v)", tc.args, err)
		}
	}
}

// TestWrongCredential: a join key given where an admin token is wanted
// (and the other way round), a truncated key, a file path given to --join
// and a --join-file others can read are refused naming the flag or variable
// and the fix.
func TestWrongCredential(t *testing.T) {
	b := credential.Bundle{URL: "https://c:1", Secret: credential.NewSecret("jk")}
	joinKey, token := b.Encode(credential.JoinKeyPrefix), b.Encode(credential.AdminTokenPrefix)
	dir := t.TempDir()
	joinFile := filepath.Join(dir, "join.key")
	if err := os.WriteFile(joinFile, []byte(joinKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	openFile := filepath.Join(dir, "open.key")
	if err := os.WriteFile(openFile, []byte(joinKey), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  string
		args []string
		want string
	}{
		{"", []string{"agent", "--state-dir", filepath.Join(dir, "s"), "--join", joinFile}, "--join " + joinFile + ": that is a file: give it with --join-file " + joinFile},
		{"", []string{"agent", "--state-dir", filepath.Join(dir, "s"), "--join-file", openFile}, "--join-file " + openFile + " has mode 0644: it holds a join key, so it must not be readable by group or others (chmod 600 " + openFile + ")"},
		{"", []string{"agent", "--state-dir", filepath.Join(dir, "s"), "--join", joinKey[:30]}, "--join: this join key is truncated (30 characters"},
		{"", []string{"nodes", "list", "--token-file", joinFile}, "--token-file " + joinFile + ": this is a join key, not an admin token"},
		{joinKey, []string{"nodes", "list"}, "WIREMESH_TOKEN: this is a join key, not an admin token"},
		{"", []string{"agent", "--state-dir", filepath.Join(dir, "s"), "--join", token}, "--join: this is an admin token, not a join key"},
		{"", []string{"agent", "--state-dir", filepath.Join(dir, "s"), "--join-file", tokenFile}, "--join-file " + tokenFile + ": this is an admin token, not a join key"},
	} {
		t.Setenv("WIREMESH_TOKEN", tc.env)
		root := newRoot()
		root.SetOut(io.Discard)
		root.SetArgs(tc.args)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// TestArgErrors: a wrong number of arguments prints the verb's usage line,
// and an unknown verb under a group is an error that suggests the verb
// meant (not help and success).
func TestArgErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nodes", "get"}, "accepts 1 arg(s), received 0\nusage: wiremesh nodes get NAME"},
		{[]string{"keys", "revoke", "a", "b"}, "usage: wiremesh keys revoke ID"},
		{[]string{"nodes", "list", "extra"}, "usage: wiremesh nodes list"},
		{[]string{"nodes", "lst"}, `unknown command "lst" for "wiremesh nodes"; did you mean list?`},
		{[]string{"acl", "nonsense"}, `unknown command "nonsense" for "wiremesh acl"`},
	} {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(tc.args)
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want an error containing %q", tc.args, err, tc.want)
		}
	}
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"nodes"})
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "Available Commands") {
		t.Errorf("bare nodes: %v\n%s; want its help", err, out.String())
	}
}

// TestDurationFlags: duration flags take days as well as Go durations, and
// a bad value names the flag and the accepted forms.
func TestDurationFlags(t *testing.T) {
	for in, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90s": 90 * time.Second, "30d": 720 * time.Hour, "0": 0} {
		var d time.Duration
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		durationVar(fs, &d, "expiry", 0, "")
		if err := fs.Parse([]string{"--expiry", in}); err != nil || d != want {
			t.Errorf("--expiry %s: %v, %v; want %v", in, d, err, want)
		}
	}
	for _, in := range []string{"7x", "d", "1.5d", "-1d", "1d-2h", "7days"} {
		root := newRoot()
		root.SetOut(io.Discard)
		root.SetErr(io.Discard)
		root.SetArgs([]string{"keys", "create", "--expiry", in})
		want := `invalid argument "` + in + `" for "--expiry" flag: want a duration such as 90s, 45m, 12h, 7d or 1d12h`
		if err := root.Execute(); err == nil || err.Error() != want {
			t.Errorf("--expiry %s: %v; want %q", in, err, want)
		}
	}
	root := newRoot()
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	root.SetArgs([]string{"nodes", "expire", "x", "--in", "7d", "--at", "nonsense"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "--at") {
		t.Errorf("nodes expire --in 7d: %v; want the flag accepted (and --at refused)", err)
	}
}

// TestPolicyMessages: a rejected policy counts its problems in good
// grammar, and a check against no active policy says so (not "version 0").
func TestPolicyMessages(t *testing.T) {
	for n, want := range map[int]string{1: "policy rejected (1 problem); the active policy is unchanged", 2: "policy rejected (2 problems)"} {
		detail, _ := json.Marshal(make([]wire.PolicyError, n))
		cmd := newRoot()
		cmd.SetErr(io.Discard)
		err := policyError(cmd, &client.Error{Status: 400, Code: wire.CodePolicyInvalid, Detail: detail})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%d problems: %v; want %q", n, err, want)
		}
	}
	var out bytes.Buffer
	printCheck(&out, wire.PolicyCheck{Valid: true, Changes: []wire.AccessChange{{Text: "+ a -> b"}}})
	if s := out.String(); !strings.Contains(s, "there is no active policy yet and everything is denied") || strings.Contains(s, "version 0") {
		t.Errorf("check without an active policy printed:\n%s", s)
	}
	out.Reset()
	printCheck(&out, wire.PolicyCheck{Valid: true, ActiveVersion: 3})
	if s := out.String(); !strings.Contains(s, "no access changes compared with the active policy (version 3)") {
		t.Errorf("check against version 3 printed:\n%s", s)
	}
}

// TestRotateKeyOutput: rotate-key prints a sentence (--json prints the
// agent's JSON as is).
func TestRotateKeyOutput(t *testing.T) {
	var out bytes.Buffer
	if err := printRotated(&out, []byte(`{"public_key":"AAAA="}`)); err != nil {
		t.Fatal(err)
	}
	if want := "new WireGuard key in use; public key AAAA= (peers learn it through the coordinator)\n"; out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
	if err := printRotated(&out, []byte(`<html>`)); err == nil {
		t.Error("an unreadable answer printed no error")
	}
}

// TestTagsLikeTheUI: the CLI's tag arguments take NAME for tag:NAME, as the
// UI's tag fields do.
func TestTagsLikeTheUI(t *testing.T) {
	got := normalizeTags([]string{"web", "tag:db"})
	if strings.Join(got, " ") != "tag:web tag:db" {
		t.Errorf("normalizeTags = %q", got)
	}
	if normalizeTags(nil) != nil {
		t.Error("no --tag became an empty list, not none")
	}
}

// TestKeysTableCreated: keys list shows when each key was made.
func TestKeysTableCreated(t *testing.T) {
	var out bytes.Buffer
	created := time.Date(2026, 12, 3, 13, 13, 9, 0, time.UTC)
	if err := keysTable(&out, []wire.JoinKey{{ID: "jk1", Created: created}}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	if !strings.Contains(lines[0], "CREATED") || !strings.Contains(lines[1], "2026-12-03T13:13:09Z") {
		t.Errorf("keys table:\n%s", out.String())
	}
}

// TestAuditActorNames: audit names an actor by its token's comment.
func TestAuditActorNames(t *testing.T) {
	var out bytes.Buffer
	entries := []wire.AuditEntry{{Actor: "ad01", Action: "policy.set"}, {Actor: "jk02", Action: "node.enroll"}}
	if err := auditTable(&out, entries, []wire.AdminToken{{ID: "ad01", Comment: "ci deploys"}}); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "ad01 (ci deploys)  policy.set") || !strings.Contains(s, "jk02 ") {
		t.Errorf("audit table:\n%s", s)
	}
}

// TestDefaultTokenFile: with no --token-file or WIREMESH_TOKEN, the CLI
// reads the coordinator's admin token from its default data dir, and an
// error names that file (and says so when it cannot be read).
func TestDefaultTokenFile(t *testing.T) {
	t.Setenv("WIREMESH_TOKEN", "")
	old := defaultTokenFile
	t.Cleanup(func() { defaultTokenFile = old })

	defaultTokenFile = filepath.Join(t.TempDir(), "admin.token")
	root := newRoot()
	root.SetArgs([]string{"nodes", "list"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "no admin token: give --token-file FILE or set WIREMESH_TOKEN ("+defaultTokenFile+", the coordinator's, is not readable here") {
		t.Errorf("no token anywhere: %v", err)
	}

	b := credential.Bundle{URL: "https://127.0.0.1:1", Pins: credential.Pins{{Kind: credential.PinCA}}, Secret: credential.NewSecret("ad")}
	if err := os.WriteFile(defaultTokenFile, []byte(b.Encode(credential.JoinKeyPrefix)), 0o600); err != nil {
		t.Fatal(err)
	}
	root = newRoot()
	root.SetArgs([]string{"nodes", "list"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), defaultTokenFile+" (no --token-file or WIREMESH_TOKEN given): this is a join key") {
		t.Errorf("a join key in the default file: %v", err)
	}
	if err := os.WriteFile(defaultTokenFile, []byte(b.Encode(credential.AdminTokenPrefix)), 0o600); err != nil {
		t.Fatal(err)
	}
	root = newRoot()
	root.SetArgs([]string{"nodes", "list"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "(with the admin token of "+defaultTokenFile+")") {
		t.Errorf("no coordinator, the default token: %v; want the error to name the file", err)
	}
}

// nodes get shows each peer's path as the node reported it.
func TestConnectivityText(t *testing.T) {
	var b strings.Builder
	now := time.Now()
	err := connectivityText(&b, &wire.Connectivity{NAT: wire.NATHard, HomeRelay: "eu-1", Reported: now.Add(-30 * time.Second), Paths: []wire.PeerPath{
		{Peer: "db", Kind: wire.PathKindDirect, Addr: "203.0.113.7:41641", RTT: wire.Duration(1234 * time.Microsecond), Since: now.Add(-2 * time.Minute)},
		{Peer: "web", Kind: wire.PathKindRelay, Relay: "eu-1", Why: "no answer from 2 candidates"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"connectivity: NAT hard, home relay eu-1 (reported 30s ago)", "db", "direct 203.0.113.7:41641", "1.2ms", "2m0s ago", "relay eu-1", "no answer from 2 candidates"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	connectivityText(&b, nil)
	if !strings.Contains(b.String(), "not reported") {
		t.Errorf("a node without a report: %q", b.String())
	}
}

// TestDatabaseFlag: a bad --database URL, or a PostgreSQL server that
// does not answer, is an error naming the flag, and the password in the
// URL is shown nowhere.
func TestDatabaseFlag(t *testing.T) {
	const secret = "s3cret-pw"
	for _, tc := range []struct{ url, want string }{
		{"mysql://wm:" + secret + "@db.example/wm", "bad PostgreSQL URL mysql://wm:xxxxx@db.example/wm"},
		{"postgres://wm:" + secret + "@db.example/wm?sslmode=bogus", "cannot parse"},
		{"postgres://wm:" + secret + "@127.0.0.1:1/wm?connect_timeout=5", "database unavailable: postgres://wm:xxxxx@127.0.0.1:1/wm"},
	} {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs([]string{"coordinator", "--database", tc.url, "--data-dir", filepath.Join(t.TempDir(), "data"),
			"--listen", "127.0.0.1:0", "--advertise-url", "https://127.0.0.1:1", "--metrics-listen", "", "--stun-listen", "", "--no-relay"})
		err := root.Execute()
		if err == nil || !strings.HasPrefix(err.Error(), "--database: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("coordinator --database %s: %v; want an error naming --database and saying %q", tc.want, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error()+out.String(), secret) {
			t.Errorf("the password shows: %v\n%s", err, out.String())
		}
	}
}
