package relay

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// session is one taken-over connection: its node's key once attached,
// the queue of frames for it, and the writer that drains the queue. The
// reader runs on the ServeHTTP goroutine.
type session struct {
	srv     *Server
	conn    net.Conn // the taken-over connection (TLS in production)
	raw     net.Conn // the connection under TLS; closing it ends both loops at once
	addr    string   // the remote address, for logs
	fr      frameReader
	key     [keyLen]byte // set by attach, under the server's mu
	keyText string       // key in base64, for logs; set with key

	queue     chan *frameBuf
	kick      chan string   // why the writer is to send an error frame and close; capacity 1
	done      chan struct{} // closed by close
	closeOnce sync.Once

	frames  atomic.Uint64 // frames read, for the idle check
	scratch [pingLen]byte
	gone    map[[keyLen]byte]int64 // reader only: unix ns of the last peer-gone per destination
}

func newSession(s *Server, conn net.Conn, r *bufio.Reader, addr string) *session {
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	return &session{
		srv: s, conn: conn, raw: raw, addr: addr,
		fr:    frameReader{r: r},
		queue: make(chan *frameBuf, s.cfg.QueueDepth),
		kick:  make(chan string, 1),
		done:  make(chan struct{}),
		gone:  make(map[[keyLen]byte]int64),
	}
}

// close ends the session at once; it may be called more than once.
func (sess *session) close() {
	sess.closeOnce.Do(func() {
		close(sess.done)
		sess.raw.Close()
		sess.srv.forget(sess)
	})
}

// kickWith has the writer send an error frame saying why, then close.
func (sess *session) kickWith(why string) {
	select {
	case sess.kick <- why:
	default: // a reason is already on its way
	}
}

// sayGoodbye writes an error frame directly; only before the writer runs.
func (sess *session) sayGoodbye(why string) {
	fb := errorFrame(why)
	sess.conn.SetWriteDeadline(time.Now().Add(sess.srv.cfg.WriteTimeout))
	sess.conn.Write(fb.frame())
	fb.free()
}

// errorFrame returns an error frame with why, cut to maxReason bytes.
func errorFrame(why string) *frameBuf {
	if len(why) > maxReason {
		why = why[:maxReason]
	}
	fb := getBuf(frameError, len(why))
	copy(fb.payload(), why)
	return fb
}

// enqueue hands fb to the writer unless its queue is full.
func (sess *session) enqueue(fb *frameBuf) bool {
	select {
	case sess.queue <- fb:
		return true
	default:
		return false
	}
}

// readLoop reads the client's frames until the connection fails or a
// frame is malformed (a *badFrame).
func (sess *session) readLoop() error {
	for {
		if err := sess.readFrame(); err != nil {
			return err
		}
	}
}

// readFrame reads and handles one frame. A send does not allocate: its
// payload is read into a pooled buffer that becomes the recv frame.
func (sess *session) readFrame() error {
	t, n, err := sess.fr.header()
	if err != nil {
		return err
	}
	sess.frames.Add(1)
	switch t {
	case frameSend:
		fb := getBuf(frameRecv, n)
		if err := sess.fr.payload(fb.payload()); err != nil {
			fb.free()
			return err
		}
		sess.srv.forward(sess, fb)
	case framePing:
		if err := sess.fr.payload(sess.scratch[:]); err != nil {
			return err
		}
		if fb := controlFrame(framePong, sess.scratch[:]); !sess.enqueue(fb) {
			fb.free()
		}
	case framePong:
		if err := sess.fr.payload(sess.scratch[:]); err != nil {
			return err
		}
	default:
		return sess.fr.unexpected()
	}
	return nil
}

// peerGone tells the client that dst is not attached, at most once every
// peerGoneEvery per destination. Reader only.
func (sess *session) peerGone(dst [keyLen]byte) {
	now := time.Now().UnixNano()
	if last, ok := sess.gone[dst]; ok && now-last < int64(peerGoneEvery) {
		return
	}
	if len(sess.gone) >= maxGone {
		clear(sess.gone)
	}
	sess.gone[dst] = now
	if fb := controlFrame(framePeerGone, dst[:]); !sess.enqueue(fb) {
		fb.free()
	}
}

// keepAliveFrame is the whole keep-alive frame.
var keepAliveFrame = []byte{byte(frameKeepAlive), 0, 0, 0, 0}

// writeLoop writes queued frames in batches, a keep-alive every
// KeepAlive, and closes a client that was idle for two of them.
func (sess *session) writeLoop() {
	defer sess.srv.wg.Done()
	defer sess.close()
	cfg := &sess.srv.cfg
	bw := bufio.NewWriterSize(sess.conn, 16<<10)
	tick := time.NewTicker(cfg.KeepAlive)
	defer tick.Stop()
	var seen uint64
	idle := 0
	for {
		var err error
		select {
		case fb := <-sess.queue:
			err = sess.writeBatch(bw, fb)
		case <-tick.C:
			if f := sess.frames.Load(); f != seen {
				seen, idle = f, 0
			} else if idle++; idle >= 2 {
				sess.srv.log.Info("relay client closed: idle", "key", sess.keyText, "addr", sess.addr, "why", fmt.Sprintf("nothing read for %s", 2*cfg.KeepAlive))
				sess.writeGoodbye(bw, "idle")
				return
			}
			err = sess.writeFlush(bw, keepAliveFrame)
		case why := <-sess.kick:
			sess.writeGoodbye(bw, why)
			return
		case <-sess.done:
			return
		}
		if err != nil {
			sess.srv.log.Info("relay client closed: write failed", "key", sess.keyText, "addr", sess.addr, "err", err)
			return
		}
	}
}

// maxBatch bounds the frames written under one write deadline.
const maxBatch = 64

// writeBatch writes fb and what else is queued, up to maxBatch frames,
// then flushes. It counts forwarded packets.
func (sess *session) writeBatch(bw *bufio.Writer, fb *frameBuf) error {
	if err := sess.conn.SetWriteDeadline(time.Now().Add(sess.srv.cfg.WriteTimeout)); err != nil {
		fb.free()
		return err
	}
	for i := 1; ; i++ {
		_, err := bw.Write(fb.frame())
		if err == nil && frameType(fb.b[0]) == frameRecv {
			sess.srv.stats.forwarded(fb.n - keyLen)
		}
		fb.free()
		if err != nil {
			return err
		}
		if i == maxBatch {
			return bw.Flush()
		}
		select {
		case fb = <-sess.queue:
		default:
			return bw.Flush()
		}
	}
}

// writeFlush writes frame b and flushes.
func (sess *session) writeFlush(bw *bufio.Writer, b []byte) error {
	if err := sess.conn.SetWriteDeadline(time.Now().Add(sess.srv.cfg.WriteTimeout)); err != nil {
		return err
	}
	if _, err := bw.Write(b); err != nil {
		return err
	}
	return bw.Flush()
}

// writeGoodbye writes an error frame saying why, best effort.
func (sess *session) writeGoodbye(bw *bufio.Writer, why string) {
	fb := errorFrame(why)
	sess.writeFlush(bw, fb.frame())
	fb.free()
}
