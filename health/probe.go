package health

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"time"

	"github.com/wiremesh/wiremesh/service"
)

// A Prober runs an http, tcp or exec check once. Probe returns by the time
// ctx is done — the runner gives ctx the check's timeout and cancels it
// when the check is removed — and leaves nothing running behind it. The
// output need not be trimmed.
type Prober interface {
	Probe(ctx context.Context, c service.CheckDef) (Status, string)
}

// Probes is the Prober that does the real thing.
type Probes struct {
	// HTTP sends the requests of http checks; nil means NewHTTPClient().
	HTTP *http.Client
}

// NewHTTPClient returns the client http checks use by default: no proxy
// (checks target the local host), no redirects followed (a 3xx passes as
// it is), no idle connections kept between runs.
func NewHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{}).DialContext,
			DisableKeepAlives:   true,
			TLSHandshakeTimeout: 10 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Probe runs c once.
func (p Probes) Probe(ctx context.Context, c service.CheckDef) (Status, string) {
	switch c.Kind {
	case service.KindHTTP:
		client := p.HTTP
		if client == nil {
			client = NewHTTPClient()
		}
		return probeHTTP(ctx, client, c.Target)
	case service.KindTCP:
		return probeTCP(ctx, c.Target)
	case service.KindExec:
		return probeExec(ctx, c.Args)
	}
	return Critical, fmt.Sprintf("cannot probe a %q check", c.Kind)
}

// httpStatus maps an HTTP status code to a check status.
func httpStatus(code int) Status {
	switch {
	case code >= 200 && code < 400:
		return Passing
	case code == http.StatusTooManyRequests:
		return Warning
	}
	return Critical
}

func probeHTTP(ctx context.Context, client *http.Client, url string) (Status, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Critical, err.Error()
	}
	req.Header.Set("User-Agent", "wiremesh-health-check")
	req.Header.Set("Accept", "text/plain, text/*, */*")
	resp, err := client.Do(req)
	if err != nil {
		return Critical, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxOutput))
	return httpStatus(resp.StatusCode), fmt.Sprintf("HTTP GET %s: %s Output: %s", url, resp.Status, body)
}

func probeTCP(ctx context.Context, addr string) (Status, string) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return Critical, err.Error()
	}
	conn.Close()
	return Passing, "TCP connect " + addr + ": success"
}

// exitStatus maps a script's exit code to a check status.
func exitStatus(code int) Status {
	switch code {
	case 0:
		return Passing
	case 1:
		return Warning
	}
	return Critical
}

// probeExec runs argv in a process group of its own. When ctx is done the
// whole group is killed, and so is anything the script left running when
// it exits.
func probeExec(ctx context.Context, argv []string) (Status, string) {
	if len(argv) == 0 {
		return Critical, "no program to run"
	}
	var out limitedBuffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second // for pipes held open by escaped children
	setGroup(cmd)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Critical, err.Error()
	}
	err := cmd.Wait()
	killGroup(cmd)
	var exit *exec.ExitError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return Critical, fmt.Sprintf("timed out after %s\n%s", time.Since(start).Round(time.Millisecond), out.String())
	case ctx.Err() != nil:
		return Critical, "stopped: " + ctx.Err().Error()
	case err == nil || errors.Is(err, exec.ErrWaitDelay):
		return Passing, out.String()
	case errors.As(err, &exit):
		if out.Len() == 0 {
			return exitStatus(exit.ExitCode()), exit.Error()
		}
		return exitStatus(exit.ExitCode()), out.String()
	}
	return Critical, err.Error()
}

// limitedBuffer keeps the first MaxOutput bytes written to it and drops
// the rest.
type limitedBuffer struct {
	bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := MaxOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
