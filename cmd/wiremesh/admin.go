package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/wiremesh/wiremesh/client"
	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/wire"
)

// adminFlags are the flags every admin verb takes.
type adminFlags struct {
	coordinator string
	tokenFile   string
	asJSON      bool
}

func (a *adminFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&a.coordinator, "coordinator", "", "coordinator URL (default: the one in the admin token)")
	fs.StringVar(&a.tokenFile, "token-file", "", "admin token file (or the token itself in WIREMESH_TOKEN; default: /var/lib/wiremesh/admin.token if readable, as on the coordinator host)")
	fs.BoolVar(&a.asJSON, "json", false, "print JSON")
}

// defaultTokenFile is the coordinator's admin token in its default data
// dir: on the coordinator host, the CLI uses it when given no token.
var defaultTokenFile = "/var/lib/wiremesh/admin.token"

// adminClient calls the coordinator's admin API with a pinned connection.
// Of several coordinators (the admin token names every one that shares
// the database), it tries them in turn while one cannot be reached or
// answers 503.
type adminClient struct {
	apis []*client.Client
	// source is the token file when it is defaultTokenFile, which errors
	// name: the admin did not choose it.
	source string
}

func (a *adminFlags) client() (*adminClient, error) {
	var text, from string
	defaulted := false
	switch {
	case a.tokenFile != "":
		b, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read admin token: %w", err)
		}
		text, from = string(b), "--token-file "+a.tokenFile
	case os.Getenv("WIREMESH_TOKEN") != "":
		text, from = os.Getenv("WIREMESH_TOKEN"), "WIREMESH_TOKEN"
	default:
		b, err := os.ReadFile(defaultTokenFile)
		if err != nil {
			return nil, fmt.Errorf("no admin token: give --token-file FILE or set WIREMESH_TOKEN (%s, the coordinator's, is not readable here: %w)", defaultTokenFile, errors.Unwrap(err))
		}
		text, from = string(b), defaultTokenFile+" (no --token-file or WIREMESH_TOKEN given)"
		defaulted = true
	}
	b, err := credential.ParseAdminToken(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	urls := b.URLs()
	if a.coordinator != "" {
		urls = []string{strings.TrimRight(a.coordinator, "/")}
	}
	c := &adminClient{}
	for _, u := range urls {
		api, err := client.New(client.Config{URL: u, Pins: b.Pins, Token: b.Secret.String(), Timeout: 30 * time.Second})
		if err != nil {
			return nil, err
		}
		c.apis = append(c.apis, api)
	}
	if defaulted {
		c.source = defaultTokenFile
	}
	return c, nil
}

// do sends a request and decodes a 2xx JSON answer into out (if non-nil);
// other answers become errors with the coordinator's message.
func (c *adminClient) do(ctx context.Context, method, path string, body, out any) error {
	return c.each(func(api *client.Client) error {
		_, err := api.Do(ctx, method, path, body, out)
		return err
	})
}

// each runs call with each coordinator's client in turn until one is not
// unreachable: it could not connect (so the request was not sent) or it
// answered 503 (so it did not carry it out).
func (c *adminClient) each(call func(*client.Client) error) error {
	var err error
	for _, api := range c.apis {
		err = call(api)
		var op *net.OpError
		if !(errors.As(err, &op) && op.Op == "dial") && client.StatusOf(err) != http.StatusServiceUnavailable {
			break
		}
	}
	return c.named(coordinatorError(err))
}

// named adds the token file to err when the admin did not choose it.
func (c *adminClient) named(err error) error {
	if err == nil || c.source == "" {
		return err
	}
	return fmt.Errorf("%w (with the admin token of %s)", err, c.source)
}

// getAll GETs every page of a paginated list, following Link headers.
func getAll[T any](ctx context.Context, c *adminClient, path string) ([]T, error) {
	var all []T
	err := c.each(func(api *client.Client) (err error) {
		all, err = client.List[T](ctx, api, path)
		return err
	})
	return all, err
}

// coordinatorError says that an answer's error came from the coordinator.
func coordinatorError(err error) error {
	if client.StatusOf(err) != 0 {
		return fmt.Errorf("coordinator: %w", err)
	}
	return err
}

// call sends one admin request and prints its answer out: as JSON with
// --json, otherwise with human (nil: nothing to print).
func (a *adminFlags) call(cmd *cobra.Command, method, path string, body, out any, human func(io.Writer) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	if err := c.do(cmd.Context(), method, path, body, out); err != nil {
		return err
	}
	if a.asJSON && out != nil {
		return printJSON(cmd.OutOrStdout(), out)
	}
	if human == nil {
		return nil
	}
	return human(cmd.OutOrStdout())
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

func newKeysCmd() *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{Use: "keys", Short: "Manage join keys"}
	af.add(cmd.PersistentFlags())

	var req wire.CreateJoinKeyRequest
	var expiry, nodeExpiry time.Duration
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a join key and print it (only here)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if expiry < 0 {
				return errors.New("--expiry must not be negative")
			}
			if nodeExpiry < 0 {
				return errors.New("--node-expiry must not be negative")
			}
			req.Expiry, req.NodeExpiry = wire.Duration(expiry), wire.Duration(nodeExpiry)
			req.Tags = normalizeTags(req.Tags)
			var out wire.CreateJoinKeyResponse
			return af.call(cmd, http.MethodPost, wire.PathJoinKeys, req, &out, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, out.JoinKey)
				return err
			})
		},
	}
	create.Flags().BoolVar(&req.Reusable, "reusable", false, "admit any number of nodes (default: one)")
	durationVar(create.Flags(), &expiry, "expiry", 0, "validity, e.g. 12h or 7d (default: forever)")
	create.Flags().StringSliceVar(&req.Tags, "tag", nil, "tag given to nodes the key admits, tag:NAME or NAME (repeatable)")
	durationVar(create.Flags(), &nodeExpiry, "node-expiry", 0, "each admitted node expires this long after it enrolls, e.g. 30d (default: never)")
	create.Flags().BoolVar(&req.Ephemeral, "ephemeral", false, "admitted nodes are deleted once offline for the coordinator's --ephemeral-timeout")
	create.Flags().BoolVar(&req.Relay, "relay", false, "the key enrolls standalone relays (wiremesh relay) and no agent; without it a key enrolls agents and no relay")

	list := &cobra.Command{
		Use:   "list",
		Short: "List join keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var keys []wire.JoinKey
			return af.call(cmd, http.MethodGet, wire.PathJoinKeys, nil, &keys, func(w io.Writer) error { return keysTable(w, keys) })
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join key",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return af.call(cmd, http.MethodDelete, wire.PathJoinKeys+"/"+args[0], nil, nil, nil)
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func keysTable(w io.Writer, keys []wire.JoinKey) error {
	var rows [][]string
	for _, k := range keys {
		state := "valid"
		switch {
		case !k.Revoked.IsZero():
			state = "revoked"
		case !k.Expires.IsZero() && time.Now().After(k.Expires):
			state = "expired"
		case !k.Reusable && k.Uses > 0:
			state = "used"
		}
		exp := "never"
		if !k.Expires.IsZero() {
			exp = k.Expires.Format(time.RFC3339)
		}
		var nodes []string
		if k.NodeExpiry > 0 {
			nodes = append(nodes, "expire after "+time.Duration(k.NodeExpiry).String())
		}
		if k.Ephemeral {
			nodes = append(nodes, "ephemeral")
		}
		if k.Relay {
			nodes = append(nodes, "relay")
		}
		rows = append(rows, []string{k.ID, state, fmt.Sprint(k.Reusable), fmt.Sprint(k.Uses), k.Created.UTC().Format(time.RFC3339), exp, orDash(strings.Join(nodes, ",")), strings.Join(k.Tags, ",")})
	}
	return table(w, "ID\tSTATE\tREUSABLE\tUSES\tCREATED\tEXPIRES\tNODES\tTAGS", rows)
}

func newNodesCmd() *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{Use: "nodes", Short: "Manage nodes"}
	af.add(cmd.PersistentFlags())
	list := &cobra.Command{
		Use:   "list",
		Short: "List nodes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			nodes, err := getAll[wire.Node](cmd.Context(), c, wire.PathNodes)
			if err != nil {
				return err
			}
			if af.asJSON {
				return printJSON(cmd.OutOrStdout(), nodes)
			}
			return nodesTable(cmd.OutOrStdout(), nodes)
		},
	}
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a node, its peers, services and access under the policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var d wire.NodeDetail
			return af.call(cmd, http.MethodGet, wire.PathNodes+"/"+url.PathEscape(args[0]), nil, &d, func(w io.Writer) error { return nodeDetail(w, d) })
		},
	}
	var expireAt string
	var expireIn time.Duration
	var expireNever bool
	expire := &cobra.Command{
		Use:   "expire NAME",
		Short: "Expire a node (now, --at TIME or --in DURATION): its peers drop it, its credential is refused, it must re-enroll",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req wire.ExpireRequest
			set := 0
			if expireAt != "" {
				t, err := time.Parse(time.RFC3339, expireAt)
				if err != nil {
					return fmt.Errorf("--at %q: want a time such as 2027-01-31T18:00:00Z: %w", expireAt, err)
				}
				req.At, set = t, set+1
			}
			if cmd.Flags().Changed("in") {
				if expireIn <= 0 {
					return errors.New("--in must be positive")
				}
				req.At, set = time.Now().Add(expireIn), set+1
			}
			if expireNever {
				req.Never, set = true, set+1
			}
			if set > 1 {
				return errors.New("give at most one of --at, --in and --never")
			}
			var n wire.Node
			return af.call(cmd, http.MethodPost, wire.PathNodes+"/"+url.PathEscape(args[0])+"/expire", req, &n, func(w io.Writer) error {
				return nodesTable(w, []wire.Node{n})
			})
		},
	}
	expire.Flags().StringVar(&expireAt, "at", "", "expire at this RFC 3339 time instead of now")
	durationVar(expire.Flags(), &expireIn, "in", 0, "expire this long from now instead of now, e.g. 24h or 7d")
	expire.Flags().BoolVar(&expireNever, "never", false, "clear a future expiry (an expired node must enroll again)")
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a node; its peers drop it and its credential stops working",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return af.call(cmd, http.MethodDelete, wire.PathNodes+"/"+args[0], nil, nil, nil)
		},
	}
	tag := &cobra.Command{
		Use:   "tag NAME [TAG...]",
		Short: "Set a node's tags, tag:NAME or NAME (none: remove all)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tags := normalizeTags(args[1:])
			return af.call(cmd, http.MethodPut, wire.PathNodes+"/"+args[0]+"/tags", wire.SetTagsRequest{Tags: tags}, nil, nil)
		},
	}
	cmd.AddCommand(list, get, del, tag, expire)
	return cmd
}

// normalizeTags writes each tag as tag:NAME ("web" is "tag:web"), as the
// UI does.
func normalizeTags(tags []string) []string {
	if tags == nil {
		return nil
	}
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = wire.NormalizeTag(t)
	}
	return out
}

func nodesTable(w io.Writer, nodes []wire.Node) error {
	var rows [][]string
	for _, n := range nodes {
		var addrs []string
		for _, a := range n.Addresses {
			addrs = append(addrs, a.Addr().String())
		}
		online := "offline"
		switch {
		case !n.Expires.IsZero() && !n.Expires.After(time.Now()):
			online = "expired"
		case n.Online:
			online = "online"
		}
		if n.Ephemeral {
			online += ",ephemeral"
		}
		eps := n.Endpoints
		if n.Relay != nil {
			online += ",relay"
			eps = []string{n.Relay.URL}
		}
		expires := "never"
		if !n.Expires.IsZero() {
			expires = n.Expires.Format(time.RFC3339)
		}
		var svcs []string
		for _, sv := range n.Services {
			if sv.Refused != "" {
				svcs = append(svcs, sv.Name+"(not allowed)")
				continue
			}
			svcs = append(svcs, sv.Name+"("+orDash(sv.Health)+")")
		}
		rows = append(rows, []string{n.Name, strings.Join(addrs, ","), online, wire.LastSeen(n.Online, n.LastSeen, time.Now()), orDash(strings.Join(eps, ",")), orDash(strings.Join(n.Tags, ",")), orDash(strings.Join(svcs, ",")), expires, orDash(n.Version)})
	}
	return table(w, "NAME\tADDRESSES\tSTATE\tLAST SEEN\tENDPOINTS\tTAGS\tSERVICES\tEXPIRES\tVERSION", rows)
}

func nodeDetail(w io.Writer, d wire.NodeDetail) error {
	if err := nodesTable(w, []wire.Node{d.Node}); err != nil {
		return err
	}
	if r := d.Node.Relay; r != nil {
		fmt.Fprintf(w, "\nrelay %s at %s, pins %s, STUN %s\n", r.Name, r.URL, strings.Join(r.Pins, ", "), orDash(strings.Join(r.STUN, ", ")))
	}
	fmt.Fprintf(w, "\npeers: %s\n", orDash(strings.Join(d.Peers, ", ")))
	for _, sec := range []struct {
		title string
		acc   []wire.Access
	}{{"may reach", d.Reaches}, {"reached by", d.ReachedBy}} {
		fmt.Fprintf(w, "%s:\n", sec.title)
		if len(sec.acc) == 0 {
			fmt.Fprintln(w, "  nothing")
		}
		for _, a := range sec.acc {
			fmt.Fprintf(w, "  %s\n", a.Text)
		}
	}
	return connectivityText(w, d.Node.Connectivity)
}

// connectivityText writes what a node last reported about how it reaches
// the mesh: its NAT type, home relay and the path to each peer.
func connectivityText(w io.Writer, c *wire.Connectivity) error {
	if c == nil {
		_, err := fmt.Fprintln(w, "connectivity: not reported since the coordinator started")
		return err
	}
	fmt.Fprintf(w, "connectivity: NAT %s, home relay %s (reported %s)\n", c.NAT, orDash(c.HomeRelay), ago(c.Reported))
	var rows [][]string
	for _, p := range c.Paths {
		path := p.Kind
		switch p.Kind {
		case wire.PathKindDirect:
			path += " " + p.Addr
		case wire.PathKindRelay:
			path += " " + p.Relay
		}
		rtt := "-"
		if p.RTT > 0 {
			rtt = time.Duration(p.RTT).Round(100 * time.Microsecond).String()
		}
		rows = append(rows, []string{"  " + p.Peer, path, rtt, ago(p.Since), orDash(p.Why)})
	}
	if len(rows) == 0 {
		return nil
	}
	return table(w, "  PEER\tPATH\tRTT\tSINCE\tWHY NOT DIRECT", rows)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newGossipCmd() *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{Use: "gossip", Short: "Manage the gossip encryption keys"}
	af.add(cmd.PersistentFlags())
	show := func(info *wire.GossipKeys) func(io.Writer) error {
		return func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%d key(s); primary created %s\n", info.Count, info.PrimaryCreated.Format(time.RFC3339))
			return err
		}
	}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Make a new primary gossip key; old keys still decrypt until 'gossip retire'",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var info wire.GossipKeys
			return af.call(cmd, http.MethodPost, wire.PathGossipRotate, struct{}{}, &info, show(&info))
		},
	}
	retire := &cobra.Command{
		Use:   "retire",
		Short: "Remove every gossip key but the primary (once the rotation reached every node)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var info wire.GossipKeys
			return af.call(cmd, http.MethodPost, wire.PathGossipRetire, struct{}{}, &info, show(&info))
		},
	}
	cmd.AddCommand(rotate, retire)
	return cmd
}
