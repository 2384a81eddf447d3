package coordinator

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/atomicfile"
	"github.com/wiremesh/wiremesh/wire"
)

// proofKeyFile holds the coordinator's proof key in its data dir (0600).
const proofKeyFile = "proof.key"

// loadProofKey reads the proof key at path, creating it if there is none;
// made reports whether it did.
func loadProofKey(path string) (k *credential.ProofKey, made bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if k, err = credential.ParseProofKey(strings.TrimSpace(string(b))); err != nil {
			return nil, false, fmt.Errorf("%s: %w", path, err)
		}
		return k, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("read proof key: %w", err)
	}
	if k, err = credential.NewProofKey(); err != nil {
		return nil, false, err
	}
	if err := atomicfile.Write(path, []byte(k.EncodePrivate()+"\n"), 0o600); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// PublicProofKey returns the public key agents make their proofs for.
func (c *Coordinator) PublicProofKey() string { return c.proof.PublicKey() }

// handleCoordinatorKey serves the public proof key, without auth.
func (c *Coordinator) handleCoordinatorKey(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, wire.CoordinatorKey{PublicKey: c.proof.PublicKey()})
}

// proofTimes holds, per node, the time of the newest netmap proof the
// coordinator accepted, so that an older one is refused. It is kept in
// memory: after a restart, and at another coordinator, only the time
// window applies. Netmap proofs carry seconds, and an agent may open two
// streams within one, so an equal time passes. (Report proofs, which
// carry nanoseconds and must grow, are recorded in the database:
// acceptReport.)
type proofTimes struct {
	mu   sync.Mutex
	last map[int64]time.Time // node id → newest accepted proof time; guarded by mu
}

// accept records at as node id's newest proof time, unless it is older
// than the newest already accepted.
func (p *proofTimes) accept(id int64, at time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if last, ok := p.last[id]; ok && at.Before(last) {
		return fmt.Errorf("%w: the proof was made at %s, before one this node already used (%s); check the node's clock",
			credential.ErrProofTime, at.UTC().Format(time.RFC3339), last.UTC().Format(time.RFC3339))
	}
	if p.last == nil {
		p.last = map[int64]time.Time{}
	}
	p.last[id] = at
	return nil
}

// acceptReport records at, the time of the proof of node's report of kind
// ("services", "connectivity"), as its newest in the database, which
// every coordinator shares, and refuses (403) a report whose proof is not
// newer than one any of them accepted: a replayed report. The agent makes
// each report's proof later than the last, in nanoseconds. False: the
// answer is written.
func (c *Coordinator) acceptReport(w http.ResponseWriter, r *http.Request, node wire.Node, kind string, at time.Time) bool {
	ok, newest, err := c.store.AcceptProof(r.Context(), node.ID, kind, at)
	if err != nil {
		c.writeStoreError(w, err)
		return false
	}
	if !ok {
		c.refuseProof(w, r, node, fmt.Errorf("%w: the report's proof was made at %s, not after that of a report this node already made (%s): a replayed report",
			credential.ErrProofTime, at.UTC().Format(time.RFC3339Nano), newest.UTC().Format(time.RFC3339Nano)))
		return false
	}
	return true
}

// netmapAuth authenticates a netmap request: the node credential, the
// node's current public key (nodeAuth), the agent's protocol, then the
// proof that the caller
// holds its private key, made recently. An unknown credential is refused
// (401) before the proof is looked at; a missing, wrong or stale proof
// gets 403.
func (c *Coordinator) netmapAuth(w http.ResponseWriter, r *http.Request, req *wire.MapRequest) (wire.Node, bool) {
	node, ok := c.nodeAuth(w, r, req, func() string { return req.PublicKey })
	if !ok || !c.checkProtocol(w, req.ProtocolVersion) {
		return wire.Node{}, false
	}
	at, err := c.proof.CheckNetmap(req.PublicKey, req.Proof, time.Now())
	if err == nil {
		err = c.proofTimes.accept(node.ID, at)
	}
	if err != nil {
		c.refuseProof(w, r, node, err)
		return wire.Node{}, false
	}
	return node, true
}

// refuseProof answers 403 to a request whose proof failed and logs it: a
// valid credential with a wrong proof may be a stolen credential.
func (c *Coordinator) refuseProof(w http.ResponseWriter, r *http.Request, node wire.Node, err error) {
	c.log.Warn("proof refused", "node", node.Name, "addr", r.RemoteAddr, "why", err.Error())
	code := wire.CodeProofInvalid
	if errors.Is(err, credential.ErrProofTime) {
		code = wire.CodeProofTime
	}
	writeError(w, http.StatusForbidden, code, err.Error(), nil)
}
