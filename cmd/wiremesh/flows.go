package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/wiremesh/wiremesh/node"
	"github.com/wiremesh/wiremesh/wire"
)

func newFlowsCmd() *cobra.Command {
	var (
		stateDir string
		follow   bool
		asJSON   bool
		last     int
	)
	cmd := &cobra.Command{
		Use:   "flows",
		Short: "Show the packet filter's flow records from the local agent",
		Long: `Show the flow records the local agent keeps: packets its filter denied and,
if it runs with --log-new-flows, the inbound flows it let in, oldest first,
with the sending node's name, the destination, and the reason or the rule.
--follow keeps printing new records until interrupted; --json prints the
records as the agent serves them, one JSON object a line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if follow {
				q.Set("follow", "1")
			}
			if last >= 0 {
				q.Set("n", strconv.Itoa(last))
			}
			client := node.LocalClient(stateDir)
			client.Timeout = 0 // --follow runs until interrupted
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodGet, "http://agent/v1/flows?"+q.Encode(), nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("no agent answers on %s/%s (is it running?): %w", stateDir, node.SocketName, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				var e wire.Error
				if json.Unmarshal(raw, &e) != nil || e.Error == "" {
					e.Error = resp.Status
				}
				return fmt.Errorf("agent: %s", e.Error)
			}
			err = printFlows(cmd.OutOrStdout(), resp.Body, asJSON, follow)
			if cmd.Context().Err() != nil {
				return nil // interrupted while following
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&stateDir, "state-dir", "/var/lib/wiremesh-agent", "the agent's state dir")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new records")
	f.BoolVar(&asJSON, "json", false, "print the records as JSON lines")
	f.IntVarP(&last, "lines", "n", -1, "print only the last N records (-1: all the agent keeps; 0 with --follow: only new ones)")
	return cmd
}

// flowColumns is the header of the human output.
const flowColumns = "TIME\tEVENT\tPEER\tSOURCE\tDESTINATION\tPROTO\tDECISION\tPOLICY"

// printFlows copies the JSON lines of r to w, or prints them as a table.
// Following, rows are printed as they come, in fixed-width columns.
func printFlows(w io.Writer, r io.Reader, asJSON, follow bool) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var rows [][]string
	if follow && !asJSON {
		fmt.Fprintln(w, followRow(strings.Split(flowColumns, "\t")))
	}
	for sc.Scan() {
		if asJSON {
			if _, err := fmt.Fprintf(w, "%s\n", sc.Bytes()); err != nil {
				return err
			}
			continue
		}
		var rec node.FlowRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return fmt.Errorf("bad record from agent: %w", err)
		}
		row := flowRow(rec)
		if follow {
			if _, err := fmt.Fprintln(w, followRow(row)); err != nil {
				return err
			}
			continue
		}
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading records: %w", err)
	}
	if follow || asJSON {
		return nil
	}
	return table(w, flowColumns, rows)
}

// flowRow is a record's row of the human output.
func flowRow(r node.FlowRecord) []string {
	src, dst := r.Src, r.Dst
	if r.SrcPort != 0 {
		src = net.JoinHostPort(src, strconv.Itoa(int(r.SrcPort)))
	}
	if r.Port != 0 {
		dst = net.JoinHostPort(dst, strconv.Itoa(int(r.Port)))
	}
	decision := r.Why
	if r.Rule != nil {
		decision = "rule " + strconv.Itoa(*r.Rule)
	}
	if r.Suppressed > 0 {
		decision += fmt.Sprintf(" (+%d not recorded)", r.Suppressed)
	}
	return []string{r.Time.Local().Format(time.TimeOnly + ".000"), r.Event, orDash(r.Peer), orDash(src), orDash(dst), orDash(r.Proto), orDash(decision), "v" + strconv.FormatUint(r.Policy, 10)}
}

// followRow lays a row out in fixed widths, so that rows printed one by
// one line up.
func followRow(row []string) string {
	widths := []int{12, 6, 16, 28, 28, 6, 16}
	var b strings.Builder
	for i, c := range row {
		if i < len(widths) {
			fmt.Fprintf(&b, "%-*s  ", widths[i], c)
		} else {
			b.WriteString(c)
		}
	}
	return b.String()
}
