package credential_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var serialNo int64

func createCert(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	serialNo++
	tmpl.SerialNumber = big.NewInt(serialNo)
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newCA(t *testing.T, name string) testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          []byte(name),
	}
	return testCA{cert: createCert(t, tmpl, tmpl, &key.PublicKey, key), key: key}
}

// leafTemplate is a server certificate for the loopback address.
func leafTemplate(eku x509.ExtKeyUsage) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: "coordinator"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{eku},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
}

// issue returns a server certificate signed by ca, with chain appended.
func (ca testCA) issue(t *testing.T, tmpl *x509.Certificate, chain ...*x509.Certificate) tls.Certificate {
	t.Helper()
	key := newKey(t)
	leaf := createCert(t, tmpl, ca.cert, &key.PublicKey, ca.key)
	tc := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// getVia makes one HTTPS request to a server presenting cert, trusting it
// by pin only, and returns the client's error.
func getVia(t *testing.T, cert tls.Certificate, pins ...credential.Pin) error {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.StartTLS()
	defer srv.Close()
	tr := &http.Transport{TLSClientConfig: credential.ClientTLS(pins)}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(srv.URL)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "ok" {
		t.Fatalf("body %q, want ok", b)
	}
	return nil
}

func TestClientTLS(t *testing.T) {
	ca := newCA(t, "wiremesh coordinator CA")
	other := newCA(t, "some other CA")
	caPin := credential.CAPin(ca.cert)

	// The attacker holds the real CA certificate (it is public) but not its
	// key: it signs a leaf naming the real CA as issuer with a key of its own.
	attackerKey := newKey(t)
	forgedParent := *ca.cert
	forgedParent.PublicKey = &attackerKey.PublicKey
	forged := testCA{cert: &forgedParent, key: attackerKey}.issue(t, leafTemplate(x509.ExtKeyUsageServerAuth), ca.cert)
	// Or it presents the real CA certificate itself as its leaf.
	caAsLeaf := tls.Certificate{Certificate: [][]byte{ca.cert.Raw}, PrivateKey: attackerKey}
	// Or the real CA's certificate follows a chain of the attacker's CA.
	viaOther := other.issue(t, leafTemplate(x509.ExtKeyUsageServerAuth), other.cert, ca.cert)

	expired := leafTemplate(x509.ExtKeyUsageServerAuth)
	expired.NotBefore, expired.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)

	for _, tc := range []struct {
		name    string
		cert    tls.Certificate
		pin     credential.Pin
		wantErr bool
		// wantPin says the error must wrap ErrPinMismatch.
		wantPin bool
	}{
		{name: "leaf and CA, CA pinned", cert: ca.issue(t, leafTemplate(x509.ExtKeyUsageServerAuth), ca.cert), pin: caPin},
		{name: "other pin", cert: ca.issue(t, leafTemplate(x509.ExtKeyUsageServerAuth), ca.cert), pin: credential.CAPin(other.cert), wantErr: true, wantPin: true},
		{name: "CA not presented", cert: ca.issue(t, leafTemplate(x509.ExtKeyUsageServerAuth)), pin: caPin, wantErr: true, wantPin: true},
		{name: "leaf signed by another key with the real CA in the chain", cert: forged, pin: caPin, wantErr: true, wantPin: true},
		{name: "chain of another CA ending in the real CA", cert: viaOther, pin: caPin, wantErr: true, wantPin: true},
		{name: "real CA certificate as leaf without its key", cert: caAsLeaf, pin: caPin, wantErr: true},
		{name: "client-auth leaf", cert: ca.issue(t, leafTemplate(x509.ExtKeyUsageClientAuth), ca.cert), pin: caPin, wantErr: true, wantPin: true},
		{name: "expired leaf", cert: ca.issue(t, expired, ca.cert), pin: caPin, wantErr: true, wantPin: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := getVia(t, tc.cert, tc.pin)
			switch {
			case !tc.wantErr && err != nil:
				t.Fatalf("request failed: %v", err)
			case tc.wantErr && err == nil:
				t.Fatal("request succeeded, want the server refused")
			case tc.wantPin && !errors.Is(err, credential.ErrPinMismatch):
				t.Fatalf("error %v does not wrap ErrPinMismatch", err)
			}
		})
	}
}

// serverLeaf is a server certificate for name (and the loopback address,
// where getVia's server listens).
func serverLeaf(name string) *x509.Certificate {
	tmpl := leafTemplate(x509.ExtKeyUsageServerAuth)
	tmpl.Subject.CommonName = name
	tmpl.DNSNames = []string{name}
	return tmpl
}

// issueWithKey is issue with the leaf's key given, as a renewal that keeps
// its key makes it.
func (ca testCA) issueWithKey(t *testing.T, tmpl *x509.Certificate, key *ecdsa.PrivateKey, chain ...*x509.Certificate) tls.Certificate {
	t.Helper()
	leaf := createCert(t, tmpl, ca.cert, &key.PublicKey, ca.key)
	tc := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// intermediate makes a CA signed by ca, as a public CA's issuing
// intermediate is.
func (ca testCA) intermediate(t *testing.T, name string) testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          []byte(name),
	}
	return testCA{cert: createCert(t, tmpl, ca.cert, &key.PublicKey, ca.key), key: key}
}

func leafOf(t *testing.T, c tls.Certificate) *x509.Certificate {
	t.Helper()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// TestKeyPin: an operator's certificate from a CA that signs other names
// too (a public ACME CA) is pinned by its leaf's public key, so another
// leaf of the same CA is refused, whatever chain it comes with.
func TestKeyPin(t *testing.T) {
	root := newCA(t, "public root")
	inter := root.intermediate(t, "public intermediate")
	coordKey := newKey(t)
	coord := inter.issueWithKey(t, serverLeaf("coord.example"), coordKey, inter.cert, root.cert)
	pin := credential.KeyPin(leafOf(t, coord))
	if s := pin.String(); !strings.HasPrefix(s, "spki-sha256:") {
		t.Fatalf("key pin %q, want the spki-sha256: form", s)
	}
	// The same CA's leaf for another name, as anyone gets one from it.
	evil := inter.issue(t, serverLeaf("evil.example"), inter.cert, root.cert)
	// The coordinator's next certificate, with a new key.
	next := inter.issue(t, serverLeaf("coord.example"), inter.cert)
	nextPin := credential.KeyPin(leafOf(t, next))
	expired := serverLeaf("coord.example")
	expired.NotBefore, expired.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	clientAuth := serverLeaf("coord.example")
	clientAuth.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}

	for _, tc := range []struct {
		name    string
		cert    tls.Certificate
		pins    credential.Pins
		wantErr bool
	}{
		{name: "operator chain leaf, intermediate, root", cert: coord, pins: credential.Pins{pin}},
		{name: "leaf and intermediate", cert: inter.issueWithKey(t, serverLeaf("coord.example"), coordKey, inter.cert), pins: credential.Pins{pin}},
		{name: "leaf alone", cert: inter.issueWithKey(t, serverLeaf("coord.example"), coordKey), pins: credential.Pins{pin}},
		{name: "renewed leaf with the same key", cert: inter.issueWithKey(t, serverLeaf("coord.example"), coordKey, inter.cert, root.cert), pins: credential.Pins{pin}},
		{name: "same key from another CA", cert: newCA(t, "another public CA").issueWithKey(t, serverLeaf("coord.example"), coordKey), pins: credential.Pins{pin}},
		{name: "second leaf of the same CA", cert: evil, pins: credential.Pins{pin}, wantErr: true},
		{name: "second leaf of the same CA, CA pins beside", cert: evil, pins: credential.Pins{pin, nextPin}, wantErr: true},
		{name: "next certificate before it is announced", cert: next, pins: credential.Pins{pin}, wantErr: true},
		{name: "next certificate announced", cert: next, pins: credential.Pins{pin, nextPin}},
		{name: "current certificate after the switch", cert: coord, pins: credential.Pins{nextPin}, wantErr: true},
		{name: "expired leaf with the pinned key", cert: inter.issueWithKey(t, expired, coordKey, inter.cert), pins: credential.Pins{pin}, wantErr: true},
		{name: "client-auth leaf with the pinned key", cert: inter.issueWithKey(t, clientAuth, coordKey, inter.cert), pins: credential.Pins{pin}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := getVia(t, tc.cert, tc.pins...)
			switch {
			case !tc.wantErr && err != nil:
				t.Fatalf("request failed: %v", err)
			case tc.wantErr && err == nil:
				t.Fatal("request succeeded, want the server refused")
			case tc.wantErr && !errors.Is(err, credential.ErrPinMismatch):
				t.Fatalf("error %v does not wrap ErrPinMismatch", err)
			}
		})
	}
}

// TestCAPinNotForPublicCA: a CA pin trusts every leaf its CA signs, which
// is why only the coordinator's own CA may be pinned so: the pin of a
// public intermediate (what the last certificate of a fullchain.pem was
// before key pins) lets its other leaves through.
func TestCAPinNotForPublicCA(t *testing.T) {
	root := newCA(t, "public root")
	inter := root.intermediate(t, "public intermediate")
	evil := inter.issue(t, serverLeaf("evil.example"), inter.cert)
	if err := getVia(t, evil, credential.CAPin(inter.cert)); err != nil {
		t.Fatalf("a CA pin refused a leaf of its CA: %v", err)
	}
}

func TestPinsJSON(t *testing.T) {
	ca, key := testPinN(1, credential.PinCA), testPinN(2, credential.PinKey)
	for _, tc := range []struct {
		pins credential.Pins
		want string
	}{
		{credential.Pins{ca}, `"` + ca.String() + `"`},
		{credential.Pins{key, ca}, `["` + key.String() + `","` + ca.String() + `"]`},
	} {
		b, err := json.Marshal(tc.pins)
		if err != nil || string(b) != tc.want {
			t.Errorf("Marshal(%v) = %s, %v; want %s", tc.pins, b, err, tc.want)
		}
		var got credential.Pins
		if err := json.Unmarshal(b, &got); err != nil || !got.Equal(tc.pins) {
			t.Errorf("Unmarshal(%s) = %v, %v; want %v", b, got, err, tc.pins)
		}
	}
	five := `["` + strings.Repeat(key.String()+`","`, 4) + key.String() + `"]`
	for _, in := range []string{`[]`, `null`, `""`, `3`, `["sha256:00"]`, `"md5:` + strings.Repeat("0", 32) + `"`, five} {
		var got credential.Pins
		if err := json.Unmarshal([]byte(in), &got); err == nil {
			t.Errorf("Unmarshal(%s) = %v, want error", in, got)
		}
	}
}

func testPinN(b byte, kind credential.PinKind) credential.Pin {
	p := credential.Pin{Kind: kind}
	for i := range p.Sum {
		p.Sum[i] = b + byte(i)
	}
	return p
}
