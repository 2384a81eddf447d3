package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/node"
	"github.com/wiremesh/wiremesh/wire"
)

func newAgentCmd() *cobra.Command {
	cfg := node.DefaultConfig()
	var lf logFlags
	var (
		dnsAddr   string
		upstreams []string
		noDNS     bool
		pprofAddr string
		joinFile  string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent",
		Long: `Run the agent: enroll with a join key on the first start (the WireGuard
private key is generated here and never leaves the state dir), bring up the
WireGuard interface and follow the coordinator's netmap. Later starts need
no --join. With --join and a stored identity the coordinator refuses
(node deleted or expired), or with --force-reauth, the agent enrolls again
under a new key and keeps its state dir. While the coordinator is
unreachable the agent keeps, and restarts from, its last netmap.

Each peer is reached directly where the network allows (the agent learns
its own addresses, asks STUN for the one its NAT shows, and probes the
peer's), else through a relay of the netmap's relay map, over TLS on TCP.
--relay-only sends everything through relays; --no-relay never uses one
(peers without a working direct path are then unreachable). wiremesh
status and wiremesh ping show which path each peer is on, and why.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Logger, err = lf.logger(); err != nil {
				return err
			}
			if err := wire.CheckEndpoints(cfg.Endpoints); err != nil {
				return fmt.Errorf("--endpoint: %w", err)
			}
			if cfg.RelayOnly && cfg.NoRelay {
				return errors.New("--relay-only and --no-relay exclude each other: give at most one")
			}
			if err := readJoinKey(&cfg, joinFile); err != nil {
				return err
			}
			if cfg.DNSAddr, err = netip.ParseAddr(dnsAddr); err != nil || !cfg.DNSAddr.IsLoopback() {
				return fmt.Errorf("bad --dns-addr %q: want a loopback address", dnsAddr)
			}
			if len(upstreams) > 0 {
				cfg.DNS.Upstreams = upstreams
			}
			if noDNS {
				cfg.DNSPort = -1
			}
			cfg.Version = version
			if pprofAddr != "" {
				stop, err := servePprof(pprofAddr)
				if err != nil {
					return err
				}
				defer stop()
			}
			a, err := node.New(cfg)
			if err != nil {
				return err
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						if err := a.Reload(); err != nil {
							cfg.Logger.Error("reload refused; services unchanged", "err", err)
						}
					}
				}
			}()
			defer func() { cancel(); <-done }()
			return a.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.JoinKey, "join", "", "join key (needed only on the first start; --join-file keeps it out of ps)")
	f.StringVar(&joinFile, "join-file", "", "file holding the join key, instead of --join")
	f.BoolVar(&cfg.ForceReauth, "force-reauth", false, "with --join: enroll again under a new key even if the stored identity is still valid (the old node stays)")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/wiremesh-agent", "directory for the key, identity and netmap cache (mode 0700)")
	f.StringVar(&cfg.Name, "name", "", "node name to ask for (default: derived from the host name)")
	f.IntVar(&cfg.ListenPort, "listen-port", cfg.ListenPort, "WireGuard UDP port")
	f.StringVar(&cfg.Interface, "interface", cfg.Interface, "WireGuard interface name")
	f.StringSliceVar(&cfg.Endpoints, "endpoint", nil, fmt.Sprintf("extra IP:PORT where peers can reach this node (a port forward, a public address in front of NAT), an address literal, offered first (repeatable, at most %d)", wire.MaxEndpoints))
	f.BoolVar(&cfg.RelayOnly, "relay-only", false, "send every peer's traffic through relays, never directly")
	f.BoolVar(&cfg.NoRelay, "no-relay", false, "never send through a relay: peers without a working direct path are unreachable")
	f.IntVar(&cfg.MTU, "mtu", cfg.MTU, "interface MTU")
	f.StringVar(&cfg.ServicesFile, "config", "", "HuJSON file of local services and checks (reloaded on SIGHUP)")
	durationVar(f, &cfg.KeyRotation, "key-rotation", 0, "replace the WireGuard key this often, e.g. 30d (default: only with wiremesh rotate-key)")
	f.BoolVar(&noDNS, "no-dns", false, "serve no DNS")
	f.StringVar(&cfg.DNS.Domain, "dns-domain", cfg.DNS.Domain, "the mesh's DNS domain")
	f.IntVar(&cfg.DNSPort, "dns-port", cfg.DNSPort, "DNS port (UDP and TCP) on --dns-addr and the overlay addresses")
	f.StringVar(&dnsAddr, "dns-addr", cfg.DNSAddr.String(), "loopback address the DNS server listens on")
	f.StringSliceVar(&upstreams, "dns-upstream", nil, "resolver (IP or IP:PORT) for names outside the mesh (repeatable; default: those of --resolv-conf)")
	f.StringVar(&cfg.ResolvConf, "resolv-conf", cfg.ResolvConf, "file the upstream resolvers are read from")
	durationVar(f, &cfg.DNS.ServiceTTL, "dns-service-ttl", cfg.DNS.ServiceTTL, "TTL of service answers")
	durationVar(f, &cfg.DNS.NodeTTL, "dns-node-ttl", cfg.DNS.NodeTTL, "TTL of node and reverse answers")
	durationVar(f, &cfg.DNS.NegativeTTL, "dns-negative-ttl", cfg.DNS.NegativeTTL, "TTL of negative answers (the SOA minimum)")
	f.IntVar(&cfg.DNS.MaxAnswers, "dns-max-answers", cfg.DNS.MaxAnswers, "instances in one service answer (-1: all)")
	f.BoolVar(&cfg.DNS.OnlyPassing, "dns-only-passing", false, "leave instances with a warning check out of answers")
	f.BoolVar(&cfg.DNS.NearByDefault, "dns-near", false, "order every service answer nearest first (as SVC.service.near.DOMAIN does)")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, `HOST:PORT of the Prometheus /metrics endpoint (plain HTTP; "" for none)`)
	f.BoolVar(&cfg.LogNewFlows, "log-new-flows", false, "record every inbound flow the filter lets in, not only denied packets (see wiremesh flows)")
	f.StringVar(&cfg.FlowLog, "flow-log", "", "file to append flow records to, as JSON lines (created 0600)")
	f.IntVar(&cfg.FlowRecords, "flow-records", cfg.FlowRecords, "flow records kept in memory for wiremesh flows")
	f.BoolVar(&cfg.NoFilter, "unsafe-no-filter", false, "turn the inbound packet filter off (only to measure its cost)")
	f.MarkHidden("unsafe-no-filter")
	f.StringVar(&pprofAddr, "debug-pprof-listen", "", "serve net/http/pprof on this loopback address (for debugging)")
	f.MarkHidden("debug-pprof-listen")
	lf.add(f)
	return cmd
}

// readJoinKey fills cfg.JoinKey from --join-file, if given, and checks the
// key, so that a wrong one is refused naming the flag it came from.
func readJoinKey(cfg *node.Config, joinFile string) error {
	from := "--join"
	if joinFile != "" {
		if cfg.JoinKey != "" {
			return errors.New("give --join or --join-file, not both")
		}
		fi, err := os.Stat(joinFile)
		if err != nil {
			return fmt.Errorf("read join key: %w", err)
		}
		if m := fi.Mode().Perm(); m&0o077 != 0 {
			return fmt.Errorf("--join-file %s has mode %#o: it holds a join key, so it must not be readable by group or others (chmod 600 %s)", joinFile, m, joinFile)
		}
		b, err := os.ReadFile(joinFile)
		if err != nil {
			return fmt.Errorf("read join key: %w", err)
		}
		cfg.JoinKey, from = strings.TrimSpace(string(b)), "--join-file "+joinFile
	}
	if cfg.JoinKey == "" {
		return nil
	}
	if _, err := credential.ParseJoinKey(cfg.JoinKey); err != nil {
		if _, serr := os.Stat(cfg.JoinKey); serr == nil && joinFile == "" {
			return fmt.Errorf("--join %s: that is a file: give it with --join-file %s", cfg.JoinKey, cfg.JoinKey)
		}
		return fmt.Errorf("%s: %w", from, err)
	}
	return nil
}
