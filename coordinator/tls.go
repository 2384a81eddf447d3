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
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/atomicfile"
)

// leafLifetime is how long a generated server certificate lasts; it is
// renewed at start when less than leafRenew remains. Agents pin the CA, so
// renewal is invisible to them. The CA signs nothing but this
// coordinator's leaves, which is what makes pinning it safe.
const (
	caLifetime   = 20 * 365 * 24 * time.Hour
	leafLifetime = 397 * 24 * time.Hour
	leafRenew    = 30 * 24 * time.Hour
)

// LoadTLS returns the server certificate and the pin agents trust. An
// operator certificate is pinned by its leaf's public key: its CA may be a
// public one that signs anyone's names. With no operator certificate it
// uses (creating on first start) a dedicated CA and a leaf in dir, pinned
// by the CA. created lists files it wrote. The standalone relay (`wiremesh
// relay`) makes and pins its TLS identity with it too, in its state dir.
func LoadTLS(dir, certFile, keyFile string, advertise ...string) (cert tls.Certificate, pin credential.Pin, created []string, err error) {
	if certFile != "" {
		cert, err = tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return cert, pin, nil, fmt.Errorf("load TLS certificate: %w", err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return cert, pin, nil, fmt.Errorf("parse TLS certificate %s: %w", certFile, err)
		}
		return cert, credential.KeyPin(leaf), nil, nil
	}
	caCert, caKey, made, err := loadOrCreateCA(dir)
	if err != nil {
		return cert, pin, nil, err
	}
	if made {
		created = append(created, filepath.Join(dir, "ca.crt"))
	}
	leafPath, leafKeyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	cert, err = tls.LoadX509KeyPair(leafPath, leafKeyPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return cert, pin, nil, fmt.Errorf("load %s: %w", leafPath, err)
	default:
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return cert, pin, nil, fmt.Errorf("parse %s: %w", leafPath, err)
		}
		if leaf.CheckSignatureFrom(caCert) == nil && time.Until(leaf.NotAfter) > leafRenew && namesAll(leaf, advertise) {
			return cert, credential.CAPin(caCert), created, nil
		}
	}
	if cert, err = issueLeaf(caCert, caKey, advertise, leafPath, leafKeyPath); err != nil {
		return cert, pin, nil, err
	}
	return cert, credential.CAPin(caCert), append(created, leafPath), nil
}

// namesAll reports whether leaf names the host of every URL in urls.
func namesAll(leaf *x509.Certificate, urls []string) bool {
	for _, a := range urls {
		if u, err := url.Parse(a); err == nil && leaf.VerifyHostname(u.Hostname()) != nil {
			return false
		}
	}
	return true
}

func loadOrCreateCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, bool, error) {
	certPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	certPEM, err1 := os.ReadFile(certPath)
	keyPEM, err2 := os.ReadFile(keyPath)
	if err1 == nil && err2 == nil {
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, nil, false, fmt.Errorf("load CA %s: %w", certPath, err)
		}
		ca, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return nil, nil, false, fmt.Errorf("parse CA %s: %w", certPath, err)
		}
		key, ok := c.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return nil, nil, false, fmt.Errorf("CA key %s: want an ECDSA key", keyPath)
		}
		return ca, key, false, nil
	}
	if !errors.Is(err1, os.ErrNotExist) || !errors.Is(err2, os.ErrNotExist) {
		return nil, nil, false, fmt.Errorf("CA files %s and %s must both exist or both be absent", certPath, keyPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, false, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "wiremesh coordinator CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, false, fmt.Errorf("create CA: %w", err)
	}
	if err := writePEM(keyPath, key); err != nil {
		return nil, nil, false, err
	}
	if err := atomicfile.Write(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, nil, false, err
	}
	ca, _ := x509.ParseCertificate(der)
	return ca, key, true, nil
}

func issueLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, advertise []string, certPath, keyPath string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate TLS key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "wiremesh coordinator"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, a := range advertise {
		if u, err := url.Parse(a); err == nil {
			if ip := net.ParseIP(u.Hostname()); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else if u.Hostname() != "" {
				tmpl.DNSNames = append(tmpl.DNSNames, u.Hostname())
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue TLS certificate: %w", err)
	}
	if err := writePEM(keyPath, key); err != nil {
		return tls.Certificate{}, err
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})...)
	if err := atomicfile.Write(certPath, chain, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key}, nil
}

func writePEM(path string, key *ecdsa.PrivateKey) error {
	b, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", path, err)
	}
	return atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b}), 0o600)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
