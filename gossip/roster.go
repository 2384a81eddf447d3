package gossip

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/serf/serf"
)

// Status is a member's liveness as this member's serf sees it. The zero
// Status is not a valid status, so an unset one never reads as Alive.
type Status uint8

// The statuses.
const (
	// Alive: the member answers probes. A member that announced it is
	// leaving stays Alive until it has left.
	Alive Status = iota + 1
	// Failed: the member stopped answering probes without leaving. It
	// becomes Alive again when it answers or rejoins, and is forgotten
	// after the reconnect timeout (24 h).
	Failed
	// Left: the member left gracefully (Close). It is forgotten after the
	// tombstone timeout (24 h) unless it rejoins.
	Left
)

// String returns "alive", "failed" or "left".
func (s Status) String() string {
	switch s {
	case Alive:
		return "alive"
	case Failed:
		return "failed"
	case Left:
		return "left"
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// statusOf maps serf's member status onto Status; ok is false for
// StatusNone and unknown values.
func statusOf(s serf.MemberStatus) (st Status, ok bool) {
	switch s {
	case serf.StatusAlive, serf.StatusLeaving:
		return Alive, true
	case serf.StatusFailed:
		return Failed, true
	case serf.StatusLeft:
		return Left, true
	}
	return 0, false
}

// MemberInfo is one member of the mesh as the snapshot saw it. Values in
// a snapshot are shared: treat Health as read-only.
type MemberInfo struct {
	// Name is the member's serf node name, the mesh node name.
	Name string
	// Addr is the address and port the member gossips on.
	Addr netip.AddrPort
	// Status is the member's liveness.
	Status Status
	// Health is the health of the member's services by service name; nil
	// if it announces none or its tag is malformed.
	Health map[string]Health
	// RTT is the round-trip time to the member estimated from serf's
	// network coordinates; 0 for this member itself and for members
	// without a coordinate yet.
	RTT time.Duration
}

// roster is the membership built from serf's member events. Only the
// event loop of a Member uses it; it holds no lock.
type roster struct {
	log     *slog.Logger
	members map[string]*rosterEntry
}

// rosterEntry is one member with its raw health tag, so the tag is decoded
// (and a malformed one logged) only when it changes.
type rosterEntry struct {
	info      MemberInfo // RTT unset
	rawHealth string
}

func newRoster(log *slog.Logger) *roster {
	return &roster{log: log, members: map[string]*rosterEntry{}}
}

// apply records the members of one serf member event and reports whether
// the membership changed: a member appeared, went away (reaped), or
// changed address, status or health.
func (r *roster) apply(ev serf.MemberEvent) bool {
	changed := false
	for _, m := range ev.Members {
		if r.applyOne(ev.Type, m) {
			changed = true
		}
	}
	return changed
}

func (r *roster) applyOne(typ serf.EventType, m serf.Member) bool {
	old := r.members[m.Name]
	if typ == serf.EventMemberReap {
		delete(r.members, m.Name)
		return old != nil
	}
	st, ok := statusOf(m.Status)
	if !ok {
		st, ok = eventStatus(typ)
	}
	if !ok {
		if old == nil {
			return false
		}
		st = old.info.Status
	}
	addr, _ := netip.AddrFromSlice(m.Addr)
	e := &rosterEntry{
		info: MemberInfo{
			Name:   m.Name,
			Addr:   netip.AddrPortFrom(addr.Unmap(), m.Port),
			Status: st,
		},
		rawHealth: m.Tags[tagHealth],
	}
	if old != nil && old.rawHealth == e.rawHealth {
		e.info.Health = old.info.Health
	} else {
		e.info.Health = r.decode(m.Name, e.rawHealth)
	}
	r.members[m.Name] = e
	return old == nil || old.info.Addr != e.info.Addr || old.info.Status != e.info.Status ||
		old.rawHealth != e.rawHealth
}

// eventStatus is the status an event implies, for a member whose own
// status field says nothing.
func eventStatus(typ serf.EventType) (Status, bool) {
	switch typ {
	case serf.EventMemberJoin:
		return Alive, true
	case serf.EventMemberFailed:
		return Failed, true
	case serf.EventMemberLeave:
		return Left, true
	}
	return 0, false
}

// decode decodes a peer's health tag; a malformed one counts as none.
func (r *roster) decode(node, raw string) map[string]Health {
	h, err := decodeHealth(raw)
	if err != nil {
		r.log.Debug("ignoring malformed health tag", "peer", node, "err", err)
		return nil
	}
	return h
}

// snapshot returns the members sorted by name, each with RTT from rtt.
func (r *roster) snapshot(rtt func(name string) time.Duration) []MemberInfo {
	out := make([]MemberInfo, 0, len(r.members))
	for _, e := range r.members {
		info := e.info
		info.RTT = rtt(info.Name)
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b MemberInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// applyEvent applies a serf event; only member events change the roster.
func (r *roster) applyEvent(ev serf.Event) bool {
	me, ok := ev.(serf.MemberEvent)
	return ok && r.apply(me)
}
