package node

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// ErrRefused is returned (wrapped) when the coordinator refuses a join key
// or node credential: retrying cannot help. The *client.Error beside it
// says why (client.CodeOf).
var ErrRefused = errors.New("refused by coordinator")

// control is the agent's part that deals with the coordinator: the node's
// identity and private key, the coordinator's proof key and pins, the
// times of the proofs made, the client and the netmap stream's state. It
// calls no other part; its methods take idMu, then mu, and nothing while
// holding mu.
type control struct {
	log   *slog.Logger
	clock func() time.Time // the time proofs carry
	state *stateDir

	// id and api are set before Run starts the agent's goroutines (by New,
	// enrollment and re-enrolment), then only read. id.Node.PublicKey is
	// the key at start; see key.
	id  Identity
	api *controlClient

	idMu sync.Mutex // serialises writes of node.json (saveIdentity); taken before mu

	mu        sync.Mutex
	key       wgtypes.Key     // guarded by mu; the node's private key
	coordKey  string          // guarded by mu; the coordinator's proof key, "" until known
	pins      credential.Pins // guarded by mu; the pins the coordinator is trusted by
	urls      []string        // guarded by mu; every coordinator's URL, for node.json
	lastProof int64           // guarded by mu; unix time of the last netmap proof made
	connected bool            // guarded by mu; a netmap stream is open
	lastErr   string          // guarded by mu; why the last stream ended

	// lastReport and lastConnReport are guarded by mu: the unix times in
	// nanoseconds of the last services and connectivity report proofs made.
	lastReport, lastConnReport int64
}

// setIdentity makes id, with key, the node's: at start, after enrollment
// and after re-enrolment, before Run starts the agent's goroutines.
func (c *control) setIdentity(id Identity, key wgtypes.Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.id, c.key, c.coordKey, c.pins, c.urls = id, key, id.CoordinatorKey, id.Pins, id.Coordinators
}

// call sends a request with the node's credential; see controlClient.call.
func (c *control) call(ctx context.Context, method, path string, in any) error {
	return c.api.call(ctx, method, path, c.id.Credential, in, nil)
}

func (c *control) isConnected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

func (c *control) setConnected(ok bool, why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connected, c.lastErr = ok, why
}

// streamState reports whether a netmap stream is open and why the last one
// ended.
func (c *control) streamState() (connected bool, lastErr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected, c.lastErr
}

// controlClient is the agent's side of the coordinator's API: the client
// package's pinned HTTPS, with the coordinator's answers sorted into
// refusals (ErrRefused) and failures worth a retry. It knows every
// coordinator of the mesh (several may share a database) and talks to one
// at a time; failover moves it to another.
type controlClient struct {
	pins func() credential.Pins
	log  *slog.Logger

	mu    sync.Mutex
	urls  []string                  // guarded by mu; every coordinator's URL
	url   string                    // guarded by mu; the one in use
	apis  map[string]*client.Client // guarded by mu; by URL, made when first used
	tried map[string]bool           // guarded by mu; URLs that failed since the last success
}

// newControlClient returns a client of the coordinators at urls, the
// first in use first, that trusts them by the pin set pins returns at
// each new connection.
func newControlClient(urls []string, pins func() credential.Pins, log *slog.Logger) (*controlClient, error) {
	if len(urls) == 0 {
		return nil, errors.New("no coordinator URL")
	}
	c := &controlClient{pins: pins, log: log, apis: map[string]*client.Client{}, tried: map[string]bool{}}
	c.urls, c.url = slices.Clone(urls), urls[0]
	if _, err := c.clientFor(c.url); err != nil {
		return nil, err
	}
	return c, nil
}

// clientFor returns the client of url, making it if there is none. The
// caller holds mu, or owns c.
func (c *controlClient) clientFor(url string) (*client.Client, error) {
	if api := c.apis[url]; api != nil {
		return api, nil
	}
	api, err := client.New(client.Config{URL: url, PinsFunc: c.pins})
	if err != nil {
		return nil, err
	}
	c.apis[url] = api
	return api, nil
}

// current returns the URL in use and its client.
func (c *controlClient) current() (string, *client.Client) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.url, c.apis[c.url]
}

// failover marks the URL in use as failed and moves to another, at random
// among those that have not failed since the last success (so that the
// nodes of a coordinator that died spread over the others). It reports
// false when every URL has failed since: the caller should wait before
// the next attempt, which starts a new round.
func (c *controlClient) failover() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tried[c.url] = true
	var left []string
	for _, u := range c.urls {
		if !c.tried[u] {
			left = append(left, u)
		}
	}
	if len(left) == 0 {
		clear(c.tried)
		return false
	}
	next := left[rand.IntN(len(left))]
	if _, err := c.clientFor(next); err != nil {
		c.log.Warn("skipping a coordinator URL", "url", next, "err", err)
		c.tried[next] = true
		return true
	}
	c.log.Info("moving to another coordinator", "from", c.url, "to", next)
	c.url = next
	return true
}

// succeeded records that the URL in use answered.
func (c *controlClient) succeeded() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.tried)
}

// setURLs makes urls (from a netmap) the coordinators' URLs, keeping the
// one in use, and reports whether they changed.
func (c *controlClient) setURLs(urls []string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if slices.Equal(c.urls, urls) {
		return false
	}
	c.urls = slices.Clone(urls)
	for u, api := range c.apis {
		if u != c.url && !slices.Contains(urls, u) {
			api.Close()
			delete(c.apis, u)
		}
	}
	return true
}

// allURLs returns every coordinator URL the client knows.
func (c *controlClient) allURLs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.urls)
}

func (c *controlClient) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, api := range c.apis {
		api.Close()
	}
}

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
	url, _ := c.current()
	return fmt.Errorf("coordinator %s: %w", url, err)
}

// call sends a request with token as bearer and decodes a 2xx answer into
// out (nil: discarded).
func (c *controlClient) call(ctx context.Context, method, path, token string, in, out any) error {
	_, api := c.current()
	_, err := api.WithToken(token).Do(ctx, method, path, in, out)
	return c.refusal(err)
}

// coordinatorKey fetches the coordinator's proof key. A coordinator that
// predates proofs answers 404 (wire.CodeNotFound).
func (c *controlClient) coordinatorKey(ctx context.Context) (string, error) {
	_, api := c.current()
	k, err := api.CoordinatorKey(ctx)
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
	_, api := c.current()
	resp, err := api.WithToken(key.String()).Enroll(ctx, req)
	return resp, c.refusal(err)
}

// stream opens a netmap stream and calls fn with every netmap until the
// stream ends, ctx is done, or nothing arrives for three keep-alive
// intervals. have, if not nil, is the netmap the agent holds: the
// coordinator may resume the stream with it (req.HaveDigest) instead of
// sending it whole.
func (c *controlClient) stream(ctx context.Context, cred string, req wire.MapRequest, have *wire.Netmap, fn func(*wire.Netmap)) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// A watchdog ends a silent stream; every message pushes it back.
	silence := 45 * time.Second
	watchdog := time.AfterFunc(silence, func() { cancel(errors.New("netmap stream silent")) })
	defer watchdog.Stop()
	var cur *wire.Netmap // the stream's last netmap, deltas applied
	if have != nil && req.Deltas {
		dg := have.Digest()
		req.HaveDigest, cur = hex.EncodeToString(dg[:]), have
		if ka := time.Duration(have.KeepAliveInterval); ka > 0 {
			silence = 3 * ka
		}
	}
	_, api := c.current()
	resp, err := api.WithToken(cred).Open(ctx, http.MethodPost, wire.PathNetmap, req)
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
		switch {
		case m.Netmap != nil:
			if ka := time.Duration(m.Netmap.KeepAliveInterval); ka > 0 {
				silence = 3 * ka
			}
			cur = m.Netmap
			fn(cur)
		case m.Delta != nil && cur == nil:
			return errors.New("netmap stream: a delta before any netmap")
		case m.Delta != nil:
			nm, err := m.Delta.Apply(cur)
			if err != nil {
				return fmt.Errorf("netmap stream: %w", err)
			}
			cur = nm
			fn(cur)
		}
		watchdog.Reset(silence)
	}
}
