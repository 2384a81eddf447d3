package relay

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a packet is dropped, as the reason label.
const (
	dropNoSuchPeer = iota // the destination is not attached
	dropQueueFull         // the destination's queue is full: it reads too slowly
	dropTooBig            // the packet is over MaxPacketSize (the sender is closed too)
	numDrops
)

var dropReasons = [numDrops]string{"no_such_peer", "queue_full", "too_big"}

// Reasons an attach is refused, as the reason label.
const (
	authProof      = "proof"       // no valid proof of the node key
	authNotAllowed = "not_allowed" // a valid proof of a key Allowed refuses
	authProtocol   = "protocol"    // no answer, a malformed one, or a timeout
)

var authReasons = []string{authProof, authNotAllowed, authProtocol}

// stats are the server's counters, updated with atomics on the packet
// path and turned into metrics at scrape time.
type stats struct {
	packets atomic.Uint64
	bytes   atomic.Uint64
	drops   [numDrops]atomic.Uint64
	proof   atomic.Uint64
	refused atomic.Uint64
	proto   atomic.Uint64
}

// forwarded counts a packet of n bytes written to its destination.
func (st *stats) forwarded(n int) {
	st.packets.Add(1)
	st.bytes.Add(uint64(n))
}

func (st *stats) dropped(reason int) { st.drops[reason].Add(1) }

func (st *stats) authFailed(reason string) {
	switch reason {
	case authProof:
		st.proof.Add(1)
	case authNotAllowed:
		st.refused.Add(1)
	default:
		st.proto.Add(1)
	}
}

func (st *stats) authFailures(reason string) uint64 {
	switch reason {
	case authProof:
		return st.proof.Load()
	case authNotAllowed:
		return st.refused.Load()
	}
	return st.proto.Load()
}

// Descriptions of the relay's metrics.
var (
	clientsDesc = prometheus.NewDesc("wiremesh_relay_clients",
		"Nodes attached to the relay (connections past the proof of their key).", nil, nil)
	packetsDesc = prometheus.NewDesc("wiremesh_relay_forwarded_packets_total",
		"Packets the relay wrote to their destination's connection.", nil, nil)
	bytesDesc = prometheus.NewDesc("wiremesh_relay_forwarded_bytes_total",
		"Bytes of the packets the relay wrote to their destination's connection (packets only, no framing).", nil, nil)
	dropsDesc = prometheus.NewDesc("wiremesh_relay_dropped_packets_total",
		"Packets the relay dropped, by reason: no_such_peer (destination not attached), queue_full (destination reads too slowly), too_big (over 64 KiB; the sender is disconnected).", []string{"reason"}, nil)
	authDesc = prometheus.NewDesc("wiremesh_relay_auth_failures_total",
		"Connections refused before attaching, by reason: proof (no valid proof of the node key), not_allowed (a key the relay does not know), protocol (no answer, malformed, or too slow).", []string{"reason"}, nil)
)

// Collector returns the relay's metrics, for the embedder to register.
func (s *Server) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Server }

// Describe sends the descriptions of the relay's metrics.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{clientsDesc, packetsDesc, bytesDesc, dropsDesc, authDesc} {
		ch <- d
	}
}

// Collect reads the counters and the attached clients.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	s.mu.RLock()
	n := len(s.clients)
	s.mu.RUnlock()
	ch <- prometheus.MustNewConstMetric(clientsDesc, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(s.stats.packets.Load()))
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(s.stats.bytes.Load()))
	for i, r := range dropReasons {
		ch <- prometheus.MustNewConstMetric(dropsDesc, prometheus.CounterValue, float64(s.stats.drops[i].Load()), r)
	}
	for _, r := range authReasons {
		ch <- prometheus.MustNewConstMetric(authDesc, prometheus.CounterValue, float64(s.stats.authFailures(r)), r)
	}
}
