package node

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/node/bind"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Connectivity reports: how often the state is looked at, the least time
// between two reports, and the longest wait after a failed one.
const (
	connCheckInterval = time.Second
	connMinInterval   = 2 * time.Second
	connMaxRetry      = 30 * time.Second
)

// connReporter sends the node's connectivity report (candidates, NAT type,
// home relay, paths) to the coordinator when it changes, and again on
// every new netmap stream: at most one every connMinInterval, the state of
// the moment it is sent, but new candidates at once (peers need them to
// punch holes; the coordinator spaces out each node's endpoint changes
// itself). It runs on a goroutine of its own, so a slow coordinator never
// holds up the data path.
type connReporter struct {
	log    *slog.Logger
	wake   chan struct{} // 1-buffered: look at the state now
	resend atomic.Bool   // send even if unchanged (a new stream)
}

func newConnReporter(log *slog.Logger) *connReporter {
	return &connReporter{log: log, wake: make(chan struct{}, 1)}
}

// poke makes the reporter look at the state now; it never blocks.
func (r *connReporter) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// newStream makes the next report go out even if nothing changed: the
// stream may be with another coordinator, or one whose database was
// restored from a backup.
func (r *connReporter) newStream() {
	r.resend.Store(true)
	r.poke()
}

// run reports with send the state that state returns whenever it differs
// from the last one sent, until ctx is done. A state that is not ok
// (no candidates known yet) is not sent: its empty endpoints would replace
// those the netmap request gave.
func (r *connReporter) run(ctx context.Context, state func() (wire.ConnectivityReport, bool), send func(context.Context, wire.ConnectivityReport) error) {
	tick := time.NewTicker(connCheckInterval)
	defer tick.Stop()
	var last wire.ConnectivityReport
	var next time.Time // no report before, but of new candidates
	failed := false    // the last report failed: next is a backoff
	retry := connMinInterval
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-tick.C:
		}
		rep, ok := state()
		if !ok {
			continue
		}
		if time.Now().Before(next) && (failed || slices.Equal(rep.Endpoints, last.Endpoints)) {
			continue
		}
		if sameConnectivity(rep, last) && !r.resend.Load() {
			continue
		}
		r.resend.Store(false)
		err := send(ctx, rep)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			r.resend.Store(true)
			r.log.Warn("connectivity not reported to the coordinator; retrying", "err", err, "retry_in", retry.String())
			next, failed = time.Now().Add(retry), true
			retry = min(2*retry, connMaxRetry)
			continue
		}
		last, next, failed, retry = rep, time.Now().Add(connMinInterval), false, connMinInterval
	}
}

// sameConnectivity reports whether a and b say the same about candidates,
// NAT, home relay, and each path's kind, address and relay (RTTs and times
// may differ).
func sameConnectivity(a, b wire.ConnectivityReport) bool {
	if a.NAT != b.NAT || a.HomeRelay != b.HomeRelay || !slices.Equal(a.Endpoints, b.Endpoints) || len(a.Paths) != len(b.Paths) {
		return false
	}
	for i, p := range a.Paths {
		q := b.Paths[i]
		if p.Peer != q.Peer || p.Kind != q.Kind || p.Addr != q.Addr || p.Relay != q.Relay {
			return false
		}
	}
	return true
}

// connectivity is the data path's side of a connectivity report: the
// node's candidates, NAT type, home relay and the paths to its peers that
// are in use (named as in the applied netmap); not ok while the node knows
// no candidate of its own, or while its first STUN round may still add
// the address its NAT shows: the report's candidates replace the node's
// endpoints in its peers' netmaps, and the coordinator spaces changes out
// by 5 s, so a report without it would hide that address for as long.
func (d *dataPath) connectivity() (wire.ConnectivityReport, bool) {
	rep := wire.ConnectivityReport{Endpoints: []string{}}
	for i, a := range d.bind.LocalCandidates() {
		if i == wire.MaxEndpoints {
			break
		}
		rep.Endpoints = append(rep.Endpoints, a.String())
	}
	rep.NAT = string(d.bind.NAT())
	if !d.noRelay {
		rep.HomeRelay = d.relays.Home()
	}
	names := d.peerNames()
	for _, ps := range d.bind.Paths() {
		name, ok := names[ps.Peer]
		if !ok || ps.Kind == bind.PathNone || len(rep.Paths) == wire.MaxReportedPaths {
			continue
		}
		rep.Paths = append(rep.Paths, peerPath(name, ps))
	}
	return rep, len(rep.Endpoints) > 0 && d.stunSettled()
}

// peerNames maps the applied netmap's peer keys to their names.
func (d *dataPath) peerNames() map[[32]byte]string {
	out := map[[32]byte]string{}
	if nm := d.current(); nm != nil {
		for _, p := range nm.Peers {
			if k, err := wgtypes.ParseKey(p.PublicKey); err == nil {
				out[k] = p.Name
			}
		}
	}
	return out
}

// peerPath is the bind's path to a peer as the protocol says it.
func peerPath(name string, ps bind.PathStatus) wire.PeerPath {
	p := wire.PeerPath{Peer: name, Kind: string(ps.Kind), RTT: wire.Duration(ps.RTT), Since: ps.Since.UTC(), Why: whyNotDirect(ps)}
	switch ps.Kind {
	case bind.PathDirect:
		p.Addr = ps.Addr.String()
	case bind.PathRelay:
		p.Relay = ps.Relay
	}
	return p
}

// whyNotDirect says, for a person, why a peer is not reached directly; ""
// when it is.
func whyNotDirect(ps bind.PathStatus) string {
	switch ps.WhyNotDirect {
	case bind.WhyNoPong:
		return "no answer from " + candidates(len(ps.Candidates))
	case bind.WhyRelayOnly:
		return "relay only (--relay-only)"
	case bind.WhyUDPBlocked:
		return "udp blocked: no STUN server answered this node"
	}
	return ps.WhyNotDirect
}

// reportConnectivity sends one connectivity report, with a proof of the
// node's key over its content.
func (c *control) reportConnectivity(ctx context.Context, rep wire.ConnectivityReport) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ck, err := c.coordinatorKey(ctx)
	if err != nil {
		return err
	}
	if err := c.connectivityProof(ck, &rep); err != nil {
		return err
	}
	return c.call(ctx, http.MethodPut, wire.PathConnectivity, rep)
}

// connectivityProof fills in the node's current public key and the proof
// of the report made now, like servicesProof: each report's time is at
// least a nanosecond after the last one's.
func (c *control) connectivityProof(coordKey string, rep *wire.ConnectivityReport) error {
	c.mu.Lock()
	key := c.key
	at := max(c.clock().UnixNano(), c.lastConnReport+1)
	if coordKey != "" {
		c.lastConnReport = at
	}
	c.mu.Unlock()
	rep.PublicKey = key.PublicKey().String()
	if coordKey == "" {
		return nil
	}
	content, err := wire.ConnectivityContent(*rep)
	if err != nil {
		return err
	}
	rep.ContentProof, err = credential.ConnectivityProof(key, coordKey, time.Unix(0, at), content)
	return err
}
