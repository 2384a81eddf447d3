package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
)

// TestGossipKeyQueries: the holder of a node runs a stock serf member of
// its own with the gossip key from its netmap, next to its agent, and
// sends serf's three keyring queries to every other agent: install a key
// of its own, make it primary, remove the mesh's key. Every agent refuses
// each one, and nobody is partitioned: the agents still gossip (a health
// change reaches all of them), and an agent that joins afterwards with
// the netmap's key (as every restarted agent does) gets into the pool.
func TestGossipKeyQueries(t *testing.T) {
	m := newBareMesh(t)
	m.setPolicy(burstPolicy("k1", "k2", "k3", "k4"))
	f := servicesFile(t, burstServices)
	var honest []*agent
	for i := range 3 {
		honest = append(honest, m.addAgent(fmt.Sprintf("k%d", i+1), "--config", f))
	}
	rogueHost := m.addAgent("rogue")
	waitGossipMembers(t, append(slices.Clone(honest), rogueHost), 4)

	key := netmapGossipKey(t, rogueHost)
	rogue := startRogueSerf(t, rogueHost, key, netip4(t, honest[0]))
	var names []string
	for _, a := range honest {
		names = append(names, a.name)
	}
	waitGossipMembers(t, honest, 5) // the rogue is in the pool

	ownKey := bytes.Repeat([]byte{7}, 32)
	for _, q := range []struct {
		name string
		key  []byte
	}{{"install-key", ownKey}, {"use-key", ownKey}, {"remove-key", key}} {
		answers := rogueKeyQuery(t, rogue, q.name, q.key, names)
		for _, n := range names {
			if a, ok := answers[n]; !ok || a.Result {
				t.Errorf("%s: %s did not refuse it (answered: %v, %+v)", q.name, n, ok, a)
			}
		}
	}

	// Nobody is partitioned: a health change still reaches every agent,
	// and a new agent with the netmap's key joins the pool.
	late := m.addAgent("k4", "--config", f)
	all := append(slices.Clone(honest), late)
	waitGossipMembers(t, all, 6)
	took := healthBurst(t, honest[:1], all, true, []string{honest[0].addr(t, false).String()}, 10*time.Second)
	t.Logf("a health change reached every agent %s after the queries", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("a health change took %s to reach every agent after the key queries, want at most 2 s", took)
	}
}

// waitGossipMembers waits until every agent of as counts n alive gossip
// members.
func waitGossipMembers(t *testing.T, as []*agent, n int) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d gossip members at every agent", n), func() bool {
		for _, a := range as {
			if st := a.status(t); st.Gossip == nil || st.Gossip.Members != n {
				return false
			}
		}
		return true
	})
}

// netmapGossipKey reads the primary gossip key from a's cached netmap, as
// root on that node can.
func netmapGossipKey(t *testing.T, a *agent) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.stateDir, "netmap.json"))
	if err != nil {
		t.Fatal(err)
	}
	var nm wire.Netmap
	if err := json.Unmarshal(b, &nm); err != nil || nm.Gossip == nil || len(nm.Gossip.Keys) == 0 {
		t.Fatalf("no gossip key in %s's netmap (%v)", a.name, err)
	}
	k, err := base64.StdEncoding.DecodeString(nm.Gossip.Keys[0])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func netip4(t *testing.T, a *agent) string {
	return net.JoinHostPort(a.addr(t, false).String(), "7946")
}

// startRogueSerf starts a stock serf member called "rogue-serf" on port
// 7947 of h's overlay address, inside h's namespace, with keyring [key],
// and joins it to join.
func startRogueSerf(t *testing.T, h *agent, key []byte, join string) *serf.Serf {
	t.Helper()
	ring, err := memberlist.NewKeyring([][]byte{key}, key)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	lw := &lockedWriter{buf: &logs}
	logger := log.New(lw, "", 0)
	addr := h.addr(t, false).String()
	var trans *nsTransport
	err = h.host.Do(func() error {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{addr}, BindPort: 7947, Logger: logger})
		trans = &nsTransport{NetTransport: nt, host: h.host}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = "rogue-serf"
	mc.Transport = trans
	mc.Keyring = ring
	mc.Logger = logger
	sc := serf.DefaultConfig()
	sc.NodeName = "rogue-serf"
	sc.MemberlistConfig = mc
	sc.Logger = logger
	s, err := serf.Create(sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Shutdown()
		if t.Failed() {
			lw.mu.Lock()
			t.Logf("rogue serf log:\n%s", logs.String())
			lw.mu.Unlock()
		}
	})
	if _, err := s.Join([]string{join}, true); err != nil {
		t.Fatalf("rogue serf join %s: %v", join, err)
	}
	return s
}

// nsTransport is memberlist's NetTransport whose listeners were made in a
// lab host's namespace and whose TCP dials are made there too.
type nsTransport struct {
	*memberlist.NetTransport
	host *lab.Host
}

// DialTimeout implements memberlist.Transport.
func (n *nsTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return n.host.DialContext(ctx, "tcp", addr)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (n *nsTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return n.DialTimeout(a.Addr, timeout)
}

// keyAnswer is an agent's answer to a key query (serf's nodeKeyResponse).
type keyAnswer struct {
	Result  bool
	Message string
}

// rogueKeyQuery runs serf's internal query _serf_NAME for key, addressed
// to the members called names only (the rogue keeps its own ring, so every
// query goes out under the mesh's key), and returns their answers.
func rogueKeyQuery(t *testing.T, s *serf.Serf, name string, key []byte, names []string) map[string]keyAnswer {
	t.Helper()
	var req bytes.Buffer
	req.WriteByte(0) // serf's message type byte, which the handlers skip
	if err := codec.NewEncoder(&req, &codec.MsgpackHandle{}).Encode(struct{ Key []byte }{key}); err != nil {
		t.Fatal(err)
	}
	p := s.DefaultQueryParams()
	p.FilterNodes = names
	resp, err := s.Query(serf.InternalQueryPrefix+name, req.Bytes(), p)
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
		if len(out) == len(names) {
			break
		}
	}
	return out
}

// lockedWriter serializes writes into buf.
type lockedWriter struct {
	mu  sync.Mutex
	buf *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}
