package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/coordinator"
	"github.com/wiremesh/wiremesh/internal/pgtest"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestAgentFailsOver: an agent enrolled with a join key that names one of
// two coordinators on one PostgreSQL learns the other from its netmap and
// keeps it in node.json; when its coordinator stops, it streams from the
// other within 5 s, and changes made there reach it.
func TestAgentFailsOver(t *testing.T) {
	db := pgtest.Start(t).Database(t)
	var cos []*testCoordinator
	for _, name := range []string{"c1", "c2"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cos = append(cos, startCoordinatorOn(t, ln, filepath.Join(t.TempDir(), name), func(c *coordinator.Config) { c.Database = db }))
	}
	dir := filepath.Join(t.TempDir(), "a")
	a := startAgent(t, "a", dir, cos[0].joinKey(t, false)) // names c1 only
	a.waitUp(t)
	want := []string{cos[0].url, cos[1].url}
	slices.Sort(want) // netmaps list them in the database's order
	if got := a.ctl.api.allURLs(); !slices.Equal(got, want) {
		t.Errorf("agent knows coordinators %v, want %v from its netmap", got, want)
	}

	start := time.Now()
	cos[0].stop()
	for {
		if url, _ := a.ctl.api.current(); url == cos[1].url && a.ctl.isConnected() {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("agent not streaming from the other coordinator 5 s after its own stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("streaming from the other coordinator %s after its own stopped", time.Since(start).Round(time.Millisecond))
	// Nothing changed for the agent meanwhile: it resumed with the netmap
	// it held, which the other coordinator builds the same.
	if got := pushes(t, cos[1], "resume"); got != 1 {
		t.Errorf("the other coordinator resumed %d streams, want 1", got)
	}
	cos[1].setPolicy(t, allowAll)
	a.eng.wait(t, "the policy set on the other coordinator", func(e *fakeEngine) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.last != nil && e.last.PolicyVersion != 0
	})
	if err := a.stop(t); err != nil {
		t.Fatal(err)
	}
	id := storedIdentity(t, dir)
	if !slices.Equal(id.Coordinators, want) {
		t.Errorf("node.json keeps coordinators %v, want %v", id.Coordinators, want)
	}
}

// pushes returns co's count of netmap messages sent by trigger.
func pushes(t *testing.T, co *testCoordinator, trigger string) int {
	t.Helper()
	rec := httptest.NewRecorder()
	co.c.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	series := `wiremesh_coordinator_netmap_pushes_total{trigger="` + trigger + `"} `
	for line := range strings.SplitSeq(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return n
		}
	}
	t.Fatalf("no series %s in the coordinator's metrics", series)
	return 0
}

// TestRestoredDatabase: the coordinator's database is restored from a
// backup, whose state version is older than the agent's netmap. The first
// netmap of the agent's next stream is taken all the same, and so are the
// changes after it; without that the agent would ignore every netmap
// until the versions caught up.
func TestRestoredDatabase(t *testing.T) {
	co := startCoordinator(t)
	a := startAgent(t, "a", filepath.Join(t.TempDir(), "a"), co.joinKey(t, false))
	a.waitUp(t)
	// A second node, so that each policy below changes a's rules (a
	// policy version that leaves them as they were is not sent to a).
	_, sec, err := co.c.Store().CreateJoinKey(context.Background(), "test", wire.CreateJoinKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bk, _ := wgtypes.GeneratePrivateKey()
	if _, _, _, err := co.c.Store().Enroll(context.Background(), sec, store.EnrollParams{PublicKey: bk.PublicKey().String(), Name: "b"}); err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimPrefix(co.url, "https://")
	restart := func() {
		t.Helper()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		co = startCoordinatorOn(t, ln, co.dir)
	}
	co.stop()
	db := filepath.Join(co.dir, "wiremesh.db")
	backup, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	restart()
	for port := range 5 {
		co.setPolicy(t, fmt.Sprintf(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:%d"]}]}`, 1000+port))
	}
	policyIs := func(v uint64) func(*fakeEngine) bool {
		return func(e *fakeEngine) bool {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.last != nil && e.last.PolicyVersion == v
		}
	}
	a.eng.wait(t, "policy 5", policyIs(5))
	co.stop()
	if err := os.WriteFile(db, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(db + "-wal")
	os.Remove(db + "-shm")
	restart()
	a.eng.wait(t, "the restored state (no policy)", policyIs(0))
	co.setPolicy(t, allowAll)
	a.eng.wait(t, "the first policy set after the restore", policyIs(1))
}
