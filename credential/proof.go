package credential

import (
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Proofs of possession of a node's WireGuard private key.
//
// A node credential alone must not make its holder the node, so the agent
// requests that could hand the node over (a netmap stream, a key rotation)
// also prove that the caller holds the node's private key. WireGuard keys
// are X25519 keys, which cannot sign; the proof is a MAC under a key that
// only the node's private key and the coordinator's proof key (a static
// X25519 key pair of the coordinator) can derive:
//
//	key   = HKDF-SHA256(secret X25519(node private, coordinator public),
//	                    info "wiremesh proof key v1" || node public || coordinator public)
//	proof = HMAC-SHA256(key, purpose || node public || data)
//
// with the purpose and data of each request:
//
//	key rotation:    "wiremesh key rotation v1" || node public || new public key
//	netmap stream:   "wiremesh netmap v1" || node public || time
//	services report: "wiremesh services report v2" || node public || time (ns) || SHA-256(content)
//	(before protocol 4: "wiremesh services report v1" || node public || time)
//	relay attach:    "wiremesh relay v1" || node public || nonce
//	enrollment:      "wiremesh enroll v1" || node public || time
//
// Keys are the 32 raw bytes; time is unix seconds, 8 bytes big-endian,
// and for a services report unix nanoseconds, so that every report of an
// agent has a time of its own; content is the report's services as
// wire.ServicesContent encodes them. The coordinator computes the same key
// from X25519(coordinator private, node public). A rotation proof is the
// 32-byte MAC; a netmap or services proof is the time followed by the MAC;
// all travel in standard base64. A relay (package relay) holds a proof key
// too (the coordinator's own, or one of its own for a standalone relay):
// it sends a random nonce of RelayNonceLen bytes, and the node answers
// with the raw 32-byte MAC over it, so that only the holder of the node's
// private key attaches as that node, and an answer is good for one
// connection only.
const (
	proofKeyInfo        = "wiremesh proof key v1"
	purposeRotate       = "wiremesh key rotation v1"
	purposeNetmap       = "wiremesh netmap v1"
	purposeServices     = "wiremesh services report v1"
	purposeServicesV2   = "wiremesh services report v2"
	purposeConnectivity = "wiremesh connectivity report v1"
	purposeRelay        = "wiremesh relay v1"
	purposeEnroll       = "wiremesh enroll v1"
)

// RelayNonceLen is the length of a relay's challenge nonce.
const RelayNonceLen = 32

// ProofWindow is how far from the coordinator's clock the time of a netmap
// proof may be, either way.
const ProofWindow = 5 * time.Minute

// ErrProof is the error of a proof that is missing or does not prove the
// node's private key. Its text starts the coordinator's 403 answer.
var ErrProof = errors.New("proof of the node's private key missing or wrong")

// ErrProofTime is the error of a valid netmap proof made at a time the
// coordinator does not accept: outside ProofWindow of its clock, or before
// a proof it already accepted from the node. Its text starts the
// coordinator's 403 answer; the node's clock is to blame, not its key.
var ErrProofTime = errors.New("netmap proof time refused")

const (
	macLen       = sha256.Size
	netmapProofN = 8 + macLen
)

// ProofKey is the coordinator's static X25519 key pair, with which it
// checks proofs. Its public half is public; its private half stays in the
// coordinator's data dir.
type ProofKey struct{ priv *ecdh.PrivateKey }

// NewProofKey makes a new proof key.
func NewProofKey() (*ProofKey, error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate proof key: %w", err)
	}
	return &ProofKey{priv: k}, nil
}

// ParseProofKey reads the private key that EncodePrivate wrote.
func ParseProofKey(s string) (*ProofKey, error) {
	b, err := decodeKey32(s)
	if err != nil {
		return nil, fmt.Errorf("malformed proof key: %w", err)
	}
	k, err := ecdh.X25519().NewPrivateKey(b[:])
	if err != nil {
		return nil, fmt.Errorf("malformed proof key: %w", err)
	}
	return &ProofKey{priv: k}, nil
}

// EncodePrivate returns the private key in base64, for the coordinator's
// data dir only.
func (k *ProofKey) EncodePrivate() string { return base64.StdEncoding.EncodeToString(k.priv.Bytes()) }

// PublicKey returns the public key in base64, as agents get it.
func (k *ProofKey) PublicKey() string {
	return base64.StdEncoding.EncodeToString(k.priv.PublicKey().Bytes())
}

// CheckPublicKey checks that s is an X25519 public key, such as a
// coordinator's proof key: 32 bytes in base64.
func CheckPublicKey(s string) error {
	_, err := decodeKey32(s)
	return err
}

// CheckRotation checks proof for the node with public key nodePublic
// asking to replace it with newPublic. The error wraps ErrProof.
func (k *ProofKey) CheckRotation(nodePublic, newPublic, proof string) error {
	node, next, err := decodeKeyPair(nodePublic, newPublic)
	if err != nil {
		return err
	}
	mac, err := decodeProof(proof, macLen)
	if err != nil {
		return err
	}
	return k.checkMAC(node, mac, purposeRotate, next[:])
}

// CheckNetmap checks proof of a netmap request of the node with public key
// nodePublic, and its time against now. It returns the proof's time. The
// error wraps ErrProof, or ErrProofTime for a valid proof made more than
// ProofWindow away from now.
func (k *ProofKey) CheckNetmap(nodePublic, proof string, now time.Time) (time.Time, error) {
	return k.checkTimed(purposeNetmap, nodePublic, proof, nil, now)
}

// CheckEnroll checks proof of an enrollment of the node with public key
// nodePublic, and its time against now, like CheckNetmap.
func (k *ProofKey) CheckEnroll(nodePublic, proof string, now time.Time) error {
	_, err := k.checkTimed(purposeEnroll, nodePublic, proof, nil, now)
	return err
}

// CheckServices checks proof of a services report of the node with public
// key nodePublic whose services encode as content (wire.ServicesContent
// of the services the coordinator decoded), and its time against now, like
// CheckNetmap. A proof made for other content fails with ErrProof.
func (k *ProofKey) CheckServices(nodePublic, proof string, content []byte, now time.Time) (time.Time, error) {
	sum := sha256.Sum256(content)
	return k.checkTimed(purposeServicesV2, nodePublic, proof, sum[:], now)
}

// CheckConnectivity checks proof of a connectivity report whose content
// is content (wire.ConnectivityContent), like CheckServices.
func (k *ProofKey) CheckConnectivity(nodePublic, proof string, content []byte, now time.Time) (time.Time, error) {
	sum := sha256.Sum256(content)
	return k.checkTimed(purposeConnectivity, nodePublic, proof, sum[:], now)
}

// CheckRelay checks mac, the answer of the node with public key
// nodePublic to the challenge nonce that the relay holding k sent. The
// error wraps ErrProof.
func (k *ProofKey) CheckRelay(nodePublic [32]byte, nonce, mac []byte) error {
	if len(nonce) != RelayNonceLen {
		return fmt.Errorf("%w: relay nonce of %d bytes, want %d", ErrProof, len(nonce), RelayNonceLen)
	}
	if len(mac) != macLen {
		return fmt.Errorf("%w: relay proof of %d bytes, want %d", ErrProof, len(mac), macLen)
	}
	return k.checkMAC(nodePublic, mac, purposeRelay, nonce)
}

// checkTimed checks a proof made of a time and a MAC over it and extra
// for purpose; a services report's time is in nanoseconds.
func (k *ProofKey) checkTimed(purpose, nodePublic, proof string, extra []byte, now time.Time) (time.Time, error) {
	node, err := decodeKey32(nodePublic)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: bad node public key: %w", ErrProof, err)
	}
	raw, err := decodeProof(proof, netmapProofN)
	if err != nil {
		return time.Time{}, err
	}
	if err := k.checkMAC(node, raw[8:], purpose, append(raw[:8:8], extra...)); err != nil {
		return time.Time{}, err
	}
	at := proofTime(purpose, raw[:8])
	if d := at.Sub(now); d > ProofWindow || d < -ProofWindow {
		return at, fmt.Errorf("%w: the proof was made at %s, more than %s from the coordinator's clock (%s); check the node's clock",
			ErrProofTime, at.UTC().Format(time.RFC3339), ProofWindow, now.UTC().Format(time.RFC3339))
	}
	return at, nil
}

func (k *ProofKey) checkMAC(node [32]byte, mac []byte, purpose string, data []byte) error {
	pub, err := ecdh.X25519().NewPublicKey(node[:])
	if err != nil {
		return fmt.Errorf("%w: bad node public key: %w", ErrProof, err)
	}
	want, err := proofMAC(k.priv, pub, node[:], k.priv.PublicKey().Bytes(), purpose, data)
	if err != nil {
		return err
	}
	if !hmac.Equal(mac, want) {
		return ErrProof
	}
	return nil
}

// RotationProof returns the proof that the holder of nodePrivate (a
// WireGuard private key) asks to rotate to newPublic, for the coordinator
// whose proof key is coordinatorKey (base64). nodePrivate is the node's
// current key, not the new one.
func RotationProof(nodePrivate [32]byte, coordinatorKey, newPublic string) (string, error) {
	next, err := decodeKey32(newPublic)
	if err != nil {
		return "", fmt.Errorf("rotation proof: bad new public key: %w", err)
	}
	mac, err := nodeMAC(nodePrivate, coordinatorKey, purposeRotate, next[:])
	if err != nil {
		return "", fmt.Errorf("rotation proof: %w", err)
	}
	return base64.StdEncoding.EncodeToString(mac), nil
}

// NetmapProof returns the proof for a netmap request made at time at by
// the holder of nodePrivate (a WireGuard private key), for the coordinator
// whose proof key is coordinatorKey (base64). The coordinator accepts it
// within ProofWindow of at.
func NetmapProof(nodePrivate [32]byte, coordinatorKey string, at time.Time) (string, error) {
	return timedProof(purposeNetmap, nodePrivate, coordinatorKey, at, nil)
}

// EnrollProof returns the proof for an enrollment made at time at by the
// holder of nodePrivate, like NetmapProof: an agent sends it to be given
// back the node that an enrollment of its key made when the answer was
// lost (wire.EnrollRequest.Proof).
func EnrollProof(nodePrivate [32]byte, coordinatorKey string, at time.Time) (string, error) {
	return timedProof(purposeEnroll, nodePrivate, coordinatorKey, at, nil)
}

// ServicesProof returns the proof for a services report made at time at
// (to the nanosecond) whose services encode as content
// (wire.ServicesContent), like NetmapProof. The coordinator accepts it
// within ProofWindow of at, for that content only, and only if at is after
// the time of every report it accepted from the node.
func ServicesProof(nodePrivate [32]byte, coordinatorKey string, at time.Time, content []byte) (string, error) {
	sum := sha256.Sum256(content)
	return timedProof(purposeServicesV2, nodePrivate, coordinatorKey, at, sum[:])
}

// ConnectivityProof returns the proof for a connectivity report made at
// time at whose content is content (wire.ConnectivityContent), like
// ServicesProof.
func ConnectivityProof(nodePrivate [32]byte, coordinatorKey string, at time.Time, content []byte) (string, error) {
	sum := sha256.Sum256(content)
	return timedProof(purposeConnectivity, nodePrivate, coordinatorKey, at, sum[:])
}

// LegacyServicesProof returns the proof of a services report made at time
// at as coordinators before protocol 4 check it: it covers neither the
// report's content nor a time finer than a second.
func LegacyServicesProof(nodePrivate [32]byte, coordinatorKey string, at time.Time) (string, error) {
	return timedProof(purposeServices, nodePrivate, coordinatorKey, at, nil)
}

// RelayProof returns the answer of the holder of nodePrivate (a WireGuard
// private key) to the challenge nonce of the relay whose proof key is
// relayKey (base64): a MAC of 32 bytes.
func RelayProof(nodePrivate [32]byte, relayKey string, nonce []byte) ([]byte, error) {
	if len(nonce) != RelayNonceLen {
		return nil, fmt.Errorf("relay proof: nonce of %d bytes, want %d", len(nonce), RelayNonceLen)
	}
	mac, err := nodeMAC(nodePrivate, relayKey, purposeRelay, nonce)
	if err != nil {
		return nil, fmt.Errorf("relay proof: %w", err)
	}
	return mac, nil
}

func timedProof(purpose string, nodePrivate [32]byte, coordinatorKey string, at time.Time, extra []byte) (string, error) {
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(proofStamp(purpose, at)))
	mac, err := nodeMAC(nodePrivate, coordinatorKey, purpose, append(ts[:], extra...))
	if err != nil {
		return "", fmt.Errorf("%s proof: %w", strings.TrimSuffix(purpose, " v1"), err)
	}
	return base64.StdEncoding.EncodeToString(append(ts[:], mac...)), nil
}

func nodeMAC(nodePrivate [32]byte, coordinatorKey, purpose string, data []byte) ([]byte, error) {
	priv, err := ecdh.X25519().NewPrivateKey(nodePrivate[:])
	if err != nil {
		return nil, fmt.Errorf("bad node private key: %w", err)
	}
	ck, err := decodeKey32(coordinatorKey)
	if err != nil {
		return nil, fmt.Errorf("bad coordinator key: %w", err)
	}
	pub, err := ecdh.X25519().NewPublicKey(ck[:])
	if err != nil {
		return nil, fmt.Errorf("bad coordinator key: %w", err)
	}
	return proofMAC(priv, pub, priv.PublicKey().Bytes(), ck[:], purpose, data)
}

// proofMAC is the MAC of a proof, computed by either side: mine is its
// private key, peer the other side's public key; node and coord are the
// node's and the coordinator's public keys.
func proofMAC(mine *ecdh.PrivateKey, peer *ecdh.PublicKey, node, coord []byte, purpose string, data []byte) ([]byte, error) {
	shared, err := mine.ECDH(peer)
	if err != nil { // a low-order public key: the secret would be zero
		return nil, fmt.Errorf("%w: %w", ErrProof, err)
	}
	info := proofKeyInfo + string(node) + string(coord)
	key, err := hkdf.Key(sha256.New, shared, nil, info, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("derive proof key: %w", err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	m.Write(node)
	m.Write(data)
	return m.Sum(nil), nil
}

// proofStamp is the time of a timed proof of purpose as it carries it:
// unix nanoseconds for a report, unix seconds otherwise.
func proofStamp(purpose string, at time.Time) int64 {
	if nanoProof(purpose) {
		return at.UnixNano()
	}
	return at.Unix()
}

// proofTime reads the time of a timed proof of purpose (proofStamp).
func proofTime(purpose string, b []byte) time.Time {
	u := int64(binary.BigEndian.Uint64(b))
	if nanoProof(purpose) {
		return time.Unix(0, u)
	}
	return time.Unix(u, 0)
}

// nanoProof says whether proofs of purpose carry nanoseconds: those of
// reports, each of which must be later than the last.
func nanoProof(purpose string) bool {
	return purpose == purposeServicesV2 || purpose == purposeConnectivity
}

// decodeProof reads a base64 proof of n bytes.
func decodeProof(s string, n int) ([]byte, error) {
	if s == "" {
		return nil, ErrProof
	}
	if len(s) != base64.StdEncoding.EncodedLen(n) {
		return nil, fmt.Errorf("%w: want %d bytes in base64", ErrProof, n)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != n {
		return nil, fmt.Errorf("%w: want %d bytes in base64", ErrProof, n)
	}
	return b, nil
}

func decodeKeyPair(a, b string) (ka, kb [32]byte, err error) {
	if ka, err = decodeKey32(a); err != nil {
		return ka, kb, fmt.Errorf("%w: bad node public key: %w", ErrProof, err)
	}
	if kb, err = decodeKey32(b); err != nil {
		return ka, kb, fmt.Errorf("%w: bad new public key: %w", ErrProof, err)
	}
	return ka, kb, nil
}

// decodeKey32 reads a 32-byte key in standard base64, as wg(8) writes it.
func decodeKey32(s string) (k [32]byte, err error) {
	if len(s) != base64.StdEncoding.EncodedLen(len(k)) {
		return k, errors.New("want 32 bytes in base64")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, errors.New("want 32 bytes in base64")
	}
	return [32]byte(b), nil
}
