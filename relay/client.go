package relay

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Defaults of ClientConfig.
const (
	// DefaultPingInterval makes a relay that vanished (no reset, no
	// close: a dead host, a dropped route) given up 3 to 4.5 s after the
	// last frame from it, so its peers' traffic moves to another relay
	// within 5 s; a ping is 13 bytes, so 10,000 clients cost a relay
	// under 7,000 small frames a second.
	DefaultPingInterval     = 1500 * time.Millisecond
	DefaultClientQueueDepth = 256
)

// Timings of the client's connections.
const (
	minBackoff   = 100 * time.Millisecond
	maxBackoff   = 5 * time.Second
	setupTimeout = 10 * time.Second // dial, TLS, upgrade and proof
	writeTimeout = 10 * time.Second // one batch of frames
)

// Errors of Send, and of an attach the relay refused.
var (
	ErrNotConnected = errors.New("relay: not connected")
	ErrQueueFull    = errors.New("relay: send queue full")
	ErrTooBig       = fmt.Errorf("relay: packet over %d bytes", MaxPacketSize)
	// ErrRefused wraps the reason a relay gave for refusing the node:
	// no valid proof, or a key it does not allow.
	ErrRefused = errors.New("relay refused the node")
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// URL is the relay's https://HOST[:PORT] (the coordinator's, for the
	// relay it embeds); the client asks for wire.PathRelay under its
	// path. Required.
	URL string
	// Pins are the relay's certificate pins, checked as the
	// coordinator's are (credential.ClientTLS). Required.
	Pins credential.Pins
	// RelayKey is the relay's proof public key in base64, which the node
	// proves its key to. Required.
	RelayKey string
	// NodeKey is the node's WireGuard private key; SetNodeKey changes it.
	// Required.
	NodeKey [32]byte
	// Logger gets connection failures and closes. Nil: discarded.
	Logger *slog.Logger
	// OnPacket is called with each packet the relay delivers and the key
	// of the node that sent it, on the client's read goroutine; pkt is
	// valid only during the call. Required.
	OnPacket func(src [32]byte, pkt []byte)
	// OnState is called on Run's goroutine when the client attaches
	// (true) and when it loses the connection (false). Nil: not called.
	OnState func(connected bool)
	// OnPeerGone is called on the read goroutine when the relay says a
	// destination the node sent to is not attached (at most once a
	// second per destination). Nil: not called.
	OnPeerGone func(dst [32]byte)
	// PingInterval is how often the client pings the relay (RTT); a
	// relay from which nothing came for two to three of them is taken
	// for dead. Zero: DefaultPingInterval.
	PingInterval time.Duration
	// QueueDepth is how many frames Send may queue for the writer.
	// Zero: DefaultClientQueueDepth.
	QueueDepth int
}

// Validate reports the first problem with c and fills in the defaults of
// its zero fields. It never mentions key material.
func (c *ClientConfig) Validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		return errors.New("relay client config: no URL")
	case err != nil:
		return fmt.Errorf("relay client config: bad URL: %w", err)
	case u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("relay client config: bad URL %q: want https://HOST[:PORT]", c.URL)
	case len(c.Pins) == 0:
		return fmt.Errorf("relay client config: no certificate pin for %s", c.URL)
	case c.NodeKey == [32]byte{}:
		return errors.New("relay client config: no node key")
	case c.OnPacket == nil:
		return errors.New("relay client config: no OnPacket function")
	case c.PingInterval < 0 || c.QueueDepth < 0:
		return errors.New("relay client config: negative ping interval or queue depth")
	}
	if err := credential.CheckPublicKey(c.RelayKey); err != nil {
		return fmt.Errorf("relay client config: bad relay key %q: %w", c.RelayKey, err)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.QueueDepth == 0 {
		c.QueueDepth = DefaultClientQueueDepth
	}
	return nil
}

// Client keeps a node attached to one relay: it reconnects when the
// connection fails, sends packets addressed by node key, and hands those
// it receives to OnPacket. Its methods may be called concurrently.
type Client struct {
	cfg      ClientConfig
	addr     string // HOST:PORT to dial
	host     string // for the Host header
	path     string // the request path
	tls      *tls.Config
	relayPub [keyLen]byte
	log      *slog.Logger
	epoch    time.Time // ping payloads are nanoseconds since epoch
	rbuf     []byte    // the read buffer; Run's goroutine only

	cur   atomic.Pointer[clientConn] // the attached connection; nil when none
	rtt   atomic.Int64               // the last RTT measured, ns
	rekey chan struct{}              // SetNodeKey's signal to Run to retry at once

	// mu guards the fields below it.
	mu       sync.Mutex
	nodeKey  [32]byte
	attached *clientConn // as cur, for SetNodeKey
	lastErr  error
	logged   string // the last failure logged at warning level
}

// NewClient returns a client for cfg; Run connects it.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL) // checked by Validate
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "443")
	}
	pub, _ := base64.StdEncoding.DecodeString(cfg.RelayKey) // checked by Validate
	tc := credential.ClientTLS(cfg.Pins)
	tc.ServerName = u.Hostname()
	tc.NextProtos = []string{"http/1.1"} // an HTTP/2 connection cannot be upgraded
	return &Client{
		cfg:      cfg,
		addr:     addr,
		host:     u.Host,
		path:     strings.TrimRight(u.Path, "/") + wire.PathRelay,
		tls:      tc,
		relayPub: [keyLen]byte(pub),
		log:      cfg.Logger.With("url", cfg.URL),
		epoch:    time.Now(),
		rbuf:     make([]byte, maxPayload),
		rekey:    make(chan struct{}, 1),
		nodeKey:  cfg.NodeKey,
	}, nil
}

// Connected reports whether the client is attached to the relay.
func (c *Client) Connected() bool { return c.cur.Load() != nil }

// RTT returns the last round-trip time to the relay measured by a ping;
// zero before the first answer.
func (c *Client) RTT() time.Duration { return time.Duration(c.rtt.Load()) }

// Err returns the error that ended the last connection or attempt; nil
// while attached and before the first attempt. A relay whose certificate
// matches no pin gives an error wrapping credential.ErrPinMismatch; a
// relay that refused the node, ErrRefused.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// SetNodeKey makes the client attach with a new node private key (after
// a key rotation): it closes the current connection and reconnects at
// once.
func (c *Client) SetNodeKey(k [32]byte) {
	c.mu.Lock()
	if k == c.nodeKey {
		c.mu.Unlock()
		return
	}
	c.nodeKey = k
	cc := c.attached
	c.mu.Unlock()
	if cc != nil {
		cc.closeWith(errors.New("node key changed"))
	}
	select {
	case c.rekey <- struct{}{}:
	default:
	}
}

// Send queues pkt for the node with public key dst. It never blocks: it
// fails with ErrNotConnected when the client is not attached,
// ErrQueueFull when the writer is behind, ErrTooBig over MaxPacketSize.
// Delivery is not confirmed; a destination that is not attached comes
// back through OnPeerGone. pkt may be reused when Send returns.
func (c *Client) Send(dst [32]byte, pkt []byte) error {
	if len(pkt) > MaxPacketSize {
		return ErrTooBig
	}
	cc := c.cur.Load()
	if cc == nil {
		return ErrNotConnected
	}
	fb := getBuf(frameSend, keyLen+len(pkt))
	p := fb.payload()
	copy(p, dst[:])
	copy(p[keyLen:], pkt)
	if !cc.enqueue(fb) {
		fb.free()
		return ErrQueueFull
	}
	return nil
}

// Run keeps the client attached until ctx is done, reconnecting after
// a failure with a jittered backoff from 100 ms doubling to 5 s (100 ms
// after a connection that had attached). It returns ctx's error. Only one
// Run may run at a time.
func (c *Client) Run(ctx context.Context) error {
	backoff := minBackoff
	for {
		cc, err := c.connect(ctx)
		wait := backoff
		if err == nil {
			backoff, wait = minBackoff, minBackoff
			err = c.serve(ctx, cc)
		} else {
			backoff = min(2*backoff, maxBackoff)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait = wait/2 + rand.N(wait/2+1)
		c.failed(err, wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-c.rekey:
			t.Stop()
		case <-t.C:
		}
	}
}

// failed records why a connection ended or failed, and logs it: at
// warning level when it differs from the last one so logged.
func (c *Client) failed(err error, retry time.Duration) {
	c.mu.Lock()
	c.lastErr = err
	repeat := err.Error() == c.logged
	c.logged = err.Error()
	c.mu.Unlock()
	level := slog.LevelWarn
	if repeat {
		level = slog.LevelDebug
	}
	c.log.Log(context.Background(), level, "relay connection failed", "err", err, "retry_in", retry.Round(time.Millisecond))
}

// connect dials the relay, checks its certificate against the pins,
// upgrades, and proves the node key. It returns an attached connection.
func (c *Client) connect(ctx context.Context) (*clientConn, error) {
	c.mu.Lock()
	key := c.nodeKey
	c.mu.Unlock()
	d := net.Dialer{Timeout: setupTimeout, KeepAlive: 15 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("relay %s: %w", c.cfg.URL, err)
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	raw.SetDeadline(time.Now().Add(setupTimeout))
	tc := tls.Client(raw, c.tls)
	cc := &clientConn{
		c: c, conn: tc, raw: raw, key: key,
		fr:    frameReader{r: bufio.NewReaderSize(tc, 32<<10)},
		queue: make(chan *frameBuf, c.cfg.QueueDepth),
		done:  make(chan struct{}),
	}
	if err := cc.setup(); err != nil {
		raw.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("relay %s: %w", c.cfg.URL, err)
	}
	raw.SetDeadline(time.Time{})
	return cc, nil
}

// serve runs an attached connection until it ends, and returns why.
func (c *Client) serve(ctx context.Context, cc *clientConn) error {
	stop := context.AfterFunc(ctx, func() { cc.closeWith(ctx.Err()) })
	defer stop()
	c.mu.Lock()
	if c.nodeKey != cc.key { // SetNodeKey ran during the setup
		c.mu.Unlock()
		cc.closeWith(nil)
		return errors.New("node key changed")
	}
	c.attached, c.lastErr = cc, nil
	c.mu.Unlock()
	c.cur.Store(cc)
	pub := wgtypes.Key(cc.key).PublicKey()
	c.log.Info("relay attached", "key", pub.String())
	if c.cfg.OnState != nil {
		c.cfg.OnState(true)
	}
	var wg sync.WaitGroup
	wg.Go(cc.writeLoop)
	err := cc.readLoop()
	c.cur.Store(nil)
	cc.closeWith(fmt.Errorf("relay %s: %w", c.cfg.URL, err))
	wg.Wait()
	c.mu.Lock()
	c.attached = nil
	c.lastErr = cc.why // before OnState: who hears of the loss can ask why
	c.mu.Unlock()
	if c.cfg.OnState != nil {
		c.cfg.OnState(false)
	}
	return cc.why
}

// clientConn is one connection to the relay. Run's goroutine reads; a
// writer goroutine of its own writes.
type clientConn struct {
	c     *Client
	conn  *tls.Conn
	raw   net.Conn // under TLS; closing it ends both loops at once
	fr    frameReader
	key   [32]byte // the node private key it attached with
	queue chan *frameBuf

	done      chan struct{} // closed by closeWith
	closeOnce sync.Once
	why       error // the first reason given to closeWith; read after closeWith returns

	frames  atomic.Uint64 // frames read, for the liveness check
	scratch [2 * keyLen]byte
}

// setup upgrades the connection and proves the node key.
func (cc *clientConn) setup() error {
	c := cc.c
	if _, err := fmt.Fprintf(cc.conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", c.path, c.host, upgradeToken); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	resp, err := http.ReadResponse(cc.fr.r, nil)
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), upgradeToken) {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return fmt.Errorf("upgrade: answer %s (%q), want 101 to %s", resp.Status, strings.TrimSpace(string(body)), upgradeToken)
	}
	t, _, err := cc.fr.header()
	if err != nil {
		return fmt.Errorf("read challenge: %w", err)
	}
	if t != frameChallenge {
		return fmt.Errorf("read challenge: %w", cc.fr.unexpected())
	}
	ch := cc.scratch[:]
	if err := cc.fr.payload(ch); err != nil {
		return fmt.Errorf("read challenge: %w", err)
	}
	if [keyLen]byte(ch[:keyLen]) != c.relayPub {
		return fmt.Errorf("relay has proof key %s, want %s", base64.StdEncoding.EncodeToString(ch[:keyLen]), c.cfg.RelayKey)
	}
	mac, err := credential.RelayProof(cc.key, c.cfg.RelayKey, ch[keyLen:])
	if err != nil {
		return err
	}
	pub := wgtypes.Key(cc.key).PublicKey()
	ans := make([]byte, headerLen+2*keyLen)
	putHeader(ans, frameAuth, 2*keyLen)
	copy(ans[headerLen:], pub[:])
	copy(ans[headerLen+keyLen:], mac)
	if _, err := cc.conn.Write(ans); err != nil {
		return fmt.Errorf("write proof: %w", err)
	}
	t, n, err := cc.fr.header()
	if err != nil {
		return fmt.Errorf("read verdict: %w", err)
	}
	reason := c.rbuf[:n]
	if err := cc.fr.payload(reason); err != nil {
		return fmt.Errorf("read verdict: %w", err)
	}
	switch t {
	case frameOK:
		return nil
	case frameError:
		return fmt.Errorf("%w: %s", ErrRefused, reason)
	}
	return fmt.Errorf("read verdict: %w", cc.fr.unexpected())
}

// closeWith ends the connection; the first call's reason is kept.
func (cc *clientConn) closeWith(why error) {
	cc.closeOnce.Do(func() {
		cc.why = why
		close(cc.done)
		cc.raw.Close()
	})
}

func (cc *clientConn) enqueue(fb *frameBuf) bool {
	select {
	case cc.queue <- fb:
		return true
	default:
		return false
	}
}

// readLoop reads frames until the connection fails.
func (cc *clientConn) readLoop() error {
	for {
		if err := cc.readFrame(); err != nil {
			return err
		}
	}
}

// readFrame reads and handles one frame. It does not allocate.
func (cc *clientConn) readFrame() error {
	c := cc.c
	t, n, err := cc.fr.header()
	if err != nil {
		return err
	}
	p := c.rbuf[:n]
	if err := cc.fr.payload(p); err != nil {
		return err
	}
	cc.frames.Add(1)
	switch t {
	case frameRecv:
		c.cfg.OnPacket([keyLen]byte(p[:keyLen]), p[keyLen:])
	case framePing:
		if fb := controlFrame(framePong, p); !cc.enqueue(fb) {
			fb.free()
		}
	case framePong:
		sent, now := binary.BigEndian.Uint64(p), uint64(time.Since(c.epoch))
		if sent <= now {
			c.rtt.Store(int64(now - sent))
		}
	case framePeerGone:
		if c.cfg.OnPeerGone != nil {
			c.cfg.OnPeerGone([keyLen]byte(p))
		}
	case frameKeepAlive:
	case frameError:
		return fmt.Errorf("the relay closed the connection: %q", p)
	default:
		return cc.fr.unexpected()
	}
	return nil
}

// writeLoop writes queued frames in batches and pings the relay every
// PingInterval; it closes the connection when nothing came from the
// relay for two intervals in a row.
func (cc *clientConn) writeLoop() {
	interval := cc.c.cfg.PingInterval
	bw := bufio.NewWriterSize(cc.conn, 16<<10)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	err := cc.ping(bw)
	var seen uint64
	idle := 0
	for err == nil {
		select {
		case fb := <-cc.queue:
			err = cc.writeBatch(bw, fb)
		case <-tick.C:
			if f := cc.frames.Load(); f != seen {
				seen, idle = f, 0
			} else {
				idle++
			}
			if idle >= 2 {
				err = fmt.Errorf("nothing from the relay for %s", 2*interval)
			} else {
				err = cc.ping(bw)
			}
		case <-cc.done:
			return
		}
	}
	cc.closeWith(fmt.Errorf("relay %s: %w", cc.c.cfg.URL, err))
}

// ping writes a ping carrying the time since the client's epoch.
func (cc *clientConn) ping(bw *bufio.Writer) error {
	var f [headerLen + pingLen]byte
	putHeader(f[:], framePing, pingLen)
	binary.BigEndian.PutUint64(f[headerLen:], uint64(time.Since(cc.c.epoch)))
	cc.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := bw.Write(f[:]); err != nil {
		return err
	}
	return bw.Flush()
}

// writeBatch writes fb and what else is queued, up to maxBatch frames,
// then flushes.
func (cc *clientConn) writeBatch(bw *bufio.Writer, fb *frameBuf) error {
	if err := cc.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		fb.free()
		return err
	}
	for i := 1; ; i++ {
		_, err := bw.Write(fb.frame())
		fb.free()
		if err != nil {
			return err
		}
		if i == maxBatch {
			return bw.Flush()
		}
		select {
		case fb = <-cc.queue:
		default:
			return bw.Flush()
		}
	}
}
