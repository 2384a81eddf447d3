package filter

import (
	"net/netip"
	"slices"

	"github.com/wiremesh/wiremesh/wire"
)

// Flow is one flow record: a dropped inbound packet, or the first packet
// of an inbound flow the filter let in and now tracks (Config.NewFlows).
// It holds plain values only, so the packet path fills one without
// allocating; the receiver formats it. It has no time: the filter's clock
// moves once a second, so the receiver stamps it.
type Flow struct {
	// Verdict is Accept for a new flow, else why the packet was dropped.
	Verdict Verdict
	// Src and Dst are the packet's addresses; invalid when it did not
	// parse that far (some DropMalformed packets).
	Src, Dst netip.Addr
	// Proto is the IP protocol (valid with Src).
	Proto uint8
	// Ports reports whether SrcPort and DstPort are set: TCP, UDP and
	// SCTP packets whose transport header was read.
	Ports            bool
	SrcPort, DstPort uint16
	// Always reports that DstPort is one of Config.AlwaysAllow (a new
	// flow may be let in by that rather than by a rule).
	Always bool
	// Rules are the rules that judged the packet: Rules.Policy names
	// their policy version and Rules.Match the rule that let a flow in.
	Rules *Rules
	// Suppressed counts the records of the same kind (drops, or new
	// flows) that the rate limiter refused since the last one.
	Suppressed uint64
}

// Rates of flow records: drops share the limiter of the "packet denied"
// log lines (logEvery, logBurst); new flows have their own, more generous
// one, since every flow a peer opens is worth a line to someone who asked
// for them.
const (
	newFlowEvery = 1    // milliseconds: about 1000 new-flow records a second
	newFlowBurst = 1000 // bursts of this many
)

// newFlow records a flow the filter just let in and started tracking, if
// new-flow records are on and the limiter lets it.
func (f *Filter) newFlow(b []byte, p *packet, now int64, rs *ruleset) {
	if !f.cfg.NewFlows || f.cfg.Flows == nil {
		return
	}
	if !f.newLimit.allow(now, newFlowEvery, newFlowBurst) {
		f.count.add(shardOf(b), newSuppressedSlot, 1)
		return
	}
	f.record(p, Accept, rs, f.newLimit.unreported(&f.count, newSuppressedSlot))
}

// record sends a flow record of p to Config.Flows without blocking; a
// record that finds the channel full is counted in Stats.FlowsLost.
func (f *Filter) record(p *packet, v Verdict, rs *ruleset, suppressed uint64) {
	fl := Flow{Verdict: v, Rules: rs.rules, Suppressed: suppressed}
	if p.fam != 0 {
		v6 := p.fam == 6
		fl.Src, fl.Dst, fl.Proto = p.src.netip(v6), p.dst.netip(v6), p.proto
		if hasPorts(p.proto) && p.frag != fragLater && v != DropMalformed {
			fl.Ports, fl.SrcPort, fl.DstPort = true, p.sport, p.dport
			for _, pp := range f.always {
				fl.Always = fl.Always || pp.Proto == p.proto && pp.Port == p.dport
			}
		}
	}
	select {
	case f.cfg.Flows <- fl:
	default:
		f.flowsLost.Add(1)
	}
}

// ProtoName is the name of an IP protocol as logs and flow records give
// it: tcp, udp, icmp, icmpv6, sctp, else its number.
func ProtoName(proto uint8) string { return protoName(proto) }

// unreported returns how many refusals, counted in slot, l has not
// reported yet, and marks them reported.
func (l *limiter) unreported(c *counters, slot int) uint64 {
	total := c.sum(slot)
	return total - min(total, l.reported.Swap(total))
}

// CompilePolicy is Compile for the rules of policy version policy, which
// the Rules remember for flow records (Policy) and for Match.
func CompilePolicy(policy uint64, local []netip.Prefix, rules []wire.FilterRule) *Rules {
	r := Compile(local, rules)
	r.policy, r.src = policy, slices.Clone(rules)
	return r
}

// Policy returns the policy version the rules were compiled from
// (CompilePolicy); 0 for Compile and for nil.
func (r *Rules) Policy() uint64 {
	if r == nil {
		return 0
	}
	return r.policy
}

// Match returns the index of the first of the rules given to
// CompilePolicy that accepts a packet from src with protocol proto to port
// port, or -1 if none does (or the Rules come from Compile). It is a
// linear scan, for explaining a decision off the packet path, and agrees
// with Allows.
func (r *Rules) Match(src netip.Addr, proto uint8, port uint16) int {
	if r == nil || !src.IsValid() {
		return -1
	}
	src = src.Unmap()
	for i := range r.src {
		if ruleMatches(&r.src[i], src, proto, port) {
			return i
		}
	}
	return -1
}

// ruleMatches reports whether rule accepts the packet, as Compile reads
// it.
func ruleMatches(rule *wire.FilterRule, src netip.Addr, proto uint8, port uint16) bool {
	protos := rule.Protos
	if len(protos) == 0 {
		protos = defaultProtos
	}
	if !slices.Contains(protos, proto) {
		return false
	}
	if portIndex(proto) >= 0 && !slices.ContainsFunc(rule.Ports, func(pr wire.PortRange) bool {
		return pr.First <= port && port <= pr.Last
	}) {
		return false
	}
	return slices.ContainsFunc(rule.Srcs, func(p netip.Prefix) bool { return p.IsValid() && p.Contains(src) })
}
