package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wiremesh/wiremesh/acl"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/atomicfile"
	"github.com/wiremesh/wiremesh/relay"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
)

// Coordinator is a running control plane.
type Coordinator struct {
	cfg   Config
	log   *slog.Logger
	store store.Store // the database, with the admin listing cached
	cert  tls.Certificate
	pins  credential.Pins      // the current pin first, then the announced next ones
	proof *credential.ProofKey // checks nodes' proofs of their private keys

	proofTimes proofTimes // newest netmap proof time per node

	// pubMu serialises publish so snapshots replace each other in order.
	pubMu   sync.Mutex
	state   atomic.Pointer[snapshot]
	changes changeLog // what the recent snapshots changed, for streams

	onlineMu sync.Mutex
	online   map[int64]int // node id → open netmap streams; guarded by onlineMu
	// vouchMu orders the writes of online_until: a stream's end, which
	// clears it, never comes between beat reading the nodes online and
	// writing their vouch, which would make a node online again.
	vouchMu sync.Mutex

	metrics *metrics // nil-safe; nil for a Coordinator not made by New

	relay *relay.Server // the embedded relay; nil with Config.NoRelay
	// id names this coordinator among those sharing its database: its
	// first URL and a random suffix, as the holder of leases.
	id string
	// leaderUntil is until when (unix ns) this coordinator holds the
	// timers lease; see beat.
	leaderUntil atomic.Int64
	// listens counts the times the database listener started listening.
	listens atomic.Int64

	enroll    *enrollGate   // per-source limit of enrollment attempts
	endpoints *endpointGate // per-node spacing of endpoint changes

	started time.Time // when New ran: ephemeral nodes count as offline from here at most

	dir *dataDir  // locked until Close
	ls  Listeners // bound by Start; zero: Run binds them
}

// snapshot is an immutable view of the nodes and the compiled policy at
// one state version. When a newer snapshot replaces it, changed is closed.
type snapshot struct {
	version uint64
	// nodes are the agents, by id, as of the last snapshot built whole;
	// patch has the entries changed since (by index in nodes), read with
	// node. What the policy sees of a node (its ID, name, tags,
	// addresses, services) is never in patch.
	nodes    []wire.Node
	patch    map[int]wire.Node
	aclNodes []acl.Node // the same nodes, as the policy sees them
	byID     map[int64]int
	byKey    map[[32]byte]int // node public key → index in nodes
	policy   wire.Policy      // the active policy, Version 0 if none
	gossip   wire.Gossip
	compiled *acl.Compiled
	changed  chan struct{}
	// nextExpiry is the soonest node expiry still to come; zero: none.
	nextExpiry time.Time
	// published is when the snapshot became current, for the netmap
	// push latency.
	published time.Time
	// relayNodes are the relay nodes, kept apart from nodes: nobody's
	// peers, in no policy view; and the relay map.
	relayNodes relaySet
	// coordinators are the coordinators serving the mesh.
	coordinators []store.Coordinator
	// delta is what changed from the snapshot before, if this one was
	// made by applying a delta (deltaSnapshot); nil: built whole.
	delta *snapshotDelta
	// nodesEpoch changes with the node list or any entry in it: two
	// snapshots of one epoch differ at most in the policy (policyDelta).
	nodesEpoch uint64
}

// node returns agent i of s.
func (s *snapshot) node(i int) wire.Node {
	if n, ok := s.patch[i]; ok {
		return n
	}
	return s.nodes[i]
}

// addrs returns the addresses of node id in s, nil if it is not there.
func (s *snapshot) addrs(id int64) []netip.Prefix {
	if i, ok := s.byID[id]; ok {
		return s.node(i).Addresses
	}
	return nil
}

// has reports whether node id, an agent or a relay node, is in s.
func (s *snapshot) has(id int64) bool {
	_, agent := s.byID[id]
	_, relay := s.relayNodes.byID[id]
	return agent || relay
}

// Files names what a coordinator keeps in its data dir.
type Files struct {
	// Database is the SQLite database file, or with Config.Database the
	// PostgreSQL URL without its password.
	Database   string
	CACert     string // empty with an operator certificate
	AdminToken string
	// ProofKey holds the coordinator's proof key (X25519, private).
	ProofKey string
	// Created lists the files this start created.
	Created []string
}

// New opens (creating on first start) the coordinator's data dir: it
// refuses a dir that group or others can access and one another
// coordinator holds, and makes the files in it 0600 (openDataDir). A
// coordinator process starts with Start, which binds its ports first.
func New(cfg Config) (_ *Coordinator, _ Files, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, Files{}, err
	}
	dir, err := openDataDir(cfg.DataDir, cfg.Logger)
	if err != nil {
		return nil, Files{}, err
	}
	defer func() {
		if err != nil {
			dir.Close()
		}
	}()
	f := Files{
		Database:   filepath.Join(cfg.DataDir, "wiremesh.db"),
		AdminToken: filepath.Join(cfg.DataDir, "admin.token"),
		ProofKey:   filepath.Join(cfg.DataDir, proofKeyFile),
	}
	if cfg.TLSCert == "" {
		f.CACert = filepath.Join(cfg.DataDir, "ca.crt")
	}
	_, dbErr := os.Stat(f.Database)
	if cfg.Database != "" {
		f.Database = store.Redact(cfg.Database)
	}
	db, err := store.Open(context.Background(), store.Config{Path: filepath.Join(cfg.DataDir, "wiremesh.db"), URL: cfg.Database, Prefix4: cfg.Prefix4, Prefix6: cfg.Prefix6})
	if err != nil {
		return nil, f, err
	}
	if cfg.Database == "" && errors.Is(dbErr, os.ErrNotExist) {
		f.Created = append(f.Created, f.Database)
	}
	st := store.NewCached(db)
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	if cfg.Database != "" {
		// Other coordinators may share the database: this one takes the
		// identity the first of them stored.
		made, err := shareIdentity(context.Background(), st, cfg, f.ProofKey)
		if err != nil {
			return nil, f, err
		}
		f.Created = append(f.Created, made...)
	}
	cert, pin, created, err := LoadTLS(cfg.DataDir, cfg.TLSCert, cfg.TLSKey, append([]string{cfg.AdvertiseURL}, cfg.OtherURLs...)...)
	if err != nil {
		return nil, f, err
	}
	f.Created = append(f.Created, created...)
	proof, made, err := loadProofKey(f.ProofKey)
	if err != nil {
		return nil, f, err
	}
	if made {
		f.Created = append(f.Created, f.ProofKey)
	}
	pins := credential.Pins{pin}
	for _, p := range cfg.TLSNextPins {
		if !slices.Contains(pins, p) { // the next pin left in place after the switch
			pins = append(pins, p)
		}
	}
	c := &Coordinator{cfg: cfg, log: cfg.Logger, dir: dir, store: st, cert: cert, pins: pins, proof: proof, online: map[int64]int{}, started: time.Now(), id: newHolderID(cfg.AdvertiseURL)}
	c.metrics = newMetrics(c)
	self, err := c.self()
	if err != nil {
		return nil, f, err
	}
	if !cfg.NoRelay {
		if c.relay, err = c.newRelay(); err != nil {
			return nil, f, err
		}
		c.metrics.reg.MustRegister(c.relay.Collector())
	}
	c.enroll = newEnrollGate(cfg, time.Now)
	c.endpoints = newEndpointGate(cfg.EndpointInterval, time.Now)
	if _, err := c.store.RegisterCoordinator(context.Background(), self); err != nil {
		return nil, f, err
	}
	if err := c.publish(context.Background()); err != nil {
		return nil, f, err
	}
	if _, err := os.Stat(f.AdminToken); errors.Is(err, os.ErrNotExist) {
		if err := c.writeAdminToken(f.AdminToken); err != nil {
			return nil, f, err
		}
		f.Created = append(f.Created, f.AdminToken)
	} else if err := c.refreshAdminToken(f.AdminToken); err != nil {
		c.log.Warn("cannot update the pins in the admin token file", "file", f.AdminToken, "err", err)
	}
	if c.state.Load().policy.Version == 0 {
		c.log.Warn("no access policy is set: all traffic between nodes is denied; set one with: wiremesh acl set FILE")
	}
	return c, f, nil
}

func (c *Coordinator) writeAdminToken(path string) error {
	_, sec, err := c.store.CreateAdminToken(context.Background(), "coordinator", "first token, written to admin.token")
	if err != nil {
		return err
	}
	tok := c.bundle(sec).Encode(credential.AdminTokenPrefix)
	return atomicfile.Write(path, []byte(tok+"\n"), 0o600)
}

// refreshAdminToken rewrites the admin token file with the current pin set
// when it carries another (a next pin announced, or a new certificate), so
// that the CLI keeps reaching the coordinator.
func (c *Coordinator) refreshAdminToken(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	tok, err := credential.ParseAdminToken(string(b))
	if err != nil {
		return err
	}
	if tok.Pins.Equal(c.pins) {
		return nil
	}
	tok.Pins = c.pins
	if err := atomicfile.Write(path, []byte(tok.Encode(credential.AdminTokenPrefix)+"\n"), 0o600); err != nil {
		return err
	}
	c.log.Info("admin token file now carries the coordinator's pins", "file", path, "pin", c.pins.String())
	return nil
}

// Pins returns the coordinator's pin set: the pin of its certificate, then
// the pins it announces for its next one (Config.TLSNextPins). Join keys,
// admin tokens and netmaps carry it.
func (c *Coordinator) Pins() credential.Pins { return c.pins }

// URL returns the URL agents and admins reach the coordinator at
// (Config.AdvertiseURL, defaulted).
func (c *Coordinator) URL() string { return c.cfg.AdvertiseURL }

// Store returns the coordinator's store.
func (c *Coordinator) Store() store.Store { return c.store }

// Close closes the store and the listeners Start bound, and unlocks the
// data dir. Call it after Serve or Run returned.
func (c *Coordinator) Close() error {
	c.ls.close()
	err := c.store.Close()
	c.dir.Close()
	return err
}

// Serve serves the API on ln until ctx is done, then shuts down, closing
// open streams.
func (c *Coordinator) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           c.metrics.instrument(c.Handler()),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{c.cert}},
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	mctx, stopMaintain := context.WithCancel(ctx)
	maintained := make(chan struct{})
	go func() {
		defer close(maintained)
		c.maintain(mctx)
	}()
	defer func() {
		stopMaintain()
		<-maintained
	}()
	c.log.Info("coordinator listening", "addr", ln.Addr().String(), "url", c.cfg.AdvertiseURL, "pin", c.pins.String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx) // streams end with ctx (their BaseContext), so this is quick
	<-errc
	if c.relay != nil {
		c.relay.Close() // its connections were taken over: Shutdown left them
	}
	return nil
}

// Run serves on the listeners Start bound (for a Coordinator made by New,
// on the configured addresses) until ctx is done.
func (c *Coordinator) Run(ctx context.Context) error {
	if c.ls.API == nil {
		ls, err := listen(c.cfg)
		if err != nil {
			return err
		}
		c.ls = ls
	}
	if c.ls.Metrics != nil {
		ms := c.serveMetrics(c.ls.Metrics)
		defer ms.close()
	}
	if len(c.ls.STUN) > 0 {
		sctx, stop := context.WithCancel(ctx)
		wait := c.serveSTUN(sctx, c.ls.STUN)
		defer func() {
			stop()
			wait()
		}()
	}
	return c.Serve(ctx, c.ls.API)
}

// publish makes the state committed so far the current snapshot, waking
// every stream, unless the current snapshot is as new. Concurrent changes
// share one reload: whoever waited for the lock while another published
// finds its change already in the snapshot. A change that leaves the
// policy's view of the nodes as it was (endpoints, say) is read and
// applied as a delta, without a recompile (deltaSnapshot); any other is a
// reload of the whole state.
func (c *Coordinator) publish(ctx context.Context) error {
	// A committed change is published even when the client that made it
	// has gone: its request's context must not leave the snapshot stale.
	ctx = context.WithoutCancel(ctx)
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	old := c.state.Load()
	if old != nil && old.version >= c.store.Committed() {
		return nil
	}
	var s *snapshot
	if old != nil {
		d, err := c.store.StateSince(ctx, old.version)
		if err != nil {
			return err
		}
		if d.Version <= old.version {
			return nil
		}
		s = c.deltaSnapshot(old, d)
	}
	if s == nil {
		st, err := c.store.State(ctx)
		if err != nil {
			return err
		}
		if old != nil && old.version >= st.Version {
			return nil
		}
		s = c.fullSnapshot(old, st)
	}
	s.published = time.Now()
	c.changes.add(s)
	c.state.Store(s)
	if old != nil {
		close(old.changed)
	}
	if s.delta == nil {
		if c.relay != nil {
			c.relay.Recheck() // a deleted, expired or re-keyed node leaves the relay
		}
	}
	return nil
}

// fullSnapshot builds the snapshot of st, compiling the policy.
func (c *Coordinator) fullSnapshot(old *snapshot, st store.State) *snapshot {
	nodes, relays := c.splitRelays(st.Nodes, embeddedRelays(st.Coordinators))
	pol := st.Policy
	s := &snapshot{
		version: st.Version, nodes: nodes, relayNodes: relays, byID: make(map[int64]int, len(nodes)), byKey: make(map[[32]byte]int, len(nodes)), policy: pol,
		gossip:  wire.Gossip{Port: wire.GossipPort, Keys: st.GossipKeys},
		changed: make(chan struct{}), nextExpiry: st.NextExpiry, coordinators: st.Coordinators,
	}
	s.aclNodes = make([]acl.Node, len(nodes))
	for i, n := range nodes {
		s.byID[n.ID] = i
		if k, ok := keyOf(n.PublicKey); ok {
			s.byKey[k] = i
		}
		s.aclNodes[i] = aclNode(n)
	}
	var parsed *acl.Policy
	if pol.Version != 0 {
		var err error
		if old != nil && old.policy.Version == pol.Version {
			parsed = old.compiled.Policy()
		} else if parsed, err = acl.Parse(fmt.Sprintf("policy v%d", pol.Version), []byte(pol.Text)); err != nil {
			// Only validated policies are stored; this takes a change of
			// the language. Deny everything rather than guess.
			c.log.Error("stored policy does not parse; denying all traffic", "version", pol.Version, "err", err)
			s.policy = wire.Policy{}
		}
	}
	// Netmaps carry only the services the policy lets each node provide;
	// aclNodes keep all that were reported, for Compile (which applies the
	// owners too) and for checking other policies.
	for i, n := range s.nodes {
		s.nodes[i].Services = providedServices(parsed, n)
	}
	s.nodesEpoch = 1
	if old != nil {
		s.nodesEpoch = old.nodesEpoch
		if !sameNodes(old, s.nodes) {
			s.nodesEpoch++
		}
	}
	start := time.Now()
	s.compiled = acl.Compile(parsed, s.aclNodes)
	c.metrics.policyCompiled(time.Since(start))
	c.log.Debug("policy compiled", "version", pol.Version, "nodes", len(nodes), "took", time.Since(start).String())
	return s
}

// providedServices are the services of n that p lets it provide.
func providedServices(p *acl.Policy, n wire.Node) []wire.Service {
	return slices.DeleteFunc(slices.Clone(n.Services), func(sv wire.Service) bool {
		return p.Refused(n.Name, n.Tags, sv.Name) != ""
	})
}

// aclNode is n as the policy sees it.
func aclNode(n wire.Node) acl.Node {
	an := acl.Node{ID: n.ID, Name: n.Name, Tags: n.Tags, Addrs: n.Addresses}
	for _, sv := range n.Services {
		an.Services = append(an.Services, acl.NodeService{Name: sv.Name, Port: sv.Port, Proto: serviceProto(sv.Proto)})
	}
	return an
}

// serviceProto is the IP protocol number of a wire.Service protocol.
func serviceProto(p string) uint8 {
	if p == wire.ServiceUDP {
		return wire.ProtoUDP
	}
	return wire.ProtoTCP
}

// netmapFor builds node id's netmap from s; ok is false if the node is gone.
// A peer's services are listed only where the policy lets node id reach
// them, so that its DNS never names an instance it cannot use.
func (c *Coordinator) netmapFor(s *snapshot, id int64) (nm *wire.Netmap, ok bool) {
	if i, ok := s.relayNodes.byID[id]; ok {
		return c.relayNetmap(s, i), true
	}
	i, ok := s.byID[id]
	if !ok {
		return nil, false
	}
	nm = &wire.Netmap{
		Version:           s.version,
		Self:              s.node(i),
		Prefixes:          c.store.Prefixes(),
		KeepAliveInterval: wire.Duration(c.cfg.KeepAlive),
		PolicyVersion:     s.policy.Version,
		Rules:             s.compiled.Rules(id),
		Gossip:            &s.gossip,
		CoordinatorPins:   c.pins.Strings(),
		CoordinatorURLs:   c.netmapURLs(s),
		Relays:            s.relayNodes.relays,
	}
	s.compiled.Peers(id, func(j int) { nm.Peers = append(nm.Peers, peerEntry(s, id, j)) })
	return nm, true
}

// setOnline counts a netmap stream of node id opened (delta 1) or closed
// (-1), and records in the database that it holds one, or no longer does.
func (c *Coordinator) setOnline(ctx context.Context, id int64, delta int) {
	c.onlineMu.Lock()
	c.online[id] += delta
	n := c.online[id]
	if n <= 0 {
		delete(c.online, id)
	}
	c.onlineMu.Unlock()
	var until time.Time
	switch {
	case delta > 0 && n == 1:
		until = time.Now().Add(c.onlineFor())
	case n <= 0:
	default:
		return
	}
	c.vouchMu.Lock()
	defer c.vouchMu.Unlock()
	if until.IsZero() && c.onlineCount(id) > 0 {
		return // a new stream opened meanwhile
	}
	if err := c.store.SetOnline(context.WithoutCancel(ctx), []int64{id}, until); err != nil {
		c.log.Warn("cannot record whether a node is online", "err", err)
	}
}

func (c *Coordinator) onlineCount(id int64) int {
	c.onlineMu.Lock()
	defer c.onlineMu.Unlock()
	return c.online[id]
}

// isOnline reports whether node n holds a netmap stream on this
// coordinator or, as far as the database says, on another.
func (c *Coordinator) isOnline(n wire.Node) bool {
	c.onlineMu.Lock()
	defer c.onlineMu.Unlock()
	return c.online[n.ID] > 0 || time.Now().Before(n.OnlineUntil)
}
