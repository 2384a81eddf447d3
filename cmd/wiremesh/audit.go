package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/wiremesh/wiremesh/wire"
)

func newAuditCmd() *cobra.Command {
	var af adminFlags
	var limit int
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log of admin changes and enrollments, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			var entries []wire.AuditEntry
			if err := c.do(cmd.Context(), http.MethodGet, wire.PathAudit+"?limit="+strconv.Itoa(limit), nil, &entries); err != nil {
				return err
			}
			if af.asJSON {
				return printJSON(cmd.OutOrStdout(), entries)
			}
			var toks []wire.AdminToken
			if err := c.do(cmd.Context(), http.MethodGet, wire.PathAdminTokens, nil, &toks); err != nil {
				return err
			}
			return auditTable(cmd.OutOrStdout(), entries, toks)
		},
	}
	af.add(cmd.Flags())
	cmd.Flags().IntVar(&limit, "limit", 50, "entries to show")
	return cmd
}

// auditTable prints entries, each actor that is an admin token as its id
// and the token's comment, as the UI does.
func auditTable(w io.Writer, entries []wire.AuditEntry, toks []wire.AdminToken) error {
	names := make(map[string]string, len(toks))
	for _, t := range toks {
		if t.Comment != "" {
			names[t.ID] = t.ID + " (" + t.Comment + ")"
		}
	}
	var rows [][]string
	for _, e := range entries {
		actor := e.Actor
		if n, ok := names[actor]; ok {
			actor = n
		}
		rows = append(rows, []string{e.Time.Local().Format(time.DateTime), actor, e.Action, orDash(e.Target), orDash(e.Detail)})
	}
	return table(w, "TIME\tACTOR\tACTION\tTARGET\tDETAIL", rows)
}

func newTokensCmd() *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{Use: "tokens", Short: "Manage admin tokens"}
	af.add(cmd.PersistentFlags())
	var comment string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an admin token and print it (only here)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out wire.CreateAdminTokenResponse
			return af.call(cmd, http.MethodPost, wire.PathAdminTokens, wire.CreateAdminTokenRequest{Comment: comment}, &out, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, out.AdminToken)
				return err
			})
		},
	}
	create.Flags().StringVar(&comment, "comment", "", "who or what the token is for")
	list := &cobra.Command{
		Use:   "list",
		Short: "List admin tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var toks []wire.AdminToken
			return af.call(cmd, http.MethodGet, wire.PathAdminTokens, nil, &toks, func(w io.Writer) error {
				var rows [][]string
				for _, t := range toks {
					state := "valid"
					if !t.Revoked.IsZero() {
						state = "revoked"
					}
					rows = append(rows, []string{t.ID, state, t.Created.Local().Format(time.DateTime), orDash(t.Comment)})
				}
				return table(w, "ID\tSTATE\tCREATED\tCOMMENT", rows)
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an admin token (not the last valid one)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return af.call(cmd, http.MethodDelete, wire.PathAdminTokens+"/"+args[0], nil, nil, nil)
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
