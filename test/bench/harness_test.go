package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/node"
	"github.com/wiremesh/wiremesh/test/lab"
)

// build compiles the package pkg into dir/name, as the e2e harness does.
func build(b *testing.B, dir, name, pkg string) string {
	b.Helper()
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out
}

// output runs a short command in h's namespace and returns its stdout
// alone (lab.Host.Run mixes in stderr, which would spoil JSON).
func output(ctx context.Context, h *lab.Host, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS}, args...)...)
	cmd.WaitDelay = time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %s: %w: %s", h.Name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// run runs a short command in h's namespace and fails the benchmark on error.
func run(b *testing.B, h *lab.Host, args ...string) string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := h.Run(ctx, args...)
	if err != nil {
		b.Fatal(err)
	}
	return string(out)
}

// wgKey makes a WireGuard key pair with wg(8) and writes the private key to
// a file in dir; it returns the file and the public key.
func wgKey(b *testing.B, dir, name string) (privFile, pub string) {
	b.Helper()
	priv, err := exec.Command("wg", "genkey").Output()
	if err != nil {
		b.Fatalf("wg genkey: %v", err)
	}
	privFile = filepath.Join(dir, name+".key")
	if err := os.WriteFile(privFile, priv, 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("wg", "pubkey")
	cmd.Stdin = bytes.NewReader(priv)
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("wg pubkey: %v", err)
	}
	return privFile, strings.TrimSpace(string(out))
}

// waitPing pings dst from h once every 100 ms until a reply comes back, and
// fails the benchmark after timeout.
func waitPing(b *testing.B, h *lab.Host, dst netip.Addr, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := h.Run(ctx, "ping", "-n", "-q", "-c", "1", "-W", "1", dst.String())
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s cannot ping %s after %v: %v", h.Name, dst, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// iperfResult is one iperf3 run.
type iperfResult struct {
	gbps        float64 // end.sum_received.bits_per_second / 1e9
	retransmits int     // end.sum_sent.retransmits
}

// iperf runs one TCP iperf3 test of secs seconds from cli to dst, an
// address of srv: "iperf3 -s -1" on srv, "iperf3 -c dst -t secs -J" on cli.
func iperf(b *testing.B, srv, cli *lab.Host, dst netip.Addr, secs int) (iperfResult, error) {
	b.Helper()
	server := srv.Start(b, "iperf3-server", nil, "iperf3", "-s", "-1")
	// Wait until the server listens; a probe connection would be taken as
	// the one test of "-1", so look at the socket table instead.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out, err := output(ctx, srv, "ss", "-Hltn", "sport = :5201")
		cancel()
		if err == nil && strings.Contains(string(out), "5201") {
			break
		}
		if server.Exited() || time.Now().After(deadline) {
			return iperfResult{}, fmt.Errorf("iperf3 server on %s not listening: %s", srv.Name, server.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+30)*time.Second)
	defer cancel()
	out, err := output(ctx, cli, "iperf3", "-c", dst.String(), "-t", strconv.Itoa(secs), "-J")
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	jerr := json.Unmarshal(out, &r)
	if _, werr := server.Wait(10 * time.Second); werr != nil {
		server.Kill()
	}
	switch {
	case err != nil && r.Error != "":
		return iperfResult{}, fmt.Errorf("iperf3 to %s: %s", dst, r.Error)
	case err != nil:
		return iperfResult{}, err
	case jerr != nil:
		return iperfResult{}, fmt.Errorf("iperf3 to %s: bad JSON: %v", dst, jerr)
	case r.Error != "":
		return iperfResult{}, fmt.Errorf("iperf3 to %s: %s", dst, r.Error)
	case r.End.SumReceived.BitsPerSecond <= 0:
		return iperfResult{}, fmt.Errorf("iperf3 to %s: no end.sum_received.bits_per_second", dst)
	}
	return iperfResult{gbps: r.End.SumReceived.BitsPerSecond / 1e9, retransmits: r.End.SumSent.Retransmits}, nil
}

// rssMiB returns the VmRSS of a process in MiB.
func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "12345 kB"
			if len(f) != 2 || f[1] != "kB" {
				break
			}
			kb, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS in /proc status", pid)
}

// clockTick is USER_HZ, the unit of the times in /proc/PID/stat; it is 100
// on every Linux architecture Go supports.
const clockTick = 100

// cpuSeconds returns the user+system CPU time a process has used so far.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name in parentheses may hold spaces; fields follow it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: bad /proc stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("pid %d: short /proc stat", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("pid %d: bad /proc stat times", pid)
	}
	return (ut + st) / clockTick, nil
}

// procsCPU sums cpuSeconds over procs (0 for none).
func procsCPU(procs []*lab.Proc) float64 {
	var sum float64
	for _, p := range procs {
		if s, err := cpuSeconds(p.PID()); err == nil {
			sum += s
		}
	}
	return sum
}

// machineBusy returns the busy and total jiffies of all CPUs from
// /proc/stat, for a machine-wide utilisation figure.
func machineBusy() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	for i, s := range f[1:] {
		v, _ := strconv.ParseFloat(s, 64)
		if i >= 8 { // guest and guest_nice are already counted in user
			break
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// median returns the median of xs (the mean of the middle two for an even
// count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// mesh is a wiremesh coordinator and its reusable join key.
type mesh struct {
	b         *testing.B
	bin       string
	host      *lab.Host
	tokenFile string
	joinKey   string
	coord     *lab.Proc // the coordinator (and its embedded relay)
}

const coordPort = 8443

// startMesh starts a coordinator on h and creates a reusable join key with
// "wiremesh keys create".
func startMesh(b *testing.B, bin string, h *lab.Host) *mesh {
	b.Helper()
	dataDir := filepath.Join(b.TempDir(), "coordinator") // made 0700 by the coordinator
	m := &mesh{b: b, bin: bin, host: h, tokenFile: filepath.Join(dataDir, "admin.token")}
	coord := h.Start(b, "coordinator", nil, bin, "coordinator", "--data-dir", dataDir,
		"--listen", netip.AddrPortFrom(h.Addr, coordPort).String(), "--log-format", "json")
	if err := coord.WaitLog("coordinator listening", 10*time.Second); err != nil {
		b.Fatalf("coordinator did not start: %v\n%s", err, coord.Log())
	}
	m.coord = coord
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Its nodes are tagged tag:web, which the policies of the DNS and
	// failover benchmarks let provide the web service.
	out, err := output(ctx, h, bin, "keys", "create", "--reusable", "--tag", "tag:web", "--token-file", m.tokenFile)
	if err != nil {
		b.Fatalf("wiremesh keys create: %v", err)
	}
	m.joinKey = strings.TrimSpace(string(out))
	m.setPolicy(benchPolicy())
	return m
}

// benchPolicy is a policy of 1,000 rules that applies in full to every
// node: 998 rules from addresses no node has, to ports nobody uses, and the
// two that let the benchmark's traffic through (iperf3 on tcp/5201, ping).
// Every packet of the filtered agents goes through a filter compiled from
// all of it.
func benchPolicy() string {
	var sb strings.Builder
	sb.WriteString(`{"acls": [` + "\n")
	sb.WriteString(`{"action": "accept", "src": ["*"], "dst": ["*:5201"], "proto": "tcp"},` + "\n")
	sb.WriteString(`{"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "icmp"},` + "\n")
	for i := range 998 {
		fmt.Fprintf(&sb, `{"action": "accept", "src": ["100.65.%d.%d"], "dst": ["*:%d,%d-%d"], "proto": "tcp"},`+"\n",
			i/250, i%250+1, 10000+i, 20000+2*i, 20001+2*i)
	}
	sb.WriteString("]}\n")
	return sb.String()
}

// setPolicy makes text the active policy with "wiremesh acl set".
func (m *mesh) setPolicy(text string) {
	m.b.Helper()
	f := filepath.Join(m.b.TempDir(), "policy.hujson")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		m.b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := output(ctx, m.host, m.bin, "acl", "set", f, "--token-file", m.tokenFile); err != nil {
		m.b.Fatalf("wiremesh acl set: %v", err)
	}
}

// agent is a wiremesh agent on a host.
type agent struct {
	name     string
	host     *lab.Host
	iface    string
	stateDir string
	bin      string
	proc     *lab.Proc
	addr     netip.Addr // overlay IPv4 address
}

// addAgent enrolls an agent on h with the mesh's join key and waits until
// it is up.
func (m *mesh) addAgent(h *lab.Host, iface string, extra ...string) *agent {
	m.b.Helper()
	if len(iface) > 15 {
		m.b.Fatalf("interface name %q too long", iface)
	}
	a := &agent{name: h.Name, host: h, iface: iface, stateDir: filepath.Join(m.b.TempDir(), "state"), bin: m.bin}
	a.start(m.b, append([]string{"--join", m.joinKey}, extra...)...)
	if err := a.proc.WaitLog(`"msg":"agent up"`, 15*time.Second); err != nil {
		m.b.Fatalf("agent %s did not come up: %v\n%s", a.name, err, a.proc.Log())
	}
	raw, err := os.ReadFile(filepath.Join(a.stateDir, "node.json"))
	if err != nil {
		m.b.Fatalf("agent %s: %v", a.name, err)
	}
	var id node.Identity
	if err := json.Unmarshal(raw, &id); err != nil {
		m.b.Fatalf("agent %s: node.json: %v", a.name, err)
	}
	for _, p := range id.Node.Addresses {
		if p.Addr().Is4() {
			a.addr = p.Addr()
		}
	}
	if !a.addr.IsValid() {
		m.b.Fatalf("agent %s has no IPv4 overlay address", a.name)
	}
	return a
}

// start starts the agent process (without waiting for it).
func (a *agent) start(b *testing.B, extra ...string) {
	b.Helper()
	args := append([]string{a.bin, "agent", "--state-dir", a.stateDir, "--name", a.name,
		"--interface", a.iface, "--log-format", "json"}, extra...)
	a.proc = a.host.Start(b, "agent", nil, args...)
}

// stop sends SIGTERM and waits for a clean exit.
func (a *agent) stop(b *testing.B) {
	b.Helper()
	if err := a.proc.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	code, err := a.proc.Wait(10 * time.Second)
	if err != nil || code != 0 {
		b.Fatalf("agent %s: exit %d, %v\n%s", a.name, code, err, a.proc.Log())
	}
}

// logTime returns the time of the first JSON log line of p whose msg is
// msg, or the zero time.
func logTime(p *lab.Proc, msg string) time.Time {
	for _, line := range strings.Split(p.Log(), "\n") {
		var l struct {
			Time time.Time `json:"time"`
			Msg  string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == msg {
			return l.Time
		}
	}
	return time.Time{}
}

// logf prints a progress line to stdout at once (b.Logf keeps only the
// first 10 lines of a benchmark's log, and prints them at the end).
func logf(format string, args ...any) {
	fmt.Printf("bench: "+format+"\n", args...)
}

// loadAvg returns the first three fields of /proc/loadavg: other work on
// the machine skews every figure.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// filterStats describes the agent's packet filter counters from "wiremesh
// status --json", e.g. "accepted 1234567, dropped map[], 3 flows", or
// "off".
func (a *agent) filterStats(b *testing.B) string {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := output(ctx, a.host, a.bin, "status", "--json", "--state-dir", a.stateDir)
	if err != nil {
		b.Fatalf("status on %s: %v", a.name, err)
	}
	var st node.Status
	if err := json.Unmarshal(out, &st); err != nil {
		b.Fatalf("status on %s: %v: %s", a.name, err, out)
	}
	if st.Filter == nil {
		return "off"
	}
	return fmt.Sprintf("accepted %d, dropped %v, %d flows", st.Filter.Accepted, st.Filter.Dropped, st.Filter.Conns)
}
