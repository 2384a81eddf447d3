package dns

import (
	"cmp"
	"net/netip"
	"slices"

	miekg "github.com/miekg/dns"
)

// reply is a response being built: the message, the OPT record to add
// last, and the boundaries of whole units (an instance's records) that
// trimming may cut at.
type reply struct {
	m     *miekg.Msg
	opt   *miekg.OPT
	cuts  []cut
	ttl   uint32 // of answer records
	extra uint32 // TTL of additional records
}

// cut is the number of answer and additional records up to the end of one
// unit.
type cut struct{ answer, extra int }

// answer builds the response to req from the current snapshot. It returns
// forward when req is for a name outside the mesh's zones, and a nil
// message when req is to be dropped.
func (s *Server) answer(req *miekg.Msg, querier netip.Addr, tcp bool) (m *miekg.Msg, forward bool) {
	if req.Response {
		return nil, false
	}
	m = new(miekg.Msg)
	m.SetReply(req)
	m.Compress = true
	r := &reply{m: m}
	opt := req.IsEdns0()
	if opt != nil {
		r.opt = new(miekg.OPT)
		r.opt.Hdr = miekg.RR_Header{Name: ".", Rrtype: miekg.TypeOPT}
		r.opt.SetUDPSize(maxUDPSize)
		r.opt.SetDo(opt.Do())
	}
	switch {
	case s.cfg.AllowQuerier != nil && !s.cfg.AllowQuerier(querier):
		m.Rcode = miekg.RcodeRefused
		return r.finish(maxTCPSize), false
	case req.Opcode != miekg.OpcodeQuery:
		m.Rcode = miekg.RcodeNotImplemented
		return r.finish(maxTCPSize), false
	case len(req.Question) == 0:
		m.Rcode = miekg.RcodeFormatError
		return r.finish(maxTCPSize), false
	case opt != nil && opt.Version() != 0:
		m.Rcode = miekg.RcodeBadVers
		return r.finish(maxTCPSize), false
	}
	q := req.Question[0]
	pq := parseName(q.Name, s.cfg.Domain, s.cfg.Prefixes)
	if pq.kind == kindForward {
		return nil, true
	}
	if q.Qclass != miekg.ClassINET && q.Qclass != miekg.ClassANY {
		m.Rcode = miekg.RcodeRefused
		return r.finish(maxTCPSize), false
	}
	cur := s.cur.Load()
	if cur == nil {
		m.Rcode = miekg.RcodeServerFailure
		return r.finish(maxTCPSize), false
	}
	m.Authoritative = true
	m.RecursionAvailable = len(s.cfg.Upstreams) > 0
	if !s.fill(r, cur, pq, q, querier) {
		return nil, true // a reverse name no node has, outside the overlay prefixes
	}
	if len(m.Answer) == 0 {
		m.Ns = []miekg.RR{s.soa(pq.zone, cur.serial)}
	}
	return r.finish(size(opt, tcp)), false
}

// size is the largest response the client can take.
func size(opt *miekg.OPT, tcp bool) int {
	switch {
	case tcp:
		return maxTCPSize
	case opt == nil:
		return miekg.MinMsgSize
	}
	return int(min(max(opt.UDPSize(), miekg.MinMsgSize), maxUDPSize))
}

// fill adds the records answering q to r. It returns false when the name
// is not ours after all, to be forwarded.
func (s *Server) fill(r *reply, cur *published, pq query, q miekg.Question, querier netip.Addr) bool {
	snap := cur.snap
	switch pq.kind {
	case kindMissing:
		r.m.Rcode = miekg.RcodeNameError
	case kindEmpty:
		if q.Qtype == miekg.TypeSOA && miekg.CanonicalName(q.Name) == pq.zone {
			r.m.Answer = append(r.m.Answer, s.soa(pq.zone, cur.serial))
		}
	case kindNode:
		n := snap.lookupNode(querier, pq.name)
		if n == nil {
			r.m.Rcode = miekg.RcodeNameError
			return true
		}
		r.ttl = ttl(s.cfg.NodeTTL)
		r.addAddrs(q.Name, q.Qtype, n)
	case kindPTR:
		n := snap.lookupAddr(querier, pq.addr)
		switch {
		case n == nil && pq.zone == "":
			return false
		case n == nil:
			r.m.Rcode = miekg.RcodeNameError
		case q.Qtype == miekg.TypePTR || q.Qtype == miekg.TypeANY:
			r.m.Answer = append(r.m.Answer, &miekg.PTR{
				Hdr: miekg.RR_Header{Name: q.Name, Rrtype: miekg.TypePTR, Class: miekg.ClassINET, Ttl: ttl(s.cfg.NodeTTL)},
				Ptr: s.nodeName(n),
			})
		}
	case kindService:
		insts, known := snap.healthy(nil, querier, pq.name, pq.tag, s.cfg.OnlyPassing)
		if !known {
			r.m.Rcode = miekg.RcodeNameError
			return true
		}
		s.order(insts, pq.near || s.cfg.NearByDefault)
		r.ttl, r.extra = ttl(s.cfg.ServiceTTL), ttl(s.cfg.NodeTTL)
		if q.Qtype == miekg.TypeSRV {
			s.addSRV(r, q.Name, insts)
		} else {
			s.addServiceAddrs(r, q.Name, q.Qtype, insts)
		}
	}
	return true
}

// order shuffles insts, sorts them nearest first when near (unknown RTT
// last, ties kept shuffled).
func (s *Server) order(insts []instance, near bool) {
	s.randMu.Lock()
	s.rand.Shuffle(len(insts), func(i, j int) { insts[i], insts[j] = insts[j], insts[i] })
	s.randMu.Unlock()
	if near {
		slices.SortStableFunc(insts, func(a, b instance) int {
			ra, rb := a.node.rtt, b.node.rtt
			if (ra == 0) != (rb == 0) {
				return cmp.Compare(rb, ra) // 0 (unknown) after any estimate
			}
			return cmp.Compare(ra, rb)
		})
	}
}

// capped returns at most MaxAnswers of insts.
func (s *Server) capped(insts []instance) []instance {
	if s.cfg.MaxAnswers > 0 && len(insts) > s.cfg.MaxAnswers {
		return insts[:s.cfg.MaxAnswers]
	}
	return insts
}

// addServiceAddrs adds the address records of insts, one unit per node.
func (s *Server) addServiceAddrs(r *reply, name string, qtype uint16, insts []instance) {
	var nodes []*node
	for _, in := range insts {
		if !slices.Contains(nodes, in.node) {
			nodes = append(nodes, in.node)
		}
	}
	if s.cfg.MaxAnswers > 0 && len(nodes) > s.cfg.MaxAnswers {
		nodes = nodes[:s.cfg.MaxAnswers]
	}
	for _, n := range nodes {
		r.addAddrs(name, qtype, n)
		r.cuts = append(r.cuts, cut{len(r.m.Answer), len(r.m.Extra)})
	}
}

// addSRV adds an SRV record per instance, each unit with the addresses of
// its target node as additional records unless an earlier unit has them.
func (s *Server) addSRV(r *reply, name string, insts []instance) {
	var nodes []*node
	for _, in := range s.capped(insts) {
		target := s.nodeName(in.node)
		r.m.Answer = append(r.m.Answer, &miekg.SRV{
			Hdr:      miekg.RR_Header{Name: name, Rrtype: miekg.TypeSRV, Class: miekg.ClassINET, Ttl: r.ttl},
			Priority: 1, Weight: 1, Port: in.port, Target: target,
		})
		if !slices.Contains(nodes, in.node) {
			nodes = append(nodes, in.node)
			r.m.Extra = appendAddrs(r.m.Extra, target, miekg.TypeANY, r.extra, in.node)
		}
		r.cuts = append(r.cuts, cut{len(r.m.Answer), len(r.m.Extra)})
	}
}

// addAddrs adds n's addresses of type qtype (A, AAAA, or both for ANY) as
// answers named name.
func (r *reply) addAddrs(name string, qtype uint16, n *node) {
	r.m.Answer = appendAddrs(r.m.Answer, name, qtype, r.ttl, n)
}

func appendAddrs(rrs []miekg.RR, name string, qtype uint16, ttl uint32, n *node) []miekg.RR {
	if qtype == miekg.TypeA || qtype == miekg.TypeANY {
		for _, a := range n.v4 {
			rrs = append(rrs, &miekg.A{
				Hdr: miekg.RR_Header{Name: name, Rrtype: miekg.TypeA, Class: miekg.ClassINET, Ttl: ttl},
				A:   a.AsSlice(),
			})
		}
	}
	if qtype == miekg.TypeAAAA || qtype == miekg.TypeANY {
		for _, a := range n.v6 {
			rrs = append(rrs, &miekg.AAAA{
				Hdr:  miekg.RR_Header{Name: name, Rrtype: miekg.TypeAAAA, Class: miekg.ClassINET, Ttl: ttl},
				AAAA: a.AsSlice(),
			})
		}
	}
	return rrs
}

// nodeName returns NODE.node.DOMAIN. for n.
func (s *Server) nodeName(n *node) string {
	return n.name + ".node." + s.zone
}

// soa returns the SOA record of zone; its TTL and minimum are the
// negative TTL.
func (s *Server) soa(zone string, serial uint32) *miekg.SOA {
	neg := ttl(s.cfg.NegativeTTL)
	return &miekg.SOA{
		Hdr:     miekg.RR_Header{Name: zone, Rrtype: miekg.TypeSOA, Class: miekg.ClassINET, Ttl: neg},
		Ns:      "ns." + s.zone,
		Mbox:    "hostmaster." + s.zone,
		Serial:  serial,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  neg,
	}
}

// finish trims r's message to size by whole units, setting TC when it
// leaves any out, and adds the OPT record.
func (r *reply) finish(size int) *miekg.Msg {
	m := r.m
	answer, extra := m.Answer, m.Extra
	withOpt := func(e []miekg.RR) []miekg.RR {
		if r.opt == nil {
			return e
		}
		return append(e[:len(e):len(e)], r.opt)
	}
	m.Extra = withOpt(extra)
	if len(r.cuts) == 0 || uncompressedLen(m) <= size || m.Len() <= size {
		return m
	}
	// The largest prefix of units that fits; fits(0) always holds since
	// the question is at most 255 bytes.
	k, _ := slices.BinarySearchFunc(r.cuts, size, func(c cut, size int) int {
		m.Answer, m.Extra = answer[:c.answer], withOpt(extra[:c.extra])
		return cmp.Compare(m.Len(), size+1)
	})
	m.Answer, m.Extra = answer[:0], withOpt(extra[:0])
	if k > 0 {
		c := r.cuts[k-1]
		m.Answer, m.Extra = answer[:c.answer], withOpt(extra[:c.extra])
	}
	m.Truncated = true
	return m
}

// uncompressedLen is m's length without name compression, an upper bound
// that is cheaper to compute than the compressed length.
func uncompressedLen(m *miekg.Msg) int {
	m.Compress = false
	defer func() { m.Compress = true }()
	return m.Len()
}
