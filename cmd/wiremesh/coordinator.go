package main

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/spf13/cobra"
	"github.com/wiremesh/wiremesh/coordinator"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/store"
)

func newCoordinatorCmd() *cobra.Command {
	cfg := coordinator.DefaultConfig()
	var lf logFlags
	var prefix4, prefix6 string
	var nextPins, advertise []string
	var pprofAddr string
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run the control plane",
		Long: `Run the coordinator: the registry of nodes and join keys and the netmap
streams of every agent. The first start creates the database, a TLS CA and
certificate, and an admin token file in --data-dir (0700, its files 0600),
and prints their paths. The database is SQLite, wiremesh.db in --data-dir,
unless --database names a PostgreSQL database (docs/operations.md), which
several coordinators may share: they then act as one, with one TLS
identity, and agents fail over between them. It binds --listen and
--metrics-listen before it writes anything, refuses a data dir that group or others can access, and
locks it (coordinator.lock) against a second coordinator.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Version = version
			var err error
			if cfg.Logger, err = lf.logger(); err != nil {
				return err
			}
			if cfg.Prefix4, err = optPrefix(prefix4); err != nil {
				return fmt.Errorf("--prefix: %w", err)
			}
			if cfg.Prefix6, err = optPrefix(prefix6); err != nil {
				return fmt.Errorf("--prefix6: %w", err)
			}
			if len(advertise) > 0 {
				cfg.AdvertiseURL, cfg.OtherURLs = advertise[0], advertise[1:]
			}
			for _, s := range nextPins {
				p, err := credential.ParsePin(s)
				if err != nil {
					return fmt.Errorf("--tls-next-pin: %w", err)
				}
				cfg.TLSNextPins = append(cfg.TLSNextPins, p)
			}
			if pprofAddr != "" {
				stop, err := servePprof(pprofAddr)
				if err != nil {
					return err
				}
				defer stop()
			}
			c, files, err := coordinator.Start(cfg)
			if err != nil {
				if cfg.Database != "" && (errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrUnavailable)) {
					return fmt.Errorf("--database: %w", err)
				}
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			for _, f := range files.Created {
				fmt.Fprintf(out, "created %s\n", f)
			}
			fmt.Fprintf(out, "database:         %s\n", files.Database)
			if files.CACert != "" {
				fmt.Fprintf(out, "CA certificate:   %s\n", files.CACert)
			}
			fmt.Fprintf(out, "certificate pins: %s\n", c.Pins())
			fmt.Fprintf(out, "admin token file: %s (use: wiremesh keys create --token-file %s)\n", files.AdminToken, files.AdminToken)
			fmt.Fprintf(out, "web UI:           %s/ui/ (log in with the contents of the admin token file", c.URL())
			if files.CACert != "" {
				fmt.Fprintf(out, "; the browser must trust %s first: docs/ui.md", files.CACert)
			}
			fmt.Fprintln(out, ")")
			return c.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/wiremesh", "directory for the database, TLS material and admin token (mode 0700)")
	f.StringVar(&cfg.Database, "database", "", "postgres://USER:PASSWORD@HOST:PORT/DATABASE to keep the state in PostgreSQL (default: SQLite, wiremesh.db in --data-dir)")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "HOST:PORT of the HTTPS API")
	f.StringArrayVar(&advertise, "advertise-url", nil, "https://HOST:PORT that agents and admins reach (default: https:// + --listen); repeatable when it is reached at several")
	f.StringVar(&prefix4, "prefix", "", "IPv4 overlay prefix (default 100.64.0.0/10 for a new database)")
	f.StringVar(&prefix6, "prefix6", "", "IPv6 overlay prefix (default fd77:6d65:7368::/48 for a new database)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate chain to serve instead of a generated one")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "PEM key of --tls-cert")
	f.StringArrayVar(&nextPins, "tls-next-pin", nil, "pin (spki-sha256:HEX) of the next certificate's key, announced to agents and in new join keys and tokens before a switch; repeatable (see docs/security.md)")
	durationVar(f, &cfg.KeepAlive, "keepalive", 15*time.Second, "interval of keep-alives on idle netmap streams")
	f.StringVar(&cfg.MetricsListen, "metrics-listen", cfg.MetricsListen, `HOST:PORT of the Prometheus /metrics endpoint (plain HTTP; "" for none)`)
	f.StringVar(&cfg.RelayName, "relay-name", coordinator.DefaultRelayName, "name of the embedded relay in the relay map, as status and metrics show it (a region such as eu-1)")
	f.BoolVar(&cfg.NoRelay, "no-relay", false, "run no embedded relay or STUN server (nodes then reach only the peers they have a direct path to, unless standalone relays are enrolled)")
	f.StringVar(&cfg.STUNListen, "stun-listen", cfg.STUNListen, `HOST:PORT (UDP) of the embedded STUN server, which also answers on the next port ("" for none)`)
	f.Float64Var(&cfg.EnrollRate, "enroll-rate", cfg.EnrollRate, "enrollment attempts a second allowed per source address (IPv4 address or IPv6 /64) after its burst; a tenth of it for bad join keys; negative for no limit")
	f.IntVar(&cfg.EnrollBurst, "enroll-burst", cfg.EnrollBurst, "enrollment attempts allowed at once per source address; a quarter of it for bad join keys")
	durationVar(f, &cfg.EndpointInterval, "endpoint-interval", cfg.EndpointInterval, "after a burst of 3, the time between two changes of a node's endpoints that reach its peers; a change made before its turn is held and the newest applied when the turn comes")
	durationVar(f, &cfg.PollInterval, "poll-interval", store.DefaultPollInterval, "with --database: how often to read the state version even when no change was announced (a lost announcement delays a change by at most this)")
	durationVar(f, &cfg.EphemeralTimeout, "ephemeral-timeout", cfg.EphemeralTimeout, "how long an ephemeral node (from a join key made with --ephemeral) may be offline before it is deleted")
	f.StringVar(&pprofAddr, "debug-pprof-listen", "", "serve net/http/pprof on this loopback address (for debugging)")
	f.MarkHidden("debug-pprof-listen")
	lf.add(f)
	return cmd
}

func optPrefix(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	return netip.ParsePrefix(s)
}
