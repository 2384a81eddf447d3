package standalone

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// enrollTimeout bounds how long the first start tries to reach the
// coordinator, as the agent's default --enroll-timeout does.
const enrollTimeout = time.Minute

// enroll admits the relay with its join key and stores its identity. An
// unreachable coordinator (or one that fails) is tried again with the
// backoff of the netmap stream for up to enrollTimeout; a refusal ends it.
func (r *Relay) enroll(ctx context.Context) error {
	jk, err := credential.ParseJoinKey(r.cfg.JoinKey)
	if err != nil {
		return fmt.Errorf("relay: join key: %w", err)
	}
	api, err := client.New(client.Config{URL: jk.URL, Pins: jk.Pins, Token: jk.Secret.String(), Timeout: enrollTimeout})
	if err != nil {
		return err
	}
	defer api.Close()
	ctx, cancel := context.WithTimeout(ctx, enrollTimeout)
	defer cancel()
	desc := r.cfg.describe(r.pub)
	req := wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: r.pub, Name: r.cfg.Name, Relay: &desc}
	var resp wire.EnrollResponse
	for retry := r.cfg.RetryMin; ; retry = min(2*retry, r.cfg.RetryMax) {
		if resp, err = api.Enroll(ctx, req); err == nil {
			break
		}
		if s := client.StatusOf(err); s/100 == 4 {
			return fmt.Errorf("relay: enroll at %s: %w", jk.URL, err)
		}
		wait := retry/2 + rand.N(retry/2+1)
		r.log.Warn("enrollment failed; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return fmt.Errorf("relay: enroll at %s: coordinator unreachable for %v: %w", jk.URL, enrollTimeout, err)
		case <-time.After(wait):
		}
	}
	switch {
	case resp.Node.Relay == nil:
		return fmt.Errorf("relay: the coordinator at %s enrolled this relay as an agent: it predates relay nodes (protocol 5); upgrade it, and delete node %s", jk.URL, resp.Node.Name)
	case credential.CheckPublicKey(resp.CoordinatorKey) != nil:
		return fmt.Errorf("relay: the coordinator at %s sent no valid proof key %q", jk.URL, resp.CoordinatorKey)
	}
	id := &Identity{Coordinator: jk.URL, Pins: jk.Pins, Credential: resp.Credential, Node: resp.Node, CoordinatorKey: resp.CoordinatorKey}
	if err := writeJSON(r.cfg.StateDir, identityFile, id); err != nil {
		return fmt.Errorf("relay: store identity: %w", err)
	}
	r.mu.Lock()
	r.id = id
	r.mu.Unlock()
	r.log.Info("relay enrolled", "node", resp.Node.Name, "url", jk.URL)
	return nil
}

// follow holds the netmap stream until ctx is done, opening it again
// after a failure with a backoff that grows from RetryMin to RetryMax
// (with jitter) and starts over after a stream that lasted.
func (r *Relay) follow(ctx context.Context, api *client.Client) {
	retry := r.cfg.RetryMin
	for {
		start := time.Now()
		err := r.stream(ctx, api)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > r.cfg.RetryMax {
			retry = r.cfg.RetryMin
		}
		wait := retry/2 + rand.N(retry/2+1)
		level := slog.LevelWarn
		if errors.Is(err, errRefused) {
			level = slog.LevelError
		}
		r.log.Log(ctx, level, "netmap stream ended; serving from the last netmap", "err", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		retry = min(2*retry, r.cfg.RetryMax)
	}
}

// stream opens the netmap stream with a proof of the relay's key and
// takes every netmap until it ends, ctx is done, or it is silent for
// three keep-alive intervals.
func (r *Relay) stream(ctx context.Context, api *client.Client) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	silence := 45 * time.Second
	watchdog := time.AfterFunc(silence, func() { cancel(errors.New("netmap stream silent")) })
	defer watchdog.Stop()
	r.mu.Lock()
	cred, coordKey := r.id.Credential, r.id.CoordinatorKey
	at := max(time.Now().Unix(), r.lastProof)
	r.lastProof = at
	r.mu.Unlock()
	proof, err := credential.NetmapProof(privateBytes(r.key), coordKey, time.Unix(at, 0))
	if err != nil {
		return err
	}
	desc := r.cfg.describe(r.pub)
	req := wire.MapRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: r.pub, Version: r.cfg.Version, Proof: proof, Relay: &desc}
	resp, err := api.WithToken(cred).Open(ctx, http.MethodPost, wire.PathNetmap, req)
	if err != nil {
		switch client.StatusOf(err) {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusConflict:
			return fmt.Errorf("%w: %w", errRefused, err)
		}
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
			r.take(m.Netmap)
		}
		watchdog.Reset(silence)
	}
}

// take makes nm the relay's netmap: its clients may attach, and only
// they (Recheck closes the others); it is cached for the next start, and
// the coordinator's pins it carries are kept.
func (r *Relay) take(nm *wire.Netmap) {
	r.mu.Lock()
	if nm.Version < r.version {
		r.mu.Unlock()
		return
	}
	r.setClients(nm)
	var pinsChanged bool
	if ps, err := credential.ParsePins(nm.CoordinatorPins); err == nil && len(ps) > 0 && !ps.Equal(r.id.Pins) {
		r.id.Pins, pinsChanged = ps, true
	}
	id := *r.id
	r.mu.Unlock()
	r.server.Recheck()
	if err := writeJSON(r.cfg.StateDir, netmapFile, nm); err != nil {
		r.log.Error("netmap not cached", "err", err)
	}
	if pinsChanged {
		if err := writeJSON(r.cfg.StateDir, identityFile, &id); err != nil {
			r.log.Error("coordinator pins not stored", "err", err)
		}
	}
	r.log.Info("netmap taken", "version", nm.Version, "clients", len(nm.RelayClients))
}
