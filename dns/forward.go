package dns

import (
	"context"
	"fmt"
	"net"
	"os"

	miekg "github.com/miekg/dns"
)

// forward relays req to the upstream resolvers in order and writes the
// first answer to w: over TCP when the client asked over TCP, else over
// UDP, passing a truncated UDP answer on so the client retries over TCP.
// Without upstreams the answer is REFUSED; when all fail, SERVFAIL.
func (s *Server) forward(w miekg.ResponseWriter, req *miekg.Msg, tcp bool) {
	if len(s.cfg.Upstreams) > 0 {
		c := &miekg.Client{Net: "udp", Timeout: s.cfg.ForwardTimeout}
		if tcp {
			c.Net = "tcp"
		}
		for _, up := range s.cfg.Upstreams {
			ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ForwardTimeout)
			resp, _, err := c.ExchangeContext(ctx, req, up)
			cancel()
			if err == nil {
				resp.Id = req.Id
				if err := w.WriteMsg(resp); err != nil {
					s.log.Debug("dns reply not sent", "err", err)
				}
				s.observe(req, resp.Rcode, true)
				return
			}
			s.log.Debug("upstream resolver failed", "addr", up, "err", err)
			if s.ctx.Err() != nil {
				return // closing: no answer
			}
		}
	}
	m := new(miekg.Msg)
	m.SetRcode(req, miekg.RcodeRefused)
	if len(s.cfg.Upstreams) > 0 {
		m.SetRcode(req, miekg.RcodeServerFailure)
		m.RecursionAvailable = true
	}
	if err := w.WriteMsg(m); err != nil {
		s.log.Debug("dns reply not sent", "err", err)
	}
	s.observe(req, m.Rcode, true)
}

// ReadResolvConf returns the nameservers of the resolv.conf file at path
// as HOST:PORT strings, for Config.Upstreams. The agent must leave out
// its own listening address if the host points at it.
func ReadResolvConf(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read resolver config: %w", err)
	}
	defer f.Close()
	cc, err := miekg.ClientConfigFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("parse resolver config %s: %w", path, err)
	}
	ups := make([]string, 0, len(cc.Servers))
	for _, s := range cc.Servers {
		ups = append(ups, net.JoinHostPort(s, cc.Port))
	}
	return ups, nil
}
