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
	"time"
)

// PinKind says what a pin is the digest of.
type PinKind uint8

// Kinds of pin, with their prefixes in the String form.
const (
	// PinCA ("sha256:HEX") is the SHA-256 of the DER of the coordinator's
	// own dedicated CA certificate, the one it generates and alone signs
	// with: the server is trusted when its leaf chains to that certificate.
	// Never a public CA or intermediate, which signs other names too.
	PinCA PinKind = 1
	// PinKey ("spki-sha256:HEX") is the SHA-256 of the DER of the server
	// leaf's SubjectPublicKeyInfo: the server is trusted when its leaf
	// carries that public key, whoever signed it. It is the pin of an
	// operator's certificate; renewal with the same key keeps it.
	PinKey PinKind = 2
)

// Prefixes of the two kinds in the String form.
const (
	caPinPrefix  = "sha256:"
	keyPinPrefix = "spki-sha256:"
)

// Pin identifies one coordinator: its dedicated CA (PinCA) or its leaf's
// public key (PinKey). Host names are not checked, the pin is the
// identity. The zero Pin is unset.
type Pin struct {
	Kind PinKind
	Sum  [sha256.Size]byte
}

// CAPin returns the pin of a dedicated CA certificate.
func CAPin(ca *x509.Certificate) Pin { return Pin{Kind: PinCA, Sum: sha256.Sum256(ca.Raw)} }

// KeyPin returns the pin of a leaf certificate's public key.
func KeyPin(leaf *x509.Certificate) Pin {
	return Pin{Kind: PinKey, Sum: sha256.Sum256(leaf.RawSubjectPublicKeyInfo)}
}

// IsZero reports whether p is unset.
func (p Pin) IsZero() bool { return p == Pin{} }

// String returns the kind's prefix and the hex digest.
func (p Pin) String() string {
	switch p.Kind {
	case PinCA:
		return caPinPrefix + hex.EncodeToString(p.Sum[:])
	case PinKey:
		return keyPinPrefix + hex.EncodeToString(p.Sum[:])
	}
	return "unset"
}

// ParsePin reads the String form: "sha256:HEX" for a CA pin (the form of
// join keys and tokens from before key pins), "spki-sha256:HEX" for a key
// pin.
func ParsePin(s string) (Pin, error) {
	var p Pin
	h, ok := strings.CutPrefix(s, keyPinPrefix)
	if ok {
		p.Kind = PinKey
	} else if h, ok = strings.CutPrefix(s, caPinPrefix); ok {
		p.Kind = PinCA
	} else {
		return Pin{}, fmt.Errorf("bad pin %q: want spki-sha256:HEX or sha256:HEX", s)
	}
	if len(h) != 2*len(p.Sum) {
		return Pin{}, fmt.Errorf("bad pin %q: want 64 hex digits", s)
	}
	if _, err := hex.Decode(p.Sum[:], []byte(h)); err != nil {
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

// MaxPins bounds a pin set: the current pin and the announced next ones.
const MaxPins = 4

// Pins is a pin set: a server matching any of them is trusted. Several
// pins let a coordinator announce its next certificate before it switches.
// In JSON a set of one is a string (the form from before pin sets), a
// larger one a list of strings.
type Pins []Pin

// ParsePins reads pins in their String form; the set must not be empty.
func ParsePins(ss []string) (Pins, error) {
	if len(ss) == 0 {
		return nil, errors.New("no certificate pin")
	}
	if len(ss) > MaxPins {
		return nil, fmt.Errorf("%d certificate pins: at most %d", len(ss), MaxPins)
	}
	ps := make(Pins, len(ss))
	for i, s := range ss {
		p, err := ParsePin(s)
		if err != nil {
			return nil, err
		}
		ps[i] = p
	}
	return ps, nil
}

// Strings returns the String forms.
func (ps Pins) Strings() []string {
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = p.String()
	}
	return ss
}

// String joins the String forms with ", ".
func (ps Pins) String() string { return strings.Join(ps.Strings(), ", ") }

// Equal reports whether ps and qs hold the same pins in the same order.
func (ps Pins) Equal(qs Pins) bool {
	if len(ps) != len(qs) {
		return false
	}
	for i := range ps {
		if ps[i] != qs[i] {
			return false
		}
	}
	return true
}

// MarshalJSON writes a string for one pin, a list for several.
func (ps Pins) MarshalJSON() ([]byte, error) {
	if len(ps) == 1 {
		return json.Marshal(ps[0])
	}
	return json.Marshal(ps.Strings())
}

// UnmarshalJSON reads a string or a list of strings.
func (ps *Pins) UnmarshalJSON(b []byte) error {
	var ss []string
	if len(b) > 0 && b[0] == '"' {
		ss = make([]string, 1)
		if err := json.Unmarshal(b, &ss[0]); err != nil {
			return err
		}
	} else if err := json.Unmarshal(b, &ss); err != nil {
		return err
	}
	v, err := ParsePins(ss)
	*ps = v
	return err
}

// ErrPinMismatch is returned (wrapped) by a pinned TLS handshake when the
// server's certificate matches none of the pins.
var ErrPinMismatch = errors.New("coordinator certificate does not match the pin")

// ClientTLS returns a TLS client config that trusts exactly the servers
// that match one of pins (see Pins.Verify).
func ClientTLS(pins Pins) *tls.Config {
	return ClientTLSFunc(func() Pins { return pins })
}

// ClientTLSFunc is ClientTLS with the pins read at every handshake, for a
// client whose pin set changes while it runs.
func ClientTLSFunc(pins func() Pins) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return pins().Verify(raw)
		},
	}
}

// Verify checks the certificates a server presented, leaf first, against
// the set. A key pin matches a leaf with that public key; a CA pin, a leaf
// that chains to the presented certificate with that digest. Either way
// the leaf must be valid now and for server authentication; the TLS
// handshake proves the server holds the leaf's private key.
func (ps Pins) Verify(raw [][]byte) error {
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
	var errs []error
	for _, p := range ps {
		err := p.verify(certs)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("%w: server presented %s, want %s%s", ErrPinMismatch, KeyPin(certs[0]), ps, detail(errs))
}

// detail lists why pins that matched a certificate were still refused.
func detail(errs []error) string {
	var s []string
	for _, err := range errs {
		if !errors.Is(err, errNoMatch) {
			s = append(s, err.Error())
		}
	}
	if len(s) == 0 {
		return ""
	}
	return " (" + strings.Join(s, "; ") + ")"
}

// errNoMatch: the pin matches none of the presented certificates.
var errNoMatch = errors.New("no certificate with the pin")

func (p Pin) verify(certs []*x509.Certificate) error {
	leaf := certs[0]
	switch p.Kind {
	case PinKey:
		if KeyPin(leaf) != p {
			return errNoMatch
		}
		return checkLeaf(leaf)
	case PinCA:
		roots := x509.NewCertPool()
		found := false
		for _, c := range certs {
			if CAPin(c) == p {
				roots.AddCert(c)
				found = true
			}
		}
		if !found {
			return errNoMatch
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return err
	}
	return errNoMatch
}

// checkLeaf checks what chain verification would of a leaf trusted by its
// key: its validity period and its use for server authentication.
func checkLeaf(leaf *x509.Certificate) error {
	now := time.Now()
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("leaf certificate valid from %s to %s only", leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
	}
	if len(leaf.ExtKeyUsage) == 0 {
		return nil
	}
	for _, u := range leaf.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny {
			return nil
		}
	}
	return errors.New("leaf certificate is not for server authentication")
}
