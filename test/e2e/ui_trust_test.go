package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/wiremesh/wiremesh/test/lab"
)

// TestUITrustedCA follows docs/ui.md, "Trusting the generated CA", with
// Debian's chromium: without the coordinator's ca.crt the browser refuses
// the UI (ERR_CERT_AUTHORITY_INVALID, as a new user saw it); with ca.crt
// imported into its NSS database by the doc's certutil command, the login
// page loads, with no certificate check turned off.
func TestUITrustedCA(t *testing.T) {
	lab.Require(t, "certutil")
	// The coordinator is reached at 127.0.0.1, the name its generated
	// certificate carries.
	m := newBareMesh(t, "--listen", "0.0.0.0:8443", "--advertise-url", "https://127.0.0.1:8443")
	addr := startProxy(t, func(ctx context.Context) (net.Conn, error) {
		return m.coordHost.DialContext(ctx, "tcp", "127.0.0.1:8443")
	})
	url := "https://" + addr + "/ui/"

	home := t.TempDir()
	title := func() (string, error) {
		ctx := startChromium(t, chromedp.Env("HOME="+home))
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
			return "", err
		}
		return chromedp.Run(ctx, chromedp.Evaluate[string]("document.title"))
	}
	if got, err := title(); err == nil && strings.Contains(got, "Log in") {
		t.Fatalf("chromium loaded the UI without trusting the coordinator's CA (title %q): the test does not check certificates", got)
	} else if err == nil || !strings.Contains(err.Error(), "ERR_CERT_AUTHORITY_INVALID") {
		t.Fatalf("before the CA is trusted: %v, title %q; want ERR_CERT_AUTHORITY_INVALID", err, got)
	}

	// docs/ui.md's commands, with $HOME the browser's and the data dir
	// the test's.
	nssdb := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(nssdb, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"certutil", "-d", "sql:" + nssdb, "-N", "--empty-password"},
		{"certutil", "-d", "sql:" + nssdb, "-A", "-t", "C,,", "-n", "wiremesh", "-i", filepath.Join(m.dataDir, "ca.crt")},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	got, err := title()
	if err != nil || !strings.Contains(got, "Log in") {
		t.Fatalf("after certutil imported ca.crt: %v, title %q; want the login page", err, got)
	}
}
