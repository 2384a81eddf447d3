package lab_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"go.uber.org/goleak"

	"github.com/wiremesh/wiremesh/test/lab"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// twoHosts builds a lab with hosts h1 (198.51.100.1) and h2 (198.51.100.2).
func twoHosts(t *testing.T) (*lab.Lab, *lab.Host, *lab.Host) {
	t.Helper()
	lab.Require(t, "ip", "ping")
	t.Parallel()
	l := lab.New(t)
	return l, l.AddHost("h1"), l.AddHost("h2")
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func ping(ctx context.Context, from, to *lab.Host) error {
	_, err := from.Run(ctx, "ping", "-c", "2", "-W", "1", to.Addr.String())
	return err
}

func TestAddresses(t *testing.T) {
	l, h1, h2 := twoHosts(t)
	if got, want := h1.Addr, netip.MustParseAddr("198.51.100.1"); got != want {
		t.Errorf("h1.Addr = %v, want %v", got, want)
	}
	if got, want := h2.Addr, netip.MustParseAddr("198.51.100.2"); got != want {
		t.Errorf("h2.Addr = %v, want %v", got, want)
	}
	if !strings.HasPrefix(l.Prefix(), "wm") || len(l.Prefix()) != 6 {
		t.Errorf("Prefix() = %q, want wm and 4 hex digits", l.Prefix())
	}
	if got, want := h1.NS, l.Prefix()+"-h1"; got != want {
		t.Errorf("h1.NS = %q, want %q", got, want)
	}
	if got, want := l.Switch().NS, l.Prefix()+"-sw"; got != want {
		t.Errorf("Switch().NS = %q, want %q", got, want)
	}

	ctx := ctxT(t, 10*time.Second)
	routes, err := h1.Run(ctx, "ip", "-4", "route", "show")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(routes), "default") {
		t.Errorf("h1 has a default route:\n%s", routes)
	}
	br, err := l.Switch().Run(ctx, "ip", "-o", "link", "show", "master", "br0")
	if err != nil {
		t.Fatal(err)
	}
	// Count the links only: ip also prints (to the same output) errors
	// about peers in namespaces that parallel tests are deleting.
	if n := len(regexp.MustCompile(`(?m)^\d+: `).FindAll(br, -1)); n != 2 {
		t.Errorf("br0 has %d ports, want 2:\n%s", n, br)
	}
}

func TestPing(t *testing.T) {
	_, h1, h2 := twoHosts(t)
	ctx := ctxT(t, 10*time.Second)
	if err := ping(ctx, h1, h2); err != nil {
		t.Error(err)
	}
	if err := ping(ctx, h2, h1); err != nil {
		t.Error(err)
	}
}

func TestDoEntersNamespace(t *testing.T) {
	_, h1, _ := twoHosts(t)
	want, err := netns.GetFromName(h1.NS)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Close()
	err = h1.Do(func() error {
		cur, err := netns.Get()
		if err != nil {
			return err
		}
		defer cur.Close()
		if !cur.Equal(want) {
			return fmt.Errorf("Do runs in %v, want %v", cur, want)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	errBoom := errors.New("boom")
	if err := h1.Do(func() error { return errBoom }); err != errBoom {
		t.Errorf("Do returned %v, want fn's error", err)
	}
}

func TestTCPEcho(t *testing.T) {
	_, h1, h2 := twoHosts(t)
	ln, err := h1.Listen("tcp", netip.AddrPortFrom(h1.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c)
		served <- err
	}()

	ctx := ctxT(t, 10*time.Second)
	c, err := h2.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, want := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(), h2.Addr; got != want {
		t.Errorf("dialled from %v, want %v", got, want)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("hello over the underlay")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Errorf("echo = %q, want %q", got, msg)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if err := <-served; err != nil {
		t.Errorf("echo server: %v", err)
	}
}

func TestHTTPTransport(t *testing.T) {
	_, h1, h2 := twoHosts(t)
	ln, err := h1.Listen("tcp", netip.AddrPortFrom(h1.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hi %s", r.RemoteAddr)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	defer func() {
		_ = srv.Close()
		<-done
	}()

	tr := &http.Transport{DialContext: h2.DialContext}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctxT(t, 10*time.Second), http.MethodGet, "http://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if want := "hi " + h2.Addr.String() + ":"; !strings.HasPrefix(string(body), want) {
		t.Errorf("body = %q, want prefix %q", body, want)
	}

	if _, err := h2.DialContext(context.Background(), "tcp", "localhost:80"); err == nil {
		t.Error("DialContext accepted a host name")
	}
}

func TestCaptureUDP(t *testing.T) {
	l, h1, h2 := twoHosts(t)
	c, err := l.Switch().Capture("br0")
	if err != nil {
		t.Fatal(err)
	}
	recv, err := h1.ListenPacket("udp", netip.AddrPortFrom(h1.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	send, err := h2.ListenPacket("udp", netip.AddrPortFrom(h2.Addr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer send.Close()

	payload := []byte("captured-on-the-switch")
	if _, err := send.WriteTo(payload, recv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	_ = recv.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := recv.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], payload) || from.String() != send.LocalAddr().String() {
		t.Fatalf("received %q from %v, want %q from %v", buf[:n], from, payload, send.LocalAddr())
	}

	pkts := c.Stop()
	if err := c.Err(); err != nil {
		t.Error(err)
	}
	srcPort := uint16(send.LocalAddr().(*net.UDPAddr).Port)
	dstPort := uint16(recv.LocalAddr().(*net.UDPAddr).Port)
	found := 0
	for _, p := range pkts {
		if p.Proto == lab.ProtoUDP && p.Src == h2.Addr && p.Dst == h1.Addr &&
			p.SrcPort == srcPort && p.DstPort == dstPort && bytes.Equal(p.Payload, payload) {
			found++
		}
	}
	if found != 1 {
		t.Errorf("capture on br0 saw the datagram %d times, want 1; packets:\n%s", found, dump(pkts))
	}
	if again := c.Stop(); len(again) != len(pkts) {
		t.Errorf("second Stop returned %d packets, want %d", len(again), len(pkts))
	}
}

func TestCaptureICMP(t *testing.T) {
	_, h1, h2 := twoHosts(t)
	c, err := h1.Capture("eth0")
	if err != nil {
		t.Fatal(err)
	}
	// 32 bytes of payload: a 16-byte timestamp, then the pattern.
	if _, err := h2.Run(ctxT(t, 10*time.Second), "ping", "-c", "1", "-W", "1", "-s", "32", "-p", "5a", h1.Addr.String()); err != nil {
		t.Fatal(err)
	}
	pkts := c.Stop()
	var req, rep bool
	for _, p := range pkts {
		if p.Proto != lab.ProtoICMP || len(p.Payload) != 32 || p.Payload[31] != 0x5a {
			continue
		}
		req = req || (p.Src == h2.Addr && p.Dst == h1.Addr)
		rep = rep || (p.Src == h1.Addr && p.Dst == h2.Addr)
	}
	if !req || !rep {
		t.Errorf("capture on h1 eth0: echo request seen %v, reply seen %v; packets:\n%s", req, rep, dump(pkts))
	}
}

func TestSetLinkUp(t *testing.T) {
	_, h1, h2 := twoHosts(t)
	ctx := ctxT(t, 15*time.Second)
	if err := ping(ctx, h1, h2); err != nil {
		t.Fatalf("before cut: %v", err)
	}
	if err := h2.SetLinkUp(false); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Run(ctx, "ping", "-c", "1", "-W", "1", h2.Addr.String()); err == nil {
		t.Fatal("ping succeeded with h2's eth0 down")
	}
	if err := h2.SetLinkUp(true); err != nil {
		t.Fatal(err)
	}
	if err := ping(ctx, h1, h2); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}

func TestProc(t *testing.T) {
	_, h1, _ := twoHosts(t)
	script := `trap 'echo got TERM; exit 7' TERM
echo "ready $LAB_TEST_VAR"
ip -4 -o addr show dev eth0
while :; do sleep 0.05; done`
	p := h1.Start(t, "script", []string{"LAB_TEST_VAR=hello"}, "sh", "-c", script)
	if err := p.WaitLog("ready hello", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitLog(h1.Addr.String()+"/24", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Exited() {
		t.Fatal("Exited() = true while running")
	}
	// ip netns exec execs the program: the PID is the shell's, in h1's
	// namespace.
	if comm, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p.PID()), "comm")); err != nil || strings.TrimSpace(string(comm)) != "sh" {
		t.Errorf("PID %d is %q (%v), want sh", p.PID(), comm, err)
	}
	if !sameNetns(t, p.PID(), h1.NS) {
		t.Errorf("PID %d is not in namespace %s", p.PID(), h1.NS)
	}
	if _, err := p.Wait(50 * time.Millisecond); err == nil {
		t.Error("Wait returned no error for a running process")
	}

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := p.Wait(5 * time.Second)
	if err != nil || code != 7 {
		t.Fatalf("Wait = %d, %v; want 7, nil", code, err)
	}
	if code, err := p.Wait(0); err != nil || code != 7 {
		t.Errorf("second Wait = %d, %v; want 7, nil", code, err)
	}
	if !p.Exited() {
		t.Error("Exited() = false after Wait")
	}
	if !strings.Contains(p.Log(), "got TERM") {
		t.Errorf("log lacks the trap's output:\n%s", p.Log())
	}
	if err := p.WaitLog("never printed", 5*time.Second); err == nil {
		t.Error("WaitLog succeeded for text never logged")
	}

	q := h1.Start(t, "sleeper", nil, "sleep", "30")
	q.Kill()
	if code, err := q.Wait(time.Second); err != nil || code != -1 || !q.Exited() {
		t.Errorf("after Kill: Wait = %d, %v, Exited = %v; want -1, nil, true", code, err, q.Exited())
	}
}

func TestCleanup(t *testing.T) {
	lab.Require(t, "ip")
	t.Parallel()
	var prefix string
	var pid int
	t.Run("lab", func(t *testing.T) {
		l := lab.New(t)
		prefix = l.Prefix()
		h := l.AddHost("a")
		l.AddHost("b")
		pid = h.Start(t, "sleeper", nil, "sleep", "60").PID()
		if _, err := l.Switch().Capture("br0"); err != nil { // left running
			t.Fatal(err)
		}
		ln, err := h.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
	})
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	if strings.Contains(string(out), prefix+"-") {
		t.Errorf("namespaces with prefix %s left after cleanup:\n%s", prefix, out)
	}
	out, err = exec.Command("ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip link show: %v: %s", err, out)
	}
	if strings.Contains(string(out), prefix) {
		t.Errorf("links with prefix %s in the root namespace:\n%s", prefix, out)
	}
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Errorf("process %d still exists after cleanup (kill 0: %v)", pid, err)
	}
}

// sameNetns reports whether process pid is in the named namespace.
func sameNetns(t *testing.T, pid int, ns string) bool {
	t.Helper()
	a, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid), "ns", "net"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.Stat(filepath.Join("/run/netns", ns))
	if err != nil {
		t.Fatal(err)
	}
	return os.SameFile(a, b)
}

func dump(pkts []lab.Packet) string {
	var sb strings.Builder
	for _, p := range pkts {
		sb.WriteString("  " + p.String() + "\n")
	}
	return sb.String()
}

// TestWriteEtc: a host's own /etc file is what its commands see, the
// machine's and other hosts' stay as they were, and the file goes with the
// lab.
func TestWriteEtc(t *testing.T) {
	lab.Require(t, "ip", "cat")
	var dir string
	t.Run("lab", func(t *testing.T) { // its cleanup removes the lab
		l := lab.New(t)
		h1, h2 := l.AddHost("h1"), l.AddHost("h2")
		dir = filepath.Join("/etc/netns", h1.NS)
		want := "nameserver 192.0.2.53\n"
		if err := h1.WriteEtc("resolv.conf", []byte(want)); err != nil {
			t.Fatal(err)
		}
		ctx := ctxT(t, 10*time.Second)
		if out, err := h1.Run(ctx, "cat", "/etc/resolv.conf"); err != nil || string(out) != want {
			t.Errorf("h1 sees /etc/resolv.conf = %q, %v; want %q", out, err, want)
		}
		if out, _ := h2.Run(ctx, "cat", "/etc/resolv.conf"); string(out) == want {
			t.Errorf("h2 sees h1's resolv.conf")
		}
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left behind: %v", dir, err)
	}
}

// TestHostPing: Host.Ping tells which probes went unanswered (h2 drops the
// third echo request), probing on for the one lost.
func TestHostPing(t *testing.T) {
	lab.Require(t, "nft")
	_, h1, h2 := twoHosts(t)
	ctx := ctxT(t, 30*time.Second)
	for _, args := range [][]string{
		{"add", "table", "inet", "drop3"},
		{"add", "chain", "inet", "drop3", "in", "{ type filter hook input priority 0; }"},
		{"add", "rule", "inet", "drop3", "in", "icmp", "type", "echo-request", "icmp", "sequence", "3", "drop"},
	} {
		if out, err := h2.Run(ctx, append([]string{"nft"}, args...)...); err != nil {
			t.Fatalf("nft %v: %v\n%s", args, err, out)
		}
	}
	p, err := h1.Ping(ctx, h2.Addr.String(), 6, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if p.Lost() != 1 || p.Answered(3) || !p.Answered(1) || !p.Answered(6) || p.LongestGap() != 1 {
		t.Errorf("ping with probe 3 dropped: %s\n%s", p, p.Out)
	}
	if p.Answers() != 6 { // 1, 2, 4, 5, 6 and the 7th, sent for the lost one
		t.Errorf("Answers() = %d, want 6:\n%s", p.Answers(), p.Out)
	}
	if want := "1 of 6 probes unanswered, longest run 1 (3)"; p.String() != want {
		t.Errorf("String() = %q, want %q", p.String(), want)
	}
}
