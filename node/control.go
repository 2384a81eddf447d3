package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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

// controlClient is the agent's side of the coordinator's API: the client
// package's pinned HTTPS, with the coordinator's answers sorted into
// refusals (ErrRefused) and failures worth a retry.
type controlClient struct {
	url string
	api *client.Client
	log *slog.Logger
}

// newControlClient returns a client that trusts the coordinator by the pin
// set pins returns at each new connection.
func newControlClient(url string, pins func() credential.Pins, log *slog.Logger) (*controlClient, error) {
	api, err := client.New(client.Config{URL: url, PinsFunc: pins})
	if err != nil {
		return nil, err
	}
	return &controlClient{url: url, api: api, log: log}, nil
}

func (c *controlClient) close() { c.api.Close() }

// refusal wraps err with ErrRefused when retrying cannot help: a
// coordinator that is not the pinned one, or an answer of 400, 401, 403
// or 409.
func (c *controlClient) refusal(err error) error {
	if errors.Is(err, credential.ErrPinMismatch) {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	switch client.StatusOf(err) {
	case 0:
		return err
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusConflict:
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return fmt.Errorf("coordinator %s: %w", c.url, err)
}

// call sends a request with token as bearer and decodes a 2xx answer into
// out (nil: discarded).
func (c *controlClient) call(ctx context.Context, method, path, token string, in, out any) error {
	_, err := c.api.WithToken(token).Do(ctx, method, path, in, out)
	return c.refusal(err)
}

// coordinatorKey fetches the coordinator's proof key. A coordinator that
// predates proofs answers 404 (wire.CodeNotFound).
func (c *controlClient) coordinatorKey(ctx context.Context) (string, error) {
	k, err := c.api.CoordinatorKey(ctx)
	if err != nil {
		return "", c.refusal(err)
	}
	if err := credential.CheckPublicKey(k.PublicKey); err != nil {
		return "", fmt.Errorf("the coordinator's proof key %q: %w", k.PublicKey, err)
	}
	return k.PublicKey, nil
}

// enroll admits this node with a join key secret.
func (c *controlClient) enroll(ctx context.Context, key credential.Secret, req wire.EnrollRequest) (wire.EnrollResponse, error) {
	resp, err := c.api.WithToken(key.String()).Enroll(ctx, req)
	return resp, c.refusal(err)
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
	resp, err := c.api.WithToken(cred).Open(ctx, http.MethodPost, wire.PathNetmap, req)
	if err != nil {
		return c.refusal(err)
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
