package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/spf13/cobra"
	"github.com/wiremesh/wiremesh/node"
	"github.com/wiremesh/wiremesh/wire"
)

func newRotateKeyCmd() *cobra.Command {
	var stateDir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rotate-key",
		Short: "Replace this node's WireGuard key now; its peers learn the new one through the coordinator",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req, _ := http.NewRequest(http.MethodPost, "http://agent/v1/rotate-key", nil)
			client := node.LocalClient(stateDir)
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("no agent answers on %s/%s (is it running?): %w", stateDir, node.SocketName, err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			if resp.StatusCode != http.StatusOK {
				var e wire.Error
				json.Unmarshal(raw, &e)
				return fmt.Errorf("agent: %s", e.Error)
			}
			if asJSON {
				_, err = cmd.OutOrStdout().Write(raw)
				return err
			}
			return printRotated(cmd.OutOrStdout(), raw)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&stateDir, "state-dir", "/var/lib/wiremesh-agent", "the agent's state dir")
	return cmd
}

// printRotated prints the agent's answer to a rotation as a sentence.
func printRotated(w io.Writer, raw []byte) error {
	var out struct {
		PublicKey string `json:"public_key"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.PublicKey == "" {
		return fmt.Errorf("agent: unreadable answer to rotate-key: %.200q", raw)
	}
	_, err := fmt.Fprintf(w, "new WireGuard key in use; public key %s (peers learn it through the coordinator)\n", out.PublicKey)
	return err
}
