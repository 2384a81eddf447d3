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
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/dns"
	"github.com/wiremesh/wiremesh/gossip"
	"github.com/wiremesh/wiremesh/health"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Config configures an Agent. Only cmd/ fills it from flags.
type Config struct {
	// StateDir holds the key, identity, netmap cache, lock and socket.
	// Required; created 0700 if missing.
	StateDir string
	// JoinKey is a join key string. Needed only for the first start, and
	// to enroll again, keeping the state dir, when the coordinator refuses
	// the stored identity (deleted or expired node).
	JoinKey string
	// ForceReauth enrolls again with JoinKey, under a new key, even when
	// the coordinator still accepts the stored identity. The old node
	// stays on the coordinator.
	ForceReauth bool
	// Name is the node name to ask for. Empty: from Hostname.
	Name string
	// Hostname is sent when Name is empty. Empty: os.Hostname().
	Hostname string
	// Interface is the WireGuard interface name. Empty: "wm0".
	Interface string
	// ListenPort is WireGuard's UDP port. Zero: 51820.
	ListenPort int
	// Endpoints are extra "ip:port" endpoints to advertise, such as a
	// public address in front of NAT: at most wire.MaxEndpoints, each an
	// IP:port literal (wire.CheckEndpoints). Empty: the coordinator's
	// observation.
	Endpoints []string
	// RelayOnly sends every peer's traffic through relays, never direct
	// (--relay-only).
	RelayOnly bool
	// NoRelay never sends through a relay: peers without a working direct
	// path are unreachable (--no-relay).
	NoRelay bool
	// MTU of the interface. Zero: 1420.
	MTU int
	// EnrollTimeout bounds how long the first start retries an unreachable
	// coordinator. Zero: one minute.
	EnrollTimeout time.Duration
	// NewEngine makes the data path. Nil: NewWireGuardEngine.
	NewEngine func(EngineConfig) (Engine, error)
	// ServicesFile is a HuJSON file of local services and their checks.
	// Empty: none (services can still be registered at runtime).
	ServicesFile string
	// DNS configures the DNS server. The agent fills in Prefixes,
	// AllowQuerier (only this host is answered: loopback and the node's
	// own addresses), Logger, and Upstreams when they are nil (from
	// ResolvConf, without the server's own addresses); it counts queries
	// for its metrics, then calls Observe, if set.
	DNS dns.Config
	// DNSPort is the port the DNS server listens on (UDP and TCP), at
	// DNSAddr and at the node's overlay addresses. Zero: 53. Negative: no
	// DNS server.
	DNSPort int
	// DNSAddr is the loopback address the DNS server listens on. Zero:
	// 127.0.0.1.
	DNSAddr netip.Addr
	// ResolvConf is where upstream resolvers are read from when
	// DNS.Upstreams is nil. Empty: /etc/resolv.conf.
	ResolvConf string
	// NoGossip runs no serf member: peers count as alive and their
	// services as passing, as far as DNS is concerned.
	NoGossip bool
	// Gossip tunes the serf member; the agent fills in Name, BindAddr,
	// Port, Keys and Logger from the netmap. Zero fields: gossip's
	// defaults.
	Gossip gossip.Config
	// Version is the agent's wiremesh version, reported to the
	// coordinator. Empty: not reported.
	Version string
	// KeyRotation is how often the agent replaces its WireGuard key. Zero:
	// only on demand (wiremesh rotate-key).
	KeyRotation time.Duration
	// NoFilter turns the inbound packet filter off: every peer reaches
	// every port. Only for measuring the filter's cost; never in service.
	NoFilter bool
	// MetricsListen is the HOST:PORT (plain HTTP) where the agent serves
	// Prometheus metrics at /metrics. Empty: no metrics endpoint.
	// DefaultConfig: 127.0.0.1:9472, this host only.
	MetricsListen string
	// LogNewFlows adds a flow record of every inbound flow the filter
	// lets in to those of denied packets. False: denied packets only.
	LogNewFlows bool
	// FlowLog is a file the flow records are appended to, as JSON lines
	// (created 0600). Empty: records are kept in memory only.
	FlowLog string
	// FlowRecords is how many flow records the local API keeps. Zero:
	// 1000.
	FlowRecords int
	// Logger receives the agent's logs. Nil: slog.Default().
	Logger *slog.Logger
	// Clock is the time that proofs of the node's key carry. Nil:
	// time.Now.
	Clock func() time.Time
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{
		Interface: "wm0", ListenPort: 51820, MTU: 1420, EnrollTimeout: time.Minute,
		DNS: dns.DefaultConfig(), DNSPort: 53, DNSAddr: netip.AddrFrom4([4]byte{127, 0, 0, 1}), ResolvConf: "/etc/resolv.conf",
		MetricsListen: "127.0.0.1:9472", FlowRecords: 1000,
	}
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
	if err := wire.CheckEndpoints(c.Endpoints); err != nil {
		return fmt.Errorf("endpoints: %w", err)
	}
	if c.RelayOnly && c.NoRelay {
		return errors.New("relay-only and no-relay exclude each other: give at most one")
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
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.DNSPort == 0 {
		c.DNSPort = d.DNSPort
	}
	if c.DNSPort > 65535 {
		return fmt.Errorf("bad DNS port %d", c.DNSPort)
	}
	if !c.DNSAddr.IsValid() {
		c.DNSAddr = d.DNSAddr
	}
	if c.ResolvConf == "" {
		c.ResolvConf = d.ResolvConf
	}
	if err := c.DNS.Validate(); err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			return fmt.Errorf("bad metrics address %q: %w", c.MetricsListen, err)
		}
	}
	if c.FlowRecords == 0 {
		c.FlowRecords = d.FlowRecords
	}
	if c.FlowRecords < 0 || c.FlowRecords > 1<<20 {
		return fmt.Errorf("bad flow record count %d: want 1..%d", c.FlowRecords, 1<<20)
	}
	return nil
}

// Agent is a running node. It wires four parts, each of which owns its
// state behind its own lock or goroutine, and runs their goroutines:
//
//   - ctl (control.go): the node's identity and key, the coordinator's
//     proof key and pins, the proofs' times, the client, the stream's state;
//   - data (datapath.go, relays.go): the engine on the bind that picks
//     each peer's path, the relay clients, the filter and its flow log,
//     the applied netmap;
//   - mesh (mesh.go): the serf member and the DNS catalog, one goroutine;
//   - svc (services.go): the local services, their checks and reports.
//
// Lock order: no part calls another while it holds a lock of its own, so
// the parts' locks never nest. rotateMu, the Agent's only lock, is taken
// before any part's.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	state *stateDir
	cache *netmapCache // writes the applied netmaps to state

	ctl  *control                 // made by New
	data *dataPath                // made by Run before anything reads it
	mesh *mesh                    // made by Run before anything reads it
	svc  atomic.Pointer[services] // made by Run; Reload may look at any time

	dnsCount dnsCounts     // DNS queries, for the metrics
	conn     *connReporter // connectivity reports; made by New

	// The start's: set by New and Run before Run starts the goroutines.
	enrolled  bool              // ctl.id is set
	joinKey   credential.Bundle // parsed cfg.JoinKey
	reauth    bool              // enrolled, and a join key to enroll again with
	newKey    bool              // key was generated by this start
	restarted bool              // the identity came from the state dir

	rotateMu sync.Mutex // one key rotation at a time
}

// New prepares an agent: it checks the config, locks the state dir and
// loads the key and identity, if any. Nothing is written yet.
func New(cfg Config) (_ *Agent, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{cfg: cfg, log: cfg.Logger}
	a.ctl = &control{log: cfg.Logger, clock: cfg.Clock}
	a.conn = newConnReporter(cfg.Logger)
	if obs := cfg.DNS.Observe; obs != nil {
		a.cfg.DNS.Observe = func(qtype uint16, rcode int, forwarded bool) {
			a.dnsCount.observe(qtype, rcode, forwarded)
			obs(qtype, rcode, forwarded)
		}
	} else {
		a.cfg.DNS.Observe = a.dnsCount.observe
	}
	if a.state, err = openStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	a.ctl.state = a.state
	a.cache = newNetmapCache(a.state, cfg.Logger)
	defer func() {
		if err != nil {
			a.state.Close()
		}
	}()
	key, haveKey, err := a.state.loadKey()
	if err != nil {
		return nil, err
	}
	id, enrolled, err := a.state.loadIdentity()
	if err != nil {
		return nil, err
	}
	a.enrolled, a.restarted = enrolled, enrolled
	switch {
	case a.enrolled && !haveKey:
		return nil, fmt.Errorf("state dir %s has an identity but no %s: the node cannot be recovered; delete it on the coordinator and re-enroll with an empty state dir", cfg.StateDir, keyFile)
	case a.enrolled && cfg.JoinKey != "":
		if a.joinKey, err = credential.ParseJoinKey(cfg.JoinKey); err != nil {
			return nil, err
		}
		a.reauth = true
	case a.enrolled:
		if cfg.ForceReauth {
			return nil, errors.New("--force-reauth needs a join key to enroll again with: add --join KEY or --join-file FILE")
		}
	case cfg.JoinKey == "":
		return nil, fmt.Errorf("state dir %s holds no enrollment: start with --join KEY", cfg.StateDir)
	default:
		if a.joinKey, err = credential.ParseJoinKey(cfg.JoinKey); err != nil {
			return nil, err
		}
		if !haveKey {
			if key, err = wgtypes.GeneratePrivateKey(); err != nil {
				return nil, fmt.Errorf("generate key: %w", err)
			}
			a.newKey = true
		}
	}
	a.ctl.setIdentity(id, key)
	return a, nil
}

// enrollOnce enrolls the node if it has no identity yet. A new key goes to
// disk before the coordinator sees it: an agent that dies after the
// coordinator admitted the key but before it wrote its identity enrolls
// the same key at its next start and gets its node back with a proof of
// it (see enroll), where a new key would find a one-time join key used.
// A refused enrollment takes the new key away again; the identity is
// written once the coordinator has admitted the node.
func (a *Agent) enrollOnce(ctx context.Context) error {
	if a.enrolled {
		return nil
	}
	key := a.ctl.privateKey()
	if a.newKey {
		if err := a.state.saveKey(key); err != nil {
			return err
		}
	}
	id, err := a.enroll(ctx, key, a.cfg.Name, a.cfg.Hostname)
	if err != nil {
		if a.newKey && errors.Is(err, ErrRefused) {
			// No node has this key: leave the state dir as it was.
			if rerr := a.state.removeKey(); rerr != nil {
				a.log.Warn("remove the key of a refused enrollment", "err", rerr)
			}
		}
		return err
	}
	if err := a.state.saveIdentity(id); err != nil {
		return err
	}
	a.ctl.setIdentity(id, key)
	a.enrolled = true
	a.log.Info("enrolled", "node", id.Node.Name, "addr", id.Node.Addresses[0].Addr().String())
	return nil
}

// enroll asks the coordinator to admit key with the join key as the node
// name, or, if name is empty, as one the coordinator makes unique from
// hostname.
func (a *Agent) enroll(ctx context.Context, key wgtypes.Key, name, hostname string) (Identity, error) {
	jk := a.joinKey
	ctl, err := newControlClient(jk.URLs(), func() credential.Pins { return jk.Pins }, a.log)
	if err != nil {
		return Identity{}, fmt.Errorf("enrollment: %w", err)
	}
	defer ctl.close()
	req := wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: key.PublicKey().String(), Name: name, Hostname: hostname}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.EnrollTimeout)
	defer cancel()
	for b := newBackoff(); ; {
		resp, err := ctl.enroll(ctx, jk.Secret, req)
		if err == nil {
			url, _ := ctl.current()
			return Identity{Coordinator: url, Coordinators: jk.URLs(), Pins: jk.Pins, Credential: resp.Credential, Node: resp.Node, Prefixes: resp.Prefixes, CoordinatorKey: resp.CoordinatorKey}, nil
		}
		if isProtocolRefusal(err) {
			return Identity{}, fmt.Errorf("enrollment: coordinator refused this agent's protocol %d: %w", wire.ProtocolVersion, err)
		}
		if req.Proof == "" && isEnrolledRefusal(err) {
			// An earlier attempt may have enrolled the node and lost the
			// answer: ask for the node back with a proof of the key.
			if req.Proof, err = enrollProof(ctx, ctl, key); err == nil {
				continue
			}
		}
		if errors.Is(err, ErrRefused) {
			return Identity{}, fmt.Errorf("enrollment: %w", err)
		}
		if ctl.failover() {
			continue // another coordinator, at once
		}
		a.log.Warn("enrollment failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return Identity{}, fmt.Errorf("enrollment: coordinator unreachable for %s: %w", a.cfg.EnrollTimeout, err)
		case <-time.After(b.next()):
		}
	}
}

// Run brings the data path up, applies the cached netmap, then follows the
// coordinator until ctx is done or the coordinator refuses the node. It
// removes the interface before returning.
func (a *Agent) Run(ctx context.Context) (err error) {
	defer a.state.Close()
	hcfg := health.DefaultConfig()
	hcfg.Logger = a.log
	runner := health.New(hcfg)
	defer runner.Close()
	svc := newServices(a.cfg.ServicesFile, runner, a.log)
	if err := svc.load(); err != nil {
		return err
	}
	a.svc.Store(svc)
	if a.data, err = newDataPath(&a.cfg, a.ctl.privateKey(), a.restarted, a.conn.poke); err != nil {
		return err
	}
	defer a.data.close()
	a.mesh = newMesh(&a.cfg, a.data, svc)
	// The data path and DNS are up (their ports are ours) before
	// enrolling, so a node is never enrolled by an agent that cannot run.
	loopDNS, err := a.listenLoopbackDNS()
	if err != nil {
		return err
	}
	dnsTaken := false // startDNS owns loopDNS
	defer func() {
		if !dnsTaken {
			loopDNS.close()
		}
	}()
	metrics, err := a.listenMetrics()
	if err != nil {
		return err
	}
	defer metrics.close()
	if err := a.enrollOnce(ctx); err != nil {
		return err
	}
	if a.reauth {
		if err := a.reauthenticate(ctx); err != nil {
			return err
		}
	}
	if a.ctl.api, err = newControlClient(a.ctl.id.urls(), a.ctl.coordinatorPins, a.log); err != nil {
		return err
	}
	defer a.ctl.api.close()
	self := &wire.Netmap{Self: a.ctl.id.Node, Prefixes: a.ctl.id.Prefixes}
	if cached, err := a.state.loadNetmap(); err != nil {
		a.log.Warn("ignoring netmap cache", "err", err)
	} else if cached != nil && cached.Self.PublicKey == a.ctl.publicKey() {
		self = cached
		a.log.Info("starting from cached netmap", "version", cached.Version, "peers", len(cached.Peers))
	}
	if err := a.apply(self, false, false); err != nil {
		return err
	}
	dnsTaken = true
	if a.mesh.dns, err = a.startDNS(loopDNS); err != nil {
		return err
	}
	if a.mesh.dns != nil {
		defer a.mesh.dns.Close()
	}
	api, err := a.listenLocalAPI()
	if err != nil {
		return err
	}
	defer api.close()
	a.log.Info("agent up", "node", a.ctl.id.Node.Name, "interface", a.cfg.Interface, "port", a.cfg.ListenPort)
	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	report := func(ctx context.Context) { svc.runReporter(ctx, a.ctl.report) }
	reportConn := func(ctx context.Context) { a.conn.run(ctx, a.data.connectivity, a.ctl.reportConnectivity) }
	for _, fn := range []func(context.Context){a.data.trimMemory, a.mesh.run, report, reportConn, a.data.runFlows, a.rotateKeys, a.cache.run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(bg)
		}()
	}
	defer func() { stopBG(); wg.Wait() }()
	return a.follow(ctx)
}

// Reload re-reads the services file. A malformed file changes nothing and
// the error says where it is wrong.
func (a *Agent) Reload() error {
	svc := a.svc.Load()
	if svc == nil {
		return errors.New("agent is not running")
	}
	if err := svc.load(); err != nil {
		return err
	}
	a.log.Info("services reloaded", "file", a.cfg.ServicesFile)
	return nil
}

// follow keeps a netmap stream open, reconnecting with backoff, until ctx
// is done or the coordinator refuses the node.
func (a *Agent) follow(ctx context.Context) error {
	refetched := false // the proof key was fetched again since the last stream
	for b := newBackoff(); ; {
		err := a.streamOnce(ctx, func() { b.reset(); refetched = false; a.ctl.api.succeeded() })
		if ctx.Err() != nil {
			return nil
		}
		a.ctl.setConnected(false, err.Error())
		d := b.next()
		switch {
		case client.CodeOf(err) == wire.CodeKeyMismatch && a.resumeRotation():
			// The credential is this node's, the key not: the coordinator
			// took the new key of a rotation this agent did not finish.
			continue
		case isProofRefusal(err) && !refetched:
			// The coordinator's proof key may have been replaced.
			refetched = true
			if a.ctl.refreshCoordinatorKey(ctx) {
				continue
			}
			return fmt.Errorf("coordinator refused this node's proof of its key: %w", err)
		case isProtocolRefusal(err):
			// Retrying cannot help: this agent must be replaced (or the
			// coordinator upgraded); the message says by which.
			return fmt.Errorf("coordinator refused this agent's protocol %d: %w", wire.ProtocolVersion, err)
		case isClockRefusal(err):
			// Not the key but the node's clock: retrying helps once it is
			// set right.
			d = max(d, 5*time.Second)
			a.log.Error("coordinator refused the time of this node's proof; check the clock. Keeping the last netmap", "err", err, "retry_in", d.String())
		case errors.Is(err, credential.ErrPinMismatch):
			// Whoever answered is not the coordinator: a man in the
			// middle, or a certificate switched without announcing its
			// pin first. Stopping would hand it the data path; keep it.
			if a.ctl.api.failover() {
				a.log.Error("the server at the coordinator's URL is not the pinned coordinator; trying another coordinator", "err", err)
				continue
			}
			d = max(d, 5*time.Second)
			a.log.Error("the server at the coordinator's URL is not the pinned coordinator; keeping the last netmap and retrying (if the coordinator changed its certificate, announce the new pin first: docs/security.md)", "err", err, "retry_in", d.String())
		case isIdentityRefusal(err):
			return fmt.Errorf("coordinator refused this node (%s): %w; to enroll it again, keeping the state dir, restart the agent with --join NEWKEY or --join-file FILE", a.ctl.id.Node.Name, err)
		case errors.Is(err, ErrRefused):
			return fmt.Errorf("coordinator refused this node (%s): %w", a.ctl.id.Node.Name, err)
		case a.ctl.api.failover():
			a.log.Warn("coordinator unreachable; trying another, keeping the last netmap", "err", err)
			continue
		default:
			a.log.Warn("coordinator unreachable; keeping the last netmap", "err", err, "retry_in", d.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
	}
}

// mapRequest is the request of a netmap stream, with a proof of the
// node's current key for the coordinator's proof key.
func (a *Agent) mapRequest(ctx context.Context) (wire.MapRequest, error) {
	ck, err := a.ctl.coordinatorKey(ctx)
	if err != nil {
		return wire.MapRequest{}, err
	}
	pub, proof, err := a.ctl.netmapProof(ck)
	if err != nil {
		return wire.MapRequest{}, err
	}
	return wire.MapRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: pub, ListenPort: a.cfg.ListenPort, Endpoints: a.cfg.Endpoints, Version: a.cfg.Version, Proof: proof, Deltas: true}, nil
}

// streamOnce opens one netmap stream, with a proof of the node's current
// key, and applies its netmaps until it ends; opened runs with the first.
func (a *Agent) streamOnce(ctx context.Context, opened func()) error {
	req, err := a.mapRequest(ctx)
	if err != nil {
		return err
	}
	return a.ctl.api.stream(ctx, a.ctl.id.Credential, req, a.data.current(), func(nm *wire.Netmap) {
		fresh := !a.ctl.isConnected()
		if fresh {
			a.svc.Load().wakeReport() // a new stream: the coordinator may have missed reports
			a.finishRotation(nm.Self.PublicKey)
			opened()
		} else if nm.Self.PublicKey != req.PublicKey {
			a.finishRotation(nm.Self.PublicKey) // a rotation whose answer was lost
		}
		a.ctl.setConnected(true, "")
		a.ctl.adoptPins(nm.CoordinatorPins)
		a.ctl.adoptURLs(nm.CoordinatorURLs)
		if err := a.apply(nm, true, fresh); err != nil {
			a.log.Error("apply netmap", "err", err, "version", nm.Version)
		}
		if fresh {
			a.conn.newStream() // after apply: the report needs the netmap's STUN servers
		}
	})
}

// apply hands nm to the data path, tells the mesh, and, if save, caches
// nm on disk. A netmap older than the applied one is ignored, unless it is
// the first of a stream: that is the coordinator's state now, even when
// older than the agent's (a database restored from a backup counts
// versions again from there, and refusing it would keep the agent on a
// state that is gone).
func (a *Agent) apply(nm *wire.Netmap, save, fresh bool) error {
	old := a.data.current()
	if old != nil && nm.Version != 0 && nm.Version < old.Version {
		if !fresh {
			a.log.Warn("ignoring older netmap", "version", nm.Version, "have", old.Version)
			return nil
		}
		a.log.Warn("the coordinator's state is older than this agent's netmap (a database restored from a backup?); taking it", "version", nm.Version, "had", old.Version)
	}
	if err := a.data.apply(nm); err != nil {
		return err
	}
	a.mesh.netmapApplied()
	a.log.Info("netmap applied", "version", nm.Version, "peers", len(nm.Peers), "policy", nm.PolicyVersion, "rules", len(nm.Rules))
	first := old == nil || old.PolicyVersion != nm.PolicyVersion
	if first && nm.PolicyVersion == 0 && nm.Version != 0 {
		a.log.Warn("the coordinator has no access policy: all inbound traffic is denied and there are no peers; set one with: wiremesh acl set FILE")
	}
	if save {
		a.cache.save(nm)
	}
	return nil
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
