package standalone

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/statedir"
	"github.com/wiremesh/wiremesh/relay"
	"github.com/wiremesh/wiremesh/relay/stun"
	"github.com/wiremesh/wiremesh/wire"
)

// Relay is a standalone relay. New prepares it; Run serves.
type Relay struct {
	cfg    Config
	log    *slog.Logger
	key    *credential.ProofKey // node key and relay proof key
	pub    string               // its public half, base64
	server *relay.Server
	reg    *prometheus.Registry
	// clients are the keys that may attach: the last netmap's.
	clients atomic.Pointer[map[[32]byte]bool]

	mu        sync.Mutex
	id        *Identity // guarded by mu; nil until enrolled
	version   uint64    // of the last netmap taken; guarded by mu
	lastProof int64     // unix seconds of the last netmap proof; guarded by mu
}

// New opens the state dir (making the key on the first start) and loads
// the identity and the cached netmap, from which the relay serves at once.
func New(cfg Config) (*Relay, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Certificate.Certificate) == 0 || len(cfg.Pins) == 0 {
		return nil, errors.New("relay: no TLS certificate or pin")
	}
	if err := statedir.Make(cfg.StateDir); err != nil {
		return nil, err
	}
	key, made, err := loadKey(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	r := &Relay{cfg: cfg, log: cfg.Logger, key: key, pub: key.PublicKey(), reg: prometheus.NewRegistry()}
	if made {
		r.log.Info("relay key made", "file", keyFile, "key", r.pub)
	}
	var id Identity
	if ok, err := readJSON(cfg.StateDir, identityFile, &id); err != nil {
		return nil, err
	} else if ok {
		r.id = &id
	} else if cfg.JoinKey == "" {
		return nil, fmt.Errorf("relay: %s holds no identity: enroll with --join or --join-file (a key made with keys create --relay)", cfg.StateDir)
	}
	var nm wire.Netmap
	if ok, err := readJSON(cfg.StateDir, netmapFile, &nm); err != nil {
		r.log.Warn("cached netmap unreadable; no node may attach until the coordinator sends one", "err", err)
	} else if ok {
		r.setClients(&nm)
		r.log.Info("serving from the cached netmap", "version", nm.Version, "clients", len(nm.RelayClients))
	}
	sc := relay.DefaultServerConfig()
	sc.Key, sc.Allowed, sc.Logger = key, r.allowed, r.log.With("sub", "relay")
	if r.server, err = relay.NewServer(sc); err != nil {
		return nil, err
	}
	r.reg.MustRegister(r.server.Collector())
	return r, nil
}

// PublicKey returns the relay's key (node key and proof key), base64.
func (r *Relay) PublicKey() string { return r.pub }

// allowed says whether node key k is in the last netmap.
func (r *Relay) allowed(k [32]byte) bool {
	m := r.clients.Load()
	return m != nil && (*m)[k]
}

// setClients makes nm's relay clients the keys that may attach. The
// caller holds mu (or is New).
func (r *Relay) setClients(nm *wire.Netmap) {
	m := make(map[[32]byte]bool, len(nm.RelayClients))
	for _, s := range nm.RelayClients {
		if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == 32 {
			m[[32]byte(b)] = true
		}
	}
	r.clients.Store(&m)
	r.version = nm.Version
}

// listeners are the sockets Run serves on.
type listeners struct {
	tls     net.Listener
	stun    []net.PacketConn
	metrics net.Listener
}

func (ls *listeners) close() {
	if ls.tls != nil {
		ls.tls.Close()
	}
	if ls.metrics != nil {
		ls.metrics.Close()
	}
	for _, pc := range ls.stun {
		pc.Close()
	}
}

// listen binds every socket of cfg, or none.
func listen(cfg *Config) (ls listeners, err error) {
	defer func() {
		if err != nil {
			ls.close()
		}
	}()
	if ls.tls, err = net.Listen("tcp", cfg.Listen); err != nil {
		return ls, fmt.Errorf("relay: listen: %w", err)
	}
	if cfg.STUNListen != "" {
		host, _, _ := net.SplitHostPort(cfg.STUNListen)
		p, _ := stunPort(cfg.STUNListen)
		for _, q := range []int{p, p + 1} {
			pc, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(q)))
			if err != nil {
				return ls, fmt.Errorf("relay: STUN: %w (choose other ports with --stun-listen, or \"\" for none)", err)
			}
			ls.stun = append(ls.stun, pc)
		}
	}
	if cfg.MetricsListen != "" {
		if ls.metrics, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return ls, fmt.Errorf("relay: metrics: %w", err)
		}
	}
	return ls, nil
}

// Run enrolls the relay if it has no identity yet, then serves and
// follows its netmap until ctx is done. It returns an error if a socket
// cannot be bound or enrollment fails.
func (r *Relay) Run(ctx context.Context) error {
	ls, err := listen(&r.cfg)
	if err != nil {
		return err
	}
	defer ls.close()
	if r.id == nil {
		if err := r.enroll(ctx); err != nil {
			return err
		}
	}
	api, err := client.New(client.Config{URL: r.id.Coordinator, PinsFunc: r.pins})
	if err != nil {
		return err
	}
	defer api.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mux := http.NewServeMux()
	mux.Handle("GET "+wire.PathRelay, r.server)
	mux.HandleFunc("GET "+wire.PathHealth, func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// HTTP/1.1 only: the relay protocol takes the connection over.
		TLSConfig:    &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{r.cfg.Certificate}, NextProtos: []string{"http/1.1"}},
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		errc <- srv.ServeTLS(ls.tls, "", "")
	}()
	for _, pc := range ls.stun {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := stun.Serve(ctx, pc, r.log.With("sub", "stun")); err != nil {
				r.log.Error("STUN server stopped", "addr", pc.LocalAddr().String(), "err", err)
			}
		}()
	}
	var ms *http.Server
	if ls.metrics != nil {
		mmux := http.NewServeMux()
		mmux.Handle("GET /metrics", promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
		ms = &http.Server{Handler: mmux, ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ms.Serve(ls.metrics)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.follow(ctx, api)
	}()
	r.log.Info("relay listening", "addr", ls.tls.Addr().String(), "url", r.cfg.AdvertiseURL, "pin", r.cfg.Pins.String(), "node", r.cfg.Name)

	var serveErr error
	select {
	case serveErr = <-errc:
		serveErr = fmt.Errorf("relay: serve: %w", serveErr)
	case <-ctx.Done():
	}
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	srv.Shutdown(sctx)
	if ms != nil {
		ms.Shutdown(sctx)
	}
	r.server.Close() // its connections were taken over: Shutdown left them
	for _, pc := range ls.stun {
		pc.Close()
	}
	if serveErr == nil {
		<-errc
	}
	r.log.Info("relay stopped")
	return serveErr
}

// pins returns the coordinator's current pins.
func (r *Relay) pins() credential.Pins {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.id.Pins
}

// errRefused marks an answer of the coordinator that retrying cannot
// change.
var errRefused = errors.New("refused by the coordinator")
