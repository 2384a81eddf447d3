package credential_test

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func newWGKey(t testing.TB) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newProofKey(t testing.TB) *credential.ProofKey {
	t.Helper()
	k, err := credential.NewProofKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestX25519OfWireGuardKeys: crypto/ecdh takes a WireGuard private key as
// it is, derives the public key WireGuard derives, and computes RFC 7748's
// X25519 (the function WireGuard's handshake uses).
func TestX25519OfWireGuardKeys(t *testing.T) {
	for range 20 {
		k := newWGKey(t)
		priv, err := ecdh.X25519().NewPrivateKey(k[:])
		if err != nil {
			t.Fatalf("crypto/ecdh refuses WireGuard key %s: %v", k, err)
		}
		if got, want := priv.PublicKey().Bytes(), k.PublicKey(); !bytes.Equal(got, want[:]) {
			t.Fatalf("public key of %s: crypto/ecdh %x, wgtypes %x", k, got, want[:])
		}
	}
	// RFC 7748, section 6.1.
	hexKey := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	alice, _ := ecdh.X25519().NewPrivateKey(hexKey("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
	bobPub, _ := ecdh.X25519().NewPublicKey(hexKey("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"))
	shared, err := alice.ECDH(bobPub)
	if want := hexKey("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"); err != nil || !bytes.Equal(shared, want) {
		t.Errorf("X25519(alice, bob) = %x, %v; want %x", shared, err, want)
	}
	if got, want := alice.PublicKey().Bytes(), hexKey("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"); !bytes.Equal(got, want) {
		t.Errorf("alice's public key %x, want %x", got, want)
	}
}

func TestProofKeyEncoding(t *testing.T) {
	k := newProofKey(t)
	k2, err := credential.ParseProofKey(k.EncodePrivate())
	if err != nil {
		t.Fatal(err)
	}
	if k2.PublicKey() != k.PublicKey() {
		t.Errorf("parsed key has public key %s, want %s", k2.PublicKey(), k.PublicKey())
	}
	if pub, err := base64.StdEncoding.DecodeString(k.PublicKey()); err != nil || len(pub) != 32 {
		t.Errorf("public key %q: want 32 bytes in base64", k.PublicKey())
	}
	for _, bad := range []string{"", "AAAA", k.EncodePrivate()[:40], "!" + k.EncodePrivate()[1:]} {
		if _, err := credential.ParseProofKey(bad); err == nil {
			t.Errorf("ParseProofKey(%q) accepted", bad)
		}
	}
}

func TestRotationProof(t *testing.T) {
	coord, other := newProofKey(t), newProofKey(t)
	node, thief := newWGKey(t), newWGKey(t)
	pub := node.PublicKey().String()
	next := newWGKey(t).PublicKey().String()
	good, err := credential.RotationProof(node, coord.PublicKey(), next)
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.CheckRotation(pub, next, good); err != nil {
		t.Fatalf("the right proof is refused: %v", err)
	}
	stolen, _ := credential.RotationProof(thief, coord.PublicKey(), next)
	forOther, _ := credential.RotationProof(node, other.PublicKey(), next)
	netmap, _ := credential.NetmapProof(node, coord.PublicKey(), time.Now())
	for _, tc := range []struct{ name, pub, next, proof string }{
		{"none", pub, next, ""},
		{"made with another private key", pub, next, stolen},
		{"for another coordinator", pub, next, forOther},
		{"for another new key", pub, newWGKey(t).PublicKey().String(), good},
		{"of another node", newWGKey(t).PublicKey().String(), next, good},
		{"rotating back to the old key", next, pub, good},
		{"a netmap proof", pub, next, netmap},
		{"a netmap proof's MAC", pub, next, macOf(t, netmap)},
		{"not base64", pub, next, "!" + good[1:]},
		{"too short", pub, next, good[:40]},
		{"too long", pub, next, good + "AAAA"},
		{"bad node key", "AAAA", next, good},
		{"low-order node key", base64.StdEncoding.EncodeToString(make([]byte, 32)), next, good},
	} {
		err := coord.CheckRotation(tc.pub, tc.next, tc.proof)
		if !errors.Is(err, credential.ErrProof) {
			t.Errorf("%s: %v, want ErrProof", tc.name, err)
		}
	}
	if _, err := credential.RotationProof(node, base64.StdEncoding.EncodeToString(make([]byte, 32)), next); err == nil {
		t.Error("a proof for a low-order coordinator key was made")
	}
}

// macOf returns the MAC part of a netmap proof, alone in base64.
func macOf(t *testing.T, netmapProof string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(netmapProof)
	if err != nil || len(b) != 40 {
		t.Fatalf("netmap proof %q: %d bytes, %v", netmapProof, len(b), err)
	}
	return base64.StdEncoding.EncodeToString(b[8:])
}

func TestNetmapProof(t *testing.T) {
	coord, other := newProofKey(t), newProofKey(t)
	node, thief := newWGKey(t), newWGKey(t)
	pub := node.PublicKey().String()
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	proof := func(k wgtypes.Key, c *credential.ProofKey, at time.Time) string {
		p, err := credential.NetmapProof(k, c.PublicKey(), at)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, at := range []time.Time{now, now.Add(-4 * time.Minute), now.Add(4 * time.Minute), now.Add(-credential.ProofWindow)} {
		got, err := coord.CheckNetmap(pub, proof(node, coord, at), now)
		if err != nil || !got.Equal(at) {
			t.Errorf("proof made at %s: %v, %v; want it accepted with its time", at, got, err)
		}
	}
	rotation, _ := credential.RotationProof(node, coord.PublicKey(), newWGKey(t).PublicKey().String())
	good := proof(node, coord, now)
	for _, tc := range []struct{ name, pub, proof string }{
		{"none", pub, ""},
		{"made with another private key", pub, proof(thief, coord, now)},
		{"for another coordinator", pub, proof(node, other, now)},
		{"of another node", newWGKey(t).PublicKey().String(), good},
		{"a rotation proof", pub, rotation},
		{"another time, same MAC", pub, withTime(t, good, now.Add(time.Second))},
		{"not base64", pub, "!" + good[1:]},
		{"truncated", pub, good[:len(good)-4]},
	} {
		if _, err := coord.CheckNetmap(tc.pub, tc.proof, now); !errors.Is(err, credential.ErrProof) {
			t.Errorf("%s: %v, want ErrProof", tc.name, err)
		}
	}
	for _, at := range []time.Time{now.Add(-credential.ProofWindow - time.Second), now.Add(credential.ProofWindow + time.Second), time.Unix(0, 0), now.AddDate(10, 0, 0)} {
		_, err := coord.CheckNetmap(pub, proof(node, coord, at), now)
		if !errors.Is(err, credential.ErrProofTime) || errors.Is(err, credential.ErrProof) {
			t.Errorf("proof made at %s, checked at %s: %v; want ErrProofTime", at, now, err)
		}
	}
}

// An enrollment proof is a timed proof of its own purpose: a netmap proof
// made at the same time is no enrollment proof, nor the other way round.
func TestEnrollProof(t *testing.T) {
	coord, other := newProofKey(t), newProofKey(t)
	node, thief := newWGKey(t), newWGKey(t)
	pub := node.PublicKey().String()
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	good, err := credential.EnrollProof(node, coord.PublicKey(), now)
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.CheckEnroll(pub, good, now.Add(time.Minute)); err != nil {
		t.Errorf("enrollment proof: %v", err)
	}
	netmap, _ := credential.NetmapProof(node, coord.PublicKey(), now)
	if _, err := coord.CheckNetmap(pub, good, now); !errors.Is(err, credential.ErrProof) {
		t.Errorf("an enrollment proof taken for a netmap proof: %v, want ErrProof", err)
	}
	stolen, _ := credential.EnrollProof(thief, coord.PublicKey(), now)
	elsewhere, _ := credential.EnrollProof(node, other.PublicKey(), now)
	for _, tc := range []struct{ name, proof string }{
		{"none", ""},
		{"a netmap proof", netmap},
		{"made with another private key", stolen},
		{"for another coordinator", elsewhere},
	} {
		if err := coord.CheckEnroll(pub, tc.proof, now); !errors.Is(err, credential.ErrProof) {
			t.Errorf("%s: %v, want ErrProof", tc.name, err)
		}
	}
	if err := coord.CheckEnroll(pub, good, now.Add(credential.ProofWindow+time.Second)); !errors.Is(err, credential.ErrProofTime) {
		t.Errorf("an old enrollment proof: %v, want ErrProofTime", err)
	}
}

// A services proof covers the report's content and its time to the
// nanosecond; it and a netmap proof are not interchangeable: each names
// its purpose, and so does the protocol 3 services proof.
func TestServicesProof(t *testing.T) {
	coord := newProofKey(t)
	node := newWGKey(t)
	pub := node.PublicKey().String()
	now := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	content := []byte(`[{"name":"web","port":8080}]`)
	sp, err := credential.ServicesProof(node, coord.PublicKey(), now, content)
	if err != nil {
		t.Fatal(err)
	}
	np, err := credential.NetmapProof(node, coord.PublicKey(), now)
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := credential.LegacyServicesProof(node, coord.PublicKey(), now)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := coord.CheckServices(pub, sp, content, now); err != nil || !got.Equal(now) {
		t.Errorf("services proof: %v, %v; want it accepted with its time %v", got, err, now)
	}
	for what, other := range map[string][]byte{
		"other services":  []byte(`[{"name":"web","port":8081}]`),
		"no services":     []byte(`[]`),
		"a byte appended": append(content[:len(content):len(content)], ' '),
		"nothing":         nil,
	} {
		if _, err := coord.CheckServices(pub, sp, other, now); !errors.Is(err, credential.ErrProof) {
			t.Errorf("the proof of %s checked against %s: %v, want ErrProof", content, what, err)
		}
	}
	b, _ := base64.StdEncoding.DecodeString(sp)
	b[7]++ // the time's last byte: a nanosecond later
	if _, err := coord.CheckServices(pub, base64.StdEncoding.EncodeToString(b), content, now); !errors.Is(err, credential.ErrProof) {
		t.Errorf("a services proof with its time moved by 1 ns: %v, want ErrProof", err)
	}
	for what, p := range map[string]string{"a netmap proof": np, "a protocol 3 services proof": legacy} {
		if _, err := coord.CheckServices(pub, p, content, now); !errors.Is(err, credential.ErrProof) {
			t.Errorf("%s as a services proof: %v, want ErrProof", what, err)
		}
	}
	if _, err := coord.CheckNetmap(pub, sp, now); !errors.Is(err, credential.ErrProof) {
		t.Errorf("a services proof as a netmap proof: %v, want ErrProof", err)
	}
	if _, err := coord.CheckServices(pub, sp, content, now.Add(credential.ProofWindow+time.Second)); !errors.Is(err, credential.ErrProofTime) {
		t.Errorf("stale services proof: %v, want ErrProofTime", err)
	}
}

// withTime returns a netmap proof with its time replaced by at.
func withTime(t *testing.T, p string, at time.Time) string {
	t.Helper()
	b, _ := base64.StdEncoding.DecodeString(p)
	u := uint64(at.Unix())
	for i := range 8 {
		b[7-i] = byte(u >> (8 * i))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// FuzzCheckProof: the proof checks never panic on any proof text, and
// accept only the bytes of the one right proof.
func FuzzCheckProof(f *testing.F) {
	coord := newProofKey(f)
	node := newWGKey(f)
	pub, next := node.PublicKey().String(), newWGKey(f).PublicKey().String()
	now := time.Now()
	rot, _ := credential.RotationProof(node, coord.PublicKey(), next)
	nm, _ := credential.NetmapProof(node, coord.PublicKey(), now)
	content := []byte(`[{"name":"web","port":80}]`)
	sp, _ := credential.ServicesProof(node, coord.PublicKey(), now, content)
	f.Add(rot)
	f.Add(nm)
	f.Add(sp)
	f.Add("")
	f.Add("AAAA")
	f.Add(nm[:len(nm)-2] + "==")
	f.Add(base64.StdEncoding.EncodeToString(make([]byte, 40)))
	rotBytes, _ := base64.StdEncoding.DecodeString(rot)
	nmBytes, _ := base64.StdEncoding.DecodeString(nm)
	spBytes, _ := base64.StdEncoding.DecodeString(sp)
	f.Fuzz(func(t *testing.T, proof string) {
		defer failOnPanic(t, "check proof %q", proof)
		got, _ := base64.StdEncoding.DecodeString(proof)
		if err := coord.CheckRotation(pub, next, proof); err == nil && !bytes.Equal(got, rotBytes) {
			t.Fatalf("rotation proof %q accepted", proof)
		} else if err != nil && !errors.Is(err, credential.ErrProof) {
			t.Fatalf("rotation proof %q: %v, want ErrProof", proof, err)
		}
		if _, err := coord.CheckNetmap(pub, proof, now); err == nil && !bytes.Equal(got, nmBytes) {
			t.Fatalf("netmap proof %q accepted", proof)
		} else if err != nil && !errors.Is(err, credential.ErrProof) {
			t.Fatalf("netmap proof %q: %v, want ErrProof", proof, err)
		}
		if _, err := coord.CheckServices(pub, proof, content, now); err == nil && !bytes.Equal(got, spBytes) {
			t.Fatalf("services proof %q accepted", proof)
		} else if err != nil && !errors.Is(err, credential.ErrProof) {
			t.Fatalf("services proof %q: %v, want ErrProof", proof, err)
		}
	})
}

// A relay proof answers one nonce of one relay for one node; it is no
// other proof, and no other proof is one.
func TestRelayProof(t *testing.T) {
	relay, other := newProofKey(t), newProofKey(t)
	node, thief := newWGKey(t), newWGKey(t)
	pub := [32]byte(node.PublicKey())
	nonce := bytes.Repeat([]byte{7}, credential.RelayNonceLen)
	good, err := credential.RelayProof(node, relay.PublicKey(), nonce)
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.CheckRelay(pub, nonce, good); err != nil {
		t.Fatalf("the right proof is refused: %v", err)
	}
	mac := func(k wgtypes.Key, r *credential.ProofKey, n []byte) []byte {
		m, err := credential.RelayProof(k, r.PublicKey(), n)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	otherNonce := bytes.Repeat([]byte{8}, credential.RelayNonceLen)
	// A rotation proof whose "new key" is the nonce: the same data
	// under another purpose.
	rotation, _ := credential.RotationProof(node, relay.PublicKey(), base64.StdEncoding.EncodeToString(nonce))
	rotMAC, _ := base64.StdEncoding.DecodeString(rotation)
	for _, tc := range []struct {
		name  string
		pub   [32]byte
		nonce []byte
		mac   []byte
	}{
		{"made with another private key", pub, nonce, mac(thief, relay, nonce)},
		{"for another relay", pub, nonce, mac(node, other, nonce)},
		{"for another nonce", pub, otherNonce, good},
		{"of another node", [32]byte(thief.PublicKey()), nonce, good},
		{"a rotation proof over the nonce", pub, nonce, rotMAC},
		{"none", pub, nonce, nil},
		{"truncated", pub, nonce, good[:31]},
		{"short nonce", pub, nonce[:16], good},
		{"low-order node key", [32]byte{}, nonce, good},
	} {
		if err := relay.CheckRelay(tc.pub, tc.nonce, tc.mac); !errors.Is(err, credential.ErrProof) {
			t.Errorf("%s: %v, want ErrProof", tc.name, err)
		}
	}
	if _, err := credential.RelayProof(node, base64.StdEncoding.EncodeToString(make([]byte, 32)), nonce); err == nil {
		t.Error("a proof for a low-order relay key was made")
	}
	if _, err := credential.RelayProof(node, relay.PublicKey(), nonce[:8]); err == nil {
		t.Error("a proof for an 8-byte nonce was made")
	}
}
