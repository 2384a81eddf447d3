package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/vishvananda/netns"
)

// Host is a network namespace of a lab. Hosts made by AddHost have one
// interface, eth0, holding the underlay address Addr.
type Host struct {
	// Name is the name given to AddHost ("sw" for the switch).
	Name string
	// NS is the name of the network namespace ("<prefix>-<name>").
	NS string
	// Addr is the host's underlay address on eth0 (invalid for the switch).
	Addr netip.Addr

	lab *Lab
}

// String returns the host's name.
func (h *Host) String() string { return h.Name }

// Run runs a short command inside the namespace ("ip netns exec NS
// args...") and returns its combined output. The command is killed when ctx
// is done. The error includes the output.
func (h *Host) Run(ctx context.Context, args ...string) ([]byte, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("%s: run: no command", h.Name)
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.NS}, args...)...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: run %s: %w: %s", h.Name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// Do runs fn on a goroutine locked to an OS thread that has been switched
// into the host's network namespace, and returns fn's error. The thread's
// original namespace is restored afterwards; if that fails the thread stays
// locked, so the runtime discards it when the goroutine exits.
//
// Sockets created inside fn stay in the namespace and can be used from any
// goroutine afterwards. Work that fn hands to other goroutines (such as
// name resolution by the net package) does not run in the namespace.
func (h *Host) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored, err := h.doLocked(fn)
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// doLocked runs fn in the host's namespace on the current, locked thread and
// reports whether the thread is back in its original namespace.
func (h *Host) doLocked(fn func() error) (restored bool, err error) {
	orig, err := netns.Get()
	if err != nil {
		return true, fmt.Errorf("%s: get current netns: %w", h.Name, err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(h.NS)
	if err != nil {
		return true, fmt.Errorf("%s: open netns %s: %w", h.Name, h.NS, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		// The thread's state is unknown: do not hand it back to the runtime.
		return false, fmt.Errorf("%s: enter netns %s: %w", h.Name, h.NS, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return false, errors.Join(ferr, fmt.Errorf("%s: restore netns: %w", h.Name, err))
	}
	return true, ferr
}

// Listen is net.Listen inside the namespace. The host part of addr must be
// empty or an IP literal: names are not resolved inside the namespace.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	if err := checkLiteral(network, addr); err != nil {
		return nil, fmt.Errorf("%s: listen: %w", h.Name, err)
	}
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: listen: %w", h.Name, err)
	}
	return ln, nil
}

// ListenPacket is net.ListenPacket inside the namespace. The host part of
// addr must be empty or an IP literal.
func (h *Host) ListenPacket(network, addr string) (net.PacketConn, error) {
	if err := checkLiteral(network, addr); err != nil {
		return nil, fmt.Errorf("%s: listen packet: %w", h.Name, err)
	}
	var pc net.PacketConn
	err := h.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: listen packet: %w", h.Name, err)
	}
	return pc, nil
}

// DialContext dials addr from inside the namespace. It has the signature of
// http.Transport.DialContext. The host part of addr must be an IP literal:
// names are not resolved, so that no lookup can leave the lab.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := checkLiteral(network, addr); err != nil {
		return nil, fmt.Errorf("%s: dial: %w", h.Name, err)
	}
	var conn net.Conn
	err := h.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: dial: %w", h.Name, err)
	}
	return conn, nil
}

// etcDir is where "ip netns exec NS" finds files that it bind-mounts over
// their namesakes in /etc for the command it runs.
func etcDir(ns string) string { return filepath.Join("/etc/netns", ns) }

// WriteEtc gives the host its own /etc/NAME (resolv.conf, hosts): every
// command that Run and Start execute on the host from then on sees data
// there, as a process on a real host sees its own file. The lab removes it
// with the namespace.
func (h *Host) WriteEtc(name string, data []byte) error {
	dir := etcDir(h.NS)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	return nil
}

// SetLinkUp brings the host's eth0 up or down, to cut the host off from the
// lab and heal it later.
func (h *Host) SetLinkUp(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	if err := ipIn(h.NS, "link", "set", hostLink, state); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	return nil
}

// checkLiteral rejects addresses whose host part would need name
// resolution: the net package resolves names on other goroutines, that is
// outside the namespace.
func checkLiteral(network, addr string) error {
	host := addr
	switch {
	case strings.HasPrefix(network, "tcp"), strings.HasPrefix(network, "udp"):
		var err error
		if host, _, err = net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("address %q: %w", addr, err)
		}
	case strings.HasPrefix(network, "ip"):
	default:
		return nil // unix sockets and the like: no names involved
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("address %q: host is not an IP literal (names are not resolved in a lab): %w", addr, err)
	}
	return nil
}
