package bind

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// The path timings. Each is the default of the Timing field of the same
// meaning; tests shorten them through Config, never by sleeping.
const (
	// TrustDuration is how long a direct path is trusted after each pong.
	// While trusted, traffic goes there only; past it, the relay carries a
	// copy too, so a path that fails (or fails one way) costs at most this
	// long of loss: "a dead path is abandoned within 5 s".
	TrustDuration = 5 * time.Second
	// HeartbeatInterval is how often the current direct path is pinged
	// while traffic flows in either direction: two heartbeats fit in
	// TrustDuration, so one lost pong does not drop the path.
	HeartbeatInterval = 2 * time.Second
	// ProbeRetryInterval is how often, while a peer with traffic has no
	// trusted direct path, all its candidates are pinged and a
	// call-me-maybe goes through the relay, for FastProbeRounds rounds
	// (and for as long as a formerly working direct path is being retried).
	ProbeRetryInterval = 5 * time.Second
	// FastProbeRounds is how many probe rounds ProbeRetryInterval apart a
	// peer gets before it settles on the relay and ReprobeInterval applies.
	FastProbeRounds = 3
	// ReprobeInterval is how often the candidates of a peer with traffic
	// are probed once it has settled, on the relay or on a direct path (to
	// find a better one, or one that has started to work).
	ReprobeInterval = 30 * time.Second
	// DeadAfter is how long a direct path may go without a pong before it
	// stops being retried as the current path; traffic already went through
	// the relay too since TrustDuration.
	DeadAfter = 15 * time.Second
	// PongTimeout is how long after a ping its pong is accepted.
	PongTimeout = 5 * time.Second
	// ActiveWindow: a peer that sent or received WireGuard traffic within
	// this window is active; idle peers get no heartbeats or probes.
	ActiveWindow = 10 * time.Second
	// UpgradeOverlap is how long traffic still also goes through the relay
	// after a peer moved from it to a direct path, so that packets in
	// flight during the change are not lost.
	UpgradeOverlap = time.Second
	// MinPingInterval is the least time between two pings to one address
	// outside heartbeats (answers to pings, call-me-maybe, probe rounds).
	MinPingInterval = time.Second
	// STUNIntervalMin and STUNIntervalMax bound the randomized time between
	// two STUN rounds while any peer is active.
	STUNIntervalMin = 20 * time.Second
	STUNIntervalMax = 26 * time.Second
	// STUNTimeout is how long a STUN round waits for answers.
	STUNTimeout = 3 * time.Second
	// InterfacePollInterval is how often the local addresses are read to
	// notice a change (Rebind notices one at once).
	InterfacePollInterval = 5 * time.Second
	// RelayReplyWindow: for this long after a packet from a peer arrived
	// through relay R, packets to it go through R too (if connected).
	RelayReplyWindow = 30 * time.Second
	// TickInterval is the period of the Bind's housekeeping goroutine.
	TickInterval = 250 * time.Millisecond
)

// Hysteresis between two working direct paths of one class (both LAN or
// both public): the new one must have an RTT below BetterRTTRatio times the
// current one's and at least BetterRTTMin less. A path of a better class
// (LAN over public) wins at once; a path that lost its trust loses at once.
const (
	BetterRTTRatio = 0.8
	BetterRTTMin   = time.Millisecond
)

// Limits.
const (
	// MaxCandidates is the most candidates a node announces (and the most
	// taken from a netmap or a call-me-maybe for one peer).
	MaxCandidates = 8
	// maxPaths bounds the addresses kept for one peer, learned ones included.
	maxPaths = 16
	// forgetAfter: a learned (not netmap) address without a pong for this
	// long is forgotten.
	forgetAfter = 2 * time.Minute
	// maxPending bounds the outstanding pings.
	maxPending = 4096
	// DefaultRelayQueue is the default of Config.RelayQueue.
	DefaultRelayQueue = 1024
)

// Timing holds the path timings; a zero field means the constant above.
type Timing struct {
	Trust, Heartbeat, ProbeRetry, Reprobe, Dead, PongTimeout, Active time.Duration
	Overlap, MinPing, STUNMin, STUNMax, STUNTimeout, InterfacePoll   time.Duration
	RelayReply, Tick                                                 time.Duration
	FastProbeRounds                                                  int
}

// DefaultTiming returns the timings of the constants above.
func DefaultTiming() Timing {
	return Timing{
		Trust: TrustDuration, Heartbeat: HeartbeatInterval, ProbeRetry: ProbeRetryInterval,
		Reprobe: ReprobeInterval, Dead: DeadAfter, PongTimeout: PongTimeout,
		Active: ActiveWindow, Overlap: UpgradeOverlap, MinPing: MinPingInterval,
		STUNMin: STUNIntervalMin, STUNMax: STUNIntervalMax, STUNTimeout: STUNTimeout,
		InterfacePoll: InterfacePollInterval, RelayReply: RelayReplyWindow,
		Tick: TickInterval, FastProbeRounds: FastProbeRounds,
	}
}

func (t Timing) withDefaults() Timing {
	d := DefaultTiming()
	set := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	set(&t.Trust, d.Trust)
	set(&t.Heartbeat, d.Heartbeat)
	set(&t.ProbeRetry, d.ProbeRetry)
	set(&t.Reprobe, d.Reprobe)
	set(&t.Dead, d.Dead)
	set(&t.PongTimeout, d.PongTimeout)
	set(&t.Active, d.Active)
	set(&t.Overlap, d.Overlap)
	set(&t.MinPing, d.MinPing)
	set(&t.STUNMin, d.STUNMin)
	set(&t.STUNMax, d.STUNMax)
	set(&t.STUNTimeout, d.STUNTimeout)
	set(&t.InterfacePoll, d.InterfacePoll)
	set(&t.RelayReply, d.RelayReply)
	set(&t.Tick, d.Tick)
	if t.FastProbeRounds == 0 {
		t.FastProbeRounds = d.FastProbeRounds
	}
	return t
}

// Relays is how the Bind reaches peers through relays; the relay client
// implements it. Its methods are called on the packet path without any lock
// of the Bind held; they must not block for long.
type Relays interface {
	// Send sends pkt to the node whose public key is dst through relay. It
	// must not keep pkt after it returns.
	Send(relay string, dst [32]byte, pkt []byte) error
	// Connected reports whether relay can be sent through now.
	Connected(relay string) bool
	// Home returns this node's home relay, "" if none.
	Home() string
	// Addr returns the relay's address, shown as the peer's endpoint while
	// traffic goes through it; the zero AddrPort if unknown.
	Addr(relay string) netip.AddrPort
}

// PeerInfo is what the netmap says about how to reach a peer.
type PeerInfo struct {
	// Candidates are the peer's direct addresses, best first; only the
	// first MaxCandidates are used.
	Candidates []netip.AddrPort
	// HomeRelay is the relay the peer is attached to, "" if unknown.
	HomeRelay string
}

// Config configures a Bind.
type Config struct {
	// PrivateKey is the node's (WireGuard) private key; disco messages are
	// sealed with keys derived from it. Zero: no disco until SetPrivateKey.
	PrivateKey [32]byte
	// Relays reaches peers through relays. Nil: no relays (as NoRelay).
	Relays Relays
	// STUNServers are asked for this node's reflexive address; two or more
	// addresses tell the NAT type. Empty: no STUN (NAT type unknown).
	STUNServers []netip.AddrPort
	// Endpoints are operator-given addresses of this node (--endpoint),
	// announced first. Empty: none.
	Endpoints []netip.AddrPort
	// ExcludeInterfaces names interfaces whose addresses are never
	// candidates (the node's own TUN). Empty: none excluded.
	ExcludeInterfaces []string
	// InterfaceAddrs lists the local addresses with their prefixes; its
	// result is taken as is. Nil: the system's up interfaces, without
	// loopback, link-local and ExcludeInterfaces.
	InterfaceAddrs func() ([]netip.Prefix, error)
	// OnCandidates is called with LocalCandidates whenever they change,
	// from the Bind's own goroutine: it must not block and must not call
	// into the WireGuard device (whose Close waits for that goroutine).
	// Nil: not called.
	OnCandidates func([]netip.AddrPort)
	// RelayOnly sends every peer's traffic through relays, never direct.
	RelayOnly bool
	// NoRelay never sends through a relay.
	NoRelay bool
	// RelayQueue bounds the relayed packets waiting for WireGuard; 0 means
	// DefaultRelayQueue. Packets beyond it are dropped (and counted).
	RelayQueue int
	// Timing sets the path timings; zero fields mean the defaults.
	Timing Timing
	// Log receives path changes and errors. Nil: discarded.
	Log *slog.Logger
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{RelayQueue: DefaultRelayQueue, Timing: DefaultTiming(), Log: slog.New(slog.DiscardHandler)}
}

// Validate reports a Config that cannot work.
func (c *Config) Validate() error {
	if c.RelayOnly && c.NoRelay {
		return errors.New("bind: relay-only and no-relay exclude each other")
	}
	if c.RelayQueue < 0 {
		return fmt.Errorf("bind: relay queue %d is negative", c.RelayQueue)
	}
	t := c.Timing.withDefaults()
	if t.STUNMin > t.STUNMax {
		return fmt.Errorf("bind: STUN interval min %v exceeds max %v", t.STUNMin, t.STUNMax)
	}
	if t.Heartbeat >= t.Trust {
		return fmt.Errorf("bind: heartbeat %v must be shorter than trust %v", t.Heartbeat, t.Trust)
	}
	for _, a := range append(append([]netip.AddrPort{}, c.STUNServers...), c.Endpoints...) {
		if !a.IsValid() || a.Port() == 0 || a.Addr().IsUnspecified() {
			return fmt.Errorf("bind: address %v is not a usable ip:port", a)
		}
	}
	return nil
}
