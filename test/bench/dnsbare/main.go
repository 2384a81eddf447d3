// Command dnsbare runs a bare miekg/dns server, from the same library and
// version wiremesh links, with no wiremesh logic at all: it is the baseline
// of the DNS benchmark.
//
// Usage:
//
//	dnsbare ADDR:PORT TTL IP...
//
// It serves UDP on ADDR:PORT and answers every query, whatever its name
// and type, with one A record per IP for the question name, with TTL
// seconds, in the shape of the agent's answer to SVC.service.DOMAIN A: the
// authoritative flag set, names compressed, an OPT record when the query
// has one, UDP answers capped at 1,232 bytes like the agent's. Given the
// agent's instance addresses it sends the agent's answer byte for byte,
// up to the order of the records. It prints "dnsbare up" once it serves
// and runs until SIGTERM or SIGINT.
package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	miekg "github.com/miekg/dns"
)

// maxUDPSize is the agent's cap on UDP answers (dns.maxUDPSize).
const maxUDPSize = 1232

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: dnsbare ADDR:PORT TTL IP...")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2], os.Args[3:]); err != nil {
		fmt.Fprintln(os.Stderr, "dnsbare:", err)
		os.Exit(1)
	}
}

func run(addr, ttlArg string, ips []string) error {
	ttl, err := strconv.ParseUint(ttlArg, 10, 32)
	if err != nil {
		return fmt.Errorf("bad TTL %q: %w", ttlArg, err)
	}
	var addrs []netip.Addr
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return fmt.Errorf("bad IPv4 address %q", s)
		}
		addrs = append(addrs, a)
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &miekg.Server{PacketConn: pc, UDPSize: maxUDPSize, Handler: handler(uint32(ttl), addrs)}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-done:
		return fmt.Errorf("serve: %w", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("dnsbare up")
	select {
	case <-sig:
	case err := <-done:
		return fmt.Errorf("serve: %w", err)
	}
	if err := srv.Shutdown(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return <-done
}

// handler answers every query with one A record per address for the
// question name. Like the agent it builds a fresh message per query.
func handler(ttl uint32, addrs []netip.Addr) miekg.HandlerFunc {
	return func(w miekg.ResponseWriter, req *miekg.Msg) {
		if req.Response || len(req.Question) == 0 {
			return
		}
		m := new(miekg.Msg)
		m.SetReply(req)
		m.Compress = true
		m.Authoritative = true
		name := req.Question[0].Name
		for _, a := range addrs {
			m.Answer = append(m.Answer, &miekg.A{
				Hdr: miekg.RR_Header{Name: name, Rrtype: miekg.TypeA, Class: miekg.ClassINET, Ttl: ttl},
				A:   a.AsSlice(),
			})
		}
		if opt := req.IsEdns0(); opt != nil {
			o := new(miekg.OPT)
			o.Hdr = miekg.RR_Header{Name: ".", Rrtype: miekg.TypeOPT}
			o.SetUDPSize(maxUDPSize)
			o.SetDo(opt.Do())
			m.Extra = append(m.Extra, o)
		}
		w.WriteMsg(m)
	}
}
