package coordinator

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// docExample is one ```sh block of docs/api.md.
type docExample struct {
	line   int    // where the block starts
	cmd    string // the shell command
	status int    // the HTTP error it documents ("# status: N"; 0: success)
}

var statusRE = regexp.MustCompile(`^# status: (\d+)$`)

// docExamples reads the shell examples of a Markdown file.
func docExamples(t *testing.T, path string) []docExample {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []docExample
	var cur *docExample
	for i, line := range strings.Split(string(b), "\n") {
		switch {
		case cur == nil && line == "```sh":
			cur = &docExample{line: i + 1}
		case cur != nil && line == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			if m := statusRE.FindStringSubmatch(line); m != nil {
				cur.status, _ = strconv.Atoi(m[1])
				continue
			}
			cur.cmd += line + "\n"
		}
	}
	return out
}

// TestAPIDocExamples runs every curl example of docs/api.md, in order,
// against a coordinator, and checks each succeeds, or fails with the HTTP
// status it documents (curl --fail-with-body exits 22 on those).
func TestAPIDocExamples(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl is needed to check docs/api.md")
		}
		t.Skip("no curl")
	}
	ts := startServer(t, time.Hour)
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	web1 := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "web-1"})
	ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "web-2"})
	ts.setPolicy(t, allowAll)
	revocable := ts.createJoinKey(t, wire.CreateJoinKeyRequest{})
	code, body := ts.doJSON(t, "POST", wire.PathAdminTokens, ts.admin, wire.CreateAdminTokenRequest{Comment: "to revoke"})
	if code != 201 {
		t.Fatalf("create admin token: %d %s", code, body)
	}
	var adm wire.CreateAdminTokenResponse
	decodeStrict(t, body, &adm)
	token, err := os.ReadFile(filepath.Join(ts.dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"WM="+ts.url,
		"CA="+filepath.Join(ts.dir, "ca.crt"),
		"TOKEN="+strings.TrimSpace(string(token)),
		"JOIN="+jk.JoinKey,
		"NODE=web-1", "GONE=web-2",
		"CRED="+web1.Credential, "PUB="+web1.Node.PublicKey,
		"PROOF="+netmapProof(t, ts.c, web1.Node.PublicKey),
		// The services report example's proof covers its services.
		"SPROOF="+servicesProof(t, ts.c, web1.Node.PublicKey, []wire.Service{{Name: "web", Port: 8080, Health: "passing"}}),
		"NEWPUB="+newPublicKey(t),
		"KEY_ID="+revocable.Key.ID, "ADMIN_ID="+adm.Token.ID,
	)
	examples := docExamples(t, "../docs/api.md")
	if len(examples) < 25 {
		t.Fatalf("only %d examples in docs/api.md", len(examples))
	}
	for _, ex := range examples {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, "sh", "-c", ex.cmd)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		cancel()
		got := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			got = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("docs/api.md:%d: %v", ex.line, err)
		}
		switch {
		case ex.status == 0 && got != 0:
			t.Errorf("docs/api.md:%d: exit %d\n%s\n%s", ex.line, got, ex.cmd, out)
		case ex.status != 0 && (got != 22 || !strings.Contains(string(out), "returned error: "+strconv.Itoa(ex.status))):
			t.Errorf("docs/api.md:%d: exit %d, want HTTP %d\n%s\n%s", ex.line, got, ex.status, ex.cmd, out)
		}
	}
}
