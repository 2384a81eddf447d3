package coordinator

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/atomicfile"
	"github.com/wiremesh/wiremesh/store"
)

// Several coordinators on one PostgreSQL database act as one (docs/
// operations.md). They share, through the database, their identity (the
// generated CA, by which agents pin them, and the proof key), the state
// and its changes (announced with NOTIFY, store.Listen), the list of
// coordinators that join keys and netmaps carry, which nodes are online,
// and the lease under which one of them does the timed work.

// defaultBeat is how often a coordinator says it is up, renews its lease
// if it holds it, and vouches for the nodes streaming from it, unless
// Config.beat (tests) says otherwise. A vouch for a node, and the lease,
// last three beats: a coordinator that dies leaves its nodes online
// elsewhere for at most that long, and its lease to another after it.
const defaultBeat = 5 * time.Second

// timersLease is the lease of node expiry and the ephemeral sweep.
const timersLease = "timers"

// onlineFor is how long a vouch for a node lasts.
func (c *Coordinator) onlineFor() time.Duration { return 3 * c.cfg.beat }

// shareIdentity makes the coordinator's identity in its data dir the one
// the coordinators of its database share: the first to start stores its
// own (the CA it generated, unless it serves an operator certificate, and
// its proof key), and the others write it over theirs. It returns the
// files it wrote.
func shareIdentity(ctx context.Context, st store.Store, cfg Config, proofPath string) (written []string, err error) {
	if cfg.TLSCert == "" {
		if _, _, _, err := loadOrCreateCA(cfg.DataDir); err != nil {
			return nil, err
		}
		certPath, keyPath := filepath.Join(cfg.DataDir, "ca.crt"), filepath.Join(cfg.DataDir, "ca.key")
		cert, err := os.ReadFile(certPath)
		if err != nil {
			return nil, err
		}
		key, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, err
		}
		shared, err := st.SharedSecret(ctx, "ca", string(cert)+string(key))
		if err != nil {
			return nil, fmt.Errorf("share the TLS identity: %w", err)
		}
		if shared != string(cert)+string(key) {
			sc, sk, ok := splitPEM(shared)
			if !ok {
				return nil, errors.New("the database's shared CA is malformed")
			}
			if err := atomicfile.Write(certPath, sc, 0o600); err != nil {
				return nil, err
			}
			if err := atomicfile.Write(keyPath, sk, 0o600); err != nil {
				return nil, err
			}
			// The leaf was signed by the CA replaced: LoadTLS issues
			// another.
			for _, f := range []string{"tls.crt", "tls.key"} {
				if err := os.Remove(filepath.Join(cfg.DataDir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
					return nil, err
				}
			}
			written = append(written, certPath, keyPath)
		}
	}
	k, _, err := loadProofKey(proofPath)
	if err != nil {
		return nil, err
	}
	local := k.EncodePrivate()
	shared, err := st.SharedSecret(ctx, "proof", local)
	if err != nil {
		return nil, fmt.Errorf("share the proof key: %w", err)
	}
	if shared != local {
		if err := atomicfile.Write(proofPath, []byte(shared+"\n"), 0o600); err != nil {
			return nil, err
		}
		written = append(written, proofPath)
	}
	return written, nil
}

// splitPEM splits a CA certificate followed by its key, as shareIdentity
// stores them, into the two.
func splitPEM(s string) (cert, key []byte, ok bool) {
	i := strings.Index(s, "-----BEGIN PRIVATE KEY-----")
	if i <= 0 {
		return nil, nil, false
	}
	return []byte(s[:i]), []byte(s[i:]), bytes.HasPrefix([]byte(s), []byte("-----BEGIN CERTIFICATE-----"))
}

// self is this coordinator as the others and the agents know it.
func (c *Coordinator) self() (store.Coordinator, error) {
	r, err := c.ownRelay()
	if err != nil {
		return store.Coordinator{}, err
	}
	return store.Coordinator{URLs: c.urls(), Relay: r}, nil
}

// urls are this coordinator's own URLs, the advertised one first.
func (c *Coordinator) urls() []string {
	return append([]string{c.cfg.AdvertiseURL}, c.cfg.OtherURLs...)
}

// allURLs are the URLs of every coordinator serving the mesh in s, this
// one's first, for join keys: at most credential.MaxURLs.
func (c *Coordinator) allURLs(s *snapshot) []string {
	return addURLs(c.urls(), s.coordinators)
}

// netmapURLs are the URLs of every coordinator serving the mesh in s for
// netmaps: in the database's order, so that every coordinator builds the
// same netmap (an agent that moves to another names the netmap it holds
// by its digest), then this one's if it is not registered yet.
func (c *Coordinator) netmapURLs(s *snapshot) []string {
	out := addURLs(nil, s.coordinators)
	for _, u := range c.urls() {
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out[:min(len(out), credential.MaxURLs)]
}

// addURLs appends the coordinators' URLs that out lacks, up to
// credential.MaxURLs in all.
func addURLs(out []string, cos []store.Coordinator) []string {
	for _, co := range cos {
		for _, u := range co.URLs {
			if !slices.Contains(out, u) {
				out = append(out, u)
			}
		}
	}
	return out[:min(len(out), credential.MaxURLs)]
}

// bundle is what a join key or admin token with secret sec carries: the
// URLs of every coordinator, this one's first, and the pins.
func (c *Coordinator) bundle(sec credential.Secret) credential.Bundle {
	urls := c.allURLs(c.state.Load())
	return credential.Bundle{URL: urls[0], OtherURLs: urls[1:], Pins: c.pins, Secret: sec}
}

// newHolderID returns a coordinator's lease holder id: its URL and a
// random suffix, so that two processes given the same URL by mistake do
// not both hold a lease.
func newHolderID(url string) string {
	var b [4]byte
	rand.Read(b[:])
	return url + "#" + hex.EncodeToString(b[:])
}

// follow re-reads the state whenever another coordinator announces a
// change (store.Listen), until ctx is done.
func (c *Coordinator) follow(ctx context.Context) {
	for {
		var once sync.Once
		err := c.store.Listen(ctx, c.cfg.PollInterval, func(uint64) {
			once.Do(func() { c.listens.Add(1) })
			if err := c.publish(ctx); err != nil && ctx.Err() == nil {
				c.log.Error("publish a change made elsewhere", "err", err)
			}
		})
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("database listener lost; changes made by other coordinators arrive by polling until it is back; reconnecting in 1 s", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// catchUp publishes every change committed so far, through any
// coordinator, without waiting for its announcement.
func (c *Coordinator) catchUp(ctx context.Context) error {
	if _, err := c.store.Sync(ctx); err != nil {
		return err
	}
	return c.publish(ctx)
}

// beat says, every beat until ctx is done, that this coordinator is up,
// vouches for the nodes streaming from it, and takes or renews the timers
// lease. It holds the lease, as far as it is concerned, until three beats
// after the start of its last renewal: no later than the database says
// (the holder's clock is the one the lease was written with), so that no
// other coordinator can take it while this one still thinks it holds it.
// Gaining it pokes gained.
func (c *Coordinator) beat(ctx context.Context, gained chan<- struct{}) {
	t := time.NewTicker(c.cfg.beat)
	defer t.Stop()
	defer func() {
		if c.isLeader() {
			// Handed over at once, rather than when it runs out.
			c.leaderUntil.Store(0)
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			c.store.Lease(rctx, timersLease, c.id, 0)
		}
	}()
	for {
		c.vouchMu.Lock()
		if ids := c.onlineIDs(); len(ids) > 0 {
			if err := c.store.SetOnline(ctx, ids, time.Now().Add(c.onlineFor())); err != nil && ctx.Err() == nil {
				c.log.Warn("cannot record the nodes online", "err", err)
			}
		}
		c.vouchMu.Unlock()
		if self, err := c.self(); err == nil {
			if ver, err := c.store.RegisterCoordinator(ctx, self); err != nil && ctx.Err() == nil {
				c.log.Warn("cannot record this coordinator as up", "err", err)
			} else if ver != 0 {
				c.publish(ctx)
			}
		}
		was := c.isLeader()
		start := time.Now()
		ok, err := c.store.Lease(ctx, timersLease, c.id, 3*c.cfg.beat)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			// Whether it holds it is unknown: it stops the timed work
			// when its last renewal runs out.
			c.log.Warn("cannot renew the lease of timed work", "err", err)
		case ok:
			c.leaderUntil.Store(start.Add(3 * c.cfg.beat).UnixNano())
			if !was {
				c.log.Info("this coordinator now runs node expiry and the ephemeral sweep")
				select {
				case gained <- struct{}{}:
				default:
				}
			}
		default:
			c.leaderUntil.Store(0)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// isLeader reports whether this coordinator holds the timers lease.
func (c *Coordinator) isLeader() bool {
	return time.Now().UnixNano() < c.leaderUntil.Load()
}

// onlineIDs are the nodes that hold a netmap stream on this coordinator.
func (c *Coordinator) onlineIDs() []int64 {
	c.onlineMu.Lock()
	defer c.onlineMu.Unlock()
	ids := make([]int64, 0, len(c.online))
	for id := range c.online {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
