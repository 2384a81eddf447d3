package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/wire"
)

func newACLCmd() *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{Use: "acl", Short: "Manage the access policy"}
	af.add(cmd.PersistentFlags())

	var getVersion uint64
	get := &cobra.Command{
		Use:   "get",
		Short: "Print the active policy (or --version N, an earlier one)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := wire.PathPolicy
			if cmd.Flags().Changed("version") {
				if getVersion == 0 {
					return errors.New("--version must be a version from wiremesh acl history (1 or more)")
				}
				path += "?version=" + strconv.FormatUint(getVersion, 10)
			}
			var p wire.Policy
			return af.call(cmd, http.MethodGet, path, nil, &p, func(w io.Writer) error {
				if p.Version == 0 {
					return errors.New("no policy is set: all traffic between nodes is denied (set one with: wiremesh acl set FILE)")
				}
				_, err := fmt.Fprint(w, p.Text)
				return err
			})
		},
	}
	get.Flags().Uint64Var(&getVersion, "version", 0, "print this version from wiremesh acl history instead of the active one")
	var comment string
	set := &cobra.Command{
		Use:   "set FILE",
		Short: "Validate FILE, run its tests and make it the active policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, req, err := policyRequest(&af, args[0])
			if err != nil {
				return err
			}
			req.Comment = comment
			var p wire.Policy
			if err := c.do(cmd.Context(), http.MethodPut, wire.PathPolicy, req, &p); err != nil {
				return policyError(cmd, err)
			}
			if af.asJSON {
				return printJSON(cmd.OutOrStdout(), p)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy version %d is active\n", p.Version)
			return nil
		},
	}
	set.Flags().StringVar(&comment, "comment", "", "why, kept with the version (acl history) and in the audit log")
	check := &cobra.Command{
		Use:   "check FILE",
		Short: "Validate FILE and run its tests against the live nodes; show the access it would change",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, req, err := policyRequest(&af, args[0])
			if err != nil {
				return err
			}
			var out wire.PolicyCheck
			if err := c.do(cmd.Context(), http.MethodPost, wire.PathPolicy+"/check", req, &out); err != nil {
				return err
			}
			if af.asJSON {
				if err := printJSON(cmd.OutOrStdout(), out); err != nil {
					return err
				}
			} else {
				printCheck(cmd.OutOrStdout(), out)
			}
			if !out.Valid {
				return fmt.Errorf("%s is not valid", args[0])
			}
			return nil
		},
	}
	history := &cobra.Command{
		Use:   "history",
		Short: "List policy versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var h []wire.Policy
			return af.call(cmd, http.MethodGet, wire.PathPolicy+"/history", nil, &h, func(w io.Writer) error {
				var rows [][]string
				for _, p := range h {
					rows = append(rows, []string{strconv.FormatUint(p.Version, 10), p.Created.Format(time.RFC3339), p.Author, p.Comment})
				}
				return table(w, "VERSION\tCREATED\tAUTHOR\tCOMMENT", rows)
			})
		},
	}
	rollback := &cobra.Command{
		Use:   "rollback VERSION",
		Short: "Make an earlier policy version active again (as a new version)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || v == 0 {
				return fmt.Errorf("bad version %q: want a positive number from wiremesh acl history", args[0])
			}
			c, err := af.client()
			if err != nil {
				return err
			}
			var p wire.Policy
			if err := c.do(cmd.Context(), http.MethodPost, wire.PathPolicy+"/rollback", wire.RollbackRequest{Version: v}, &p); err != nil {
				return policyError(cmd, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "policy version %d is active (%s)\n", p.Version, p.Comment)
			return nil
		},
	}
	cmd.AddCommand(get, set, check, history, rollback)
	return cmd
}

func policyRequest(af *adminFlags, file string) (*adminClient, wire.SetPolicyRequest, error) {
	var req wire.SetPolicyRequest
	b, err := readPolicyFile(file)
	if err != nil {
		return nil, req, err
	}
	c, err := af.client()
	if err != nil {
		return nil, req, err
	}
	return c, wire.SetPolicyRequest{Text: string(b), File: filepath.Base(file)}, nil
}

func readPolicyFile(file string) ([]byte, error) {
	if file == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, 1<<20+1))
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return b, nil
}

// policyError prints every problem of a rejected policy to stderr, one per
// line, and returns a short error.
func policyError(cmd *cobra.Command, err error) error {
	var ae *client.Error
	var errs []wire.PolicyError
	if !errors.As(err, &ae) || ae.Code != wire.CodePolicyInvalid || json.Unmarshal(ae.Detail, &errs) != nil || len(errs) == 0 {
		return err
	}
	for _, e := range errs {
		fmt.Fprintln(cmd.ErrOrStderr(), e.Text)
	}
	n := fmt.Sprintf("%d problems", len(errs))
	if len(errs) == 1 {
		n = "1 problem"
	}
	return fmt.Errorf("policy rejected (%s); the active policy is unchanged", n)
}

func printCheck(w io.Writer, out wire.PolicyCheck) {
	if !out.Valid {
		for _, e := range out.Errors {
			fmt.Fprintln(w, e.Text)
		}
		return
	}
	fmt.Fprintf(w, "valid; tests pass against the live nodes\n")
	against := fmt.Sprintf("compared with the active policy (version %d)", out.ActiveVersion)
	if out.ActiveVersion == 0 {
		against = "compared with today, when there is no active policy yet and everything is denied"
	}
	if len(out.Providers) > 0 {
		fmt.Fprintf(w, "services that become allowed (+) or not allowed (-) %s:\n", against)
		for _, ch := range out.Providers {
			fmt.Fprintln(w, "  "+ch.Text)
		}
	}
	if len(out.Changes) == 0 {
		fmt.Fprintf(w, "no access changes %s\n", against)
		return
	}
	fmt.Fprintf(w, "access changes %s:\n", against)
	for _, ch := range out.Changes {
		fmt.Fprintln(w, "  "+ch.Text)
	}
}
