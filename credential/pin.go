package credential

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Pin is the SHA-256 of a CA certificate's DER bytes. A coordinator is
// trusted when its leaf certificate chains to the certificate with the pin;
// host names are not checked, the pin is the identity.
type Pin [sha256.Size]byte

// PinOf returns the pin of a certificate.
func PinOf(cert *x509.Certificate) Pin { return sha256.Sum256(cert.Raw) }

// IsZero reports whether p is unset.
func (p Pin) IsZero() bool { return p == Pin{} }

// String returns "sha256:" and the hex digest.
func (p Pin) String() string { return "sha256:" + hex.EncodeToString(p[:]) }

// ParsePin reads the String form.
func ParsePin(s string) (Pin, error) {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return Pin{}, fmt.Errorf("bad pin %q: want sha256:HEX", s)
	}
	var p Pin
	if len(h) != 2*len(p) {
		return Pin{}, fmt.Errorf("bad pin %q: want 64 hex digits", s)
	}
	if _, err := hex.Decode(p[:], []byte(h)); err != nil {
		return Pin{}, fmt.Errorf("bad pin %q: want 64 hex digits", s)
	}
	return p, nil
}

// MarshalJSON writes the String form.
func (p Pin) MarshalJSON() ([]byte, error) { return json.Marshal(p.String()) }

// UnmarshalJSON reads the String form.
func (p *Pin) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := ParsePin(s)
	*p = v
	return err
}

// ErrPinMismatch is returned (wrapped) by a pinned TLS handshake when the
// server's certificate does not chain to the pinned certificate.
var ErrPinMismatch = errors.New("coordinator certificate does not match the pin")

// ClientTLS returns a TLS client config that trusts exactly the server
// whose certificate chain includes the pinned CA certificate and whose leaf
// is signed by it.
func ClientTLS(pin Pin) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyPinned(raw, pin)
		},
	}
}

func verifyPinned(raw [][]byte, pin Pin) error {
	if len(raw) == 0 {
		return fmt.Errorf("%w: no certificate presented", ErrPinMismatch)
	}
	certs := make([]*x509.Certificate, len(raw))
	for i, r := range raw {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return fmt.Errorf("bad server certificate: %w", err)
		}
		certs[i] = c
	}
	roots := x509.NewCertPool()
	found := false
	for _, c := range certs {
		if PinOf(c) == pin {
			roots.AddCert(c)
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%w: server presented %s, want %s", ErrPinMismatch, PinOf(certs[len(certs)-1]), pin)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrPinMismatch, err)
	}
	return nil
}
