package coordinator

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// seedNodes inserts n nodes with tags, endpoints and a service each, in
// one transaction on the coordinator's SQLite file, and publishes them
// with a change made through the store.
func seedNodes(tb testing.TB, c *Coordinator, n int) {
	tb.Helper()
	ctx := context.Background()
	db := openDB(tb, c)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback()
	for i := range n {
		_, err := tx.ExecContext(ctx, `INSERT INTO nodes(name, public_key, host_index, cred_id, cred_hash, tags, endpoints, services, health, created, version)
			VALUES(?, ?, ?, ?, 'x', '["tag:web","tag:eu"]', ?, '[{"name":"web","port":8080,"tags":["v2"]}]', '{"web":{"health":"passing"}}', ?, 'v0.4.0')`,
			fmt.Sprintf("node-%05d", i), fmt.Sprintf("pk%05d", i), i+1, fmt.Sprintf("nd%05d", i), fmt.Sprintf(`["10.0.%d.%d:51820"]`, i/250, i%250+1), time.Now().UnixMilli())
		if err != nil {
			tb.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
	// Any change through the store makes the caches and the next publish
	// read the database again.
	if _, _, err := c.store.CreateJoinKey(ctx, "bench", wire.CreateJoinKeyRequest{}); err != nil {
		tb.Fatal(err)
	}
	if err := c.publish(ctx); err != nil {
		tb.Fatal(err)
	}
}

// openDB opens the SQLite database of c, beside its store, for writes
// that benchmarks make in bulk; it is closed when tb ends. A change made
// through the store after them makes the coordinator see them.
func openDB(tb testing.TB, c *Coordinator) *sql.DB {
	tb.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(c.cfg.DataDir, "wiremesh.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// BenchmarkNodesAPI measures GET /v1/nodes through the whole handler
// (auth, store, JSON) at 1,000 and 10,000 nodes, for a default page (1,000
// nodes) and the full list: when nothing changed since the last listing
// (warm), after a node was seen or reported health (patched into the
// cached listing), after a versioned change such as an enrollment (whose
// publish refreshed the listing), and cold (a change not yet published:
// the listing reads the database). Target: < 50 ms at 10,000.
func BenchmarkNodesAPI(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		ts := startServer(b, time.Hour)
		seedNodes(b, ts.c, n)
		h := ts.c.Handler()
		s := ts.c.store
		// change makes a versioned change: node 1's endpoints move.
		port := 0
		change := func() {
			port++
			if _, err := s.SetEndpoints(context.Background(), 1, []string{fmt.Sprintf("198.51.100.1:%d", port)}); err != nil {
				b.Fatal(err)
			}
		}
		for _, q := range []string{"", fmt.Sprintf("?limit=%d", n)} {
			page := "default"
			if q != "" {
				page = "all"
			}
			for _, before := range []struct {
				name string
				fn   func()
			}{
				{"warm", func() {}},
				{"after-touch", func() { s.Touch(context.Background(), int64(n/2), time.Now()) }},
				// A versioned change publishes a new state, which reads
				// every node and refreshes the listing; untimed, as it is
				// the change's cost, not the listing's.
				{"after-change", func() { change(); ts.c.publish(context.Background()) }},
				// A change whose publish has not happened yet: the
				// listing reads the store itself.
				{"cold", change},
			} {
				b.Run(fmt.Sprintf("nodes=%d/page=%s/%s", n, page, before.name), func(b *testing.B) {
					for b.Loop() {
						b.StopTimer()
						before.fn()
						b.StartTimer()
						req := httptest.NewRequest("GET", wire.PathNodes+q, nil)
						req.Header.Set("Authorization", "Bearer "+ts.admin)
						w := httptest.NewRecorder()
						h.ServeHTTP(w, req)
						if w.Code != http.StatusOK {
							b.Fatalf("%d %s", w.Code, w.Body)
						}
						io.Copy(io.Discard, w.Body)
					}
					b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
				})
			}
		}
	}
}

// BenchmarkNodesPage measures rendering the web UI's nodes page (100 nodes
// a page, its first and its last page) through the whole coordinator
// handler with a logged-in session, on a seeded store of 1,000 and 10,000
// nodes. Target: < 100 ms at 10,000.
func BenchmarkNodesPage(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		ts := startServer(b, time.Hour)
		seedNodes(b, ts.c, n)
		h := ts.c.Handler()
		session := uiLogin(b, h, ts.admin)
		for _, pg := range []struct{ name, query string }{
			{"first", ""},
			{"last", fmt.Sprintf("?after=%d", n-100)},
		} {
			b.Run(fmt.Sprintf("nodes=%d/page=%s", n, pg.name), func(b *testing.B) {
				for b.Loop() {
					req := httptest.NewRequest("GET", "/ui/nodes"+pg.query, nil)
					req.AddCookie(session)
					w := httptest.NewRecorder()
					h.ServeHTTP(w, req)
					if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), fmt.Sprintf("node-%05d", n-1)) && pg.name == "last" {
						b.Fatalf("%d %.300s", w.Code, w.Body)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
			})
		}
	}
}

// uiLogin logs in to the web UI with an admin token and returns the
// session cookie.
func uiLogin(tb testing.TB, h http.Handler, token string) *http.Cookie {
	tb.Helper()
	form := url.Values{"csrf": {"x"}, "token": {token}}
	req := httptest.NewRequest("POST", "/ui/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "wiremesh_login", Value: "x"})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	for _, c := range w.Result().Cookies() {
		if c.Name == "wiremesh_session" && c.Value != "" {
			return c
		}
	}
	tb.Fatalf("login: %d %s", w.Code, w.Body)
	return nil
}
