package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/wiremesh/wiremesh/node"
	"github.com/wiremesh/wiremesh/wire"
)

func newStatusCmd() *cobra.Command {
	var stateDir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this node and its peers, from the local agent",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := node.LocalClient(stateDir).Get("http://agent/v1/status")
			if err != nil {
				return fmt.Errorf("no agent answers on %s/%s (is it running?): %w", stateDir, node.SocketName, err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
			if resp.StatusCode != http.StatusOK {
				var e wire.Error
				json.Unmarshal(raw, &e)
				return fmt.Errorf("agent: %s", e.Error)
			}
			var st node.Status
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("bad answer from agent: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, st)
			}
			var addrs []string
			for _, a := range st.Self.Addresses {
				addrs = append(addrs, a.Addr().String())
			}
			conn := "connected"
			if !st.Connected {
				conn = "not connected"
				if st.LastError != "" {
					conn += " (" + st.LastError + ")"
				}
			}
			fmt.Fprintf(out, "node:        %s %s\n", st.Self.Name, strings.Join(addrs, " "))
			fmt.Fprintf(out, "interface:   %s, port %d\n", st.Interface, st.ListenPort)
			fmt.Fprintf(out, "coordinator: %s, %s, netmap version %d\n", st.Coordinator, conn, st.NetmapVersion)
			if st.PolicyVersion == 0 {
				fmt.Fprintf(out, "policy:      none — all inbound traffic is denied and no peers are shown; set one with: wiremesh acl set FILE\n\n")
			} else {
				fmt.Fprintf(out, "policy:      version %d, %d inbound rules for this node\n\n", st.PolicyVersion, st.InboundRules)
			}
			if st.Filter != nil {
				var drops []string
				for why, n := range st.Filter.Dropped {
					drops = append(drops, fmt.Sprintf("%d %s", n, why))
				}
				sort.Strings(drops)
				d := "none"
				if len(drops) > 0 {
					d = strings.Join(drops, ", ")
				}
				fmt.Fprintf(out, "filter:      %d accepted, dropped: %s; %d tracked flows\n\n", st.Filter.Accepted, d, st.Filter.Conns)
			}
			var rows [][]string
			for _, p := range st.Peers {
				rtt := "-"
				switch {
				case p.Path.RTT > 0:
					rtt = time.Duration(p.Path.RTT).Round(time.Microsecond).String()
				case p.RTT > 0:
					rtt = time.Duration(p.RTT).Round(time.Microsecond).String()
				}
				online := "-"
				switch p.Gossip {
				case "alive":
					online = "yes"
				case "failed", "left":
					online = "no (" + p.Gossip + ")"
				}
				addr := "-"
				if len(p.Addresses) > 0 {
					addr = p.Addresses[0]
				}
				changed := "-"
				if p.Path.Kind != wire.PathKindNone {
					changed = ago(p.Path.Since)
				}
				rows = append(rows, []string{p.Name, addr, online, pathText(p.Path), changed, ago(p.LastHandshake), bytesText(p.RxBytes) + " / " + bytesText(p.TxBytes), fmt.Sprint(p.Denied), rtt, orDash(strings.Join(p.Services, ","))})
			}
			if st.Gossip != nil {
				fmt.Fprintf(out, "gossip:      %d members alive; %d bytes sent, %d received\n", st.Gossip.Members, st.Gossip.BytesSent, st.Gossip.BytesReceived)
			}
			if st.DNS != "" {
				fmt.Fprintf(out, "dns:         %s and the overlay addresses\n", st.DNS)
			}
			fmt.Fprintf(out, "paths:       %s\n\n", pathsLine(st))
			if err := table(out, "PEER\tADDRESS\tONLINE\tPATH\tCHANGED\tHANDSHAKE\tRX / TX\tDENIED\tRTT\tSERVICES", rows); err != nil {
				return err
			}
			if len(st.Services) == 0 {
				return nil
			}
			rows = nil
			for _, s := range st.Services {
				var checks []string
				for _, c := range s.Checks {
					checks = append(checks, c.CheckID+"="+c.Status.String())
				}
				rows = append(rows, []string{s.Name, fmt.Sprint(s.Port), s.Health.String(), strings.Join(checks, " ")})
			}
			fmt.Fprintln(out)
			return table(out, "SERVICE\tPORT\tHEALTH\tCHECKS", rows)
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", "/var/lib/wiremesh-agent", "the agent's state dir")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// pathsLine says how this node reaches its peers: its NAT type, home
// relay and candidates, and --relay-only or --no-relay.
func pathsLine(st node.Status) string {
	home := "home relay " + orDash(st.HomeRelay)
	switch {
	case st.NoRelay:
		home = "no relays (--no-relay)"
	case st.RelayOnly:
		home += " (--relay-only)"
	}
	cands := "none"
	if len(st.Candidates) > 0 {
		cands = strings.Join(st.Candidates, " ")
	}
	return fmt.Sprintf("NAT %s, %s; candidates %s", st.NAT, home, cands)
}

// pathText is a peer's path for people: "direct 203.0.113.7:41641",
// "relay eu-1 (no answer from 2 candidates)" or "none".
func pathText(p wire.PeerPath) string {
	var s string
	switch p.Kind {
	case wire.PathKindDirect:
		s = "direct " + p.Addr
	case wire.PathKindRelay:
		s = "relay " + p.Relay
	default:
		s = "none"
	}
	if p.Why != "" && p.Kind != wire.PathKindDirect {
		s += " (" + p.Why + ")"
	}
	return s
}

// bytesText writes a byte count for people: 512 B, 1.5 KiB, 23.4 MiB.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
