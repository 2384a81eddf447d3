package node

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// TestRotationAnswerLost: a rotation whose answer is lost after the
// coordinator took the new key fails RotateKey, but the agent keeps its
// rotation file and, once it reconnects, adopts the new key instead of
// exiting refused.
func TestRotationAnswerLost(t *testing.T) {
	tc := startCoordinator(t)
	tc.setPolicy(t, allowAll)
	p := startLossyProxy(t, tc.url)
	_, sec, err := tc.c.Store().CreateJoinKey(context.Background(), "test", wire.CreateJoinKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	key := credential.Bundle{URL: "https://" + p.addr(), Pins: tc.c.Pins(), Secret: sec}.Encode(credential.JoinKeyPrefix)
	dir := filepath.Join(t.TempDir(), "state")
	a := startAgent(t, "a", dir, key)
	a.waitUp(t)
	waitConnected(t, a)
	old := a.pub()
	// b, connected directly, tells when the coordinator has published a's
	// new key, which it does before it answers.
	b := startAgent(t, "b", filepath.Join(t.TempDir(), "b"), tc.joinKey(t, false))
	b.eng.wait(t, "a as b's peer", hasPeers(old))

	// The coordinator hears the rotation, but nothing it says reaches the
	// agent: neither the answer nor the netmap with the new key.
	p.dropReplies()
	type result struct {
		pub string
		err error
	}
	rotated := make(chan result, 1)
	go func() {
		pub, err := a.RotateKey(context.Background())
		rotated <- result{pub, err}
	}()
	newKey := waitNodeKey(t, tc, "a", old)
	b.eng.wait(t, "a's new key published to b", hasPeers(newKey))
	p.cut() // the agent's connections break; new ones go through
	var r result
	select {
	case r = <-rotated:
	case <-time.After(waitFor):
		t.Fatal("RotateKey did not return after its connection was cut")
	}
	if r.err == nil {
		t.Fatalf("RotateKey returned %s and no error: the answer was not lost", r.pub)
	}
	if errors.Is(r.err, ErrRefused) {
		t.Fatalf("RotateKey: %v, want a transport error, not a refusal", r.err)
	}

	// The reconnecting agent is refused for the old key and resumes the
	// rotation.
	deadline := time.After(waitFor)
	for !engineHasKey(a.eng, newKey) {
		select {
		case err := <-a.done:
			a.done, a.err = nil, err
			t.Fatalf("agent exited after the lost answer: %v", err)
		case <-deadline:
			t.Fatalf("agent did not take the new key %s within %s (runs with %s)", newKey, waitFor, a.pub())
		case <-time.After(10 * time.Millisecond):
		}
	}
	waitConnected(t, a)
	if a.pub() != newKey {
		t.Errorf("agent runs with %s, want the rotated key %s", a.pub(), newKey)
	}
	saved, ok, err := a.state.loadKey()
	if err != nil || !ok || saved.PublicKey().String() != newKey {
		t.Errorf("private.key holds %v (%v, %v), want the rotated key", saved.PublicKey(), ok, err)
	}
	if _, err := os.Stat(filepath.Join(dir, nextKeyFile)); !os.IsNotExist(err) {
		t.Errorf("the rotation file stayed: %v", err)
	}
	n, err := tc.c.Store().NodeByName(context.Background(), "a")
	if err != nil || n.PublicKey != newKey {
		t.Errorf("coordinator's node a has key %s (%v), want %s", n.PublicKey, err, newKey)
	}
	select {
	case err := <-a.done:
		a.done, a.err = nil, err
		t.Errorf("agent exited: %v", err)
	default:
	}
}

// waitNodeKey waits until the coordinator's node name has a key other
// than old, and returns it.
func waitNodeKey(t *testing.T, tc *testCoordinator, name, old string) string {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		n, err := tc.c.Store().NodeByName(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if n.PublicKey != old {
			return n.PublicKey
		}
		if time.Now().After(deadline) {
			t.Fatalf("coordinator did not take a new key for %s", name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// engineHasKey reports whether e runs with the private key of pub and
// has applied a netmap for it.
func engineHasKey(e *fakeEngine, pub string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last != nil && e.last.Self.PublicKey == pub && e.cfg.PrivateKey.PublicKey().String() == pub
}

// lossyProxy forwards TCP connections to a target; it can drop what the
// target sends back and cut the connections it holds.
type lossyProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	drop   bool                      // guarded by mu; new connections drop replies
	closed bool                      // guarded by mu
	conns  map[*proxiedConn]struct{} // guarded by mu
}

type proxiedConn struct {
	client, server net.Conn
	drop           atomic.Bool // the target's bytes are discarded
}

func (c *proxiedConn) close() {
	c.client.Close()
	c.server.Close()
}

// startLossyProxy proxies to the host:port of url on a loopback port; it
// is closed, with its connections, when the test ends.
func startLossyProxy(t *testing.T, url string) *lossyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{ln: ln, target: url[len("https://"):], conns: map[*proxiedConn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		p.closed = true
		for c := range p.conns {
			c.close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *lossyProxy) addr() string { return p.ln.Addr().String() }

func (p *lossyProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

func (p *lossyProxy) serve(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, waitFor)
	if err != nil {
		client.Close()
		return
	}
	c := &proxiedConn{client: client, server: server}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	c.drop.Store(p.drop)
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(server, client)
		c.close()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 && !c.drop.Load() {
			if _, werr := client.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	c.close()
	<-done
}

// dropReplies makes every connection, open or new, discard what the
// target sends.
func (p *lossyProxy) dropReplies() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop = true
	for c := range p.conns {
		c.drop.Store(true)
	}
}

// cut closes every open connection (which keeps dropping to its end) and
// forwards new ones both ways again.
func (p *lossyProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop = false
	for c := range p.conns {
		c.close()
	}
}
