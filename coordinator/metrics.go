package coordinator

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/wiremesh/wiremesh/wire"
)

// metrics are the coordinator's Prometheus metrics, on a registry of its
// own (never the global one). Gauges of state are computed at scrape time
// from the current snapshot; events are counted as they happen.
// docs/observability.md lists them.
type metrics struct {
	reg         *prometheus.Registry
	pushes      *prometheus.CounterVec   // trigger
	skips       prometheus.Counter       // netmaps not sent: unchanged but for the version
	pushLatency prometheus.Histogram     // snapshot published → netmap written
	requests    *prometheus.CounterVec   // route, code
	duration    *prometheus.HistogramVec // route
	compile     prometheus.Histogram
	enrollments *prometheus.CounterVec // result
	reports     *prometheus.CounterVec // result
}

// Netmap push triggers.
const (
	triggerConnect = "connect" // the first netmap of a stream
	triggerChange  = "change"  // a newer snapshot
	triggerDelta   = "delta"   // a newer snapshot, as a NetmapDelta
	triggerResume  = "resume"  // the first message of a stream whose agent holds its netmap: the version alone
)

// Results of enrollments and service reports, by the status code answered.
var requestResults = []string{"ok", "invalid", "refused", "error"}

// newMetrics makes the coordinator's metrics, reading state from c.
func newMetrics(c *Coordinator) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wiremesh_coordinator_netmap_pushes_total",
			Help: "Netmaps written to agents' streams, by trigger: connect (a stream's first), change (a newer state version, whole), delta (a newer state version, as a delta) or resume (a stream's first, to an agent that holds its netmap: the version alone).",
		}, []string{"trigger"}),
		skips: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wiremesh_coordinator_netmap_skips_total",
			Help: "Netmaps not written to a stream because a newer state version left them as the stream's last one but for the version.",
		}),
		pushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wiremesh_coordinator_netmap_push_latency_seconds",
			Help:    "Time from a change's snapshot being published to its netmap being written and flushed on a stream (pushes triggered by a change only).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 15), // 0.2 ms .. 3.3 s
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wiremesh_coordinator_api_requests_total",
			Help: "API requests answered, by route (the pattern that served it) and status code; a stream counts when it ends.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wiremesh_coordinator_api_request_duration_seconds",
			Help:    "Time to answer an API request, by route; streamed answers (netmaps, events) are not timed.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 12), // 0.5 ms .. 12 s
		}, []string{"route"}),
		compile: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wiremesh_coordinator_policy_compile_seconds",
			Help:    "Time to compile the access policy against the nodes, once per published state version.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 13), // 0.1 ms .. 53 s
		}),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wiremesh_coordinator_enrollments_total",
			Help: "Enrollment requests by result: ok, invalid (malformed request), refused (bad, used, expired or revoked join key; name taken), error.",
		}, []string{"result"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wiremesh_coordinator_service_reports_total",
			Help: "Service reports from agents by result: ok, invalid, refused, error.",
		}, []string{"result"}),
	}
	m.pushes.WithLabelValues(triggerConnect)
	m.pushes.WithLabelValues(triggerChange)
	m.pushes.WithLabelValues(triggerDelta)
	m.pushes.WithLabelValues(triggerResume)
	for _, r := range requestResults {
		m.enrollments.WithLabelValues(r)
		m.reports.WithLabelValues(r)
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.pushes, m.skips, m.pushLatency, m.requests, m.duration, m.compile, m.enrollments, m.reports,
		&stateCollector{c: c},
	)
	return m
}

// netmapSent counts a netmap of snapshot s written to a stream; change
// says a newer snapshot (not the stream's start) called for it.
func (m *metrics) netmapSent(s *snapshot, change bool) {
	if m == nil {
		return
	}
	if !change {
		m.pushes.WithLabelValues(triggerConnect).Inc()
		return
	}
	m.pushes.WithLabelValues(triggerChange).Inc()
	if !s.published.IsZero() {
		m.pushLatency.Observe(time.Since(s.published).Seconds())
	}
}

// netmapDeltaSent counts a NetmapDelta written for snapshot s.
func (m *metrics) netmapDeltaSent(s *snapshot) {
	if m == nil {
		return
	}
	m.pushes.WithLabelValues(triggerDelta).Inc()
	m.pushLatency.Observe(time.Since(s.published).Seconds())
}

// netmapResumed counts a stream that started with the netmap its agent
// held.
func (m *metrics) netmapResumed() {
	if m != nil {
		m.pushes.WithLabelValues(triggerResume).Inc()
	}
}

// netmapSkipped counts a netmap that a newer snapshot left unchanged for
// its stream, so it was not written.
func (m *metrics) netmapSkipped() {
	if m != nil {
		m.skips.Inc()
	}
}

// policyCompiled records how long a policy compile took.
func (m *metrics) policyCompiled(d time.Duration) {
	if m != nil {
		m.compile.Observe(d.Seconds())
	}
}

// instrument wraps the API handler h: after h (a ServeMux, which sets
// r.Pattern) has answered, the request is counted by route and code.
func (m *metrics) instrument(h http.Handler) http.Handler {
	if m == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched" // e.g. 405, or a redirect the mux made itself
		}
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
		if !sw.flushed {
			m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}
		switch route {
		case "POST " + wire.PathEnroll:
			m.enrollments.WithLabelValues(resultOf(code)).Inc()
		case "PUT " + wire.PathServicesReport:
			m.reports.WithLabelValues(resultOf(code)).Inc()
		}
	})
}

// resultOf names the result of a request by its status code.
func resultOf(code int) string {
	switch {
	case code < 300:
		return "ok"
	case code == http.StatusBadRequest || code == http.StatusRequestEntityTooLarge:
		return "invalid"
	case code < 500:
		return "refused"
	}
	return "error"
}

// statusWriter remembers the status code written and whether the answer
// was streamed (flushed before the handler returned).
type statusWriter struct {
	http.ResponseWriter
	code    int
	flushed bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// FlushError marks the answer as streamed and flushes it; it is what
// http.ResponseController.Flush calls.
func (w *statusWriter) FlushError() error {
	w.flushed = true
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is FlushError for http.Flusher.
func (w *statusWriter) Flush() { w.FlushError() }

// Unwrap lets http.ResponseController reach the connection's writer (for
// write deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Descriptions of the state metrics.
var (
	nodesDesc = prometheus.NewDesc("wiremesh_coordinator_nodes",
		"Enrolled nodes by state: online (a netmap stream is open) or offline.", []string{"state"}, nil)
	streamsDesc = prometheus.NewDesc("wiremesh_coordinator_netmap_streams",
		"Open netmap streams.", nil, nil)
	stateVersionDesc = prometheus.NewDesc("wiremesh_coordinator_state_version",
		"Version of the published state (netmap version).", nil, nil)
	policyVersionDesc = prometheus.NewDesc("wiremesh_coordinator_policy_version",
		"Version of the active access policy (0: none, all traffic denied).", nil, nil)
	servicesDesc = prometheus.NewDesc("wiremesh_coordinator_services",
		"Service instances the agents reported, over all nodes.", nil, nil)
)

// stateCollector computes the state gauges from the current snapshot.
type stateCollector struct{ c *Coordinator }

// Describe sends the state metrics' descriptions.
func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{nodesDesc, streamsDesc, stateVersionDesc, policyVersionDesc, servicesDesc} {
		ch <- d
	}
}

// Collect reads the snapshot and the open streams.
func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	snap := s.c.state.Load()
	if snap == nil {
		return
	}
	s.c.onlineMu.Lock()
	online, streams := 0, 0
	for _, n := range s.c.online {
		streams += n
	}
	for _, n := range snap.nodes {
		if s.c.online[n.ID] > 0 {
			online++
		}
	}
	s.c.onlineMu.Unlock()
	services := 0
	for _, n := range snap.nodes {
		services += len(n.Services)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	gauge(nodesDesc, online, "online")
	gauge(nodesDesc, len(snap.nodes)-online, "offline")
	gauge(streamsDesc, streams)
	ch <- prometheus.MustNewConstMetric(stateVersionDesc, prometheus.GaugeValue, float64(snap.version))
	ch <- prometheus.MustNewConstMetric(policyVersionDesc, prometheus.GaugeValue, float64(snap.policy.Version))
	gauge(servicesDesc, services)
}

// metricsServer serves /metrics on Config.MetricsListen.
type metricsServer struct {
	srv *http.Server
	wg  sync.WaitGroup // the Serve goroutine
}

// serveMetrics serves the metrics on ln (plain HTTP) until close.
func (c *Coordinator) serveMetrics(ln net.Listener) *metricsServer {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", c.MetricsHandler())
	ms := &metricsServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	ms.wg.Add(1)
	go func() {
		defer ms.wg.Done()
		if err := ms.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	c.log.Info("metrics listening", "addr", ln.Addr().String())
	return ms
}

// close stops serving and waits for the serving goroutine.
func (ms *metricsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ms.srv.Shutdown(ctx)
	ms.wg.Wait()
}

// MetricsHandler returns the handler of the coordinator's /metrics, for
// tests and for mounting it elsewhere.
func (c *Coordinator) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(c.metrics.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
