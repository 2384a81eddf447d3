package main

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/spf13/cobra"
	"github.com/wiremesh/wiremesh/coordinator"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/internal/statedir"
	"github.com/wiremesh/wiremesh/node"
	"github.com/wiremesh/wiremesh/relay/standalone"
)

func newRelayCmd() *cobra.Command {
	cfg := standalone.DefaultConfig()
	var lf logFlags
	var joinFile, tlsCert, tlsKey string
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Run a standalone relay",
		Long: `Run a standalone relay: a blind packet relay (and STUN server) that
nodes reach over TLS when they have no direct path to a peer. On the first
start it makes its key and TLS identity in --state-dir and enrolls with a
relay join key (wiremesh keys create --relay); every netmap then names it in
the relay map, with the pin of its TLS identity, and its own netmap says
which node keys may attach. While the coordinator is unreachable it keeps
serving, and restarts serving, from its last netmap.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Logger, err = lf.logger(); err != nil {
				return err
			}
			// readJoinKey checks --join and --join-file as the agent does.
			jc := node.Config{JoinKey: cfg.JoinKey}
			if err := readJoinKey(&jc, joinFile); err != nil {
				return err
			}
			cfg.JoinKey = jc.JoinKey
			if err := checkRelayFlags(&cfg, tlsCert, tlsKey); err != nil {
				return err
			}
			// The TLS identity goes in the state dir: make it 0700 and
			// hold it (until the process exits) first.
			if err := statedir.Make(cfg.StateDir); err != nil {
				return err
			}
			if _, err := statedir.Lock(cfg.StateDir, standalone.LockFile, "relay"); err != nil {
				return err
			}
			cert, pin, _, err := coordinator.LoadTLS(cfg.StateDir, tlsCert, tlsKey, cfg.AdvertiseURL)
			if err != nil {
				return err
			}
			cfg.Certificate, cfg.Pins = cert, credential.Pins{pin}
			cfg.Version = version
			r, err := standalone.New(cfg)
			if err != nil {
				return err
			}
			return r.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.JoinKey, "join", "", "relay join key (wiremesh keys create --relay), needed on the first start")
	f.StringVar(&joinFile, "join-file", "", "read the join key from this file (mode 0600)")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/wiremesh-relay", "where the relay keeps its key, TLS identity, credential and last netmap")
	f.StringVar(&cfg.Name, "name", "", "the relay's name in the relay map and node list, a region such as eu-1 (required)")
	f.StringVar(&cfg.Listen, "listen", ":443", "TCP HOST:PORT of the relay's TLS server")
	f.StringVar(&cfg.AdvertiseURL, "advertise-url", "", "https://HOST:PORT nodes reach --listen at (required)")
	f.StringVar(&cfg.STUNListen, "stun-listen", standalone.DefaultSTUNListen, `UDP HOST:PORT of the STUN server, which also takes the next port; "" for none`)
	f.StringVar(&cfg.MetricsListen, "metrics-listen", "", "HOST:PORT of a plain-HTTP /metrics endpoint (default: none)")
	f.StringVar(&tlsCert, "tls-cert", "", "TLS certificate (PEM), pinned by its key; default: a dedicated CA and certificate made in --state-dir")
	f.StringVar(&tlsKey, "tls-key", "", "the private key of --tls-cert (PEM)")
	lf.add(f)
	return cmd
}

// checkRelayFlags names the flag at fault in a bad relay command line.
func checkRelayFlags(cfg *standalone.Config, tlsCert, tlsKey string) error {
	switch {
	case cfg.Name == "":
		return errors.New("--name is required: the relay's name in the relay map, such as eu-1")
	case cfg.AdvertiseURL == "":
		return errors.New("--advertise-url is required: the https://HOST:PORT nodes reach the relay at")
	case (tlsCert == "") != (tlsKey == ""):
		return errors.New("give --tls-cert and --tls-key together")
	case cfg.StateDir == "":
		return errors.New("--state-dir must not be empty")
	}
	if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
		return fmt.Errorf("bad --listen %q: want HOST:PORT", cfg.Listen)
	}
	if !strings.HasPrefix(cfg.AdvertiseURL, "https://") {
		return fmt.Errorf("bad --advertise-url %q: want https://HOST:PORT", cfg.AdvertiseURL)
	}
	return cfg.Validate()
}
