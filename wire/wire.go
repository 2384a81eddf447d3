// Package wire holds the types that the coordinator and its agents and
// admin clients exchange as JSON over HTTPS. It imports neither side.
//
// Every field documents what its zero value (or omission) means. Changes
// that a peer must know about bump ProtocolVersion; the history is below.
package wire

import (
	"net/netip"
	"time"
)

// ProtocolVersion is the version of the agent ↔ coordinator protocol.
//
// History:
//
//	1 (2026-11-25): enrollment, streamed full netmaps with keep-alives;
//	   policy version, filter rules and policy-filtered peers in netmaps.
//	2 (2026-12-01): services in nodes (the catalog), gossip settings in
//	   netmaps, PathServicesReport, PathRotateKey.
//	3 (2026-12-01): proofs of the node's private key: MapRequest.Proof and
//	   RotateKeyRequest.Proof are required (403 without); the coordinator's
//	   proof key in EnrollResponse and at PathCoordinatorKey.
//	4 (2026-12-03): ServicesReport.ContentProof is required: it covers the
//	   report's content and a time in nanoseconds that must grow from one
//	   accepted report to the next (ServicesReport.Proof, which covers
//	   neither, is ignored); MapRequest.Endpoints holds at most
//	   MaxEndpoints IP:port literals.
//	5 (2026-12-03): connectivity: Netmap.Relays (the relay map), the
//	   agent's ConnectivityReport at PathConnectivity (candidates, NAT
//	   type, home relay, paths; Node.Connectivity in admin listings); relay
//	   nodes: EnrollRequest.Relay and MapRequest.Relay (a standalone relay
//	   describes itself), Netmap.RelayClients (the keys that may attach to
//	   a relay), Node.Relay in admin listings. Agents of 3 and 4 work on,
//	   reachable only directly.
//	6 (2026-12-04): several coordinators on one database: join keys name
//	   them all, Netmap.CoordinatorURLs lists them, and agents fail over;
//	   MapRequest.Deltas, after which a stream may carry NetmapDeltas
//	   (MapMessage.Delta). Agents of 3 to 5 work on, with whole netmaps
//	   and the one coordinator they enrolled with.
//	7 (2026-12-04): FilterRule.SrcPeers: rules name source nodes by ID
//	   (the netmap's Self or Peers) instead of listing their addresses,
//	   so a rule's change or a join costs bytes per node, not per
//	   address. Agents of 3 to 6 work on: their coordinator resolves the
//	   IDs into Srcs for them. MapRequest.HaveDigest: an agent that
//	   reconnects (to any coordinator) resumes with the netmap it holds
//	   when nothing changed for it meanwhile.
//
// Compatibility window: a coordinator accepts agents of protocol
// MinProtocolVersion to its own ProtocolVersion, and refuses others at
// enrollment and at every netmap stream with CodeProtocolTooOld or
// CodeProtocolTooNew and a message naming the versions to run. Upgrade the
// coordinator first, then the agents; raise MinProtocolVersion only when
// the agents below it can no longer work (as protocol 3's proofs made of
// 1 and 2), and say so in the release notes.
const ProtocolVersion = 7

// ProtocolSrcPeers is the first protocol whose agents resolve
// FilterRule.SrcPeers; a coordinator lists the sources of older agents'
// rules by address.
const ProtocolSrcPeers = 7

// MinProtocolVersion is the oldest agent protocol a coordinator accepts.
// Agents of 1 and 2 make no proofs of their key, which protocol 3
// requires.
const MinProtocolVersion = 3

// Paths of the coordinator's HTTPS API.
const (
	PathEnroll   = "/v1/enroll"    // POST EnrollRequest → EnrollResponse (join key auth)
	PathNetmap   = "/v1/netmap"    // POST MapRequest → stream of MapMessage (node credential and proof)
	PathNodes    = "/v1/nodes"     // GET → []Node (admin); DELETE /v1/nodes/NAME
	PathJoinKeys = "/v1/join-keys" // GET → []JoinKey, POST CreateJoinKeyRequest → CreateJoinKeyResponse; DELETE /v1/join-keys/ID
	PathHealth   = "/v1/health"    // GET → 200 "ok" (no auth)
	// PathCoordinatorKey: GET → CoordinatorKey (no auth). The public key
	// agents make their proofs for; agents reach it over the TLS
	// connection their pin authenticates.
	PathCoordinatorKey = "/v1/coordinator-key"
	// PathPolicy: GET → Policy (the active one; ?version=N: that one),
	// PUT SetPolicyRequest →
	// Policy; POST PathPolicy+"/check" SetPolicyRequest → PolicyCheck;
	// GET PathPolicy+"/history" → []Policy (without text);
	// POST PathPolicy+"/rollback" RollbackRequest → Policy. (admin)
	PathPolicy = "/v1/policy"
	// PathServicesReport: PUT ServicesReport (node credential) → 204. The
	// agent reports its services and their health after every change and
	// on every new netmap stream.
	PathServicesReport = "/v1/node/services"
	// PathServices: GET → []CatalogService, every service with its
	// instances and their reported health (admin).
	PathServices = "/v1/services"
	// PathGossipRotate: POST → GossipKeys. Makes a new gossip key primary
	// and keeps the previous ones, so that members which have not yet
	// heard of the new key still understand each other (admin).
	PathGossipRotate = "/v1/gossip/rotate"
	// PathGossipRetire: POST → GossipKeys. Removes every gossip key but
	// the primary one; run it once the rotation reached every node (admin).
	PathGossipRetire = "/v1/gossip/retire"
	// PathRotateKey: POST RotateKeyRequest (node credential and proof) →
	// Node. Replaces the node's WireGuard public key; its peers learn the
	// new one from their next netmap, and the credential is bound to it.
	PathRotateKey = "/v1/node/key"
	// PathAudit: GET → []AuditEntry, newest first (admin). Paginated.
	PathAudit = "/v1/audit"
	// PathAdminTokens: GET → []AdminToken; POST CreateAdminTokenRequest →
	// CreateAdminTokenResponse; DELETE PathAdminTokens+"/ID" (admin).
	PathAdminTokens = "/v1/admin-tokens"
	// PathRelay: GET with "Connection: Upgrade" and "Upgrade:
	// wiremesh-relay/1" → 101, then the relay's framed protocol (package
	// relay): a proof of the node key, then packets addressed by node key.
	PathRelay = "/v1/relay"
)

// Admin API conventions, for every path above marked admin:
//
//   - Authorization: Bearer SECRET of an admin token; 401 without a valid
//     one, 403 with a node credential.
//   - Errors: a non-2xx status and an Error body.
//   - Bodies: at most 1 MiB (413 beyond), one JSON value, unknown fields
//     refused (400 with the position).
//   - Paginated lists take ?limit=N (default DefaultPageSize, at most
//     MaxPageSize) and ?after=CURSOR, and name the next page in a
//     `Link: <URL>; rel="next"` header; the last page has none.
//
// Node paths under PathNodes+"/NAME": GET → NodeDetail; DELETE;
// PUT .../tags SetTagsRequest; POST .../expire [ExpireRequest] → Node (now,
// or at a set time, cuts the node off: its peers drop it and its credential
// is refused; it must re-enroll).

// Page sizes of paginated lists.
const (
	DefaultPageSize = 1000
	MaxPageSize     = 10000
)

// Node is one member of the mesh as the coordinator knows it.
type Node struct {
	// ID is the coordinator's stable numeric id of the node; never reused.
	ID int64 `json:"id"`
	// Name is unique in the mesh and usable as a DNS label.
	Name string `json:"name"`
	// PublicKey is the node's WireGuard public key, base64 as in wg(8).
	PublicKey string `json:"public_key"`
	// Addresses are the node's overlay addresses as single-host prefixes
	// (/32 and /128). They never change for the life of the node.
	Addresses []netip.Prefix `json:"addresses"`
	// Endpoints are underlay "ip:port" candidates at which the node's
	// WireGuard listens, best first. Empty: not known (the node is only
	// reachable once it has contacted us).
	Endpoints []string `json:"endpoints,omitempty"`
	// Tags are the node's "tag:NAME" identities. Empty: none.
	Tags []string `json:"tags,omitempty"`
	// Online reports whether the node holds a netmap stream now. Only set
	// in admin listings.
	Online bool `json:"online,omitempty"`
	// OnlineUntil is until when a coordinator that holds the node's
	// netmap stream vouches for it (it renews it while it does), so that
	// every coordinator of the mesh can tell Online. Not sent.
	OnlineUntil time.Time `json:"-"`
	// Created is when the node enrolled.
	Created time.Time `json:"created"`
	// LastSeen is when the node last held a netmap stream. Zero: never.
	// Only set in admin listings.
	LastSeen time.Time `json:"last_seen,omitzero"`
	// Services are the services the node runs. Empty: none. In a netmap's
	// peers, only the services the receiving node may reach under the
	// policy are listed.
	Services []Service `json:"services,omitempty"`
	// Version is the agent's wiremesh version, as it last reported it.
	// Only set in admin listings. Empty: not known.
	Version string `json:"version,omitempty"`
	// Expires is when the node stops being admitted: from then on its
	// peers drop it and its credential is refused, and it must re-enroll.
	// Zero: never. Only set in admin listings.
	Expires time.Time `json:"expires,omitzero"`
	// Ephemeral nodes are deleted once they have been offline for the
	// coordinator's ephemeral timeout. Only set in admin listings.
	Ephemeral bool `json:"ephemeral,omitempty"`
	// Connectivity is how the node last said it reaches the mesh. Only
	// set in admin listings; nil: it has not reported.
	Connectivity *Connectivity `json:"connectivity,omitempty"`
	// Relay is set for a relay node (enrolled by `wiremesh relay` with a
	// relay join key): the relay as it last described itself. A relay
	// node is nobody's peer, in no policy and no DNS. Nil: an agent.
	Relay *Relay `json:"relay,omitempty"`
}

// ExpireRequest is the optional body of POST PathNodes+"/NAME/expire".
// Empty: expire the node now.
type ExpireRequest struct {
	// At is when the node expires; zero or past: now.
	At time.Time `json:"at,omitzero"`
	// Never clears a future expiry. An expired node stays expired: it must
	// enroll again. Never and At together are refused.
	Never bool `json:"never,omitempty"`
}

// NodeDetail is one node with its peers and its access under the policy,
// for admins.
type NodeDetail struct {
	Node Node `json:"node"`
	// Peers are the names of the nodes it may exchange traffic with.
	Peers []string `json:"peers"`
	// Reaches lists what the node may open flows to; ReachedBy who may
	// open flows to it. Empty: nothing.
	Reaches   []Access `json:"reaches"`
	ReachedBy []Access `json:"reached_by"`
}

// Access is what one node may open to another under the policy.
type Access struct {
	// Node is the other node.
	Node string `json:"node"`
	// Proto is "tcp", "udp", "icmp" or a protocol number.
	Proto string `json:"proto"`
	// Ports are the destination ports (TCP, UDP). Empty for protocols
	// without ports.
	Ports []PortRange `json:"ports,omitempty"`
	// Text is the access as a person reads it: "api-1 tcp/443,8080".
	Text string `json:"text"`
}

// AuditEntry is one admin change (or enrollment) in the audit log.
type AuditEntry struct {
	ID     int64     `json:"id"`
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"`  // the admin token id, or the join key id for enrollments
	Action string    `json:"action"` // e.g. "node.delete", "policy.set"
	Target string    `json:"target"` // what it acted on, e.g. a node name
	Detail string    `json:"detail,omitempty"`
}

// AdminToken describes an admin token without its secret.
type AdminToken struct {
	ID      string    `json:"id"`
	Comment string    `json:"comment,omitempty"`
	Created time.Time `json:"created"`
	// Revoked is when it was revoked. Zero: it is valid.
	Revoked time.Time `json:"revoked,omitzero"`
}

// CreateAdminTokenRequest asks for a new admin token.
type CreateAdminTokenRequest struct {
	// Comment says who or what the token is for. Empty: none.
	Comment string `json:"comment,omitempty"`
}

// CreateAdminTokenResponse returns a new admin token; its secret is shown
// only here.
type CreateAdminTokenResponse struct {
	Token AdminToken `json:"token"`
	// AdminToken is the complete token string (URL, pin and secret), as
	// admin.token holds it.
	AdminToken string `json:"admin_token"`
}

// Protocols of a Service.
const (
	ServiceTCP = "tcp"
	ServiceUDP = "udp"
)

// Service is a service that a node runs, as the catalog lists it.
type Service struct {
	// Name is a DNS label: lowercase letters, digits and '-'.
	Name string `json:"name"`
	// Port is the service's port on the node's overlay addresses.
	Port uint16 `json:"port"`
	// Proto is ServiceTCP or ServiceUDP. Empty: ServiceTCP.
	Proto string `json:"proto,omitempty"`
	// Tags are DNS labels that select instances. Empty: none.
	Tags []string `json:"tags,omitempty"`
	// Health is a Health's String ("passing", "warning" or "critical"),
	// kept a string so that empty can say "not reported"; the worst of the
	// checks as the node last reported it. Only set in reports and admin
	// listings; in netmaps health travels by gossip instead. Empty: not
	// reported.
	Health string `json:"health,omitempty"`
	// Checks are the service's checks as last reported. Only set in
	// reports and admin listings. Empty: none.
	Checks []CheckStatus `json:"checks,omitempty"`
	// Refused says why the policy does not let the node provide this
	// service ("not allowed: only tag:api may provide api"); the node
	// reported it, but it is in no netmap, no catalog and no DNS answer,
	// and no svc: selector matches it. Only set in admin listings. Empty:
	// the node may provide it.
	Refused string `json:"refused,omitempty"`
}

// CheckStatus is the state of one health check.
type CheckStatus struct {
	// ID names the check on its node.
	ID string `json:"id"`
	// Status is a Health's String: "passing", "warning" or "critical".
	Status string `json:"status"`
	// Output is the check's last output, trimmed. Empty: none.
	Output string `json:"output,omitempty"`
}

// ServicesReport is an agent's report of its services and their health.
type ServicesReport struct {
	// PublicKey must be the key the node enrolled with.
	PublicKey string `json:"public_key"`
	// Services replaces the node's services. Empty: it runs none.
	Services []Service `json:"services"`
	// ContentProof proves the node's private key, the time of the report
	// and its Services as ServicesContent encodes them
	// (credential.ServicesProof, base64). Refused (403) without, for
	// other content, outside 5 minutes of the coordinator's clock, or not
	// later than a report the coordinator accepted from the node.
	ContentProof string `json:"content_proof,omitempty"`
	// Proof is the proof coordinators before protocol 4 check
	// (credential.LegacyServicesProof): the private key and the time, to
	// the second, not the content. Coordinators from protocol 4 on ignore
	// it. Empty: none.
	Proof string `json:"proof,omitempty"`
}

// RotateKeyRequest replaces a node's WireGuard public key.
type RotateKeyRequest struct {
	// PublicKey must be the node's current key.
	PublicKey string `json:"public_key"`
	// NewPublicKey is the key to use from now on (base64, 32 bytes); the
	// agent generated its private half and keeps it.
	NewPublicKey string `json:"new_public_key"`
	// Proof proves that the caller holds PublicKey's private key and asks
	// for NewPublicKey (credential.RotationProof, base64). Required: a
	// credential alone rotates nothing (403).
	Proof string `json:"proof"`
}

// CoordinatorKey is the coordinator's proof key, the X25519 public key
// that agents make their proofs of possession for.
type CoordinatorKey struct {
	// PublicKey is 32 bytes in base64.
	PublicKey string `json:"public_key"`
}

// CatalogService is one service with all its instances, for admins.
type CatalogService struct {
	Name      string            `json:"name"`
	Instances []ServiceInstance `json:"instances"`
}

// ServiceInstance is a service on one node, for admins.
type ServiceInstance struct {
	// Node is the node's name; Addresses its overlay addresses.
	Node      string         `json:"node"`
	Addresses []netip.Prefix `json:"addresses"`
	// Online reports whether the node holds a netmap stream now.
	Online bool `json:"online"`
	// Service carries port, protocol, tags and the reported health.
	Service
}

// GossipPort is the TCP and UDP port of the agents' serf members. The
// packet filter always lets it through between peers.
const GossipPort = 7946

// Gossip configures the agents' serf members.
type Gossip struct {
	// Port is the TCP and UDP port members listen on at their overlay
	// addresses.
	Port int `json:"port"`
	// Keys are the base64 AES-256 keys gossip is encrypted with; Keys[0]
	// encrypts, all of them decrypt. Never empty.
	Keys []string `json:"keys"`
}

// GossipKeys describes the gossip keyring without the keys.
type GossipKeys struct {
	// Count is how many keys the ring holds, the primary included.
	Count int `json:"count"`
	// PrimaryCreated is when the primary key was made.
	PrimaryCreated time.Time `json:"primary_created"`
}

// EnrollRequest asks the coordinator to admit a node. It is authenticated by
// the join key's secret, sent as the bearer token.
type EnrollRequest struct {
	// ProtocolVersion is the agent's ProtocolVersion.
	ProtocolVersion int `json:"protocol_version"`
	// PublicKey is the node's WireGuard public key (base64). Required.
	PublicKey string `json:"public_key"`
	// Name is the requested node name. Empty: the coordinator picks one.
	// A name already taken is refused, not renamed.
	Name string `json:"name,omitempty"`
	// Hostname is the agent's host name, from which the coordinator makes
	// a unique name when Name is empty. Empty: "node".
	Hostname string `json:"hostname,omitempty"`
	// Relay, set, enrolls a relay (`wiremesh relay`) so described
	// (CheckRelay; its Name must be Name and its Key PublicKey), which
	// only a relay join key admits (403 otherwise); nil enrolls an agent,
	// which a relay join key refuses (403).
	Relay *Relay `json:"relay,omitempty"`
	// Proof, set, proves that the caller holds PublicKey's private key
	// (credential.EnrollProof, for the coordinator's proof key; 403 if
	// wrong). With it, the retry of an enrollment whose answer was lost
	// gets its node back: if PublicKey is the key of a node enrolled with
	// the same join key (used up or expired since, but not revoked) that
	// has never opened a netmap stream, the answer is that node with a
	// new credential, which replaces the lost one. Empty: a public key
	// already enrolled is refused (409, CodeAlreadyEnrolled).
	Proof string `json:"proof,omitempty"`
}

// EnrollResponse admits a node.
type EnrollResponse struct {
	// Node is the node as stored.
	Node Node `json:"node"`
	// Credential authenticates every later request of this node (bearer
	// token). The coordinator keeps only its hash.
	Credential string `json:"credential"`
	// Prefixes are the overlay prefixes, as in Netmap.
	Prefixes []netip.Prefix `json:"prefixes"`
	// CoordinatorKey is the coordinator's proof key (as in
	// CoordinatorKey). Empty: a coordinator of protocol 2 or older, which
	// asks for no proofs.
	CoordinatorKey string `json:"coordinator_key,omitempty"`
}

// MapRequest opens a netmap stream. It is authenticated by the node
// credential, sent as the bearer token.
type MapRequest struct {
	// ProtocolVersion is the agent's ProtocolVersion.
	ProtocolVersion int `json:"protocol_version"`
	// PublicKey must be the key the node enrolled with; a credential is
	// bound to its key.
	PublicKey string `json:"public_key"`
	// ListenPort is the agent's WireGuard UDP port. Zero: unknown, the
	// coordinator advertises no endpoint for the node.
	ListenPort int `json:"listen_port,omitempty"`
	// Endpoints are "ip:port" endpoints the operator gave the agent; they
	// come before the address the coordinator observes. At most
	// MaxEndpoints, each an IP:port literal (CheckEndpoints); else 400. A
	// change comes into effect at once, or, within the coordinator's
	// interval since the node's last change, when that interval ends (the
	// newest value then). Empty: only the observed address is advertised.
	Endpoints []string `json:"endpoints,omitempty"`
	// Version is the agent's wiremesh version, shown to admins. Empty:
	// not told.
	Version string `json:"version,omitempty"`
	// Proof proves that the caller holds PublicKey's private key, at a
	// time within 5 minutes of the coordinator's clock and not before an
	// earlier proof it accepted from the node (credential.NetmapProof,
	// base64). Required: a credential alone opens no stream (403).
	Proof string `json:"proof"`
	// Relay is a relay node's description of itself, which replaces the
	// stored one (as EnrollRequest.Relay; 400 if invalid, 403 from an
	// agent). Nil: unchanged.
	Relay *Relay `json:"relay,omitempty"`
	// Deltas says that the agent applies NetmapDeltas: after the first
	// netmap, the stream may carry only what changed. False (an older
	// agent): every message is a whole netmap.
	Deltas bool `json:"deltas,omitempty"`
	// HaveDigest names the netmap the agent holds (from an earlier
	// stream, with this coordinator or another): hex of its Digest. With
	// Deltas, when the node's netmap is that one but for its version, the
	// stream starts with a delta that carries only the version (the
	// agent resumes with what it has) instead of the whole netmap.
	// Empty, or another netmap: the whole netmap first. From protocol 7.
	HaveDigest string `json:"have_digest,omitempty"`
}

// MapMessage is one newline-delimited JSON message of a netmap stream.
// Exactly one field is set.
type MapMessage struct {
	// Netmap is a full netmap that replaces the previous one.
	Netmap *Netmap `json:"netmap,omitempty"`
	// Delta is what changed in the last netmap of the stream (whole or
	// with deltas applied), to be applied to it; only to an agent that
	// asked for deltas (MapRequest.Deltas). A stream's first message is a
	// delta only when the agent named the netmap it holds
	// (MapRequest.HaveDigest): then it applies to that one.
	Delta *NetmapDelta `json:"delta,omitempty"`
	// KeepAlive is sent when nothing changed for a while; the agent treats
	// a stream silent for three keep-alive intervals as dead.
	KeepAlive bool `json:"keepalive,omitempty"`
}

// NetmapDelta is a change to a netmap that leaves everything but its
// Self, its peers and its policy as it was: the entries of the node and of
// its peers that changed (endpoints, say), the peers added or removed, and
// the policy's rules. Every other change comes as a whole netmap.
type NetmapDelta struct {
	// Version is the netmap's version once the delta is applied.
	Version uint64 `json:"version"`
	// Self, if set, replaces the netmap's Self.
	Self *Node `json:"self,omitempty"`
	// Peers replace the netmap's peers of the same ID (a peer's ID is
	// stable; its public key may change), or are added.
	Peers []Node `json:"peers,omitempty"`
	// Removed are the IDs of the peers that are no longer.
	Removed []int64 `json:"removed,omitempty"`
	// Policy, if set, replaces the netmap's PolicyVersion and Rules.
	Policy *NetmapPolicy `json:"policy,omitempty"`
}

// NetmapPolicy is the policy part of a netmap.
type NetmapPolicy struct {
	Version uint64       `json:"version"`
	Rules   []FilterRule `json:"rules"`
}

// Netmap is one node's view of the mesh.
type Netmap struct {
	// Version increases with every change the coordinator makes; an agent
	// ignores a netmap older than the one it has.
	Version uint64 `json:"version"`
	// Self is the node itself.
	Self Node `json:"self"`
	// Peers are the nodes this node may exchange traffic with. Empty: none.
	Peers []Node `json:"peers,omitempty"`
	// Prefixes are the overlay prefixes (IPv4 and IPv6) the agent routes
	// into its WireGuard interface.
	Prefixes []netip.Prefix `json:"prefixes"`
	// KeepAliveInterval is how often the coordinator sends keep-alives.
	KeepAliveInterval Duration `json:"keepalive_interval"`
	// PolicyVersion is the version of the access policy the rules and
	// peers come from. Zero: no policy is set, so everything is denied.
	// An agent that takes deltas may have an older version than the
	// coordinator's active one: a policy change that leaves its rules and
	// peers as they were is not sent to it.
	PolicyVersion uint64 `json:"policy_version"`
	// Rules are the node's inbound filter rules. Empty: nothing may open
	// a flow to the node (replies to its own flows still pass).
	Rules []FilterRule `json:"rules,omitempty"`
	// Gossip configures the node's serf member. Nil: from a coordinator
	// without gossip; the agent runs none.
	Gossip *Gossip `json:"gossip,omitempty"`
	// CoordinatorPins is the coordinator's pin set (credential.Pins in
	// their String form): its current certificate's pin and those it
	// announced for its next one. The agent keeps it and trusts the
	// coordinator by it from then on, so an operator rolls the certificate
	// without re-enrolling nodes. Empty: from an older coordinator; the
	// agent keeps the pins it has.
	CoordinatorPins []string `json:"coordinator_pins,omitempty"`
	// CoordinatorURLs are the https URLs of every coordinator serving the
	// mesh (several share one database), the sending one's first. The
	// agent keeps them and, when its coordinator is unreachable, tries
	// the others. Empty: from an older coordinator; the agent keeps the
	// URLs it has.
	CoordinatorURLs []string `json:"coordinator_urls,omitempty"`
	// Relays is the relay map: every relay the node may attach to and
	// send through, best known first. Empty: none; the node reaches only
	// peers it has a direct path to.
	Relays []Relay `json:"relays,omitempty"`
	// RelayClients is set only in a relay node's netmap (which has no
	// peers, rules or gossip): the public keys (base64) of the nodes that
	// may attach to it, every enrolled, unexpired agent. Empty: none.
	RelayClients []string `json:"relay_clients,omitempty"`
}

// Relay is one relay of the relay map.
type Relay struct {
	// Name names the relay (a region, such as "eu-1") in status output,
	// metrics and paths.
	Name string `json:"name"`
	// URL is the relay's https URL; agents attach at URL + PathRelay.
	URL string `json:"url"`
	// Pins is the pin set of the relay's TLS identity (credential.Pins in
	// their String form); agents trust the relay by it alone.
	Pins []string `json:"pins"`
	// Key is the relay's proof public key (X25519, base64): agents prove
	// their node key to it (credential.RelayProof).
	Key string `json:"key"`
	// STUN are the relay's STUN servers, "host:port". Two on different
	// ports let an agent tell an easy NAT from a hard one. Empty: none.
	STUN []string `json:"stun,omitempty"`
}

// JoinKey describes a join key without its secret.
type JoinKey struct {
	// ID names the key in listings and revocation.
	ID string `json:"id"`
	// Reusable keys admit any number of nodes; others admit one.
	Reusable bool `json:"reusable"`
	// Tags are given to every node the key admits. Empty: none.
	Tags []string `json:"tags,omitempty"`
	// Created is when the key was made.
	Created time.Time `json:"created"`
	// Expires is when the key stops admitting nodes. Zero: never.
	Expires time.Time `json:"expires,omitzero"`
	// Revoked is when an admin revoked the key. Zero: not revoked.
	Revoked time.Time `json:"revoked,omitzero"`
	// Uses counts the nodes the key admitted.
	Uses int `json:"uses"`
	// NodeExpiry is the lifetime of each node the key admits, from its
	// enrollment. Zero: the nodes do not expire.
	NodeExpiry Duration `json:"node_expiry,omitempty"`
	// Ephemeral: the nodes the key admits are ephemeral (see Node).
	Ephemeral bool `json:"ephemeral,omitempty"`
	// Relay keys enroll relays (`wiremesh relay`) and nothing else;
	// other keys enroll agents and no relay.
	Relay bool `json:"relay,omitempty"`
}

// CreateJoinKeyRequest asks for a new join key.
type CreateJoinKeyRequest struct {
	// Reusable makes the key admit any number of nodes. False: one.
	Reusable bool `json:"reusable,omitempty"`
	// Expiry is how long the key stays valid. Zero: forever.
	Expiry Duration `json:"expiry,omitempty"`
	// Tags ("tag:NAME") are given to every node the key admits.
	Tags []string `json:"tags,omitempty"`
	// NodeExpiry is the lifetime of each node the key admits, from its
	// enrollment. Zero: the nodes do not expire.
	NodeExpiry Duration `json:"node_expiry,omitempty"`
	// Ephemeral makes the nodes the key admits ephemeral: the coordinator
	// deletes each once it has been offline for its ephemeral timeout.
	Ephemeral bool `json:"ephemeral,omitempty"`
	// Relay makes a key that enrolls relays only (`wiremesh relay`); a
	// relay key takes no tags, node expiry or ephemeral flag. False: the
	// key enrolls agents only.
	Relay bool `json:"relay,omitempty"`
}

// CreateJoinKeyResponse returns a new join key; its secret is shown only
// here.
type CreateJoinKeyResponse struct {
	// Key describes the new key.
	Key JoinKey `json:"key"`
	// JoinKey is the complete join key string an agent needs: coordinator
	// URL, certificate pin and secret.
	JoinKey string `json:"join_key"`
}

// Policy is one version of the access policy.
type Policy struct {
	// Version numbers accepted policies from 1. Zero: no policy is set.
	Version uint64 `json:"version"`
	// Text is the HuJSON source. Empty in history listings.
	Text string `json:"text,omitempty"`
	// Author is the id of the admin token that set it.
	Author string `json:"author,omitempty"`
	// Created is when it was set.
	Created time.Time `json:"created,omitzero"`
	// Comment says why, e.g. "rollback to 3". Empty: none.
	Comment string `json:"comment,omitempty"`
}

// SetPolicyRequest submits a policy text to set or to check.
type SetPolicyRequest struct {
	// Text is the HuJSON policy.
	Text string `json:"text"`
	// File names the text in error messages. Empty: "policy.hujson".
	File string `json:"file,omitempty"`
	// Comment says why (at most 200 bytes); it is stored with the
	// version, shown in the history and in the policy.set audit entry.
	Comment string `json:"comment,omitempty"`
}

// RollbackRequest sets an earlier policy version again, as a new version.
type RollbackRequest struct {
	Version uint64 `json:"version"`
}

// PolicyError is one problem in a policy text.
type PolicyError struct {
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Message string `json:"message"`
	// Text is the whole message as a person reads it: FILE:LINE:COL: MSG.
	Text string `json:"text"`
}

// PolicyCheck is the result of checking a policy against the live
// inventory without setting it.
type PolicyCheck struct {
	// Valid is true when the policy parses and its tests pass.
	Valid bool `json:"valid"`
	// Errors are the problems found. Empty when Valid.
	Errors []PolicyError `json:"errors,omitempty"`
	// ActiveVersion is the version the changes are relative to (0: none).
	ActiveVersion uint64 `json:"active_version"`
	// Changes are the access differences setting the policy would make.
	Changes []AccessChange `json:"changes,omitempty"`
	// Providers are the reported services that the policy would let their
	// nodes provide (Allowed) or no longer ("services" owners). Empty:
	// none change.
	Providers []ProviderChange `json:"providers,omitempty"`
}

// ProviderChange is a service reported by a node that a policy change
// lets the node provide (Allowed) or no longer.
type ProviderChange struct {
	Allowed bool   `json:"allowed"`
	Node    string `json:"node"`
	Service string `json:"service"`
	// Text is the change as a person reads it: "+ svc:api on api-1".
	Text string `json:"text"`
}

// AccessChange is a (source node → destination node) flow that a policy
// change grants (Gained) or takes away.
type AccessChange struct {
	Gained bool        `json:"gained"`
	Src    string      `json:"src"`
	Dst    string      `json:"dst"`
	Proto  string      `json:"proto"`
	Ports  []PortRange `json:"ports,omitempty"`
	// Text is the change as a person reads it: "+ web-1 → api-1 tcp/443".
	Text string `json:"text"`
}

// SetTagsRequest replaces a node's tags.
type SetTagsRequest struct {
	Tags []string `json:"tags"`
}
