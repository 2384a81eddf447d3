// Package node is the agent that runs on every host of a mesh: it enrolls
// with the coordinator, keeps the node's WireGuard interface in line with
// the netmap the coordinator streams, caches that netmap so that a
// coordinator outage never interrupts traffic, and answers local status
// requests on a unix socket.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Config configures an Agent. Only cmd/ fills it from flags.
type Config struct {
	// StateDir holds the key, identity, netmap cache, lock and socket.
	// Required; created 0700 if missing.
	StateDir string
	// JoinKey is a join key string. Needed only for the first start.
	JoinKey string
	// Name is the node name to ask for. Empty: from Hostname.
	Name string
	// Hostname is sent when Name is empty. Empty: os.Hostname().
	Hostname string
	// Interface is the WireGuard interface name. Empty: "wm0".
	Interface string
	// ListenPort is WireGuard's UDP port. Zero: 51820.
	ListenPort int
	// Endpoints are extra "ip:port" endpoints to advertise, such as a
	// public address in front of NAT. Empty: the coordinator's observation.
	Endpoints []string
	// MTU of the interface. Zero: 1420.
	MTU int
	// EnrollTimeout bounds how long the first start retries an unreachable
	// coordinator. Zero: one minute.
	EnrollTimeout time.Duration
	// NewEngine makes the data path. Nil: NewWireGuardEngine.
	NewEngine func(EngineConfig) (Engine, error)
	// Logger receives the agent's logs. Nil: slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{Interface: "wm0", ListenPort: 51820, MTU: 1420, EnrollTimeout: time.Minute}
}

// Validate checks c and fills in defaults.
func (c *Config) Validate() error {
	d := DefaultConfig()
	if c.StateDir == "" {
		return errors.New("state dir is required")
	}
	if c.Interface == "" {
		c.Interface = d.Interface
	}
	if len(c.Interface) > 15 {
		return fmt.Errorf("interface name %q is longer than 15 bytes", c.Interface)
	}
	if c.ListenPort == 0 {
		c.ListenPort = d.ListenPort
	}
	if c.ListenPort < 0 || c.ListenPort > 65535 {
		return fmt.Errorf("bad listen port %d", c.ListenPort)
	}
	if c.MTU == 0 {
		c.MTU = d.MTU
	}
	if c.MTU < 1280 || c.MTU > 65535 {
		return fmt.Errorf("bad MTU %d: want 1280..65535", c.MTU)
	}
	if c.EnrollTimeout == 0 {
		c.EnrollTimeout = d.EnrollTimeout
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	if c.NewEngine == nil {
		c.NewEngine = NewWireGuardEngine
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Agent is a running node.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	state  *stateDir
	key    wgtypes.Key
	id     Identity
	engine Engine
	ctl    *controlClient

	mu        sync.Mutex
	netmap    *wire.Netmap // guarded by mu; the applied netmap
	connected bool         // guarded by mu; a netmap stream is open
	lastErr   string       // guarded by mu; why the last stream ended
}

// New prepares an agent: it locks the state dir, loads or makes the key,
// and enrolls if the node has no identity yet. A refused or malformed join
// key leaves nothing in the state dir.
func New(ctx context.Context, cfg Config) (_ *Agent, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger}
	if a.state, err = openStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			a.state.Close()
		}
	}()
	key, haveKey, err := a.state.loadKey()
	if err != nil {
		return nil, err
	}
	id, haveID, err := a.state.loadIdentity()
	if err != nil {
		return nil, err
	}
	switch {
	case haveID && !haveKey:
		return nil, fmt.Errorf("state dir %s has an identity but no %s: the node cannot be recovered; delete it on the coordinator and re-enroll with an empty state dir", cfg.StateDir, keyFile)
	case haveID:
		if cfg.JoinKey != "" {
			a.log.Info("already enrolled; ignoring the join key", "node", id.Node.Name)
		}
	default:
		if cfg.JoinKey == "" {
			return nil, fmt.Errorf("state dir %s holds no enrollment: start with --join KEY", cfg.StateDir)
		}
		if !haveKey {
			if key, err = wgtypes.GeneratePrivateKey(); err != nil {
				return nil, fmt.Errorf("generate key: %w", err)
			}
		}
		if id, err = a.enroll(ctx, key); err != nil {
			return nil, err
		}
		if !haveKey {
			if err := a.state.saveKey(key); err != nil {
				return nil, err
			}
		}
		if err := a.state.saveIdentity(id); err != nil {
			return nil, err
		}
		a.log.Info("enrolled", "node", id.Node.Name, "addr", id.Node.Addresses[0].Addr().String())
	}
	a.key, a.id = key, id
	a.ctl = newControlClient(id.Coordinator, id.Pin, a.log)
	return a, nil
}

func (a *Agent) enroll(ctx context.Context, key wgtypes.Key) (Identity, error) {
	jk, err := credential.ParseJoinKey(a.cfg.JoinKey)
	if err != nil {
		return Identity{}, err
	}
	ctl := newControlClient(jk.URL, jk.Pin, a.log)
	defer ctl.close()
	req := wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: key.PublicKey().String(), Name: a.cfg.Name, Hostname: a.cfg.Hostname}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.EnrollTimeout)
	defer cancel()
	for b := newBackoff(); ; {
		resp, err := ctl.enroll(ctx, jk.Secret, req)
		if err == nil {
			return Identity{Coordinator: jk.URL, Pin: jk.Pin, Credential: resp.Credential, Node: resp.Node, Prefixes: resp.Prefixes}, nil
		}
		if errors.Is(err, ErrRefused) {
			return Identity{}, fmt.Errorf("enrollment: %w", err)
		}
		a.log.Warn("enrollment failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return Identity{}, fmt.Errorf("enrollment: coordinator unreachable for %s: %w", a.cfg.EnrollTimeout, err)
		case <-time.After(b.next()):
		}
	}
}

// Identity returns the node's enrolled identity.
func (a *Agent) Identity() Identity { return a.id }

// Run brings the data path up, applies the cached netmap, then follows the
// coordinator until ctx is done or the coordinator refuses the node. It
// removes the interface before returning.
func (a *Agent) Run(ctx context.Context) (err error) {
	defer a.state.Close()
	defer a.ctl.close()
	a.engine, err = a.cfg.NewEngine(EngineConfig{
		Interface: a.cfg.Interface, ListenPort: a.cfg.ListenPort, MTU: a.cfg.MTU,
		PrivateKey: a.key, Logger: a.log,
	})
	if err != nil {
		return err
	}
	defer a.engine.Close()
	self := &wire.Netmap{Self: a.id.Node, Prefixes: a.id.Prefixes}
	if cached, err := a.state.loadNetmap(); err != nil {
		a.log.Warn("ignoring netmap cache", "err", err)
	} else if cached != nil && cached.Self.PublicKey == a.key.PublicKey().String() {
		self = cached
		a.log.Info("starting from cached netmap", "version", cached.Version, "peers", len(cached.Peers))
	}
	if err := a.apply(self, false); err != nil {
		return err
	}
	api, err := a.listenLocalAPI()
	if err != nil {
		return err
	}
	defer api.close()
	a.log.Info("agent up", "node", a.id.Node.Name, "interface", a.cfg.Interface, "port", a.cfg.ListenPort)
	return a.follow(ctx)
}

// follow keeps a netmap stream open, reconnecting with backoff, until ctx
// is done or the coordinator refuses the node.
func (a *Agent) follow(ctx context.Context) error {
	req := wire.MapRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: a.key.PublicKey().String(), ListenPort: a.cfg.ListenPort, Endpoints: a.cfg.Endpoints}
	for b := newBackoff(); ; {
		err := a.ctl.stream(ctx, a.id.Credential, req, func(nm *wire.Netmap) {
			a.setConnected(true, "")
			b.reset()
			if err := a.apply(nm, true); err != nil {
				a.log.Error("apply netmap", "err", err, "version", nm.Version)
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		a.setConnected(false, err.Error())
		if errors.Is(err, ErrRefused) {
			return fmt.Errorf("coordinator refused this node (deleted or expired?): %w; re-enroll with an empty state dir and --join KEY", err)
		}
		d := b.next()
		a.log.Warn("coordinator unreachable; keeping the last netmap", "err", err, "retry_in", d.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

// apply hands nm to the engine and, if save, caches it on disk.
func (a *Agent) apply(nm *wire.Netmap, save bool) error {
	a.mu.Lock()
	old := a.netmap
	a.mu.Unlock()
	if old != nil && nm.Version != 0 && nm.Version < old.Version {
		a.log.Warn("ignoring older netmap", "version", nm.Version, "have", old.Version)
		return nil
	}
	if err := a.engine.Apply(nm); err != nil {
		return err
	}
	a.mu.Lock()
	a.netmap = nm
	a.mu.Unlock()
	a.log.Info("netmap applied", "version", nm.Version, "peers", len(nm.Peers))
	if save {
		if err := a.state.saveNetmap(nm); err != nil {
			a.log.Error("cannot cache netmap; the data path keeps working", "err", err)
		}
	}
	return nil
}

func (a *Agent) setConnected(ok bool, why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.connected, a.lastErr = ok, why
}

// backoff yields growing, jittered delays between 100 ms and 2 s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) reset() { b.d = 100 * time.Millisecond }

func (b *backoff) next() time.Duration {
	d := b.d/2 + rand.N(b.d/2+1)
	b.d = min(2*b.d, 2*time.Second)
	return d
}
