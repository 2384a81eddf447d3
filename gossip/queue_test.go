package gossip

import (
	"fmt"
	"testing"

	"github.com/hashicorp/memberlist"
)

// namedBroadcast is a broadcast about one member, as memberlist's alive
// messages are: a newer one about the same member invalidates the older.
type namedBroadcast struct {
	name     string
	msg      []byte
	finished chan struct{}
}

func (b *namedBroadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*namedBroadcast)
	return ok && ob.name == b.name
}
func (b *namedBroadcast) Name() string    { return b.name }
func (b *namedBroadcast) Message() []byte { return b.msg }
func (b *namedBroadcast) Finished()       { close(b.finished) }

func newNamed(name string) *namedBroadcast {
	// Every message the same length, as the alive messages of members with
	// names and tags of one length are.
	return &namedBroadcast{name: name, msg: fmt.Appendf(nil, "alive %-8s", name), finished: make(chan struct{})}
}

// TestBroadcastQueueKeepsOwnUpdate replays what a member's gossip queue
// sees when it starts and sets its tags, then relays its peers' alive
// messages: memberlist v0.7.0's TransmitLimitedQueue reset its id counter
// whenever it ran empty, also while the item being added (which had
// already taken an id) replaced the only one queued, so a later message
// of the same length got the same id and silently replaced the member's
// own update in the queue: it was never sent, and serf's SetTags timed
// out. A member that had just joined lost its first health change this
// way (TestHealthBurst, 6 of 22 runs with a 30 s push/pull). Every
// queued message must be transmitted until its limit, or finish when a
// newer one about the same member replaces it.
func TestBroadcastQueueKeepsOwnUpdate(t *testing.T) {
	q := &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 7 }, RetransmitMult: 12}
	first := newNamed("self")
	q.QueueBroadcast(first) // memberlist's own alive message at start
	update := newNamed("self")
	q.QueueBroadcast(update) // SetTags: replaces it
	select {
	case <-first.finished:
	default:
		t.Fatal("the replaced message did not finish")
	}
	var relays []*namedBroadcast
	for i := range 4 {
		r := newNamed(fmt.Sprintf("peer%d", i))
		relays = append(relays, r)
		q.QueueBroadcast(r)
	}
	sent := map[string]int{}
	for q.NumQueued() > 0 && sent["self"] < 100 {
		msgs := q.GetBroadcasts(2, 1400)
		if len(msgs) == 0 {
			break
		}
		for _, m := range msgs {
			var name string
			fmt.Sscanf(string(m), "alive %s", &name)
			sent[name]++
		}
	}
	if got := q.NumQueued(); got != 0 {
		t.Errorf("%d messages still queued, none sent", got)
	}
	for _, b := range append(relays, update) {
		if sent[b.name] != 12 {
			t.Errorf("%s sent %d times, want 12 (memberlist's queue dropped it)", b.name, sent[b.name])
		}
		select {
		case <-b.finished:
		default:
			t.Errorf("%s never finished: SetTags would wait for it until its timeout", b.name)
		}
	}
}
