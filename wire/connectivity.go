package wire

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
)

// PathConnectivity: PUT ConnectivityReport (node credential and proof) →
// 204. The agent reports its endpoint candidates, NAT type, home relay and
// the path to each peer whenever they change, and on every new netmap
// stream.
const PathConnectivity = "/v1/node/connectivity"

// NAT types, as an agent finds its own from STUN answers.
const (
	NATUnknown    = "unknown"     // no STUN answer yet, or one server only
	NATNone       = "none"        // the address STUN sees is a local one
	NATEasy       = "easy"        // endpoint-independent mapping: direct paths work
	NATHard       = "hard"        // endpoint-dependent mapping: direct only to easy NATs and public hosts
	NATUDPBlocked = "udp_blocked" // no STUN answer at all: relays over TCP only
)

// Kinds of path to a peer.
const (
	PathKindDirect = "direct" // WireGuard goes straight to the peer's address
	PathKindRelay  = "relay"  // through a relay, over TLS
	PathKindNone   = "none"   // nothing sent to the peer yet
)

// MaxReportedPaths bounds ConnectivityReport.Paths; a node reports the
// paths of its busiest peers beyond it.
const MaxReportedPaths = 1024

// ConnectivityReport is what an agent tells the coordinator about how it
// reaches the mesh.
type ConnectivityReport struct {
	// PublicKey must be the node's key.
	PublicKey string `json:"public_key"`
	// Endpoints are the node's candidates, best first: its local
	// addresses, the address STUN sees and the operator's --endpoint
	// ones, with its WireGuard port. At most MaxEndpoints IP:port
	// literals. They replace the node's endpoints in its peers' netmaps.
	Endpoints []string `json:"endpoints"`
	Connectivity
	// ContentProof proves the node's private key, the time of the report
	// and its content as ConnectivityContent encodes it
	// (credential.ConnectivityProof, base64), like
	// ServicesReport.ContentProof.
	ContentProof string `json:"content_proof"`
}

// Connectivity is how a node reaches the mesh, as it last reported it.
type Connectivity struct {
	// NAT is one of the NAT* types.
	NAT string `json:"nat"`
	// HomeRelay names the relay the node prefers (lowest latency). Empty:
	// none connected.
	HomeRelay string `json:"home_relay,omitempty"`
	// Paths are the node's paths to its peers that sent or received
	// traffic. Empty: none.
	Paths []PeerPath `json:"paths,omitempty"`
	// Reported is when the coordinator took the report. Set by the
	// coordinator only.
	Reported time.Time `json:"reported,omitzero"`
}

// PeerPath is a node's current path to one peer.
type PeerPath struct {
	// Peer is the peer's node name.
	Peer string `json:"peer"`
	// Kind is one of the PathKind* kinds.
	Kind string `json:"kind"`
	// Addr is the peer's ip:port for a direct path.
	Addr string `json:"addr,omitempty"`
	// Relay names the relay of a relayed path.
	Relay string `json:"relay,omitempty"`
	// RTT is the last round trip measured on the path. Zero: none yet.
	RTT Duration `json:"rtt,omitempty"`
	// Since is when the path last changed.
	Since time.Time `json:"since,omitzero"`
	// Why says why a relayed path is not direct ("no candidates",
	// "no answer from 3 candidates", "relay only"). Empty: direct, or
	// not known.
	Why string `json:"why,omitempty"`
}

// Check checks a report as the coordinator takes it; the error names the
// offending field.
func (r *ConnectivityReport) Check() error {
	if err := CheckEndpoints(r.Endpoints); err != nil {
		return fmt.Errorf("endpoints: %w", err)
	}
	switch r.NAT {
	case NATUnknown, NATNone, NATEasy, NATHard, NATUDPBlocked:
	default:
		return fmt.Errorf("nat: %q is not one of %s, %s, %s, %s, %s", r.NAT, NATUnknown, NATNone, NATEasy, NATHard, NATUDPBlocked)
	}
	if len(r.HomeRelay) > 63 {
		return fmt.Errorf("home_relay: longer than 63 characters")
	}
	if len(r.Paths) > MaxReportedPaths {
		return fmt.Errorf("paths: %d given, at most %d are allowed", len(r.Paths), MaxReportedPaths)
	}
	for i, p := range r.Paths {
		if err := p.check(); err != nil {
			return fmt.Errorf("paths[%d]: %w", i, err)
		}
	}
	return nil
}

func (p PeerPath) check() error {
	if err := CheckNodeName(p.Peer); err != nil {
		return fmt.Errorf("peer: %w", err)
	}
	switch p.Kind {
	case PathKindDirect:
		if _, err := netip.ParseAddrPort(p.Addr); err != nil {
			return fmt.Errorf("addr: %w", err)
		}
	case PathKindRelay:
		if p.Relay == "" || len(p.Relay) > 63 {
			return fmt.Errorf("relay: want a relay name of 1 to 63 characters")
		}
	case PathKindNone:
	default:
		return fmt.Errorf("kind: %q is not one of %s, %s, %s", p.Kind, PathKindDirect, PathKindRelay, PathKindNone)
	}
	if len(p.Why) > 200 {
		return fmt.Errorf("why: longer than 200 characters")
	}
	if p.RTT < 0 {
		return fmt.Errorf("rtt: negative")
	}
	return nil
}

// ConnectivityContent is the content of a connectivity report that its
// ContentProof covers, made like ServicesContent: the report without its
// key and proof, after one round trip through encoding/json.
func ConnectivityContent(r ConnectivityReport) ([]byte, error) {
	r.PublicKey, r.ContentProof = "", ""
	r.Reported = time.Time{}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode connectivity report: %w", err)
	}
	var back ConnectivityReport
	if err := json.Unmarshal(b, &back); err != nil {
		return nil, fmt.Errorf("decode connectivity report: %w", err)
	}
	return json.Marshal(back)
}
