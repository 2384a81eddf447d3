package filter

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
)

// The denied-packet log is a token bucket (GCRA): logEvery apart on
// average, bursts of logBurst.
const (
	logEvery = 200 // milliseconds
	logBurst = 10
)

// limiter rate-limits log lines without a lock: in a flood of denied
// packets, each costs one atomic load (and the caller counts the refusal
// in its counter shard).
type limiter struct {
	tat      atomic.Int64  // theoretical arrival time of the next line, ms
	reported atomic.Uint64 // refused lines already reported as suppressed
}

// allow reports whether a line may be logged at time now (milliseconds),
// lines being every milliseconds apart on average in bursts of burst.
func (l *limiter) allow(now, every, burst int64) bool {
	for {
		old := l.tat.Load()
		tat := max(old, now)
		if tat-now >= every*burst {
			return false
		}
		if l.tat.CompareAndSwap(old, tat+every) {
			return true
		}
	}
}

// denied logs and records (Config.Flows) a dropped inbound packet, if the
// limiter lets it. Nothing is formatted before that.
func (f *Filter) denied(b []byte, p *packet, v Verdict, now int64, rs *ruleset) {
	logOn := f.log.Enabled(context.Background(), slog.LevelInfo)
	if !logOn && f.cfg.Flows == nil {
		return
	}
	if !f.limit.allow(now, logEvery, logBurst) {
		f.count.add(shardOf(b), suppressedSlot, 1)
		return
	}
	n := f.limit.unreported(&f.count, suppressedSlot)
	if logOn {
		f.logDenied(p, v, n)
	}
	if f.cfg.Flows != nil {
		f.record(p, v, rs, n)
	}
}

// logDenied writes the "packet denied" line: src, dst, proto, port (for
// protocols with ports), peer (the source's node name, when known), why,
// and suppressed (lines dropped by the limiter since the last one, when
// any).
func (f *Filter) logDenied(p *packet, v Verdict, suppressed uint64) {
	attrs := make([]slog.Attr, 0, 8)
	if p.fam != 0 {
		src := p.src.netip(p.fam == 6)
		attrs = append(attrs,
			slog.String("src", src.String()),
			slog.String("dst", p.dst.netip(p.fam == 6).String()),
			slog.String("proto", protoName(p.proto)))
		if hasPorts(p.proto) && p.frag != fragLater && v != DropMalformed {
			attrs = append(attrs, slog.Int("port", int(p.dport)))
		}
		if f.cfg.NameOf != nil {
			if name := f.cfg.NameOf(src); name != "" {
				attrs = append(attrs, slog.String("peer", name))
			}
		}
	}
	attrs = append(attrs, slog.String("why", v.String()))
	if suppressed > 0 {
		attrs = append(attrs, slog.Uint64("suppressed", suppressed))
	}
	f.log.LogAttrs(context.Background(), slog.LevelInfo, "packet denied", attrs...)
}

// protoName is the name of an IP protocol in the log.
func protoName(proto uint8) string {
	switch proto {
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	case protoICMP:
		return "icmp"
	case protoICMPv6:
		return "icmpv6"
	case protoSCTP:
		return "sctp"
	}
	return strconv.Itoa(int(proto))
}
