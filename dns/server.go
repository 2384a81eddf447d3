// Package dns serves the mesh's names: NODE.node.DOMAIN,
// [TAG.]SVC.service[.near].DOMAIN, _SVC._TAG.service.DOMAIN (RFC 2782) and
// reverse names of overlay addresses, from an immutable catalog Snapshot
// the agent swaps in on every change; other names are forwarded to the
// host's upstream resolvers.
//
// Service answers list only instances on live nodes with passing checks
// that the querier may reach, shuffled on every query (or nearest first),
// so failover needs no client action. A message too large for the
// transport is trimmed by whole instances, an SRV record always with its
// additional addresses, and has the TC bit set: nothing is cut silently.
package dns

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	miekg "github.com/miekg/dns"
)

// Message size limits.
const (
	// maxUDPSize caps UDP answers even when a client offers a larger
	// EDNS0 buffer, to avoid IP fragmentation (DNS flag day 2020); it is
	// also the buffer size the server advertises.
	maxUDPSize = 1232
	// maxTCPSize is the largest DNS message.
	maxTCPSize = miekg.MaxMsgSize
)

// Server answers DNS queries for the mesh. It implements miekg/dns's
// Handler, so it can be mounted on any miekg/dns server; Listen and Serve
// run its own listeners until Close.
type Server struct {
	cfg  Config
	zone string // cfg.Domain + "."
	log  *slog.Logger
	cur  atomic.Pointer[published]

	// ctx bounds forwarded exchanges; Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	// randMu guards rand, which is not safe for concurrent use.
	randMu sync.Mutex
	rand   *mrand.Rand

	// mu guards listeners and closed.
	mu        sync.Mutex
	listeners []*miekg.Server
	closed    bool
	wg        sync.WaitGroup // one per serving goroutine
}

// published is a snapshot with the SOA serial it is served under.
type published struct {
	snap   *Snapshot
	serial uint32
}

// New returns a Server for cfg, which it validates. Until the first
// SetSnapshot, names in the mesh's zones get SERVFAIL (which resolvers
// do not cache) rather than NXDOMAIN; forwarding works at once.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dns config: %w", err)
	}
	src := cfg.Rand
	if src == nil {
		var seed [16]byte
		rand.Read(seed[:])
		src = mrand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:    cfg,
		zone:   cfg.Domain + ".",
		log:    log,
		ctx:    ctx,
		cancel: cancel,
		rand:   mrand.New(src),
	}, nil
}

// SetSnapshot makes snap the catalog that later queries are answered
// from; queries in flight finish with the one they started with. Each
// call advances the SOA serial.
func (s *Server) SetSnapshot(snap *Snapshot) {
	for {
		old := s.cur.Load()
		p := &published{snap: snap, serial: 1}
		if old != nil {
			p.serial = old.serial + 1
		}
		if s.cur.CompareAndSwap(old, p) {
			return
		}
	}
}

// Listen binds UDP and TCP on addr (HOST:PORT; port 0 picks a free UDP
// port and uses the same for TCP) and serves until Close. It returns the
// bound address.
func (s *Server) Listen(addr string) (netip.AddrPort, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("dns listen: %w", err)
	}
	bound := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	l, err := net.Listen("tcp", bound.String())
	if err != nil {
		pc.Close()
		return netip.AddrPort{}, fmt.Errorf("dns listen: %w", err)
	}
	if err := s.Serve(pc, l); err != nil {
		return netip.AddrPort{}, err
	}
	return bound, nil
}

// Serve answers queries arriving on pc (UDP) and l (TCP), either of which
// may be nil, in goroutines that run until Close; it takes ownership of
// both and returns once they are serving.
func (s *Server) Serve(pc net.PacketConn, l net.Listener) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		closeAll(pc, l)
		return errors.New("dns server closed")
	}
	var errs []error
	if pc != nil {
		errs = append(errs, s.startLocked(&miekg.Server{PacketConn: pc, UDPSize: maxUDPSize}))
	}
	if l != nil {
		errs = append(errs, s.startLocked(&miekg.Server{Listener: l}))
	}
	return errors.Join(errs...)
}

func closeAll(pc net.PacketConn, l net.Listener) {
	if pc != nil {
		pc.Close()
	}
	if l != nil {
		l.Close()
	}
}

// startLocked runs srv in a goroutine and waits until it serves.
// s.mu must be held.
func (s *Server) startLocked(srv *miekg.Server) error {
	srv.Handler = s
	started := make(chan struct{})
	done := make(chan error, 1)
	srv.NotifyStartedFunc = func() { close(started) }
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		done <- srv.ActivateAndServe()
	}()
	select {
	case <-started:
		s.listeners = append(s.listeners, srv)
		return nil
	case err := <-done:
		return fmt.Errorf("dns serve: %w", err)
	}
}

// Close stops the listeners, cancels forwarded queries and waits for
// every goroutine the server started.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	ls := s.listeners
	s.listeners = nil
	s.mu.Unlock()
	s.cancel()
	var errs []error
	for _, srv := range ls {
		if err := srv.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("dns shutdown: %w", err))
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// ServeDNS answers req: from the snapshot for names in the mesh's zones,
// by forwarding otherwise. Malformed queries get FORMERR; responses are
// dropped.
func (s *Server) ServeDNS(w miekg.ResponseWriter, req *miekg.Msg) {
	querier, tcp := remote(w)
	m, forward := s.answer(req, querier, tcp)
	switch {
	case forward:
		s.forward(w, req, tcp)
	case m != nil:
		if err := w.WriteMsg(m); err != nil {
			s.log.Debug("dns reply not sent", "addr", querier, "err", err)
		}
		s.observe(req, m.Rcode, false)
	}
}

// observe hands an answered query to Config.Observe, if set.
func (s *Server) observe(req *miekg.Msg, rcode int, forwarded bool) {
	if s.cfg.Observe == nil {
		return
	}
	var qtype uint16
	if len(req.Question) > 0 {
		qtype = req.Question[0].Qtype
	}
	s.cfg.Observe(qtype, rcode, forwarded)
}

// remote returns the querier's address and whether it asked over TCP.
func remote(w miekg.ResponseWriter) (netip.Addr, bool) {
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap(), false
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
