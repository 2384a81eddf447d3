package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// inProcess is the base URL of a client that calls a Handler.
const inProcess = "http://in-process"

// maxAnswer bounds a decoded answer (not a stream).
const maxAnswer = 64 << 20

// Client calls one coordinator's API. Its methods may be called
// concurrently; WithToken makes a copy that shares the connections.
type Client struct {
	url   string // base URL without a trailing slash; inProcess with a Handler
	token string // bearer secret; "" sends no Authorization
	http  *http.Client
}

// Config configures a Client.
type Config struct {
	// URL is the coordinator's https://HOST:PORT. Required but with
	// Handler.
	URL string
	// Pins are the coordinator's certificate pins, the only identities the
	// client trusts. Required with URL, unless PinsFunc is set.
	Pins credential.Pins
	// PinsFunc, when set, is asked for the pins at each new connection
	// instead (an agent learns new pins from its netmaps). Nil: Pins.
	PinsFunc func() credential.Pins
	// Handler, when set, is called in-process instead of URL (the UI calls
	// the coordinator's own handler). Nil: HTTPS to URL.
	Handler http.Handler
	// Token is the bearer secret sent with each request. Empty: none.
	Token string
	// Timeout bounds each call, reading the answer included; it must be
	// zero for a client that opens netmap streams. Zero: no bound but the
	// context's.
	Timeout time.Duration
}

// New returns a client of the coordinator cfg names.
func New(cfg Config) (*Client, error) {
	c := &Client{token: cfg.Token, http: &http.Client{Timeout: cfg.Timeout}}
	switch {
	case cfg.Handler != nil:
		c.url = inProcess
		c.http.Transport = handlerTransport{cfg.Handler}
	case cfg.URL == "":
		return nil, errors.New("client: no coordinator URL")
	case cfg.PinsFunc != nil:
		c.url = strings.TrimRight(cfg.URL, "/")
		c.http.Transport = pinnedTransport(credential.ClientTLSFunc(cfg.PinsFunc))
	case len(cfg.Pins) == 0:
		return nil, fmt.Errorf("client: no certificate pin for %s", cfg.URL)
	default:
		c.url = strings.TrimRight(cfg.URL, "/")
		c.http.Transport = pinnedTransport(credential.ClientTLS(cfg.Pins))
	}
	return c, nil
}

// pinnedTransport is HTTPS with tc, a pinned TLS configuration
// (credential.ClientTLS), and bounded dials and handshakes.
func pinnedTransport(tc *tls.Config) *http.Transport {
	return &http.Transport{
		TLSClientConfig:     tc,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		ForceAttemptHTTP2:   true,
		IdleConnTimeout:     time.Minute,
	}
}

// WithToken returns a copy of c that sends token instead.
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// Close closes idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Do sends method path (with its query) and in as JSON (nil: no body),
// and decodes a 2xx answer into out (nil: discarded). It returns the
// answer's header. A non-2xx answer is an *Error; a coordinator that
// cannot be reached is another error.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) (http.Header, error) {
	resp, err := c.Open(ctx, method, path, in)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
		return resp.Header, nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(out); err != nil {
		return nil, fmt.Errorf("read the answer of %s %s: %w", method, path, err)
	}
	return resp.Header, nil
}

// Open sends a request like Do and returns a 2xx answer with its body
// unread, for streams (the netmap); the caller closes it.
func (c *Client) Open(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, body)
	if err != nil {
		return nil, fmt.Errorf("request %s %s: %w", method, path, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach coordinator %s: %w", c.url, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, errorFrom(resp)
	}
	return resp, nil
}

// List GETs every page of a paginated list at path, following the Link
// headers' rel="next".
func List[T any](ctx context.Context, c *Client, path string) ([]T, error) {
	all := []T{}
	for range 10000 { // a cursor that never ends is a bug
		var page []T
		h, err := c.Do(ctx, http.MethodGet, path, nil, &page)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		next := NextPage(h)
		if next == "" || next == path || len(page) == 0 {
			return all, nil
		}
		path = next
	}
	return nil, fmt.Errorf("list %s: too many pages", path)
}

// NextPage returns the path and query of the rel="next" link in h, or ""
// on the last page.
func NextPage(h http.Header) string {
	for _, v := range h.Values("Link") {
		for link := range strings.SplitSeq(v, ",") {
			target, params, ok := strings.Cut(link, ";")
			if !ok || !strings.Contains(params, `rel="next"`) {
				continue
			}
			u, err := url.Parse(strings.Trim(strings.TrimSpace(target), "<>"))
			if err == nil {
				return u.RequestURI()
			}
		}
	}
	return ""
}

// Enroll admits a node; c carries the join key's secret as its token.
func (c *Client) Enroll(ctx context.Context, req wire.EnrollRequest) (wire.EnrollResponse, error) {
	var out wire.EnrollResponse
	_, err := c.Do(ctx, http.MethodPost, wire.PathEnroll, req, &out)
	return out, err
}

// CoordinatorKey fetches the coordinator's proof key, unchecked. A
// coordinator that predates proofs answers wire.CodeNotFound.
func (c *Client) CoordinatorKey(ctx context.Context) (wire.CoordinatorKey, error) {
	var out wire.CoordinatorKey
	_, err := c.Do(ctx, http.MethodGet, wire.PathCoordinatorKey, nil, &out)
	return out, err
}

// handlerTransport calls an http.Handler in-process. It suits requests
// whose answers end (not streams).
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := &recorder{h: http.Header{}}
	t.h.ServeHTTP(rec, req)
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	return &http.Response{
		Status: fmt.Sprintf("%d %s", rec.code, http.StatusText(rec.code)), StatusCode: rec.code,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: rec.h, Body: io.NopCloser(&rec.body), ContentLength: int64(rec.body.Len()), Request: req,
	}, nil
}

// recorder is the in-memory ResponseWriter of handlerTransport.
type recorder struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.h }

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}
