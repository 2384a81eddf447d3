package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
)

// DefaultPort is the TCP and UDP port a member listens on when
// Config.Port is zero.
const DefaultPort = 7946

// The fast-failover defaults. With them a member that stops answering
// (killed, or its host gone) is marked Failed by every other member in
// about 2 s on a sub-millisecond overlay: the next probe of it (some
// member probes it in most 400-ms rounds), one probe round (direct probe,
// then indirect and TCP probes until the round ends), a suspicion of
// SuspicionMult × max(1, log10(members)) probe intervals (0.8 s up to 10
// members, 1 s at 20, 1.6 s at 100) and a gossip round to spread the
// verdict. Measured on loopback with 20 members (BenchmarkFailover):
// median 1.75 s, slowest of 20 crashes 3.3 s, against 2.5 s and 2.8 s
// with 500/250 ms, for 25% more idle traffic (about 730 B/s sent per
// member). SuspicionMult 2 also turns off Lifeguard's confirmation
// scheme, which would start suspicion at SuspicionMaxTimeoutMult times
// the shortest one.
const (
	DefaultProbeInterval           = 400 * time.Millisecond
	DefaultRetransmitMult          = 12
	DefaultPushPullInterval        = 30 * time.Second
	DefaultProbeTimeout            = 200 * time.Millisecond
	DefaultGossipInterval          = 100 * time.Millisecond
	DefaultSuspicionMult           = 2
	DefaultSuspicionMaxTimeoutMult = 2
)

// DefaultRetransmitMult sets how many times each member forwards a gossip
// message (a health change, a join, a suspicion): RetransmitMult ×
// ceil(log10(members+1)) times, each to a random member. memberlist's LAN
// default of 4 loses updates in bursts: below 10 members a member
// forwards a change to only 4 random members, so when six of seven
// members change their health at once, one of the 36 (update, receiver)
// pairs misses its update in about one burst of six (16% in a simulation
// of memberlist's queue, 1 in 2 to 4 bursts measured on 7 agents), and the
// update then waits for the next push/pull, up to 30 s or more later.
// With 12 the same simulation loses nothing in 20,000 bursts without loss
// and with 10% packet loss; the cost is more small messages piggybacked
// on packets that are sent anyway (see docs/benchmarks.md).

// DefaultPushPullInterval is how often a member exchanges its full state
// with a random member (memberlist's push/pull, over TCP; memberlist
// stretches it above 32 members by log2(members/32)+1): memberlist's LAN
// default. It heals partitions and members that were down; it is not what
// delivers health changes in time, gossip is, and gossip must not lose
// them: TestHealthBurst runs with it and fails if a change waits for it.
// A 1 s push/pull once covered for a just-joined agent's first change,
// lost in about 1 run in 4: memberlist v0.7.0's broadcast queue dropped
// the member's own update when a relayed message of the same length took
// its id (third_party/memberlist carries the fix, see
// TestBroadcastQueueKeepsOwnUpdate). The push/pull is most of the idle
// gossip traffic: 0.65 KB/s per agent at 3 agents and 0.7 KB/s at 20 with
// 30 s, 1.3 and 2.3 KB/s with 1 s (docs/benchmarks.md).

// Timings fixed by the package, not by Config.
const (
	// tcpTimeout bounds a stream exchange: a join or push/pull, and a
	// TCP fallback probe. A join of an unreachable address fails after
	// it (serf runs joins one at a time).
	tcpTimeout = 2 * time.Second
	// broadcastTimeout bounds the waits for a tag update and for the
	// two leave messages to be gossiped; leavePropagateDelay is how long
	// a leaving member stays up afterwards to answer probes. Together they
	// keep Close near 1 s (at most 1.5 s).
	broadcastTimeout    = 500 * time.Millisecond
	leavePropagateDelay = 500 * time.Millisecond
	// reconnectTimeout is how long a Failed member is kept (and retried)
	// before it is reaped; tombstoneTimeout the same for a Left one.
	reconnectTimeout = 24 * time.Hour
	tombstoneTimeout = 24 * time.Hour
	// reconnectInterval is how often serf tries to rejoin one of the
	// failed members, so a healed partition merges again soon.
	reconnectInterval = 5 * time.Second
	// rttRefresh is how often the event loop refreshes the RTT estimates.
	rttRefresh = 2 * time.Second
)

// Config configures a Member. Zero fields mean the defaults DefaultConfig
// gives; Name, BindAddr and Keys have none and are required.
type Config struct {
	// Name is the serf node name, the mesh node name. Required.
	Name string
	// BindAddr is the address the member binds to and advertises: the
	// node's overlay IPv4 address. Required; not unspecified.
	BindAddr netip.Addr
	// Port is the TCP and UDP port; 0 means DefaultPort.
	Port int
	// Keys are the AES keys gossip is encrypted with, 16, 24 or 32 bytes
	// each: Keys[0] encrypts, all decrypt. At least one is required:
	// gossip is always encrypted.
	Keys [][]byte
	// ProbeInterval is how often a member probes another; 0 means
	// DefaultProbeInterval.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct probe waits for its answer before
	// indirect probes start; less than ProbeInterval. 0 means
	// DefaultProbeTimeout.
	ProbeTimeout time.Duration
	// GossipInterval is how often queued messages (joins, suspicions,
	// tag updates) are gossiped; 0 means DefaultGossipInterval.
	GossipInterval time.Duration
	// RetransmitMult scales how many times a member forwards each gossip
	// message (see DefaultRetransmitMult); 0 means DefaultRetransmitMult.
	RetransmitMult int
	// PushPullInterval is how often a member syncs its full state with a
	// random member (see DefaultPushPullInterval); 0 means
	// DefaultPushPullInterval.
	PushPullInterval time.Duration
	// SuspicionMult scales how long a suspected member has to refute
	// before it is Failed (see the defaults); 0 means
	// DefaultSuspicionMult.
	SuspicionMult int
	// SuspicionMaxTimeoutMult caps Lifeguard's longer suspicion, used when
	// SuspicionMult > 2, at this multiple of the shortest one; 0 means
	// DefaultSuspicionMaxTimeoutMult.
	SuspicionMaxTimeoutMult int
	// Logger gets serf's and memberlist's log lines at their level
	// ([DEBUG], [INFO], [WARN], [ERR]); nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: port 7946, the fast-failover
// timings, no logging. Name, BindAddr and Keys are left for the caller.
func DefaultConfig() Config {
	return Config{
		Port:                    DefaultPort,
		ProbeInterval:           DefaultProbeInterval,
		ProbeTimeout:            DefaultProbeTimeout,
		GossipInterval:          DefaultGossipInterval,
		RetransmitMult:          DefaultRetransmitMult,
		PushPullInterval:        DefaultPushPullInterval,
		SuspicionMult:           DefaultSuspicionMult,
		SuspicionMaxTimeoutMult: DefaultSuspicionMaxTimeoutMult,
		Logger:                  slog.New(slog.DiscardHandler),
	}
}

// withDefaults returns c with each zero field set to its default.
func (c Config) withDefaults() Config {
	def := DefaultConfig()
	if c.Port == 0 {
		c.Port = def.Port
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = def.ProbeInterval
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = def.ProbeTimeout
	}
	if c.GossipInterval == 0 {
		c.GossipInterval = def.GossipInterval
	}
	if c.RetransmitMult == 0 {
		c.RetransmitMult = def.RetransmitMult
	}
	if c.PushPullInterval == 0 {
		c.PushPullInterval = def.PushPullInterval
	}
	if c.SuspicionMult == 0 {
		c.SuspicionMult = def.SuspicionMult
	}
	if c.SuspicionMaxTimeoutMult == 0 {
		c.SuspicionMaxTimeoutMult = def.SuspicionMaxTimeoutMult
	}
	if c.Logger == nil {
		c.Logger = def.Logger
	}
	return c
}

// Validate reports the first problem with c, taking zero fields as their
// defaults. It never mentions key material.
func (c *Config) Validate() error {
	d := c.withDefaults()
	switch {
	case d.Name == "":
		return errors.New("gossip config: name is required")
	case !d.BindAddr.IsValid():
		return errors.New("gossip config: bind address is required")
	case d.BindAddr.IsUnspecified():
		return fmt.Errorf("gossip config: bind address %s is unspecified: want the overlay address", d.BindAddr)
	case d.Port < 0 || d.Port > 65535:
		return fmt.Errorf("gossip config: port %d out of range", d.Port)
	case len(d.Keys) == 0:
		return errors.New("gossip config: at least one key is required")
	case d.ProbeInterval < 0 || d.ProbeTimeout < 0 || d.GossipInterval < 0 || d.PushPullInterval < 0:
		return errors.New("gossip config: negative interval or timeout")
	case d.ProbeTimeout >= d.ProbeInterval:
		return fmt.Errorf("gossip config: probe timeout %v must be less than probe interval %v", d.ProbeTimeout, d.ProbeInterval)
	case d.SuspicionMult < 0 || d.SuspicionMaxTimeoutMult < 0 || d.RetransmitMult < 0:
		return errors.New("gossip config: negative multiplier")
	}
	if err := validateKeys(d.Keys); err != nil {
		return fmt.Errorf("gossip config: %w", err)
	}
	return nil
}

// validateKeys checks that keys is a usable keyring.
func validateKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return errors.New("no keys: the keyring cannot be empty")
	}
	for i, k := range keys {
		if err := memberlist.ValidateKey(k); err != nil {
			return fmt.Errorf("key %d: %w", i+1, err)
		}
	}
	return nil
}
