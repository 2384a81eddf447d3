package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/wiremesh/wiremesh/node"
	"github.com/wiremesh/wiremesh/wire"
)

// localCall sends a request to the agent whose state dir is dir.
func localCall(dir, method, path string, body io.Reader) error {
	req, err := http.NewRequest(method, "http://agent"+path, body)
	if err != nil {
		return err
	}
	resp, err := node.LocalClient(dir).Do(req)
	if err != nil {
		return fmt.Errorf("no agent answers on %s/%s (is it running?): %w", dir, node.SocketName, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var e wire.Error
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(raw, &e) != nil || e.Error == "" {
		return fmt.Errorf("agent: HTTP %d: %.200s", resp.StatusCode, raw)
	}
	return fmt.Errorf("agent: %s", e.Error)
}

func newServicesCmd() *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{Use: "services", Short: "Register local services with the agent; list the mesh's services"}
	var af adminFlags
	list := &cobra.Command{
		Use:   "list",
		Short: "List every service of the mesh with its instances and their health (admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var svcs []wire.CatalogService
			return af.call(cmd, http.MethodGet, wire.PathServices, nil, &svcs, func(w io.Writer) error { return servicesTable(w, svcs) })
		},
	}
	af.add(list.Flags())
	cmd.AddCommand(list)
	register := &cobra.Command{
		Use:   "register FILE",
		Short: "Register the services in FILE (a service object or a services file) until the agent stops",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			return localCall(stateDir, http.MethodPost, "/v1/services?file="+url.QueryEscape(filepath.Base(args[0])), strings.NewReader(string(b)))
		},
	}
	deregister := &cobra.Command{
		Use:   "deregister NAME",
		Short: "Remove a registered service",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return localCall(stateDir, http.MethodDelete, "/v1/services/"+url.PathEscape(args[0]), nil)
		},
	}
	for _, c := range []*cobra.Command{register, deregister} {
		c.Flags().StringVar(&stateDir, "state-dir", "/var/lib/wiremesh-agent", "the agent's state dir")
	}
	cmd.AddCommand(register, deregister)
	return cmd
}

// servicesTable lists every instance, those the policy does not let their
// node provide as "not allowed", with the reasons below the table.
func servicesTable(w io.Writer, svcs []wire.CatalogService) error {
	var rows [][]string
	var refused []string
	for _, cs := range svcs {
		for _, in := range cs.Instances {
			addr := "-"
			if len(in.Addresses) > 0 {
				addr = in.Addresses[0].Addr().String()
			}
			proto := in.Proto
			if proto == "" {
				proto = wire.ServiceTCP
			}
			var checks []string
			for _, c := range in.Checks {
				checks = append(checks, c.ID+"="+c.Status)
			}
			online := "offline"
			if in.Online {
				online = "online"
			}
			policy := "allowed"
			if in.Refused != "" {
				policy = "not allowed"
				refused = append(refused, fmt.Sprintf("%s on %s: %s", cs.Name, in.Node, in.Refused))
			}
			rows = append(rows, []string{cs.Name, in.Node, fmt.Sprintf("%s:%d/%s", addr, in.Port, proto), policy, online, orDash(in.Health), orDash(strings.Join(in.Tags, ",")), orDash(strings.Join(checks, " "))})
		}
	}
	if err := table(w, "SERVICE\tNODE\tADDRESS\tPOLICY\tNODE STATE\tHEALTH\tTAGS\tCHECKS", rows); err != nil {
		return err
	}
	if len(refused) > 0 {
		fmt.Fprintln(w, "\nNot allowed (in no netmap, DNS answer or svc: rule; see \"services\" in the policy):")
		for _, r := range refused {
			fmt.Fprintln(w, "  "+r)
		}
	}
	return nil
}

func newChecksCmd() *cobra.Command {
	var stateDir, note string
	cmd := &cobra.Command{Use: "checks", Short: "Report the state of ttl checks"}
	cmd.PersistentFlags().StringVar(&stateDir, "state-dir", "/var/lib/wiremesh-agent", "the agent's state dir")
	cmd.PersistentFlags().StringVar(&note, "note", "", "a note shown with the check's state")
	for _, st := range []string{"pass", "warn", "fail"} {
		cmd.AddCommand(&cobra.Command{
			Use:   st + " ID",
			Short: "Report the ttl check ID as " + map[string]string{"pass": "passing", "warn": "warning", "fail": "critical"}[st],
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return localCall(stateDir, http.MethodPost, "/v1/checks/"+url.PathEscape(args[0])+"/"+st+"?note="+url.QueryEscape(note), nil)
			},
		})
	}
	return cmd
}
