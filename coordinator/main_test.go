package coordinator

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/store"
	"github.com/wiremesh/wiremesh/wire"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cmpNet lets cmp compare the netip types, which have unexported fields.
var cmpNet = cmp.Options{
	cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
}

// testKeys maps every public key newPublicKey made to its private key
// ([32]byte), so that tests can prove them as agents do.
var testKeys sync.Map

// newPublicKey returns the public half of a new X25519 (WireGuard) key.
func newPublicKey(t testing.TB) string {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := base64.StdEncoding.EncodeToString(k.PublicKey().Bytes())
	testKeys.Store(pub, [32]byte(k.Bytes()))
	return pub
}

// privateKeyOf returns the private key of a public key newPublicKey made.
func privateKeyOf(t testing.TB, pub string) [32]byte {
	t.Helper()
	k, ok := testKeys.Load(pub)
	if !ok {
		t.Fatalf("no private key for %s", pub)
	}
	return k.([32]byte)
}

// netmapProof returns the proof an agent with public key pub (made by
// newPublicKey) sends for a netmap stream now.
func netmapProof(t testing.TB, c *Coordinator, pub string) string {
	t.Helper()
	p, err := credential.NetmapProof(privateKeyOf(t, pub), c.PublicProofKey(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// lastReportProof is the time (unix nanoseconds) of the last report
// proof made: like an agent, it makes each later than the last.
var lastReportProof atomic.Int64

// nextReportTime returns a time for a report proof, in unix nanoseconds:
// now, or later than every one returned before.
func nextReportTime() int64 {
	at := time.Now().UnixNano()
	for last := lastReportProof.Load(); ; last = lastReportProof.Load() {
		at = max(at, last+1)
		if lastReportProof.CompareAndSwap(last, at) {
			return at
		}
	}
}

// servicesProof returns the content proof an agent with public key pub
// (made by newPublicKey) sends with a services report of svcs now.
func servicesProof(t testing.TB, c *Coordinator, pub string, svcs []wire.Service) string {
	t.Helper()
	content, err := wire.ServicesContent(svcs)
	if err != nil {
		t.Fatal(err)
	}
	p, err := credential.ServicesProof(privateKeyOf(t, pub), c.PublicProofKey(), time.Unix(0, nextReportTime()), content)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// rotationProof returns the proof an agent with public key pub (made by
// newPublicKey) sends to rotate to next.
func rotationProof(t testing.TB, c *Coordinator, pub, next string) string {
	t.Helper()
	p, err := credential.RotationProof(privateKeyOf(t, pub), c.PublicProofKey(), next)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newJoinKey(t *testing.T, s store.Store, req wire.CreateJoinKeyRequest) credential.Secret {
	t.Helper()
	_, sec, err := s.CreateJoinKey(context.Background(), "test", req)
	if err != nil {
		t.Fatalf("CreateJoinKey(%+v): %v", req, err)
	}
	return sec
}

// enrolled is a node the store admitted with its credential.
type enrolled struct {
	node wire.Node
	cred credential.Secret
}

func mustEnroll(t *testing.T, s store.Store, key credential.Secret, p store.EnrollParams) enrolled {
	t.Helper()
	if p.PublicKey == "" {
		p.PublicKey = newPublicKey(t)
	}
	n, cred, ver, err := s.Enroll(context.Background(), key, p)
	if err != nil {
		t.Fatalf("Enroll(%+v): %v", p, err)
	}
	if ver == 0 {
		t.Errorf("Enroll(%+v) returned version 0", p)
	}
	return enrolled{n, cred}
}

func mustNodes(t *testing.T, s store.Store) []wire.Node {
	t.Helper()
	nodes, _, err := s.Nodes(context.Background())
	if err != nil {
		t.Fatalf("Nodes: %v", err)
	}
	return nodes
}
