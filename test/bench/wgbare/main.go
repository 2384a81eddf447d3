// Command wgbare runs a bare wireguard-go device, from the same library and
// version wiremesh links, with no wiremesh logic at all: it is the baseline
// of the data-path benchmark.
//
// Usage:
//
//	wgbare IFNAME
//
// It creates the TUN interface IFNAME (MTU 1420, as the agent's default),
// serves the UAPI socket /var/run/wireguard/IFNAME.sock and runs until
// SIGTERM or SIGINT, then closes the device (which removes the interface).
// Keys, port, peers, addresses and link state are set from outside with
// wg(8) and ip(8), e.g.
//
//	wg set IFNAME private-key KEYFILE listen-port 51820 peer PUB allowed-ips 203.0.113.2/32 endpoint 198.51.100.2:51820
//	ip addr add 203.0.113.1/24 dev IFNAME
//	ip link set IFNAME up
//
// It prints "wgbare up" once the UAPI socket is listening.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// mtu is the interface MTU, the same as the wiremesh agent's default.
const mtu = 1420

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: wgbare IFNAME")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "wgbare:", err)
		os.Exit(1)
	}
}

func run(name string) error {
	tdev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return fmt.Errorf("create TUN %s: %w", name, err)
	}
	logger := device.NewLogger(device.LogLevelError, "wgbare("+name+") ")
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), logger)
	defer dev.Close()

	uapiFile, err := ipc.UAPIOpen(name)
	if err != nil {
		return fmt.Errorf("UAPI open: %w", err)
	}
	uapi, err := ipc.UAPIListen(name, uapiFile)
	if err != nil {
		uapiFile.Close()
		return fmt.Errorf("UAPI listen: %w", err)
	}
	defer uapi.Close()
	go func() {
		for {
			c, err := uapi.Accept()
			if err != nil {
				return
			}
			go dev.IpcHandle(c)
		}
	}()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("wgbare up")
	select {
	case <-sig:
	case <-dev.Wait():
	}
	return nil
}
