package dns

import (
	"fmt"
	"sync"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

// observed records Config.Observe calls.
type observed struct {
	mu    sync.Mutex
	calls []string
}

func (o *observed) observe(qtype uint16, rcode int, forwarded bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, fmt.Sprintf("%s %s %v", miekg.TypeToString[qtype], miekg.RcodeToString[rcode], forwarded))
}

func (o *observed) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.calls
	o.calls = nil
	return c
}

// TestObserve: every answered query is observed once, with its type, the
// code sent and whether it was forwarded; dropped messages are not.
func TestObserve(t *testing.T) {
	var o observed
	up := startUpstream(t)
	s := newTestServer(t, Config{Upstreams: []string{up}, ForwardTimeout: time.Second, Observe: o.observe})
	ask(t, s, "udp", fromPeer, "web.service.mesh.internal.", miekg.TypeA, 0)
	ask(t, s, "udp", fromPeer, "web.service.mesh.internal.", miekg.TypeSRV, 0)
	ask(t, s, "tcp", fromPeer, "nope.mesh.internal.", miekg.TypeAAAA, 0)
	ask(t, s, "udp", fromPeer, "www.example.com.", miekg.TypeA, 0)
	resp := new(miekg.Msg)
	resp.SetQuestion("web.service.mesh.internal.", miekg.TypeA)
	resp.Response = true
	s.ServeDNS(newRecorder("udp", fromPeer), resp) // dropped
	want := []string{"A NOERROR false", "SRV NOERROR false", "AAAA NXDOMAIN false", "A NOERROR true"}
	if got := o.take(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("observed %q, want %q", got, want)
	}

	s = newTestServer(t, Config{Observe: o.observe})
	ask(t, s, "udp", fromPeer, "www.example.com.", miekg.TypeMX, 0)
	if got := o.take(); fmt.Sprint(got) != fmt.Sprint([]string{"MX REFUSED true"}) {
		t.Errorf("forwarded without upstreams observed as %q, want MX REFUSED true", got)
	}
}
