// Package bench holds the benchmarks that need namespace hosts and the
// real binary, run with
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 40m ./test/bench/
//
// (make bench):
//
//   - BenchmarkDataPath (throughput_test.go): iperf3 over veth, a bare
//     wireguard-go device (the program in wgbare, configured with wg(8)),
//     and wiremesh with and without its packet filter; start → first ping;
//     RSS.
//   - BenchmarkDNS (dns_test.go): an agent's service DNS driven by
//     dnsperf, against the bare miekg/dns server in dnsbare.
//   - BenchmarkFailover (failover_test.go): SIGKILL → gone from DNS at 3
//     and 20 agents, restart → back, idle gossip traffic.
//   - BenchmarkLoad (load_test.go): 1,000 lightweight agents on loopback
//     holding netmap streams against one coordinator process; how fast a
//     policy change reaches them all. It needs no root.
//
// The others need root, iproute2, iperf3, wireguard-tools, dnsperf and
// dig, and build their own labs with test/lab. Results are written down in
// docs/benchmarks.md.
package bench
