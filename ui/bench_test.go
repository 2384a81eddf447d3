package ui

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// BenchmarkNodesPage renders the nodes page (the first and the last page
// of 100, and a page of 1,000, the most the UI lists at once) over a fake
// API holding 1,000 and 10,000 nodes. The target: under 100 ms at
// 10,000.
func BenchmarkNodesPage(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		h := newHarness(b, n)
		br := h.browser()
		br.login(testToken)
		for _, page := range []struct{ name, path string }{
			{"page=100", "/ui/nodes"},
			{"page=1000", "/ui/nodes?limit=1000"},
			{"page=last", "/ui/nodes?" + url.Values{"after": {fmt.Sprint(n - 100)}}.Encode()},
		} {
			b.Run(fmt.Sprintf("nodes=%d/%s", n, page.name), func(b *testing.B) {
				start := time.Now()
				for b.Loop() {
					r := br.get(page.path)
					if r.StatusCode != http.StatusOK || !strings.Contains(r.body, "node-") {
						b.Fatalf("%s: %s", page.path, r.Status)
					}
				}
				b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/op")
			})
		}
	}
}
