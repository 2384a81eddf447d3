package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/wiremesh/wiremesh/test/lab"
)

// Screenshots of the browser test go to $WIREMESH_ARTIFACTS (default: a
// directory wiremesh-ui-artifacts under the system's temporary directory);
// with WIREMESH_UPDATE_DOCS_IMG=1 the ones named in docShots are copied to
// docs/img too.
const (
	artifactsEnv  = "WIREMESH_ARTIFACTS"
	updateDocsEnv = "WIREMESH_UPDATE_DOCS_IMG"
	docsImgDir    = "../../docs/img"
)

// uiBrowser is a headless chromium in the root namespace that reaches the
// coordinator in its lab namespace through a loopback TCP proxy.
type uiBrowser struct {
	t    *testing.T
	ctx  context.Context
	base string // https://127.0.0.1:PORT
	dir  string // where screenshots go
	docs map[string]bool
	n    int // screenshots taken
}

// chromiumPath is Debian's chromium.
const chromiumPath = "/usr/bin/chromium"

// newUIBrowser starts the proxy and chromium; a t.Cleanup stops both and
// removes chromium's profile. docShots names the screenshots worth
// copying into docs/img.
func newUIBrowser(t *testing.T, m *mesh, docShots ...string) *uiBrowser {
	t.Helper()
	target := fmt.Sprintf("%s:%d", m.coordHost.Addr, coordPort)
	addr := startProxy(t, func(ctx context.Context) (net.Conn, error) { return m.coordHost.DialContext(ctx, "tcp", target) })
	b := &uiBrowser{t: t, base: "https://" + addr, dir: artifactsDir(t), docs: map[string]bool{}}
	for _, s := range docShots {
		b.docs[s] = true
	}
	// The browser reaches the coordinator at 127.0.0.1 through the proxy,
	// a name its certificate does not carry.
	b.ctx = startChromium(t, chromedp.Flag("ignore-certificate-errors", true))
	return b
}

// artifactsDir returns (creating it) the directory for screenshots.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(artifactsEnv)
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "wiremesh-ui-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// startChromium starts headless chromium with a fresh profile and returns
// a context for its first tab; extra adds or overrides options.
func startChromium(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	if _, err := exec.LookPath(chromiumPath); err != nil {
		if lab.InCI() {
			t.Fatalf("chromium is required in CI: %v", err)
		}
		t.Skipf("no chromium: %v", err)
	}
	profile := t.TempDir() // removed after chromium is gone: cleanups run last-in first-out
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(profile),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("headless", "new"),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter"),
		// Nothing but the proxy on loopback: no name resolves.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.WindowSize(1280, 900),
	}
	opts = append(opts, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		if err := chromedp.Cancel(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("close chromium: %v", err)
		}
		cancel()
		cancelAlloc() // waits for the browser process to exit
	})
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// startProxy listens on 127.0.0.1:0 and forwards every connection to a
// connection from dial. A t.Cleanup closes the listener and every
// connection and waits for its goroutines.
func startProxy(t *testing.T, dial func(context.Context) (net.Conn, error)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{conns: map[net.Conn]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.serve(ctx, c, dial) })
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		p.closeAll()
		p.wg.Wait()
	})
	return ln.Addr().String()
}

// proxy tracks the connections of startProxy.
type proxy struct {
	wg sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]bool // open connections; guarded by mu
	closed bool              // guarded by mu
}

// track adds c to the open connections; false once closeAll ran.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
	c.Close()
}

func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
}

// serve copies bytes both ways between c and a new upstream connection.
func (p *proxy) serve(ctx context.Context, c net.Conn, dial func(context.Context) (net.Conn, error)) {
	if !p.track(c) {
		c.Close()
		return
	}
	defer p.untrack(c)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	up, err := dial(dctx)
	cancel()
	if err != nil {
		return
	}
	if !p.track(up) {
		up.Close()
		return
	}
	defer p.untrack(up)
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(up, c); closeWrite(up) })
	io.Copy(c, up)
	closeWrite(c)
	wg.Wait()
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// step runs actions with a timeout; on failure it saves a screenshot and
// fails the test.
func (b *uiBrowser) step(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.shot("failed")
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		b.t.Fatalf("%s: %v\nat %s:\n%s", what, err, loc, body)
	}
}

// open navigates to a UI path.
func (b *uiBrowser) open(path string) {
	b.t.Helper()
	b.step("open "+path, 20*time.Second, chromedp.Navigate(b.base+path))
}

// eval evaluates a JavaScript expression (awaiting a promise) into T.
func eval[T any](b *uiBrowser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// text returns the text of the first element matching a CSS selector.
func (b *uiBrowser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.shot("failed")
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// location is the tab's URL.
func (b *uiBrowser) location() string {
	b.t.Helper()
	loc, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		b.t.Fatal(err)
	}
	return loc
}

// shot saves a full-page PNG screenshot as NN-name.png, and into
// docs/img when asked to and the name is one of the doc shots.
func (b *uiBrowser) shot(name string) {
	b.t.Helper()
	buf, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	b.n++
	file := fmt.Sprintf("%02d-%s.png", b.n, name)
	if err := os.WriteFile(filepath.Join(b.dir, file), buf, 0o644); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
	}
	if b.docs[name] && os.Getenv(updateDocsEnv) == "1" {
		if err := os.WriteFile(filepath.Join(docsImgDir, "ui-"+name+".png"), buf, 0o644); err != nil {
			b.t.Errorf("docs screenshot %s: %v", name, err)
		}
	}
}

// markPage sets a marker in the page's window; it is gone after a reload.
func (b *uiBrowser) markPage() {
	b.t.Helper()
	eval[bool](b, `window.__wiremeshNoReload = true`)
}

// samePage fails the test if the page was reloaded since markPage.
func (b *uiBrowser) samePage(what string) {
	b.t.Helper()
	if !eval[bool](b, `window.__wiremeshNoReload === true`) {
		b.t.Fatalf("%s: the page was reloaded", what)
	}
}

// postStatus POSTs a form body from the page with fetch and returns the
// status code.
func (b *uiBrowser) postStatus(path, body string) int {
	b.t.Helper()
	js := fmt.Sprintf(`fetch(%q, {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: %q, redirect: "manual"}).then(r => r.status)`, path, body)
	return eval[int](b, js)
}

// hasText reports whether the page's text holds s.
func (b *uiBrowser) hasText(s string) bool {
	b.t.Helper()
	return strings.Contains(eval[string](b, `document.body.innerText`), s)
}
