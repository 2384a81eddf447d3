package store

import (
	"context"
	"net/netip"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// Default overlay prefixes: the CGNAT range, as Tailscale uses, and a ULA.
var (
	DefaultPrefix4 = netip.MustParsePrefix("100.64.0.0/10")
	DefaultPrefix6 = netip.MustParsePrefix("fd77:6d65:7368::/48")
)

// Store is the coordinator's state. Every change is one transaction that
// either happens whole or not at all; a change that netmaps depend on
// bumps the state version and returns the new one, and one that does not
// returns 0 (or no version). Errors a caller branches on wrap ErrNotFound,
// ErrConflict, ErrDenied, ErrInvalid or ErrForbidden; Code gives a finer
// wire code where one applies. Methods are safe for concurrent use.
type Store interface {
	Reader

	// State reads, in one snapshot, everything netmaps are built from.
	State(ctx context.Context) (State, error)
	// StateSince reads, in one snapshot, what changed after version
	// since: what a State at since needs to become the current one.
	StateSince(ctx context.Context, since uint64) (Delta, error)
	// AdminNodes returns every node as admins see it (expired ones
	// included, with their reported health), ordered by id. The slice and
	// what it holds are shared: copy before changing anything.
	AdminNodes(ctx context.Context) ([]wire.Node, error)

	// Enroll admits a node with join key key: it checks the key, picks a
	// name and the next free address, stores the node and its credential
	// and counts the key's use. A one-time key admits exactly one node,
	// however many try it at once.
	Enroll(ctx context.Context, key credential.Secret, p EnrollParams) (wire.Node, credential.Secret, uint64, error)
	// SetEndpoints records node id's endpoints; version 0: unchanged.
	SetEndpoints(ctx context.Context, id int64, eps []string) (uint64, error)
	// Touch records that node id was seen at t, without a new version.
	Touch(ctx context.Context, id int64, t time.Time) error
	// SetAgentVersion records the version node id's agent reported (cut
	// to 64 bytes), without a new version: only admins see it.
	SetAgentVersion(ctx context.Context, id int64, version string) error
	// SetConnectivity records what node id last reported about how it
	// reaches the mesh, without a new version: only admins see it.
	SetConnectivity(ctx context.Context, id int64, c wire.Connectivity) error
	// SetServices records node n's services and their health. Changed
	// definitions are versioned and audited (refused says why the policy
	// does not let n provide a service, "" if it may); health alone is
	// written without a new version, and 0 is returned.
	SetServices(ctx context.Context, n wire.Node, svcs []wire.Service, refused func(service string) string) (uint64, error)
	// SetRelay replaces relay node id's description; version 0:
	// unchanged. An agent gets ErrForbidden.
	SetRelay(ctx context.Context, id int64, r wire.Relay) (uint64, error)
	// SetTags replaces the tags of the node named name.
	SetTags(ctx context.Context, actor, name string, tags []string) (uint64, error)
	// RotateNodeKey replaces node id's public key old with new, if old
	// is still its key and new is nobody's (else ErrConflict).
	RotateNodeKey(ctx context.Context, id int64, old, new string) (uint64, error)
	// ExpireNode sets when the node called name expires: at at (zero or
	// past: now) or, with never, not at all. Expiring an expired node
	// changes nothing; never is refused for it (ErrConflict).
	ExpireNode(ctx context.Context, actor, name string, at time.Time, never bool) (uint64, error)
	// ExpireDue marks the nodes whose expiry has passed as expired, with
	// an audit entry each, and returns their names; with any, the version
	// is bumped.
	ExpireDue(ctx context.Context) ([]string, error)
	// DeleteNode removes the node named name; its credential stops
	// working and its address is not handed out again soon.
	DeleteNode(ctx context.Context, actor, name string) (uint64, error)
	// DeleteEphemeral deletes ephemeral node id if it was last seen at
	// lastSeen, and reports whether it did.
	DeleteEphemeral(ctx context.Context, id int64, lastSeen time.Time) (bool, error)

	// CreateJoinKey makes a join key; the returned secret is not stored.
	CreateJoinKey(ctx context.Context, actor string, req wire.CreateJoinKeyRequest) (wire.JoinKey, credential.Secret, error)
	// RevokeJoinKey stops join key id from admitting nodes.
	RevokeJoinKey(ctx context.Context, actor, id string) error
	// CreateAdminToken makes an admin token; the secret is not stored.
	CreateAdminToken(ctx context.Context, actor, comment string) (wire.AdminToken, credential.Secret, error)
	// RevokeAdminToken revokes admin token id; the last valid one cannot
	// be revoked (ErrConflict).
	RevokeAdminToken(ctx context.Context, actor, id string) error
	// SetPolicy stores text, which the caller validated, as the new
	// active policy.
	SetPolicy(ctx context.Context, actor, text, comment string) (wire.Policy, error)
	// RotateGossipKey makes a new primary gossip key and keeps the old
	// ones for decryption until RetireGossipKeys.
	RotateGossipKey(ctx context.Context, actor string) (wire.GossipKeys, error)
	// RetireGossipKeys removes every gossip key but the primary.
	RetireGossipKeys(ctx context.Context, actor string) (wire.GossipKeys, error)
	// AddAudit writes one audit entry that goes with no change of state.
	AddAudit(ctx context.Context, actor, action, target, detail string) error

	// Listen calls changed whenever another process sharing the database
	// may have committed a change, until ctx is done or its connection
	// fails; see DB.Listen.
	Listen(ctx context.Context, poll time.Duration, changed func(version uint64)) error
	// Sync reads the state version and makes it Committed: a reload
	// after it sees every change any process committed before.
	Sync(ctx context.Context) (uint64, error)
	// RegisterCoordinator records coordinator c as serving the mesh now;
	// a new or changed description is versioned.
	RegisterCoordinator(ctx context.Context, c Coordinator) (uint64, error)
	// Lease takes or renews lease name for holder for ttl, unless another
	// holder's has not run out; it reports whether holder has it.
	Lease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	// SharedSecret returns the secret stored under name, storing value
	// first if there is none.
	SharedSecret(ctx context.Context, name, value string) (string, error)
	// SetOnline records that nodes ids hold a netmap stream until until
	// (zero: none), without a new version.
	SetOnline(ctx context.Context, ids []int64, until time.Time) error
	// AcceptProof records at as the time of node id's newest report proof
	// of kind, unless one made at at or later is recorded: then it
	// returns false and that time (the report is a replay, or older than
	// one accepted). Without a new version.
	AcceptProof(ctx context.Context, id int64, kind string, at time.Time) (ok bool, newest time.Time, err error)

	// CreateSession stores web UI session s under a new random id, which
	// it returns; the database keeps neither the id nor the admin token's
	// secret (see Session). It drops expired sessions and keeps at most
	// limit, the new one included, dropping those that expire first.
	CreateSession(ctx context.Context, s Session, limit int) (string, error)
	// SetSessionFlash leaves msg for session id's next page.
	SetSessionFlash(ctx context.Context, id, msg string) error
	// TakeSessionFlash clears session id's message if it is still msg,
	// and reports whether it did.
	TakeSessionFlash(ctx context.Context, id, msg string) (bool, error)
	// DeleteSession ends session id. A revoked admin token's sessions
	// end with it (RevokeAdminToken).
	DeleteSession(ctx context.Context, id string) error

	// Close closes the database.
	Close() error
}

// Reader is the part of a Store that only reads, and reads the database
// each time.
type Reader interface {
	// Prefixes returns the IPv4 and IPv6 overlay prefixes.
	Prefixes() []netip.Prefix
	// Committed returns the newest state version a change made through
	// this Store committed: a snapshot at least as new needs no reload.
	Committed() uint64
	// Version returns the current state version.
	Version(ctx context.Context) (uint64, error)
	// Nodes returns every node as admins see it, ordered by id, and the
	// state version they are at, read afresh; the slice is the caller's.
	Nodes(ctx context.Context) ([]wire.Node, uint64, error)
	// NodeByName returns the node called name, expired or not.
	NodeByName(ctx context.Context, name string) (wire.Node, error)
	// NodeByCredential returns the node cred authenticates, or ErrDenied
	// (with wire.CodeExpired for an expired node).
	NodeByCredential(ctx context.Context, cred credential.Secret) (wire.Node, error)
	// CheckAdminToken returns nil when sec is a valid, unrevoked admin
	// token, else ErrDenied.
	CheckAdminToken(ctx context.Context, sec credential.Secret) error
	// JoinKeys lists every join key, newest first.
	JoinKeys(ctx context.Context) ([]wire.JoinKey, error)
	// AdminTokens lists the admin tokens, newest first.
	AdminTokens(ctx context.Context) ([]wire.AdminToken, error)
	// Audit returns up to limit audit entries older than entry before
	// (all when 0), newest first.
	Audit(ctx context.Context, before int64, limit int) ([]wire.AuditEntry, error)
	// ActivePolicy returns the newest policy; Version 0: none is set.
	ActivePolicy(ctx context.Context) (wire.Policy, error)
	// PolicyVersion returns policy version v, or ErrNotFound.
	PolicyVersion(ctx context.Context, v uint64) (wire.Policy, error)
	// PolicyHistory lists every policy version, newest first, without
	// text.
	PolicyHistory(ctx context.Context) ([]wire.Policy, error)
	// GossipKeyInfo describes the gossip keyring.
	GossipKeyInfo(ctx context.Context) (wire.GossipKeys, error)
	// Session returns the unexpired web UI session with id, or
	// ErrNotFound.
	Session(ctx context.Context, id string) (Session, error)
}

// State is everything netmaps are built from, at one state version.
type State struct {
	Nodes      []wire.Node // ordered by id; unexpired, without admin-only fields
	Policy     wire.Policy // the active policy; Version 0: none
	GossipKeys []string    // base64; the primary first
	Version    uint64
	// NextExpiry is the soonest expiry still to come. Zero: none.
	NextExpiry time.Time
	// Coordinators are the coordinators serving the mesh, by URL.
	Coordinators []Coordinator

	// admin is every node as AdminNodes lists it, from the same read.
	admin []wire.Node
}

// Delta is what changed in the state after version Since, up to
// Version: applied to the State at Since, it gives the State at Version.
type Delta struct {
	Since, Version uint64
	// Nodes are the nodes changed or added, as State has them, by id.
	Nodes []wire.Node
	// Removed are the ids of the nodes deleted or expired (some perhaps
	// added and deleted after Since).
	Removed []int64
	// The rest of the state, whole: it is small.
	Policy       wire.Policy
	GossipKeys   []string
	Coordinators []Coordinator
	NextExpiry   time.Time
}

// EnrollParams are what an enrolling agent asks for.
type EnrollParams struct {
	PublicKey string // WireGuard public key, base64; required
	Name      string // requested name; taken names are refused
	Hostname  string // used for a name when Name is empty; made unique
	// Relay enrolls a relay so described (checked by the caller); only a
	// relay join key admits one, and it admits nothing else. Nil: an agent.
	Relay *wire.Relay
	// Proven says that the caller proved it holds PublicKey's private key
	// (checked by the caller). Then a node of PublicKey that the same join
	// key enrolled and that has never opened a netmap stream is the work
	// of an earlier attempt whose answer was lost: Enroll gives it a new
	// credential and returns it, however the key was used since (unless
	// it was revoked). False: a public key already enrolled is refused.
	Proven bool
}
