// Command wiremesh is the one binary of a wiremesh mesh: the coordinator,
// the agent, and the CLI verbs that administer them.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "wiremesh:", err)
		stop()
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "wiremesh",
		Short:         "WireGuard overlay mesh with identity-based access control",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd)
		},
	}
	root.AddCommand(newCoordinatorCmd(), newAgentCmd(), newKeysCmd(), newNodesCmd(), newACLCmd(), newStatusCmd(), newFlowsCmd(), newServicesCmd(), newChecksCmd(), newGossipCmd(), newAuditCmd(), newTokensCmd(), newPingCmd(), newRotateKeyCmd(), newRelayCmd())
	for _, c := range root.Commands() {
		explainArgs(c)
	}
	return root
}

// suggest returns the verbs of cmd close to typed: cobra's suggestions,
// only those with typed's first letter if there are any (lst: list, not
// get).
func suggest(cmd *cobra.Command, typed string) []string {
	all := cmd.SuggestionsFor(typed)
	var same []string
	for _, s := range all {
		if typed != "" && s[0] == typed[0] {
			same = append(same, s)
		}
	}
	if len(same) > 0 {
		return same
	}
	return all
}

// explainArgs makes every command below root say what is wrong with its
// arguments: a wrong count prints the verb's usage line, and an unknown
// verb under a group (wiremesh nodes lst) is an error with suggestions,
// not help and exit 0.
func explainArgs(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		explainArgs(c)
	}
	if cmd.HasSubCommands() && !cmd.Runnable() {
		cmd.Args = cobra.ArbitraryArgs
		cmd.SuggestionsMinimumDistance = 2
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			err := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := suggest(cmd, args[0]); len(s) > 0 {
				err += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			return fmt.Errorf("%s (see %s --help)", err, cmd.CommandPath())
		}
		return
	}
	if check := cmd.Args; check != nil {
		cmd.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				usage := cmd.CommandPath()
				if _, params, ok := strings.Cut(cmd.Use, " "); ok {
					usage += " " + params
				}
				return fmt.Errorf("%w\nusage: %s", err, usage)
			}
			return nil
		}
	}
}

// applyEnv gives every flag not set on the command line the value of its
// WIREMESH_* environment variable (--state-dir ← WIREMESH_STATE_DIR).
func applyEnv(cmd *cobra.Command) error {
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			return
		}
		name := "WIREMESH_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			if err := sv.Replace(strings.Split(v, ",")); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	})
	return errors.Join(errs...)
}

// logFlags are the logging flags of the daemons.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger() (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q", l.level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("bad --log-format %q: want text or json", l.format)
}
