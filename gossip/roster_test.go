package gossip

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/serf/serf"
)

func serfMember(name string, ip string, st serf.MemberStatus, health string) serf.Member {
	m := serf.Member{Name: name, Addr: net.ParseIP(ip), Port: 7946, Status: st, Tags: map[string]string{}}
	if health != "" {
		m.Tags[tagHealth] = health
	}
	return m
}

func ev(typ serf.EventType, ms ...serf.Member) serf.MemberEvent {
	return serf.MemberEvent{Type: typ, Members: ms}
}

// TestRoster drives the roster with serf events, without sockets.
func TestRoster(t *testing.T) {
	var logs bytes.Buffer
	r := newRoster(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ap := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	rtt := func(name string) time.Duration {
		if name == "a" {
			return 0
		}
		return time.Duration(len(name)) * time.Millisecond
	}
	steps := []struct {
		name    string
		ev      serf.Event
		changed bool
		want    []MemberInfo
	}{
		{
			name: "self", ev: ev(serf.EventMemberJoin, serfMember("a", "10.0.0.1", serf.StatusAlive, "")), changed: true,
			want: []MemberInfo{{Name: "a", Addr: ap("10.0.0.1:7946"), Status: Alive}},
		},
		{
			name: "two join at once, one leaving", changed: true,
			ev: ev(serf.EventMemberJoin,
				serfMember("cc", "10.0.0.3", serf.StatusLeaving, "web=p"),
				serfMember("bb", "::ffff:10.0.0.2", serf.StatusAlive, "db=c,web=w")),
			want: []MemberInfo{
				{Name: "a", Addr: ap("10.0.0.1:7946"), Status: Alive},
				{Name: "bb", Addr: ap("10.0.0.2:7946"), Status: Alive, Health: map[string]Health{"db": Critical, "web": Warning}, RTT: 2 * time.Millisecond},
				{Name: "cc", Addr: ap("10.0.0.3:7946"), Status: Alive, Health: map[string]Health{"web": Passing}, RTT: 2 * time.Millisecond},
			},
		},
		{
			name: "same again", changed: false,
			ev: ev(serf.EventMemberUpdate, serfMember("bb", "10.0.0.2", serf.StatusAlive, "db=c,web=w")),
			want: []MemberInfo{
				{Name: "a", Addr: ap("10.0.0.1:7946"), Status: Alive},
				{Name: "bb", Addr: ap("10.0.0.2:7946"), Status: Alive, Health: map[string]Health{"db": Critical, "web": Warning}, RTT: 2 * time.Millisecond},
				{Name: "cc", Addr: ap("10.0.0.3:7946"), Status: Alive, Health: map[string]Health{"web": Passing}, RTT: 2 * time.Millisecond},
			},
		},
		{
			name: "malformed health is none", changed: true,
			ev: ev(serf.EventMemberUpdate, serfMember("bb", "10.0.0.2", serf.StatusAlive, "db=c,db=p")),
			want: []MemberInfo{
				{Name: "a", Addr: ap("10.0.0.1:7946"), Status: Alive},
				{Name: "bb", Addr: ap("10.0.0.2:7946"), Status: Alive, RTT: 2 * time.Millisecond},
				{Name: "cc", Addr: ap("10.0.0.3:7946"), Status: Alive, Health: map[string]Health{"web": Passing}, RTT: 2 * time.Millisecond},
			},
		},
		{
			name: "failed and left", changed: true,
			ev: ev(serf.EventMemberFailed, serfMember("bb", "10.0.0.2", serf.StatusFailed, "db=c,db=p")),
			want: []MemberInfo{
				{Name: "a", Addr: ap("10.0.0.1:7946"), Status: Alive},
				{Name: "bb", Addr: ap("10.0.0.2:7946"), Status: Failed, RTT: 2 * time.Millisecond},
				{Name: "cc", Addr: ap("10.0.0.3:7946"), Status: Alive, Health: map[string]Health{"web": Passing}, RTT: 2 * time.Millisecond},
			},
		},
		{
			name: "left, by the event's type", changed: true,
			ev: ev(serf.EventMemberLeave, serfMember("cc", "10.0.0.3", serf.StatusNone, "web=p")),
			want: []MemberInfo{
				{Name: "a", Addr: ap("10.0.0.1:7946"), Status: Alive},
				{Name: "bb", Addr: ap("10.0.0.2:7946"), Status: Failed, RTT: 2 * time.Millisecond},
				{Name: "cc", Addr: ap("10.0.0.3:7946"), Status: Left, Health: map[string]Health{"web": Passing}, RTT: 2 * time.Millisecond},
			},
		},
		{
			name: "rejoin at a new address", changed: true,
			ev: ev(serf.EventMemberJoin, serfMember("bb", "10.0.0.9", serf.StatusAlive, "")),
			want: []MemberInfo{
				{Name: "a", Addr: ap("10.0.0.1:7946"), Status: Alive},
				{Name: "bb", Addr: ap("10.0.0.9:7946"), Status: Alive, RTT: 2 * time.Millisecond},
				{Name: "cc", Addr: ap("10.0.0.3:7946"), Status: Left, Health: map[string]Health{"web": Passing}, RTT: 2 * time.Millisecond},
			},
		},
		{
			name: "reaped", changed: true,
			ev: ev(serf.EventMemberReap, serfMember("cc", "10.0.0.3", serf.StatusLeft, "")),
			want: []MemberInfo{
				{Name: "a", Addr: ap("10.0.0.1:7946"), Status: Alive},
				{Name: "bb", Addr: ap("10.0.0.9:7946"), Status: Alive, RTT: 2 * time.Millisecond},
			},
		},
		{
			name: "reap of an unknown member", changed: false,
			ev: ev(serf.EventMemberReap, serfMember("zz", "10.0.0.7", serf.StatusLeft, "")),
			want: []MemberInfo{
				{Name: "a", Addr: ap("10.0.0.1:7946"), Status: Alive},
				{Name: "bb", Addr: ap("10.0.0.9:7946"), Status: Alive, RTT: 2 * time.Millisecond},
			},
		},
		{
			name: "user events are not membership", changed: false,
			ev: serf.UserEvent{Name: "x"},
			want: []MemberInfo{
				{Name: "a", Addr: ap("10.0.0.1:7946"), Status: Alive},
				{Name: "bb", Addr: ap("10.0.0.9:7946"), Status: Alive, RTT: 2 * time.Millisecond},
			},
		},
	}
	for _, st := range steps {
		if got := r.applyEvent(st.ev); got != st.changed {
			t.Errorf("%s: changed = %v, want %v", st.name, got, st.changed)
		}
		if diff := cmp.Diff(st.want, r.snapshot(rtt), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
			t.Errorf("%s: snapshot (-want +got):\n%s", st.name, diff)
		}
	}
	if n := strings.Count(logs.String(), "malformed health tag"); n != 1 {
		t.Errorf("malformed tag logged %d times, want once (when it changed):\n%s", n, logs.String())
	}
}

func TestStatusString(t *testing.T) {
	for st, want := range map[Status]string{Alive: "alive", Failed: "failed", Left: "left", 0: "Status(0)"} {
		if got := st.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", st, got, want)
		}
	}
}
