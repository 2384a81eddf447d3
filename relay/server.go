package relay

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/credential"
)

// upgradeToken is the protocol named in the Upgrade header; a change
// that old peers cannot follow gets a new one.
const upgradeToken = "wiremesh-relay/1"

// Defaults of ServerConfig.
const (
	DefaultKeepAlive    = 30 * time.Second
	DefaultQueueDepth   = 64
	DefaultWriteTimeout = 10 * time.Second
	DefaultAuthTimeout  = 10 * time.Second
)

// peerGoneEvery is the least time between two peer-gone notices for one
// destination to one client; maxGone bounds the table that keeps it.
const (
	peerGoneEvery = time.Second
	maxGone       = 1024
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Key is the relay's proof key, to which nodes prove their key. An
	// embedded relay takes the coordinator's. Required.
	Key *credential.ProofKey
	// Allowed reports whether the node with this public key may attach
	// (it is enrolled). Required. It is called at every attach and by
	// Recheck, from several goroutines at once, and must not call the
	// Server.
	Allowed func(nodePublic [32]byte) bool
	// Logger gets refusals, closed connections and their reasons. Nil:
	// discarded.
	Logger *slog.Logger
	// KeepAlive is how often the relay sends each client a keep-alive.
	// A client it has heard nothing from for two to three of them is
	// closed (clients ping every few seconds). Zero: DefaultKeepAlive.
	KeepAlive time.Duration
	// QueueDepth is how many frames may wait for one client's writer;
	// packets beyond are dropped (queue_full). Zero: DefaultQueueDepth.
	QueueDepth int
	// WriteTimeout bounds a write of a batch of frames to a client: a
	// client that reads nothing for this long is closed. Zero:
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// AuthTimeout bounds the time from the upgrade to the node's answer.
	// Zero: DefaultAuthTimeout.
	AuthTimeout time.Duration
}

// DefaultServerConfig returns the defaults; Key and Allowed are left for
// the caller.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		Logger:       slog.New(slog.DiscardHandler),
		KeepAlive:    DefaultKeepAlive,
		QueueDepth:   DefaultQueueDepth,
		WriteTimeout: DefaultWriteTimeout,
		AuthTimeout:  DefaultAuthTimeout,
	}
}

// Validate reports the first problem with c and fills in the defaults of
// its zero fields.
func (c *ServerConfig) Validate() error {
	d := DefaultServerConfig()
	switch {
	case c.Key == nil:
		return errors.New("relay config: no proof key")
	case c.Allowed == nil:
		return errors.New("relay config: no Allowed function")
	case c.KeepAlive < 0 || c.WriteTimeout < 0 || c.AuthTimeout < 0:
		return errors.New("relay config: negative duration")
	case c.QueueDepth < 0:
		return fmt.Errorf("relay config: queue depth %d is negative", c.QueueDepth)
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = d.KeepAlive
	}
	if c.QueueDepth == 0 {
		c.QueueDepth = d.QueueDepth
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = d.AuthTimeout
	}
	return nil
}

// Server is the relay: an http.Handler for wire.PathRelay that takes over
// the connection of each upgraded request, checks the node's proof, and
// then forwards packets between attached nodes by node key.
type Server struct {
	cfg      ServerConfig
	pub      [keyLen]byte // the relay's proof public key, sent in challenges
	log      *slog.Logger
	refusals *logLimiter // lines about refused or malformed connections
	stats    stats

	// mu guards the fields below it.
	mu      sync.RWMutex
	clients map[[keyLen]byte]*session // attached sessions, by node key
	conns   map[*session]struct{}     // every taken-over connection, attached or not
	closed  bool

	// wg counts ServeHTTP calls that may take a connection over, and the
	// sessions' writers.
	wg sync.WaitGroup
}

// NewServer returns a relay server for cfg.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pub, err := base64.StdEncoding.DecodeString(cfg.Key.PublicKey())
	if err != nil || len(pub) != keyLen {
		return nil, fmt.Errorf("relay: bad proof public key: %v", err)
	}
	return &Server{
		cfg:      cfg,
		pub:      [keyLen]byte(pub),
		log:      cfg.Logger,
		refusals: newLogLimiter(1, 10),
		clients:  make(map[[keyLen]byte]*session),
		conns:    make(map[*session]struct{}),
	}, nil
}

// ServeHTTP answers a GET with "Connection: Upgrade" and "Upgrade:
// wiremesh-relay/1" with 101 and serves the relay protocol on the
// connection until either side closes it; other requests get 405 or 426.
// The request must come over HTTP/1.1 (HTTP/2 connections cannot be taken
// over); the client offers only that.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "relay: want GET with Upgrade: "+upgradeToken, http.StatusMethodNotAllowed)
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), upgradeToken) || !hasToken(r.Header["Connection"], "upgrade") {
		w.Header().Set("Upgrade", upgradeToken)
		w.Header().Set("Connection", "Upgrade")
		http.Error(w, "relay: want Connection: Upgrade and Upgrade: "+upgradeToken, http.StatusUpgradeRequired)
		return
	}
	if !s.enter() {
		http.Error(w, "relay: shutting down", http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, fmt.Sprintf("relay: cannot take the connection over (%s): %v", r.Proto, err), http.StatusInternalServerError)
		return
	}
	sess := newSession(s, conn, bufio.NewReaderSize(brw.Reader, 32<<10), r.RemoteAddr)
	if !s.track(sess) {
		sess.close()
		return
	}
	s.serve(sess)
}

// hasToken reports whether a comma-separated header holds token, in any
// case.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// enter counts a ServeHTTP call in wg unless the server is closed.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// track records a taken-over connection, so that Close finds it.
func (s *Server) track(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[sess] = struct{}{}
	return true
}

// serve authenticates the node on sess, attaches it and reads its frames
// until the connection ends. It runs on the ServeHTTP goroutine.
func (s *Server) serve(sess *session) {
	key, reason, err := s.authenticate(sess)
	if err != nil {
		select {
		case <-sess.done: // Close ended it: no refusal
			return
		default:
		}
		s.stats.authFailed(reason)
		claimed := ""
		if reason != authProtocol {
			claimed = base64.StdEncoding.EncodeToString(key[:])
		}
		s.refused("node refused", sess.addr, claimed, err)
		sess.sayGoodbye(err.Error())
		sess.close()
		return
	}
	sess.queue <- controlFrame(frameOK, nil) // first in the empty queue: before any packet
	if !s.attach(sess, key) {
		sess.close()
		return
	}
	s.log.Debug("relay client attached", "key", sess.keyText, "addr", sess.addr)
	s.wg.Add(1)
	go sess.writeLoop()
	err = sess.readLoop()
	var fe *badFrame
	switch {
	case errors.As(err, &fe):
		if fe.typ == frameSend && errors.Is(err, errTooLong) {
			s.stats.dropped(dropTooBig)
		}
		s.refused("relay client closed: malformed frame", sess.addr, sess.keyText, err)
		sess.kickWith(err.Error())
	default:
		s.log.Debug("relay client gone", "key", sess.keyText, "addr", sess.addr, "err", err)
		sess.close()
	}
}

// authenticate sends the challenge and checks the answer. A refusal
// comes with its reason label for the metrics.
func (s *Server) authenticate(sess *session) (key [keyLen]byte, reason string, err error) {
	if err := sess.conn.SetDeadline(time.Now().Add(s.cfg.AuthTimeout)); err != nil {
		return key, authProtocol, fmt.Errorf("set deadline: %w", err)
	}
	var nonce [credential.RelayNonceLen]byte
	rand.Read(nonce[:])
	msg := "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + upgradeToken + "\r\n\r\n"
	b := make([]byte, len(msg)+headerLen+2*keyLen)
	n := copy(b, msg)
	putHeader(b[n:], frameChallenge, 2*keyLen)
	copy(b[n+headerLen:], s.pub[:])
	copy(b[n+headerLen+keyLen:], nonce[:])
	if _, err := sess.conn.Write(b); err != nil {
		return key, authProtocol, fmt.Errorf("write challenge: %w", err)
	}
	if key, reason, err = s.readAnswer(&sess.fr, nonce[:]); err != nil {
		return key, reason, err
	}
	if err := sess.conn.SetDeadline(time.Time{}); err != nil {
		return key, authProtocol, fmt.Errorf("clear deadline: %w", err)
	}
	return key, "", nil
}

// readAnswer reads the node's answer to the challenge with nonce and
// checks it: a valid proof of a key that Allowed knows.
func (s *Server) readAnswer(fr *frameReader, nonce []byte) (key [keyLen]byte, reason string, err error) {
	t, _, err := fr.header()
	if err != nil {
		return key, authProtocol, fmt.Errorf("read answer: %w", err)
	}
	if t != frameAuth {
		return key, authProtocol, fmt.Errorf("read answer: %w", fr.unexpected())
	}
	var ans [2 * keyLen]byte
	if err := fr.payload(ans[:]); err != nil {
		return key, authProtocol, fmt.Errorf("read answer: %w", err)
	}
	key = [keyLen]byte(ans[:keyLen])
	if err := s.cfg.Key.CheckRelay(key, nonce, ans[keyLen:]); err != nil {
		return key, authProof, err
	}
	if !s.cfg.Allowed(key) {
		return key, authNotAllowed, errNotAllowed
	}
	return key, "", nil
}

// errNotAllowed is the refusal of a key that Allowed does not know.
var errNotAllowed = errors.New("node key not allowed on this relay (not enrolled, or removed)")

// refused logs why the connection from addr, of node key (claimed, if
// refused; "" if unknown), was refused or closed. It is rate-limited: an
// unauthenticated peer can cause these lines.
func (s *Server) refused(msg, addr, key string, err error) {
	suppressed, ok := s.refusals.allow()
	if !ok {
		return
	}
	args := []any{"addr", addr, "why", err}
	if key != "" {
		args = append(args, "key", key)
	}
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	s.log.Warn(msg, args...)
}

// attach makes sess the session of key, replacing (and closing) the one
// before.
func (s *Server) attach(sess *session, key [keyLen]byte) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	sess.key, sess.keyText = key, base64.StdEncoding.EncodeToString(key[:])
	old := s.clients[sess.key]
	s.clients[sess.key] = sess
	s.mu.Unlock()
	if old != nil {
		s.log.Info("relay client replaced by a newer connection", "key", sess.keyText, "addr", old.addr, "new_addr", sess.addr)
		old.kickWith("replaced by a newer connection of the same node key")
	}
	return true
}

// forget drops sess from the server's tables.
func (s *Server) forget(sess *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, sess)
	if s.clients[sess.key] == sess {
		delete(s.clients, sess.key)
	}
}

// forward sends fb, a recv frame read from a send frame of from and
// still carrying the destination key, to the destination's writer.
func (s *Server) forward(from *session, fb *frameBuf) {
	p := fb.payload()
	dst := [keyLen]byte(p[:keyLen])
	s.mu.RLock()
	to := s.clients[dst]
	s.mu.RUnlock()
	if to == nil {
		fb.free()
		s.stats.dropped(dropNoSuchPeer)
		from.peerGone(dst)
		return
	}
	copy(p[:keyLen], from.key[:])
	if !to.enqueue(fb) {
		fb.free()
		s.stats.dropped(dropQueueFull)
	}
}

// Revoke closes the connection of the node with this public key, if one
// is attached. The embedder must also make Allowed refuse the key, or the
// node attaches again.
func (s *Server) Revoke(nodePublic [32]byte) {
	s.mu.RLock()
	sess := s.clients[nodePublic]
	s.mu.RUnlock()
	if sess != nil {
		s.log.Info("relay client revoked", "key", sess.keyText, "addr", sess.addr)
		sess.kickWith("node key revoked")
	}
}

// Recheck asks Allowed again about every attached node and closes the
// connections of those it refuses now; call it when nodes are removed.
func (s *Server) Recheck() {
	s.mu.RLock()
	all := make([]*session, 0, len(s.clients))
	for _, sess := range s.clients {
		all = append(all, sess)
	}
	s.mu.RUnlock()
	for _, sess := range all {
		if !s.cfg.Allowed(sess.key) {
			s.log.Info("relay client no longer allowed", "key", sess.keyText, "addr", sess.addr)
			sess.kickWith(errNotAllowed.Error())
		}
	}
}

// Close closes every connection, refuses new ones, and waits until every
// goroutine of the server has ended. The http.Server that serves s must
// be shut down too; Close does not touch it.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	all := make([]*session, 0, len(s.conns))
	for sess := range s.conns {
		all = append(all, sess)
	}
	s.mu.Unlock()
	for _, sess := range all {
		sess.close()
	}
	s.wg.Wait()
	return nil
}
