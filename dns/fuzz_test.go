package dns

import (
	"testing"

	miekg "github.com/miekg/dns"
)

// FuzzServeDNS feeds any message that unpacks to ServeDNS, over UDP and
// TCP, and checks that it never panics, that every reply packs, and that
// a UDP reply fits the client's buffer. Seeds: testdata/fuzz/FuzzServeDNS.
func FuzzServeDNS(f *testing.F) {
	s := newBigServer(f, Config{MaxAnswers: -1}, 60)
	f.Fuzz(func(t *testing.T, b []byte) {
		req := new(miekg.Msg)
		if err := req.Unpack(b); err != nil {
			return
		}
		for _, proto := range []string{"udp", "tcp"} {
			w := newRecorder(proto, fromPeer)
			s.ServeDNS(w, req)
			if w.err != nil {
				t.Fatalf("%s: reply does not pack: %v\n%v", proto, w.err, req)
			}
			if w.msg == nil || proto == "tcp" || len(req.Question) == 0 {
				continue
			}
			if limit := size(req.IsEdns0(), false); len(w.wire) > limit {
				t.Fatalf("udp reply of %d bytes, client buffer %d\n%v", len(w.wire), limit, req)
			}
		}
	})
}
