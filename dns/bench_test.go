package dns

import (
	"net/netip"
	"testing"

	miekg "github.com/miekg/dns"
)

// BenchmarkServeDNS measures an A query for a service with three
// instances against a baseline handler that answers one fixed A record,
// both through the recorder (which packs and unpacks the reply).
func BenchmarkServeDNS(b *testing.B) {
	s := newBigServer(b, Config{}, 3)
	req := new(miekg.Msg)
	req.SetQuestion("big.service.mesh.internal.", miekg.TypeA)
	w := newRecorder("udp", fromPeer)
	fixed := &miekg.A{
		Hdr: miekg.RR_Header{Name: "big.service.mesh.internal.", Rrtype: miekg.TypeA, Class: miekg.ClassINET, Ttl: 5},
		A:   netip.MustParseAddr("100.64.1.0").AsSlice(),
	}
	baseline := miekg.HandlerFunc(func(w miekg.ResponseWriter, r *miekg.Msg) {
		m := new(miekg.Msg)
		m.SetReply(r)
		m.Compress = true
		m.Answer = []miekg.RR{fixed}
		w.WriteMsg(m)
	})
	for _, bb := range []struct {
		name string
		h    miekg.Handler
	}{{"baseline", baseline}, {"service", s}} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				bb.h.ServeDNS(w, req)
			}
			if w.err != nil || len(w.msg.Answer) == 0 {
				b.Fatalf("reply %v: %v", w.msg, w.err)
			}
		})
	}
}
