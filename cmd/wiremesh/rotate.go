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
			_, err = cmd.OutOrStdout().Write(raw)
			return err
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", "/var/lib/wiremesh-agent", "the agent's state dir")
	return cmd
}
