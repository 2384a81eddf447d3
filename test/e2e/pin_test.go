package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/test/lab"
)

// This file checks the coordinator's identity as its clients see it: with
// an operator's certificate from a CA that signs anyone's names (a public
// ACME CA), a second leaf of that CA must not pass for the coordinator.

// pki is a public CA stand-in: a root and the intermediate that issues
// leaves for anyone.
type pki struct {
	t           *testing.T
	dir         string
	root, inter *x509.Certificate
	interKey    *ecdsa.PrivateKey
}

func newPKI(t *testing.T) *pki {
	p := &pki{t: t, dir: t.TempDir()}
	rootKey := p.key()
	p.root = p.sign(&x509.Certificate{Subject: pkix.Name{CommonName: "Public Test Root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, nil, rootKey, rootKey)
	p.interKey = p.key()
	p.inter = p.sign(&x509.Certificate{Subject: pkix.Name{CommonName: "Public Test Issuing CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, p.root, p.interKey, rootKey)
	return p
}

func (p *pki) key() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	return k
}

func (p *pki) sign(tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) *x509.Certificate {
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = sn
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		p.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

// leaf issues a server certificate for name with key.
func (p *pki) leaf(name string, key *ecdsa.PrivateKey) *x509.Certificate {
	return p.sign(&x509.Certificate{Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, p.inter, key, p.interKey)
}

// fullchain writes leaf, the intermediate and the root, and key, as an
// ACME client does, and returns the coordinator's flags to serve them.
func (p *pki) fullchain(name string, leaf *x509.Certificate, key *ecdsa.PrivateKey) []string {
	var chain []byte
	for _, c := range []*x509.Certificate{leaf, p.inter, p.root} {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+".key")
	if err := os.WriteFile(certFile, chain, 0o600); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return []string{"--tls-cert", certFile, "--tls-key", keyFile}
}

// spkiPin is the pin of leaf's public key as docs/security.md tells an
// operator to compute it, computed here apart from the code under test.
func spkiPin(leaf *x509.Certificate) string {
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return "spki-sha256:" + hex.EncodeToString(sum[:])
}

// impostor is a TLS server on its own host that presents another leaf of
// the coordinator's CA and passes what it gets on to the real coordinator:
// a machine in the middle. It counts the requests that got through TLS.
type impostor struct {
	url      string
	requests atomic.Int64
	srv      *http.Server
	proxyTr  *http.Transport
	wg       sync.WaitGroup
}

func startImpostor(t *testing.T, h *lab.Host, cert tls.Certificate, coordURL string) *impostor {
	t.Helper()
	ln, err := h.Listen("tcp", netip.AddrPortFrom(h.Addr, coordPort).String())
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse(coordURL)
	im := &impostor{url: "https://" + ln.Addr().String()}
	im.proxyTr = &http.Transport{DialContext: h.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport:     im.proxyTr,
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	im.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			im.requests.Add(1)
			proxy.ServeHTTP(w, r)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ErrorLog:  log.New(io.Discard, "", 0), // refused handshakes are the point
	}
	im.wg.Add(1)
	go func() {
		defer im.wg.Done()
		im.srv.ServeTLS(ln, "", "")
	}()
	t.Cleanup(func() {
		im.srv.Close()
		im.wg.Wait()
		im.proxyTr.CloseIdleConnections()
	})
	return im
}

// withURL returns the join key or admin token s with its coordinator URL
// replaced, as a DNS hijack or a machine in the middle makes a client
// reach the impostor with the genuine secret and pins.
func withURL(t *testing.T, s, prefix, u string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(strings.TrimSpace(s), prefix))
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	fields["u"] = u
	b, _ := json.Marshal(fields)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// nodeJSONPins returns the "pin" field of an agent's node.json as a list.
func nodeJSONPins(t *testing.T, a *agent) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.stateDir, "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	var id struct {
		Pin json.RawMessage `json:"pin"`
	}
	if err := json.Unmarshal(b, &id); err != nil {
		t.Fatal(err)
	}
	var one string
	if json.Unmarshal(id.Pin, &one) == nil {
		return []string{one}
	}
	var many []string
	if err := json.Unmarshal(id.Pin, &many); err != nil {
		t.Fatalf("node.json pin %s: %v", id.Pin, err)
	}
	return many
}

// adminVerbs walks `wiremesh --help` and returns every command that takes
// an admin token (--token-file), so that a new verb cannot be missed.
func adminVerbs(t *testing.T, path ...string) []string {
	t.Helper()
	out, err := exec.Command(bin, append(path, "--help")...).CombinedOutput()
	if err != nil {
		t.Fatalf("wiremesh %s --help: %v\n%s", strings.Join(path, " "), err, out)
	}
	help := string(out)
	_, subs, ok := strings.Cut(help, "Available Commands:\n")
	if !ok {
		if strings.Contains(help, "--token-file") {
			return []string{strings.Join(path, " ")}
		}
		return nil
	}
	var verbs []string
	for _, line := range strings.Split(subs, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			break
		}
		if f[0] == "help" || f[0] == "completion" {
			continue
		}
		verbs = append(verbs, adminVerbs(t, append(slices.Clone(path), f[0])...)...)
	}
	return verbs
}

// TestPinOperatorChain: a coordinator serving an operator's certificate
// chain is trusted by its leaf's key. A machine in the middle presenting
// another leaf of the same CA (for its own name) gets nothing: the agent
// does not enroll through it, and every admin verb of the CLI refuses it
// before sending the token, saying the certificate does not match the pin.
// The genuine coordinator works for enrollment and the CLI.
func TestPinOperatorChain(t *testing.T) {
	p := newPKI(t)
	coordKey, evilKey := p.key(), p.key()
	leaf := p.leaf("coord.example", coordKey)
	m := newBareMesh(t, p.fullchain("coord", leaf, coordKey)...)
	m.setPolicy(allowAll)

	// The genuine coordinator: enrollment and the CLI work.
	good := m.addAgent("good")
	if out := m.cli("nodes", "list"); !strings.Contains(out, "good") {
		t.Fatalf("nodes list through the genuine coordinator:\n%s", out)
	}

	evil := p.leaf("evil.example", evilKey)
	im := startImpostor(t, m.lab.AddHost("evil"), tls.Certificate{Certificate: [][]byte{evil.Raw, p.inter.Raw, p.root.Raw}, PrivateKey: evilKey}, m.coordURL())

	// The agent, given the genuine join key but sent to the impostor.
	key := withURL(t, m.cli("keys", "create"), "wmjoin1-", im.url)
	victim := &agent{name: "victim", host: m.lab.AddHost("victim"), iface: m.lab.Prefix() + "victim", stateDir: filepath.Join(t.TempDir(), "state")}
	victim.proc = victim.host.Start(t, "agent", nil, bin, "agent", "--state-dir", victim.stateDir, "--name", victim.name,
		"--interface", victim.iface, "--log-format", "json", "--resolv-conf", "/dev/null", "--join", key)
	code, err := victim.proc.Wait(30 * time.Second)
	if err != nil {
		victim.proc.Kill()
	}
	if err != nil || code == 0 {
		t.Errorf("agent sent to the impostor: exit %d, %v; want it to refuse the coordinator\n%s", code, err, victim.proc.Log())
	}
	if !strings.Contains(victim.proc.Log(), "does not match the pin") {
		t.Errorf("agent's log does not say the certificate does not match the pin:\n%s", victim.proc.Log())
	}
	if _, err := os.Stat(filepath.Join(victim.stateDir, "node.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("agent sent to the impostor wrote node.json (%v)", err)
	}

	// Every admin verb, with the genuine token but sent to the impostor.
	policy := filepath.Join(t.TempDir(), "policy.hujson")
	if err := os.WriteFile(policy, []byte(allowAll), 0o600); err != nil {
		t.Fatal(err)
	}
	verbs := map[string][]string{
		"keys create": nil, "keys list": nil, "keys revoke": {"jk000000000000"},
		"nodes list": nil, "nodes get": {"good"}, "nodes expire": {"good"}, "nodes delete": {"good"}, "nodes tag": {"good", "tag:x"},
		"acl get": nil, "acl set": {policy}, "acl check": {policy}, "acl history": nil, "acl rollback": {"1"},
		"gossip rotate": nil, "gossip retire": nil,
		"audit": nil, "tokens create": nil, "tokens list": nil, "tokens revoke": {"ad000000000000"},
		"services list": nil,
	}
	found := adminVerbs(t)
	for _, v := range found {
		if _, ok := verbs[v]; !ok {
			t.Errorf("admin verb %q is not checked against the impostor: add it to the table", v)
		}
	}
	for v := range verbs {
		if !slices.Contains(found, v) {
			t.Errorf("%q is in the table but `wiremesh --help` lists no such admin verb", v)
		}
	}
	for verb, args := range verbs {
		out, err := m.cliErr(append(append(strings.Fields(verb), args...), "--coordinator", im.url)...)
		if err == nil {
			t.Errorf("wiremesh %s through the impostor succeeded:\n%s", verb, out)
		} else if !strings.Contains(err.Error(), "does not match the pin") {
			t.Errorf("wiremesh %s through the impostor: %v; want it to say the certificate does not match the pin", verb, err)
		}
	}
	if n := im.requests.Load(); n != 0 {
		t.Errorf("%d requests (with their join key or admin token) reached the impostor", n)
	}
	if out := m.cli("nodes", "list"); strings.Contains(out, "victim") {
		t.Errorf("the agent sent to the impostor enrolled:\n%s", out)
	}
	// The genuine node trusts the leaf's key, nothing else.
	waitFor(t, 15*time.Second, "node.json to hold the leaf's key pin", func() bool {
		return slices.Equal(nodeJSONPins(t, good), []string{spkiPin(leaf)})
	})
}

// TestPinRoll: the operator announces the pin of the next certificate's
// key (--tls-next-pin), agents keep it from their netmap, and after the
// switch to a certificate with a new key they reconnect without
// re-enrolling; the admin token file follows.
func TestPinRoll(t *testing.T) {
	p := newPKI(t)
	key1, key2 := p.key(), p.key()
	leaf1, leaf2 := p.leaf("coord.example", key1), p.leaf("coord.example", key2)
	cert1 := p.fullchain("coord1", leaf1, key1)
	m := newBareMesh(t, cert1...)
	m.setPolicy(allowAll)
	a := m.addAgent("a")
	waitFor(t, 15*time.Second, "node.json to hold the first key's pin", func() bool {
		return slices.Equal(nodeJSONPins(t, a), []string{spkiPin(leaf1)})
	})

	restart := func(args ...string) {
		t.Helper()
		m.coord.Signal(sigterm)
		if code, err := m.coord.Wait(10 * time.Second); err != nil || code != 0 {
			t.Fatalf("coordinator: exit %d, %v\n%s", code, err, m.coord.Log())
		}
		m.coordArgs = args
		m.startCoordinator()
	}
	restart(append(slices.Clone(cert1), "--tls-next-pin", spkiPin(leaf2))...)
	waitFor(t, 30*time.Second, "node.json to hold the announced pin", func() bool {
		return slices.Equal(nodeJSONPins(t, a), []string{spkiPin(leaf1), spkiPin(leaf2)})
	})

	restart(p.fullchain("coord2", leaf2, key2)...)
	waitFor(t, 30*time.Second, "the agent to reconnect to the new certificate and keep only its pin", func() bool {
		return slices.Equal(nodeJSONPins(t, a), []string{spkiPin(leaf2)})
	})
	if a.proc.Exited() {
		t.Fatalf("agent exited:\n%s", a.proc.Log())
	}
	if out := m.cli("nodes", "list"); !strings.Contains(out, "a") {
		t.Fatalf("nodes list with the admin token file after the switch:\n%s", out)
	}
}
