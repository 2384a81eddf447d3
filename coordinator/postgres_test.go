package coordinator

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/internal/pgtest"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
)

// TestOnPostgres: a coordinator with Config.Database keeps its state in
// PostgreSQL: it enrolls, streams netmaps and lists nodes as on SQLite,
// makes no SQLite file, and names the database without its password.
func TestOnPostgres(t *testing.T) {
	const secret = "s3cret-pw" // trust authentication ignores it
	url := strings.Replace(pgtest.Start(t).Database(t), "postgres@", "postgres:"+secret+"@", 1)
	ts := startServer(t, time.Hour, func(c *Config) { c.Database = url })
	if f := ts.files; f.Database != store.Redact(url) || strings.Contains(f.Database, secret) || slices.ContainsFunc(f.Created, func(p string) bool { return strings.HasSuffix(p, ".db") }) {
		t.Errorf("files %+v: want the database named by its URL without the password, no SQLite file created", f)
	}
	if _, err := os.Stat(filepath.Join(ts.dir, "wiremesh.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a SQLite file beside PostgreSQL: %v", err)
	}
	jk := ts.createJoinKey(t, wire.CreateJoinKeyRequest{Reusable: true})
	a := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "a"})
	sa := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey})
	sa.netmap(t, "the first netmap", func(*wire.Netmap) bool { return true })
	b := ts.enroll(t, jk.JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t), Name: "b"})
	ts.setPolicy(t, allowAll)
	sa.netmap(t, "b as a's peer", func(nm *wire.Netmap) bool { return len(nm.Peers) == 1 && nm.Peers[0].Name == "b" })
	code, body := ts.do(t, "GET", wire.PathNodes, ts.admin, nil)
	if code != http.StatusOK || !strings.Contains(string(body), `"name":"a"`) || !strings.Contains(string(body), b.Node.PublicKey) {
		t.Errorf("nodes: %d %s", code, body)
	}
}
