package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/wiremesh/wiremesh/node"
	"github.com/wiremesh/wiremesh/wire"
)

func newPingCmd() *cobra.Command {
	var stateDir string
	var asJSON bool
	var count int
	cmd := &cobra.Command{
		Use:   "ping NODE",
		Short: "Probe a peer over the overlay and say whether the policy or the network is in the way",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body, _ := json.Marshal(node.PingRequest{Node: args[0], Count: count})
			client := node.LocalClient(stateDir)
			client.Timeout = time.Duration(count)*time.Second + 5*time.Second
			resp, err := client.Post("http://agent/v1/ping", "application/json", bytes.NewReader(body))
			if err != nil {
				return fmt.Errorf("no agent answers on %s/%s (is it running?): %w", stateDir, node.SocketName, err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if resp.StatusCode != http.StatusOK {
				var e wire.Error
				json.Unmarshal(raw, &e)
				return fmt.Errorf("agent: %s", e.Error)
			}
			var res node.PingResult
			if err := json.Unmarshal(raw, &res); err != nil {
				return fmt.Errorf("bad answer from agent: %w", err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if err := printJSON(out, res); err != nil {
					return err
				}
			} else {
				var rtts []string
				for _, d := range res.RTTs {
					rtts = append(rtts, time.Duration(d).Round(10*time.Microsecond).String())
				}
				if res.Addr != "" {
					fmt.Fprintf(out, "%s (%s): %d/%d answered %s\n", res.Node, res.Addr, len(res.RTTs), res.Sent, strings.Join(rtts, " "))
				}
				for _, p := range res.Pongs {
					via := "relay " + p.Relay
					if p.Kind == wire.PathKindDirect {
						via = "direct " + p.Addr
					}
					fmt.Fprintf(out, "pong from %s via %s in %s\n", res.Node, via, time.Duration(p.RTT).Round(10*time.Microsecond))
				}
				if res.WhyNotDirect != "" && res.Addr != "" {
					fmt.Fprintln(out, res.WhyNotDirect)
				}
				fmt.Fprintf(out, "%s: %s\n", res.Verdict, res.Why)
			}
			if res.Verdict != "ok" {
				return fmt.Errorf("%s is not reachable (%s)", res.Node, res.Verdict)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", "/var/lib/wiremesh-agent", "the agent's state dir")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().IntVarP(&count, "count", "c", 3, "probes to send (1-100)")
	return cmd
}
