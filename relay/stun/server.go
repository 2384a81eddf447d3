package stun

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// maxRequest is the largest datagram Serve reads; requests are 20 bytes
// plus optional attributes, so anything longer is not one.
const maxRequest = 1500

// Serve answers every Binding request that arrives on pc with the source
// address it came from, until ctx is done (then it returns nil) or pc fails
// (then it returns the read error). Everything that is not a Binding
// request is ignored. Serve does not close pc.
func Serve(ctx context.Context, pc net.PacketConn, log *slog.Logger) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := make(chan struct{})
	defer close(stop)
	wg.Go(func() {
		select {
		case <-ctx.Done():
			_ = pc.SetReadDeadline(time.Now()) // unblocks ReadFrom
		case <-stop:
		}
	})
	buf := make([]byte, maxRequest)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		src, ok := addrPort(from)
		if !ok {
			continue
		}
		txid, err := ParseRequest(buf[:n])
		if err != nil {
			continue
		}
		if _, err := pc.WriteTo(Response(txid, src), from); err != nil {
			log.Debug("stun: answer not sent", "addr", src, "err", err)
		}
	}
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
