package coordinator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// operatorCA stands for a public CA: it signs certificates for anyone's
// names.
type operatorCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func genKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sign makes a certificate from tmpl for pub, signed by ca (self-signed
// when ca is nil, with key as its key).
func sign(t *testing.T, tmpl *x509.Certificate, ca *operatorCA, pub, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl.SerialNumber = serial()
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &pub.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func caTemplate(name string) *x509.Certificate {
	return &x509.Certificate{
		Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
}

func leafFor(name string) *x509.Certificate {
	return &x509.Certificate{
		Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

// writeChain writes certs (leaf first) and key as PEM files in dir.
func writeChain(t *testing.T, dir, name string, key *ecdsa.PrivateKey, certs ...*x509.Certificate) (certFile, keyFile string) {
	t.Helper()
	var chain []byte
	for _, c := range certs {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, chain, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writePEM(keyFile, key); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestOperatorCertificatePin: with an operator's certificate chain (a
// fullchain.pem from a public CA), the coordinator's pin is its leaf's
// key, so another leaf of the same CA, for another name, is refused by a
// client holding the join key's pins. The pins, with an announced next
// one, are in join keys, the admin token and netmaps; a renewal with the
// same key keeps the pin.
func TestOperatorCertificatePin(t *testing.T) {
	rootKey, interKey, coordKey := genKey(t), genKey(t), genKey(t)
	root := &operatorCA{sign(t, caTemplate("public root"), nil, rootKey, rootKey), rootKey}
	inter := &operatorCA{sign(t, caTemplate("public intermediate"), root, interKey, nil), interKey}
	leaf := sign(t, leafFor("coord.example"), inter, coordKey, nil)
	tlsDir := t.TempDir()
	certFile, keyFile := writeChain(t, tlsDir, "fullchain", coordKey, leaf, inter.cert)
	next := credential.KeyPin(sign(t, leafFor("coord.example"), inter, genKey(t), nil))

	ts := startServer(t, time.Hour, func(c *Config) {
		c.TLSCert, c.TLSKey, c.TLSNextPins = certFile, keyFile, []credential.Pin{next}
	})
	want := credential.Pins{credential.KeyPin(leaf), next}
	if !ts.c.Pins().Equal(want) {
		t.Fatalf("pins %s, want the leaf's key pin and the next pin: %s", ts.c.Pins(), want)
	}
	jk, err := credential.ParseJoinKey(ts.createJoinKey(t, wire.CreateJoinKeyRequest{}).JoinKey)
	if err != nil {
		t.Fatal(err)
	}
	if !jk.Pins.Equal(want) {
		t.Errorf("join key pins %s, want %s", jk.Pins, want)
	}
	if tok := readAdminToken(t, ts.dir); !tok.Pins.Equal(want) {
		t.Errorf("admin token pins %s, want %s", tok.Pins, want)
	}
	a := ts.enroll(t, ts.createJoinKey(t, wire.CreateJoinKeyRequest{}).JoinKey, wire.EnrollRequest{PublicKey: newPublicKey(t)})
	nm := ts.openStream(t, a.Credential, wire.MapRequest{PublicKey: a.Node.PublicKey}).netmap(t, "first", func(*wire.Netmap) bool { return true })
	if !slices.Equal(nm.CoordinatorPins, want.Strings()) {
		t.Errorf("netmap pins %q, want %q", nm.CoordinatorPins, want.Strings())
	}

	// The attack: anyone gets a certificate from the same CA for a name
	// of theirs and sits between the nodes and the coordinator.
	evilKey := genKey(t)
	evil := sign(t, leafFor("evil.example"), inter, evilKey, nil)
	impostor := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "got your secrets") }))
	impostor.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{evil.Raw, inter.cert.Raw, root.cert.Raw}, PrivateKey: evilKey}}}
	impostor.Config.ErrorLog = log.New(io.Discard, "", 0)
	impostor.StartTLS()
	defer impostor.Close()
	tr := &http.Transport{TLSClientConfig: credential.ClientTLS(jk.Pins)}
	defer tr.CloseIdleConnections()
	if resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(impostor.URL); err == nil {
		resp.Body.Close()
		t.Fatal("a client with the join key's pins trusted another leaf of the coordinator's CA")
	} else if !errors.Is(err, credential.ErrPinMismatch) {
		t.Fatalf("impostor refused with %v, want ErrPinMismatch", err)
	}

	// Renewal with the same key: same pin. Without the next pin announced
	// any more, the admin token file follows.
	renewed := sign(t, leafFor("coord.example"), inter, coordKey, nil)
	certFile, keyFile = writeChain(t, tlsDir, "renewed", coordKey, renewed, inter.cert, root.cert)
	ts.c.Close()
	c, _, err := New(Config{DataDir: ts.dir, Listen: "127.0.0.1:0", AdvertiseURL: ts.url, TLSCert: certFile, TLSKey: keyFile, Logger: ts.c.log})
	if err != nil {
		t.Fatalf("restart with the renewed certificate: %v", err)
	}
	defer c.Close()
	if want := (credential.Pins{credential.KeyPin(leaf)}); !c.Pins().Equal(want) {
		t.Errorf("pins after renewal with the same key %s, want %s", c.Pins(), want)
	}
	if tok := readAdminToken(t, ts.dir); !tok.Pins.Equal(c.Pins()) {
		t.Errorf("admin token file pins %s after restart, want %s", tok.Pins, c.Pins())
	}
}

// TestGeneratedCAPin: without an operator certificate the pin is the
// coordinator's own CA, in the sha256: form join keys had before key pins.
func TestGeneratedCAPin(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	c, f := newForTest(t, dir)
	defer c.Close()
	b, err := os.ReadFile(f.CACert)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if want := (credential.Pins{credential.CAPin(ca)}); !c.Pins().Equal(want) {
		t.Errorf("pins %s, want the CA's %s", c.Pins(), want)
	}
}

func TestNextPinsValidate(t *testing.T) {
	p := credential.Pin{Kind: credential.PinKey}
	for _, tc := range []struct {
		name string
		pins []credential.Pin
	}{
		{"unset pin", []credential.Pin{{}}},
		{"too many", []credential.Pin{p, p, p, p}},
	} {
		cfg := Config{DataDir: filepath.Join(t.TempDir(), "data"), Listen: "127.0.0.1:0", TLSNextPins: tc.pins}
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: Validate accepted next pins %v", tc.name, tc.pins)
		}
	}
}
