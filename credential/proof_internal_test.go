package credential

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// TestProofPurpose: a MAC over the same data under the other purpose is no
// proof, so that a proof made for one request never passes for another.
func TestProofPurpose(t *testing.T) {
	coord, err := NewProofKey()
	if err != nil {
		t.Fatal(err)
	}
	node, _ := wgtypes.GeneratePrivateKey()
	next, _ := wgtypes.GeneratePrivateKey()
	pub, nextPub := node.PublicKey(), next.PublicKey()
	mac, err := nodeMAC(node, coord.PublicKey(), purposeNetmap, nextPub[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.CheckRotation(pub.String(), nextPub.String(), base64.StdEncoding.EncodeToString(mac)); !errors.Is(err, ErrProof) {
		t.Errorf("a netmap MAC over the new key passed for a rotation: %v", err)
	}
	var ts [8]byte
	now := time.Now()
	for i := range 8 {
		ts[7-i] = byte(uint64(now.Unix()) >> (8 * i))
	}
	mac, err = nodeMAC(node, coord.PublicKey(), purposeRotate, ts[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := coord.CheckNetmap(pub.String(), base64.StdEncoding.EncodeToString(append(ts[:], mac...)), now); !errors.Is(err, ErrProof) {
		t.Errorf("a rotation MAC over a time passed for a netmap: %v", err)
	}
}

// TestRelayPurpose: a relay MAC is made under its own purpose, so that a
// relay (which chooses the nonce) cannot have a node sign a rotation or a
// netmap request for it.
func TestRelayPurpose(t *testing.T) {
	relay, err := NewProofKey()
	if err != nil {
		t.Fatal(err)
	}
	node, _ := wgtypes.GeneratePrivateKey()
	next, _ := wgtypes.GeneratePrivateKey()
	nextPub := next.PublicKey()
	mac, err := RelayProof(node, relay.PublicKey(), nextPub[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.CheckRotation(node.PublicKey().String(), nextPub.String(), base64.StdEncoding.EncodeToString(mac)); !errors.Is(err, ErrProof) {
		t.Errorf("a relay answer to a nonce equal to a new key passed for a rotation: %v", err)
	}
	rot, err := nodeMAC(node, relay.PublicKey(), purposeRotate, nextPub[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.CheckRelay(node.PublicKey(), nextPub[:], rot); !errors.Is(err, ErrProof) {
		t.Errorf("a rotation MAC passed for a relay answer: %v", err)
	}
}
