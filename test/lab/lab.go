// Package lab is a lab of namespace hosts for end-to-end tests.
//
// A Lab is a set of Linux network namespaces ("hosts") wired to a Linux
// bridge that lives in a namespace of its own (the "switch"). Every host has
// one interface, eth0, with an underlay address 198.51.100.N/24 and no default
// route, so nothing a test does inside the lab can reach the machine's real
// interfaces or any outside address.
//
// A lab can also hold an "internet" (203.0.113.0/24, a second bridge in the
// switch namespace) with public hosts (AddPublicHost), and sites behind NAT
// routers (AddSite, Site.AddHost) on LANs carved out of 192.0.2.0/24; see
// site.go for the address plan. The underlay, the internet and the sites'
// LANs are separate: no route joins the underlay to the others.
//
// Building a lab needs root and iproute2; tests call Require first. All
// namespaces, interfaces and processes of a lab are removed by the cleanup
// that New registers on the test.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// netnsDir is where iproute2 keeps the bind mounts of named namespaces.
	netnsDir = "/run/netns"
	// bridgeName is the bridge in the switch namespace.
	bridgeName = "br0"
	// hostLink is the name of every host's interface.
	hostLink = "eth0"
	// cmdTimeout bounds every ip(8) invocation the lab makes itself.
	cmdTimeout = 10 * time.Second
)

// underlay is the subnet of the host addresses.
var underlay = netip.MustParsePrefix("198.51.100.0/24") // TEST-NET-2 (RFC 5737)

// nsMu serialises namespace creation within the process: concurrent first
// uses of "ip netns add" race on setting up the /run/netns mount.
var nsMu sync.Mutex

// InCI reports whether the tests run in CI: the CI environment variable is
// set to anything but the empty string (CI systems set "true", "1", "yes").
// There, a test that lacks what it needs fails instead of skipping.
func InCI() bool { return os.Getenv("CI") != "" }

// Require fails the test (in CI, see InCI) or skips it (otherwise) unless
// the process is root and every named tool is on PATH (e.g. "ip", "ping").
func Require(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root privileges")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, strconv.Quote(tool)+" on PATH")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "lab: needs " + strings.Join(missing, ", ")
	if InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Lab is a set of namespace hosts attached to one bridge. Create it with New.
type Lab struct {
	t      testing.TB
	prefix string
	sw     *Host

	inetOnce sync.Once // makes the internet bridge, at the first use
	inetErr  error     // set by inetOnce

	mu       sync.Mutex
	nhosts   int      // hosts on the underlay switch
	ninet    int      // addresses given on the internet
	nports   int      // bridge ports made for the internet and site LANs
	nsites   int      // sites made
	nsNames  []string // namespaces created, in creation order
	procs    []*Proc
	captures []*Capture
}

// New creates a lab with a per-run random prefix such as "wm3fa2" and a
// switch namespace "<prefix>-sw" holding the bridge "br0" (up, lo up). It
// registers a t.Cleanup that kills every process started through the lab,
// stops its captures, deletes every namespace it created (which removes the
// veths), and then reports with t.Error any namespace with the prefix that
// remains. New fails the test if the lab cannot be built.
func New(t testing.TB) *Lab {
	t.Helper()
	prefix, err := newPrefix()
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	l := &Lab{t: t, prefix: prefix}
	t.Cleanup(l.cleanup)

	sw := &Host{Name: "sw", NS: prefix + "-sw", lab: l}
	if err := l.addNS(sw.NS); err != nil {
		t.Fatalf("lab: %v", err)
	}
	for _, args := range [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"link", "set", bridgeName, "up"},
	} {
		if err := ipIn(sw.NS, args...); err != nil {
			t.Fatalf("lab: switch: %v", err)
		}
	}
	l.sw = sw
	return l
}

// Prefix returns the lab's random prefix; every namespace of the lab is
// named "<prefix>-<name>".
func (l *Lab) Prefix() string { return l.prefix }

// Switch returns the switch namespace as a Host (e.g. to Capture on "br0").
// It has no eth0 and no address.
func (l *Lab) Switch() *Host { return l.sw }

// AddHost creates the namespace "<prefix>-<name>" with lo up and a veth pair
// created directly in the target namespaces: eth0 in the host, with underlay
// address 198.51.100.N/24 (N = 1, 2, 3... in order of AddHost) and up, and a
// short uniquely named peer in the switch, enslaved to br0 and up. The host
// gets no default route. AddHost fails the test on error, so call it from
// the test's goroutine.
func (l *Lab) AddHost(name string) *Host {
	l.t.Helper()
	h, err := l.addHost(name)
	if err != nil {
		l.t.Fatalf("lab: add host %q: %v", name, err)
	}
	return h
}

func (l *Lab) addHost(name string) (*Host, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.nhosts++
	n := l.nhosts
	l.mu.Unlock()
	if n >= 255 {
		return nil, errors.New("too many hosts for a /24 underlay")
	}
	b := underlay.Addr().As4()
	b[3] = byte(n)
	h := &Host{
		Name: name,
		NS:   l.prefix + "-" + name,
		Addr: netip.AddrFrom4(b),
		lab:  l,
	}
	if err := l.addNS(h.NS); err != nil {
		return nil, err
	}
	peer := l.prefix + "v" + strconv.Itoa(n) // at most 6+1+3 bytes
	if err := plug(h.NS, hostLink, netip.PrefixFrom(h.Addr, underlay.Bits()), l.sw.NS, peer, bridgeName); err != nil {
		return nil, err
	}
	return h, nil
}

// plug wires namespace ns to a bridge: a veth pair created directly in the
// target namespaces, dev in ns holding addr and up, and port in brNS,
// enslaved to bridge and up.
func plug(ns, dev string, addr netip.Prefix, brNS, port, bridge string) error {
	if err := ip("link", "add", dev, "netns", ns, "type", "veth",
		"peer", "name", port, "netns", brNS); err != nil {
		return err
	}
	if err := ipIn(brNS, "link", "set", port, "master", bridge, "up"); err != nil {
		return err
	}
	if err := ipIn(ns, "addr", "add", addr.String(), "dev", dev); err != nil {
		return err
	}
	return ipIn(ns, "link", "set", dev, "up")
}

// addNS creates the named namespace with lo up and records it for cleanup.
func (l *Lab) addNS(name string) error {
	nsMu.Lock()
	err := ip("netns", "add", name)
	nsMu.Unlock()
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.nsNames = append(l.nsNames, name)
	l.mu.Unlock()
	return ipIn(name, "link", "set", "lo", "up")
}

func (l *Lab) track(p *Proc) {
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
}

func (l *Lab) trackCapture(c *Capture) {
	l.mu.Lock()
	l.captures = append(l.captures, c)
	l.mu.Unlock()
}

func (l *Lab) cleanup() {
	l.mu.Lock()
	procs, captures, names := l.procs, l.captures, l.nsNames
	l.procs, l.captures, l.nsNames = nil, nil, nil
	l.mu.Unlock()

	for _, c := range captures {
		c.Stop()
	}
	for _, p := range procs {
		p.Kill()
	}
	// Hosts first, the switch (created first) last.
	for i := len(names) - 1; i >= 0; i-- {
		killNSProcs(names[i])
		if err := ip("netns", "del", names[i]); err != nil {
			l.t.Errorf("lab: cleanup: %v", err)
		}
		if err := os.RemoveAll(etcDir(names[i])); err != nil {
			l.t.Errorf("lab: cleanup: %v", err)
		}
	}
	left, err := namespaces(l.prefix + "-")
	if err != nil {
		l.t.Errorf("lab: cleanup: %v", err)
	}
	if len(left) > 0 {
		l.t.Errorf("lab: cleanup: namespaces left behind: %s", strings.Join(left, ", "))
	}
}

// killNSProcs SIGKILLs any process still living in the namespace, such as a
// daemon that a Run command left behind.
func killNSProcs(ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output()
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// namespaces lists the named namespaces whose names start with prefix.
func namespaces(prefix string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces: %w", err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// newPrefix returns "wm" and 4 random hex digits, not used by any existing
// namespace.
func newPrefix() (string, error) {
	for range 16 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("random prefix: %w", err)
		}
		p := "wm" + hex.EncodeToString(b[:])
		used, err := namespaces(p + "-")
		if err != nil {
			return "", err
		}
		if len(used) == 0 {
			return p, nil
		}
	}
	return "", errors.New("random prefix: no unused prefix found")
}

// ip runs ip(8) with args in the current (root) namespace.
func ip(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ipIn runs ip(8) with args against the namespace ns ("ip -n ns args...").
func ipIn(ns string, args ...string) error {
	return ip(append([]string{"-n", ns}, args...)...)
}
