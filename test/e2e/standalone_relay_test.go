package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/relay"
	"github.com/wiremesh/wiremesh/test/lab"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

const relayPort = 8444

// standaloneRelay is a `wiremesh relay` process on its own host.
type standaloneRelay struct {
	host     *lab.Host
	stateDir string
	name     string // "": eu-1
	proc     *lab.Proc
}

// url is the relay's advertised URL.
func (r *standaloneRelay) url() string {
	return "https://" + netip.AddrPortFrom(r.host.Addr, relayPort).String()
}

// start runs the relay (with extra flags, such as --join).
func (r *standaloneRelay) start(t *testing.T, extra ...string) {
	t.Helper()
	name := r.name
	if name == "" {
		name = "eu-1"
	}
	args := append([]string{bin, "relay", "--state-dir", r.stateDir, "--name", name,
		"--listen", netip.AddrPortFrom(r.host.Addr, relayPort).String(), "--advertise-url", r.url(), "--log-format", "json"}, extra...)
	r.proc = r.host.Start(t, "relay", nil, args...)
}

// serve starts the relay and waits until it serves.
func (r *standaloneRelay) serve(t *testing.T, extra ...string) {
	t.Helper()
	r.start(t, extra...)
	if err := r.proc.WaitLog(`"msg":"relay listening"`, 15*time.Second); err != nil {
		t.Fatalf("relay did not start: %v\n%s", err, r.proc.Log())
	}
}

// cachedNetmap reads the netmap the relay cached in its state dir.
func (r *standaloneRelay) cachedNetmap(t *testing.T) wire.Netmap {
	t.Helper()
	var nm wire.Netmap
	b, err := os.ReadFile(filepath.Join(r.stateDir, "netmap.json"))
	if err == nil {
		err = json.Unmarshal(b, &nm)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("relay's cached netmap: %v", err)
	}
	return nm
}

// agentNetmap reads the netmap the agent cached in its state dir; zero
// before the first.
func agentNetmap(t *testing.T, a *agent) wire.Netmap {
	t.Helper()
	var nm wire.Netmap
	b, err := os.ReadFile(filepath.Join(a.stateDir, "netmap.json"))
	if err == nil {
		err = json.Unmarshal(b, &nm)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("agent %s's cached netmap: %v", a.name, err)
	}
	return nm
}

// relayed is a relay client run in the test process inside a host's
// namespace with a node's key; what it receives arrives on got.
type relayed struct {
	c   *relay.Client
	got chan relayedPacket
}

// relayedPacket is a packet a relay delivered and its sender's key.
type relayedPacket struct {
	src [32]byte
	pkt []byte
}

// attach runs a relay client on h with node key priv to the relay r
// describes, until the test ends.
func attach(t *testing.T, h *lab.Host, r wire.Relay, priv [32]byte) *relayed {
	t.Helper()
	pins, err := credential.ParsePins(r.Pins)
	if err != nil {
		t.Fatal(err)
	}
	rc := &relayed{got: make(chan relayedPacket, 64)}
	rc.c, err = relay.NewClient(relay.ClientConfig{
		URL: r.URL, Pins: pins, RelayKey: r.Key, NodeKey: priv,
		OnPacket: func(src [32]byte, pkt []byte) {
			select {
			case rc.got <- relayedPacket{src, bytes.Clone(pkt)}:
			default:
			}
		},
		PingInterval: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The client dials on Run's goroutine, which Do keeps in h's
		// namespace.
		h.Do(func() error { return rc.c.Run(ctx) })
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return rc
}

// exchange waits until a packet from a reaches b through the relay.
func exchange(t *testing.T, from, to *relayed, toKey [32]byte, what string) {
	t.Helper()
	msg := []byte("through the relay: " + what)
	waitFor(t, 30*time.Second, what, func() bool {
		from.c.Send(toKey, msg)
		select {
		case p := <-to.got:
			return bytes.Equal(p.pkt, msg)
		case <-time.After(100 * time.Millisecond):
			return false
		}
	})
}

// agentKey reads the agent's WireGuard private key from its state dir.
func agentKey(t *testing.T, a *agent) (priv, pub [32]byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.stateDir, "private.key"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := wgtypes.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return k, k.PublicKey()
}

// A standalone relay enrolls with a relay join key, is in the agents'
// relay map with the pin of the certificate it serves, relays between
// enrolled nodes and refuses a stranger; with the coordinator killed it
// keeps serving, and restarted it serves again from its cache.
func TestStandaloneRelay(t *testing.T) {
	m := newBareMesh(t, "--no-relay")
	m.setPolicy(allowAll)
	r := &standaloneRelay{host: m.lab.AddHost("relay"), stateDir: filepath.Join(t.TempDir(), "relay")}

	// An agent key does not enroll a relay.
	bad := r.host.Start(t, "relay-agent-key", nil, bin, "relay", "--join", m.joinKey, "--state-dir", r.stateDir, "--name", "eu-1",
		"--listen", netip.AddrPortFrom(r.host.Addr, relayPort).String(), "--advertise-url", r.url())
	if code, err := bad.Wait(15 * time.Second); err != nil || code == 0 || !strings.Contains(bad.Log(), "keys create --relay") {
		t.Fatalf("relay with an agent key: exit %d, %v, want a refusal naming --relay:\n%s", code, err, bad.Log())
	}
	// The first start waits for an unreachable coordinator.
	relayKey := strings.TrimSpace(m.cli("keys", "create", "--relay"))
	m.coord.Kill()
	r.start(t, "--join", relayKey)
	if err := r.proc.WaitLog(`"msg":"enrollment failed; retrying"`, 15*time.Second); err != nil {
		t.Fatalf("relay with the coordinator down: %v\n%s", err, r.proc.Log())
	}
	m.startCoordinator()
	if err := r.proc.WaitLog(`"msg":"relay listening"`, 30*time.Second); err != nil {
		t.Fatalf("relay did not start once the coordinator was back: %v\n%s", err, r.proc.Log())
	}
	// One relay per state dir.
	second := r.host.Start(t, "relay-second", nil, bin, "relay", "--state-dir", r.stateDir, "--name", "eu-1",
		"--listen", netip.AddrPortFrom(r.host.Addr, relayPort+1).String(), "--advertise-url", r.url())
	if code, err := second.Wait(15 * time.Second); err != nil || code == 0 || !strings.Contains(second.Log(), "in use by another relay") {
		t.Fatalf("a second relay on the state dir: exit %d, %v, want a refusal naming the first:\n%s", code, err, second.Log())
	}

	a, b := m.addAgent("a"), m.addAgent("b")
	privA, pubA := agentKey(t, a)
	privB, pubB := agentKey(t, b)
	keyText := func(k [32]byte) string { return wgtypes.Key(k).String() }
	waitFor(t, 15*time.Second, "both agents in the relay's netmap", func() bool {
		nm := r.cachedNetmap(t)
		return slices.Contains(nm.RelayClients, keyText(pubA)) && slices.Contains(nm.RelayClients, keyText(pubB))
	})

	// The agents' relay map names it (and nothing else: --no-relay).
	var desc wire.Relay
	waitFor(t, 15*time.Second, "the relay in a's relay map", func() bool {
		nm := agentNetmap(t, a)
		if len(nm.Relays) != 1 || nm.Relays[0].Name != "eu-1" {
			return false
		}
		desc = nm.Relays[0]
		return true
	})
	if desc.URL != r.url() || len(desc.STUN) != 2 {
		t.Errorf("relay map entry %+v, want URL %s and two STUN servers", desc, r.url())
	}
	i := slices.IndexFunc(m.nodes(), func(n wire.Node) bool { return n.Name == "eu-1" })
	if i < 0 || m.nodes()[i].Relay == nil {
		t.Errorf("nodes list does not show eu-1 as a relay: %+v", m.nodes())
	}
	// The cache is written at most once a second: wait for b in it.
	waitFor(t, 15*time.Second, "b in a's cached netmap", func() bool {
		return slices.ContainsFunc(agentNetmap(t, a).Peers, func(p wire.Node) bool { return p.Name == "b" })
	})
	if nm := agentNetmap(t, a); slices.ContainsFunc(nm.Peers, func(p wire.Node) bool { return p.Name == "eu-1" }) || len(nm.Peers) != 1 {
		t.Errorf("a's peers %+v, want b only (never the relay)", nm.Peers)
	}
	checkRelayPin(t, a.host, desc)

	ca, cb := attach(t, a.host, desc, privA), attach(t, b.host, desc, privB)
	exchange(t, ca, cb, pubB, "a to b")
	exchange(t, cb, ca, pubA, "b to a")

	stranger, _ := wgtypes.GeneratePrivateKey()
	cs := attach(t, a.host, desc, stranger)
	waitFor(t, 15*time.Second, "the stranger to be refused", func() bool { return errors.Is(cs.c.Err(), relay.ErrRefused) })
	if cs.c.Connected() {
		t.Error("a key the coordinator never enrolled attached to the relay")
	}

	// The coordinator dies; the relay restarts and serves from its cache.
	m.coord.Kill()
	r.proc.Signal(sigterm)
	if code, err := r.proc.Wait(10 * time.Second); err != nil || code != 0 {
		t.Fatalf("relay: exit %d, %v on SIGTERM\n%s", code, err, r.proc.Log())
	}
	r.serve(t)
	if err := r.proc.WaitLog("serving from the cached netmap", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	exchange(t, ca, cb, pubB, "a to b after the restart")
	exchange(t, cb, ca, pubA, "b to a after the restart")
	if cs.c.Connected() {
		t.Error("the stranger attached to the restarted relay")
	}
	checkRelayPin(t, a.host, desc)
}

// checkRelayPin connects to the relay from h and checks that the
// certificate it serves matches the pins it advertised, and not another.
func checkRelayPin(t *testing.T, h *lab.Host, desc wire.Relay) {
	t.Helper()
	pins, err := credential.ParsePins(desc.Pins)
	if err != nil {
		t.Fatal(err)
	}
	var raw [][]byte
	err = h.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := (&tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}}).DialContext(ctx, "tcp", strings.TrimPrefix(desc.URL, "https://"))
		if err != nil {
			return err
		}
		defer conn.Close()
		for _, c := range conn.(*tls.Conn).ConnectionState().PeerCertificates {
			raw = append(raw, c.Raw)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("TLS to the relay: %v", err)
	}
	if err := pins.Verify(raw); err != nil {
		t.Errorf("the relay's certificate does not match its advertised pins %v: %v", desc.Pins, err)
	}
	other, _ := credential.ParsePins([]string{fmt.Sprintf("sha256:%064x", 1)})
	if other.Verify(raw) == nil {
		t.Error("the relay's certificate matches an arbitrary pin")
	}
}
