package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// The clients and the admin of TestCoordinatorsKillLoop: they know every
// coordinator and move between them as the agent does.

// coordinatorSet is the agent's rule for moving between coordinators
// (node/control.go, controlClient.failover): after a failure, to one at
// random of those that have not failed since the last success; when all
// have, the caller pauses and a new round starts.
type coordinatorSet struct {
	urls  []string
	url   string // the one in use
	tried map[string]bool
}

// newCoordinatorSet returns the set of urls with urls[first % len] in use.
func newCoordinatorSet(urls []string, first int) *coordinatorSet {
	return &coordinatorSet{urls: slices.Clone(urls), url: urls[first%len(urls)], tried: map[string]bool{}}
}

// failover marks the URL in use as failed and moves to another; false
// when every one has failed since the last success (and a new round
// starts).
func (s *coordinatorSet) failover() bool {
	s.tried[s.url] = true
	var left []string
	for _, u := range s.urls {
		if !s.tried[u] {
			left = append(left, u)
		}
	}
	if len(left) == 0 {
		clear(s.tried)
		return false
	}
	s.url = left[rand.IntN(len(left))]
	return true
}

// succeeded records that the URL in use answered.
func (s *coordinatorSet) succeeded() { clear(s.tried) }

// setURLs makes urls, from a netmap, the coordinators' URLs.
func (s *coordinatorSet) setURLs(urls []string) {
	if len(urls) > 0 {
		s.urls = slices.Clone(urls)
	}
}

// haPause is the agent's pause after a round over every coordinator:
// jittered, from 100 ms doubling to 2 s.
type haPause struct{ d time.Duration }

func (p *haPause) reset() { p.d = 0 }

// wait pauses, or returns when ctx is done.
func (p *haPause) wait(ctx context.Context) {
	p.d = min(max(2*p.d, 100*time.Millisecond), 2*time.Second)
	select {
	case <-ctx.Done():
	case <-time.After(p.d/2 + rand.N(p.d/2+1)):
	}
}

// haClient is a stormClient that knows every coordinator and moves to
// another on a failure, as the agent does, and follows its netmap stream
// once enrolled. Its fields but those under mu belong to its goroutine
// until that ends.
type haClient struct {
	*stormClient
	coords      *coordinatorSet
	answeredErr map[int]int // enrollment attempts answered with an error (429, 5xx), by status
	recovered   bool        // answered 200 to a proven retry: an earlier attempt's answer was lost
	failovers   int         // moves to another coordinator
	lastProof   int64       // unix time of the last netmap proof made

	mu      sync.Mutex
	netmap  *wire.Netmap // guarded by mu; the newest netmap received
	streams []haStream   // guarded by mu; every stream that delivered a netmap
	failed  error        // guarded by mu; a stream refused: the agent would stop
}

// haStream is one netmap stream.
type haStream struct {
	url    string
	opened time.Time // its first netmap
	ended  time.Time // zero while open
}

// newHAClient returns a client named name that dials from h, from src if
// it is valid, and starts with the coordinator jk.URLs()[first].
func newHAClient(t *testing.T, h *lab.Host, src netip.Addr, jk credential.Bundle, name string, first int) *haClient {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &haClient{
		stormClient: &stormClient{hostname: name, key: k, pub: k.PublicKey().String(), src: src, http: pinnedClient(h, jk.Pins, src)},
		coords:      newCoordinatorSet(jk.URLs(), first),
		answeredErr: map[int]int{},
	}
}

// enroll waits for release, then posts the enrollment until it gets a
// definite answer (see TestCoordinatorsKillLoop), moving to another
// coordinator after each failure and pausing after a round over all.
func (c *haClient) enroll(ctx context.Context, jk credential.Bundle, release <-chan struct{}) error {
	req := wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: c.pub, Hostname: c.hostname}
	select {
	case <-ctx.Done():
		return fmt.Errorf("%s: %w before the first attempt", c.hostname, ctx.Err())
	case <-release:
	}
	start := time.Now()
	var last string
	var pause haPause
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: no definite answer after %d attempts (last: %s)", c.hostname, c.attempts, last)
		}
		c.attempts++
		c.url = c.coords.url
		t0 := time.Now()
		body, _ := json.Marshal(req)
		code, _, b, err := c.post(ctx, jk, body)
		switch {
		case err != nil:
			last = fmt.Sprintf("%s: %v", c.url, err)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				c.cut++ // sent, perhaps: its fate is unknown
			}
		case code == http.StatusOK:
			if err := json.Unmarshal(b, &c.resp); err != nil {
				last = fmt.Sprintf("%s: 200 with a bad body: %v", c.url, err)
				c.cut++
				break
			}
			c.acked, c.took, c.last = true, time.Since(start), time.Since(t0)
			c.recovered = req.Proof != ""
			return nil
		case code == http.StatusConflict && req.Proof == "" && errorCode(b) == wire.CodeAlreadyEnrolled:
			if c.cut == 0 {
				return fmt.Errorf("%s: attempt %d at %s refused as already enrolled, but every earlier attempt was answered (with an error: %v, the last %s): an attempt answered with an error created a node",
					c.hostname, c.attempts, c.url, c.answeredErr, last)
			}
			if req.Proof, err = c.enrollProof(ctx); err == nil {
				continue // at once, there
			}
			last = fmt.Sprintf("%s: %v", c.url, err)
		case code == http.StatusTooManyRequests || code >= 500:
			last = fmt.Sprintf("%s: %d: %s", c.url, code, b)
			c.answeredErr[code]++
		default:
			return fmt.Errorf("%s: attempt %d at %s: HTTP %d: %s", c.hostname, c.attempts, c.url, code, b)
		}
		c.next(ctx, &pause)
	}
}

// errorCode returns the code of an error answer's body.
func errorCode(body []byte) wire.ErrorCode {
	var e wire.Error
	json.Unmarshal(body, &e)
	return e.Code
}

// enrollProof fetches the proof key of the coordinator in use and proves
// c's key to it, as the agent does to be given back the node an attempt
// whose answer was lost enrolled.
func (c *haClient) enrollProof(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, stormAttempt)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+wire.PathCoordinatorKey, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var k wire.CoordinatorKey
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("coordinator key: HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil {
		return "", fmt.Errorf("coordinator key: %w", err)
	}
	return credential.EnrollProof(c.key, k.PublicKey, time.Now())
}

// next moves to another coordinator after a failure, or pauses when all
// have failed since the last success.
func (c *haClient) next(ctx context.Context, pause *haPause) {
	if c.coords.failover() {
		c.failovers++
		return
	}
	pause.wait(ctx)
}

// follow keeps a netmap stream open, moving to another coordinator when
// one fails, until ctx is done or a coordinator refuses the node.
func (c *haClient) follow(ctx context.Context) {
	var pause haPause
	for {
		err := c.stream(ctx, pause.reset)
		if ctx.Err() != nil {
			return
		}
		var se *streamRefusal
		if errors.As(err, &se) && se.code != http.StatusTooManyRequests && se.code < 500 {
			c.mu.Lock()
			c.failed = fmt.Errorf("%s: %w", c.hostname, err)
			c.mu.Unlock()
			return
		}
		c.next(ctx, &pause)
	}
}

// streamRefusal is a netmap request answered with an error.
type streamRefusal struct {
	url  string
	code int
	body []byte
}

func (e *streamRefusal) Error() string {
	return fmt.Sprintf("netmap stream at %s: HTTP %d: %s", e.url, e.code, e.body)
}

// stream opens one netmap stream at the coordinator in use and takes its
// netmaps until it ends, ctx is done or nothing arrives for three
// keep-alive intervals; opened runs with the first netmap.
func (c *haClient) stream(ctx context.Context, opened func()) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	silence := 6 * time.Second // three of the coordinators' keep-alive intervals
	watchdog := time.AfterFunc(silence, func() { cancel(errors.New("netmap stream silent")) })
	defer watchdog.Stop()
	url := c.coords.url
	at := max(time.Now().Unix(), c.lastProof)
	c.lastProof = at
	proof, err := credential.NetmapProof(c.key, c.resp.CoordinatorKey, time.Unix(at, 0))
	if err != nil {
		return err
	}
	body, _ := json.Marshal(wire.MapRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: c.pub, Proof: proof})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+wire.PathNetmap, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.resp.Credential)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return &streamRefusal{url: url, code: resp.StatusCode, body: b}
	}
	dec := json.NewDecoder(resp.Body)
	first := true
	defer func() {
		if !first {
			c.mu.Lock()
			c.streams[len(c.streams)-1].ended = time.Now()
			c.mu.Unlock()
		}
	}()
	for {
		var msg wire.MapMessage
		if err := dec.Decode(&msg); err != nil {
			if cause := context.Cause(ctx); cause != nil {
				return cause
			}
			return fmt.Errorf("netmap stream at %s: %w", url, err)
		}
		watchdog.Reset(silence)
		nm := msg.Netmap
		if nm == nil {
			continue
		}
		c.coords.setURLs(nm.CoordinatorURLs)
		c.mu.Lock()
		if first {
			c.streams = append(c.streams, haStream{url: url, opened: time.Now()})
		}
		if c.netmap == nil || nm.Version >= c.netmap.Version { // the agent ignores an older one
			c.netmap = nm
		}
		c.mu.Unlock()
		if first {
			first = false
			c.coords.succeeded()
			opened()
		}
	}
}

// latest returns the newest netmap received, nil before the first.
func (c *haClient) latest() *wire.Netmap {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.netmap
}

// streaming reports whether c has a stream open and where.
func (c *haClient) streaming() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.streams); n > 0 && c.streams[n-1].ended.IsZero() {
		return c.streams[n-1].url, true
	}
	return "", false
}

// haAdmin sets policy versions through whichever coordinator answers,
// moving to another on a failure.
type haAdmin struct {
	c      *adminClient
	coords *coordinatorSet

	// Results, written by setPolicy.
	acked map[uint64]string // version → text of each policy answered 200
	ports map[string]int    // text → port of each policy sent
	last  uint64            // the last version answered 200
	// Attempts refused a connection, without an answer, answered with an
	// error (5xx).
	refused, cut, answeredErr int
	err                       error // run's: a policy refused
}

// run sets a policy every haPolicyEvery, on a new port each time, until
// stop is closed or ctx is done.
func (a *haAdmin) run(ctx context.Context, stop <-chan struct{}) {
	tick := time.NewTicker(haPolicyEvery)
	defer tick.Stop()
	for port := 1001; ; port++ {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if a.err = a.setPolicy(ctx, port); a.err != nil {
			return
		}
	}
}

// haPolicy is the policy of port: every node may reach the hub on it.
func haPolicy(port int) string {
	return fmt.Sprintf(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["node:hub:%d"], "proto": "tcp"}]}`, port)
}

// setPolicy sets haPolicy(port), retrying on another coordinator until it
// is answered 200. It starts at the coordinators in turn, as an admin does
// behind round-robin DNS.
func (a *haAdmin) setPolicy(ctx context.Context, port int) error {
	text := haPolicy(port)
	a.ports[text] = port
	a.coords.url = a.coords.urls[port%len(a.coords.urls)]
	body, _ := json.Marshal(wire.SetPolicyRequest{Text: text})
	var pause haPause
	for ctx.Err() == nil {
		a.c.url = a.coords.url
		code, b, err := a.c.put(ctx, wire.PathPolicy, body)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			a.refused++
		case err != nil:
			a.cut++
		case code == http.StatusOK:
			var p wire.Policy
			if err := json.Unmarshal(b, &p); err != nil {
				a.cut++
				break
			}
			a.coords.succeeded()
			a.acked[p.Version], a.last = text, p.Version
			return nil
		case code >= 500:
			a.answeredErr++
		default:
			return fmt.Errorf("set policy at %s: HTTP %d: %s", a.c.url, code, b)
		}
		if !a.coords.failover() {
			pause.wait(ctx)
		}
	}
	return ctx.Err()
}

// put sends body to path with PUT and returns the answer.
func (c *adminClient) put(ctx context.Context, path string, body []byte) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}
