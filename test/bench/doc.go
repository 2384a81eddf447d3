// Package bench holds the benchmark of the overlay data path
// (BenchmarkDataPath in throughput_test.go), run with
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 20m ./test/bench/
//
// (make bench). It needs root, iproute2, iperf3 and wireguard-tools, and
// builds its own lab of namespace hosts with test/lab. The baseline it
// compares wiremesh against is the program in wgbare: a bare wireguard-go
// device configured with wg(8). Results are written down in
// docs/benchmarks.md.
package bench
