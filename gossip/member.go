package gossip

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"
	"github.com/hashicorp/serf/serf"
)

// ErrTagsTooLarge is returned by SetHealth when the member's tags would
// not fit serf's limit of memberlist.MetaMaxSize (512) encoded bytes.
var ErrTagsTooLarge = errors.New("gossip tags too large")

// ErrClosed is returned by a Member's methods after Close.
var ErrClosed = errors.New("gossip member closed")

// eventBuffer is the capacity of the channel serf delivers events on. The
// event loop drains it until serf has shut down; the buffer takes the
// few events memberlist's goroutines may still deliver after that, so
// none of them blocks for ever.
const eventBuffer = 256

// Member is the agent's serf member. Its event loop, one goroutine
// started by New and waited for by Close, owns serf's event channel: it
// turns member events into the immutable snapshot Members returns and
// refreshes the snapshot's RTT estimates every 2 s. A second goroutine,
// also waited for by Close, hands the tags SetHealth sets to serf.
type Member struct {
	name    string
	log     *slog.Logger
	serf    *serf.Serf
	trans   *transport
	events  chan serf.Event
	changes chan struct{}                // buffered 1
	snap    atomic.Pointer[[]MemberInfo] // sorted by name; never modified once stored
	done    chan struct{}                // closed when the event loop has returned
	// latest are the tags to publish, set by SetHealth and handed to serf
	// by publishTags, which dirty wakes (buffered 1) and which closes
	// tagsDone when it returns.
	latest   atomic.Pointer[map[string]string]
	dirty    chan struct{}
	tagsDone chan struct{}
	stopped  atomic.Bool // set before this package shuts serf down

	// mu serializes SetHealth, SetKeys and Close.
	mu       sync.Mutex
	tags     map[string]string // the tags last published; guarded by mu
	closed   bool              // guarded by mu
	closeErr error             // what Close returned; guarded by mu
}

// New starts a serf member as cfg says and returns once it is listening,
// with only itself as member. It joins no one: call Join.
func New(cfg Config) (*Member, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	cfg.BindAddr = cfg.BindAddr.Unmap()
	ring, err := newKeyring(cfg.Keys)
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	stdlog := newStdLogger(cfg.Logger)
	trans, err := newTransport(cfg.BindAddr, cfg.Port, ring, stdlog)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	m := &Member{
		name:     cfg.Name,
		log:      cfg.Logger,
		trans:    trans,
		events:   make(chan serf.Event, eventBuffer),
		changes:  make(chan struct{}, 1),
		done:     make(chan struct{}),
		dirty:    make(chan struct{}, 1),
		tagsDone: make(chan struct{}),
		tags:     map[string]string{},
	}
	m.serf, err = serf.Create(serfConfig(cfg, trans, m.events, stdlog))
	if err != nil {
		_ = trans.Shutdown()
		return nil, fmt.Errorf("gossip: start serf: %w", err)
	}
	r := newRoster(cfg.Logger)
	r.apply(serf.MemberEvent{Type: serf.EventMemberJoin, Members: m.serf.Members()})
	m.publish(r, false)
	go m.run(r)
	go m.publishTags()
	return m, nil
}

// serfConfig is the serf and memberlist configuration of a member.
func serfConfig(cfg Config, trans *transport, events chan<- serf.Event, logger *log.Logger) *serf.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr.String()
	mc.BindPort = cfg.Port
	mc.AdvertiseAddr = cfg.BindAddr.String()
	mc.AdvertisePort = cfg.Port
	mc.Transport = trans
	// No memberlist keyring: the transport encrypts (crypt.go), so serf
	// has no keyring that a member's key query could change. Packets
	// keep memberlist's size with encryption: the transport's overhead
	// comes off the buffer.
	mc.Keyring = nil
	mc.UDPBufferSize -= cryptOverhead
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.GossipInterval = cfg.GossipInterval
	mc.RetransmitMult = cfg.RetransmitMult
	mc.PushPullInterval = cfg.PushPullInterval
	mc.SuspicionMult = cfg.SuspicionMult
	mc.SuspicionMaxTimeoutMult = cfg.SuspicionMaxTimeoutMult
	mc.TCPTimeout = tcpTimeout
	// DeadNodeReclaimTime stays 0: it only governs a dead node's name
	// coming back at another address. A node restarting on its name and
	// address is accepted at once: it refutes its death with a higher
	// incarnation as soon as a peer's state tells it of it (on Join).
	mc.DeadNodeReclaimTime = 0
	mc.Logger = logger
	mc.LogOutput = nil

	sc := serf.DefaultConfig()
	sc.NodeName = cfg.Name
	sc.Tags = map[string]string{}
	sc.EventCh = events
	sc.MemberlistConfig = mc
	sc.Logger = logger
	sc.LogOutput = nil
	sc.BroadcastTimeout = broadcastTimeout
	sc.LeavePropagateDelay = leavePropagateDelay
	sc.ReconnectTimeout = reconnectTimeout
	sc.ReconnectInterval = reconnectInterval
	sc.TombstoneTimeout = tombstoneTimeout
	// No name-conflict votes: a member that claims this node's name at
	// another address would win the vote with forged answers and make
	// serf shut this member down. The netmap says who is where; memberlist
	// keeps the first address it knows for a name and logs the conflict.
	sc.EnableNameConflictResolution = false
	return sc
}

// run is the event loop. It returns once serf has shut down.
func (m *Member) run(r *roster) {
	defer close(m.done)
	tick := time.NewTicker(rttRefresh)
	defer tick.Stop()
	for {
		select {
		case ev := <-m.events:
			changed := r.applyEvent(ev)
			// Take what else is queued, so a burst publishes once.
			for more := true; more; {
				select {
				case ev := <-m.events:
					changed = r.applyEvent(ev) || changed
				default:
					more = false
				}
			}
			m.publish(r, changed)
		case <-tick.C:
			m.publish(r, false)
		case <-m.serf.ShutdownCh():
			if !m.stopped.Load() {
				// Serf shuts itself down only when it loses a node name
				// conflict vote, which serfConfig turns off.
				m.log.Error("gossip stopped: serf shut down by itself", "node", m.name)
			}
			return
		}
	}
}

// publish stores the roster's snapshot with fresh RTTs and, if changed,
// signals Changes.
func (m *Member) publish(r *roster, changed bool) {
	local, err := m.serf.GetCoordinate()
	snap := r.snapshot(func(name string) time.Duration {
		if err != nil || name == m.name {
			return 0
		}
		return m.rtt(local, name)
	})
	m.snap.Store(&snap)
	if changed {
		select {
		case m.changes <- struct{}{}:
		default:
		}
	}
}

// rtt estimates the round-trip time to the member called name from its
// last coordinate; 0 if there is none or it does not fit ours.
func (m *Member) rtt(local *coordinate.Coordinate, name string) time.Duration {
	c, ok := m.serf.GetCachedCoordinate(name)
	if !ok || c == nil || !c.IsValid() || !local.IsValid() || !local.IsCompatibleWith(c) {
		return 0
	}
	return max(local.DistanceTo(c), 0)
}

// Join contacts the members at addrs and merges their view of the mesh
// with this one's. It returns how many it reached, and an error only if
// it reached none. Serf runs joins one at a time: an unreachable address
// costs up to 2 s, so concurrent Joins wait for each other.
func (m *Member) Join(addrs []netip.AddrPort) (int, error) {
	if m.stopped.Load() {
		return 0, ErrClosed
	}
	if len(addrs) == 0 {
		return 0, nil
	}
	strs := make([]string, len(addrs))
	for i, a := range addrs {
		strs[i] = a.String()
	}
	n, err := m.serf.Join(strs, true)
	if err != nil {
		return n, fmt.Errorf("gossip join: %w", err)
	}
	return n, nil
}

// SetHealth publishes services, this node's service health, in its serf
// tags (see the package comment for the encoding); nil or empty removes
// it. It fails, changing nothing, if a name is not a DNS label of a-z, 0-9
// and '-', or if the tags would exceed serf's 512-byte limit
// (ErrTagsTooLarge). It does not wait for the update to be gossiped: a
// goroutine of the member hands the latest tags to serf, which waits
// (up to 0.5 s) for the broadcast; a caller that also serves the
// snapshot, like the agent's mesh loop, must not wait that long.
func (m *Member) SetHealth(services map[string]Health) error {
	v, err := encodeHealth(services)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.stopped.Load() {
		return ErrClosed
	}
	tags := maps.Clone(m.tags)
	if v == "" {
		delete(tags, tagHealth)
	} else {
		tags[tagHealth] = v
	}
	if n := encodedTagsLen(tags); n > memberlist.MetaMaxSize {
		return fmt.Errorf("%w: %d services take %d bytes, more than %d", ErrTagsTooLarge, len(services), n, memberlist.MetaMaxSize)
	}
	if maps.Equal(tags, m.tags) {
		return nil
	}
	m.tags = tags
	m.latest.Store(&tags)
	select {
	case m.dirty <- struct{}{}:
	default:
	}
	return nil
}

// publishTags hands the latest tags to serf whenever SetHealth changed
// them, until serf shuts down.
func (m *Member) publishTags() {
	defer close(m.tagsDone)
	for {
		select {
		case <-m.dirty:
			if err := m.serf.SetTags(*m.latest.Load()); err != nil {
				// Past SetHealth's size check, serf only fails to see the
				// update gossiped within the broadcast timeout; it is set
				// and spreads anyway.
				m.log.Debug("health update not yet gossiped", "node", m.name, "err", err)
			}
		case <-m.serf.ShutdownCh():
			return
		}
	}
}

// encodedTagsLen is the length of tags as serf encodes them into memberlist
// node meta: a magic byte, then msgpack.
func encodedTagsLen(tags map[string]string) int {
	var buf bytes.Buffer
	buf.WriteByte(255)
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(tags); err != nil {
		return memberlist.MetaMaxSize + 1
	}
	return buf.Len()
}

// SetKeys replaces this member's keyring with keys: keys[0] encrypts
// from now on, every key decrypts. It changes only this member; to rotate
// a mesh's key, add the new key everywhere, then make it primary
// everywhere, then drop the old one. Invalid keys change nothing. Nothing
// else changes the keyring: serf's key queries are refused (crypt.go).
func (m *Member) SetKeys(keys [][]byte) error {
	if err := validateKeys(keys); err != nil {
		return fmt.Errorf("gossip keys: %w", err)
	}
	ring, err := newKeyring(keys)
	if err != nil {
		return fmt.Errorf("gossip keys: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.trans.ring.Store(ring)
	return nil
}

// Members returns the current snapshot of the mesh: every member serf
// knows, this one included, sorted by name; after Close, the last one.
// The slice is the caller's; the Health maps are shared and must not be
// modified.
func (m *Member) Members() []MemberInfo {
	return slices.Clone(*m.snap.Load())
}

// Changes receives a value after the snapshot changed: a member joined,
// failed, left, was forgotten, or changed its address or health. RTT
// refreshes do not count. Sends never block, so several changes may come
// as one; the channel is never closed.
func (m *Member) Changes() <-chan struct{} { return m.changes }

// Stats returns the traffic counters of this member's transport.
func (m *Member) Stats() Stats { return m.trans.Stats() }

// Close leaves the mesh gracefully, so the others mark this member Left
// rather than Failed (this takes about 1 s, at most 1.5 s), then shuts
// serf down and waits for the event loop. Further calls return the first
// call's result.
func (m *Member) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return m.closeErr
	}
	m.closed = true
	var errs []error
	if m.serf.State() == serf.SerfAlive {
		if err := m.serf.Leave(); err != nil {
			errs = append(errs, fmt.Errorf("gossip leave: %w", err))
		}
	}
	m.closeErr = errors.Join(append(errs, m.shutdown())...)
	return m.closeErr
}

// shutdown stops serf without leaving and waits for the event loop.
func (m *Member) shutdown() error {
	m.stopped.Store(true)
	if err := m.serf.Shutdown(); err != nil {
		// Serf has not closed its shutdown channel, so the loop runs on.
		return fmt.Errorf("gossip shutdown: %w", err)
	}
	<-m.done
	<-m.tagsDone
	return nil
}

// crash stops the member as a killed process would: without leaving, so
// the others mark it Failed. For tests.
func (m *Member) crash() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.shutdown()
}
