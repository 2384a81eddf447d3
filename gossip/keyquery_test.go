package gossip

import (
	"bytes"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"log"
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// TestKeyQueriesRefused: a rogue member that holds the mesh's key (a
// stock serf agent, as an attacker would run) installs a key of its own,
// makes it primary and removes the real key with serf's key queries.
// Every member refuses each query, its keyring stays exactly what SetKeys
// made it, gossip between the members goes on, and a member that knows
// only the real key (a restarted or new agent) still gets in: nobody is
// partitioned.
func TestKeyQueriesRefused(t *testing.T) {
	ms, lb := cluster(t, 4)
	realKey, rogueKey := testKey(1), testKey(7)
	rogue := startRogue(t, realKey, ms[0].addr(), newStdLogger(ms[0].log.With("node", "rogue")))
	waitFor(t, 5*time.Second, "everyone sees the rogue", func() bool {
		for _, m := range ms {
			if statusOfName(m, "rogue") != Alive {
				return false
			}
		}
		return true
	})

	for _, q := range []struct {
		name string
		key  []byte
	}{{"install-key", rogueKey}, {"use-key", rogueKey}, {"remove-key", realKey}} {
		answers := keyQuery(t, rogue, q.name, q.key, ms)
		for _, m := range ms {
			if a, ok := answers[m.name]; !ok || a.Result {
				t.Errorf("%s: %s did not refuse it (answered: %v, %+v)", q.name, m.name, ok, a)
			}
		}
		for _, m := range ms {
			if got := m.trans.ring.Load().keys; len(got) != 1 || !bytes.Equal(got[0], realKey) {
				t.Errorf("after %s: %s has %d keys, the first the real one: %v; want only the real key",
					q.name, m.name, len(got), len(got) > 0 && bytes.Equal(got[0], realKey))
			}
		}
	}

	// Gossip goes on: a health change reaches every member, and a member
	// with only the real key joins and sees everyone.
	h := map[string]Health{"api": Warning}
	if err := ms[3].SetHealth(h); err != nil {
		t.Fatal(err)
	}
	late := start(t, testConfig("late", ms[0].log, realKey))
	if n, err := late.Join([]netip.AddrPort{ms[1].addr()}); err != nil || n != 1 {
		t.Fatalf("a member with the real key cannot join after the queries: %d, %v", n, err)
	}
	for _, m := range append(ms, late) {
		waitFor(t, 5*time.Second, m.name+" sees m3's health and every member alive", func() bool {
			mi, _ := info(m, "m3")
			return maps.Equal(mi.Health, h) && countStatus(m, Alive) == len(ms)+2
		})
	}
	checkNoKeys(t, lb.String(), realKey, rogueKey)
}

// keyAnswer is a member's answer to a key query (serf's nodeKeyResponse).
type keyAnswer struct {
	Result  bool
	Message string
}

// keyQuery runs serf's internal query _serf_NAME for key from the rogue,
// addressed to the members ms only (so that the rogue keeps its own ring
// and every query goes out under the real key), and returns each
// member's answer.
func keyQuery(t *testing.T, rogue *serf.Serf, name string, key []byte, ms []*Member) map[string]keyAnswer {
	t.Helper()
	var req bytes.Buffer
	req.WriteByte(0) // serf's message type byte, which the handlers skip
	if err := codec.NewEncoder(&req, &codec.MsgpackHandle{}).Encode(struct{ Key []byte }{key}); err != nil {
		t.Fatal(err)
	}
	p := rogue.DefaultQueryParams()
	for _, m := range ms {
		p.FilterNodes = append(p.FilterNodes, m.name)
	}
	resp, err := rogue.Query(serf.InternalQueryPrefix+name, req.Bytes(), p)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	out := map[string]keyAnswer{}
	for r := range resp.ResponseCh() {
		var a keyAnswer
		if len(r.Payload) < 1 {
			t.Fatalf("%s: empty answer from %s", name, r.From)
		}
		if err := codec.NewDecoderBytes(r.Payload[1:], &codec.MsgpackHandle{}).Decode(&a); err != nil {
			t.Fatalf("%s: answer from %s: %v", name, r.From, err)
		}
		out[r.From] = a
		if len(out) == len(ms) {
			break
		}
	}
	return out
}

// startRogue starts a stock serf member called "rogue" with keyring
// [key], joined to the member at join.
func startRogue(t *testing.T, key []byte, join netip.AddrPort, logger *log.Logger) *serf.Serf {
	t.Helper()
	ring, err := memberlist.NewKeyring([][]byte{key}, key)
	if err != nil {
		t.Fatal(err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = "rogue"
	mc.BindAddr = nextAddr().String()
	mc.BindPort = DefaultPort
	mc.Keyring = ring
	mc.Logger = logger
	sc := serf.DefaultConfig()
	sc.NodeName = "rogue"
	sc.MemberlistConfig = mc
	sc.Logger = logger
	s, err := serf.Create(sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown() })
	if _, err := s.Join([]string{join.String()}, true); err != nil {
		t.Fatalf("rogue join: %v", err)
	}
	return s
}
