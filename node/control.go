package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// ErrRefused is returned (wrapped) when the coordinator refuses a join key
// or node credential: retrying cannot help. The *client.Error beside it
// says why (client.CodeOf).
var ErrRefused = errors.New("refused by coordinator")

// controlClient talks to the coordinator over pinned HTTPS.
type controlClient struct {
	url  string
	http *http.Client
	log  *slog.Logger
}

func newControlClient(url string, pin credential.Pin, log *slog.Logger) *controlClient {
	tr := &http.Transport{
		TLSClientConfig:     credential.ClientTLS(pin),
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout: 5 * time.Second,
		ForceAttemptHTTP2:   true,
		IdleConnTimeout:     time.Minute,
	}
	return &controlClient{url: url, http: &http.Client{Transport: tr}, log: log}
}

func (c *controlClient) close() { c.http.CloseIdleConnections() }

// post sends a JSON request with a bearer token and returns the response
// when it is 2xx; otherwise an error carrying the coordinator's message.
func (c *controlClient) post(ctx context.Context, path, token string, body any) (*http.Response, error) {
	return c.do(ctx, http.MethodPost, path, token, body)
}

// put sends a JSON request like post and discards a 2xx response.
func (c *controlClient) put(ctx context.Context, path, token string, body any) error {
	resp, err := c.do(ctx, http.MethodPut, path, token, body)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.Body.Close()
}

// do sends a request; an empty token sends no Authorization, a nil body
// no body.
func (c *controlClient) do(ctx context.Context, method, path, token string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, r)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, credential.ErrPinMismatch) {
			return nil, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return nil, fmt.Errorf("reach coordinator %s: %w", c.url, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	e := client.ErrorFrom(resp)
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden ||
		resp.StatusCode == http.StatusConflict || resp.StatusCode == http.StatusBadRequest {
		return nil, fmt.Errorf("%w: %w", ErrRefused, e)
	}
	return nil, fmt.Errorf("coordinator %s: %w", c.url, e)
}

// coordinatorKey fetches the coordinator's proof key. A coordinator that
// predates proofs answers 404 (wire.CodeNotFound).
func (c *controlClient) coordinatorKey(ctx context.Context) (string, error) {
	resp, err := c.do(ctx, http.MethodGet, wire.PathCoordinatorKey, "", nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var k wire.CoordinatorKey
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&k); err != nil {
		return "", fmt.Errorf("read the coordinator's proof key: %w", err)
	}
	if err := credential.CheckPublicKey(k.PublicKey); err != nil {
		return "", fmt.Errorf("the coordinator's proof key %q: %w", k.PublicKey, err)
	}
	return k.PublicKey, nil
}

// enroll admits this node with a join key secret.
func (c *controlClient) enroll(ctx context.Context, key credential.Secret, req wire.EnrollRequest) (wire.EnrollResponse, error) {
	var out wire.EnrollResponse
	resp, err := c.post(ctx, wire.PathEnroll, key.String(), req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return out, fmt.Errorf("read enrollment answer: %w", err)
	}
	return out, nil
}

// stream opens a netmap stream and calls fn with every netmap until the
// stream ends, ctx is done, or nothing arrives for three keep-alive
// intervals.
func (c *controlClient) stream(ctx context.Context, cred string, req wire.MapRequest, fn func(*wire.Netmap)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A watchdog ends a silent stream; every message pushes it back.
	silence := 45 * time.Second
	watchdog := time.AfterFunc(silence, func() { cancel(errors.New("netmap stream silent")) })
	defer watchdog.Stop()
	resp, err := c.post(ctx, wire.PathNetmap, cred, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(io.LimitReader(resp.Body, 1<<40))
	for {
		var m wire.MapMessage
		if err := dec.Decode(&m); err != nil {
			if cause := context.Cause(ctx); cause != nil {
				return cause
			}
			return fmt.Errorf("netmap stream: %w", err)
		}
		if m.Netmap != nil {
			if ka := time.Duration(m.Netmap.KeepAliveInterval); ka > 0 {
				silence = 3 * ka
			}
			fn(m.Netmap)
		}
		watchdog.Reset(silence)
	}
}
