package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// logBridge is the io.Writer behind the *log.Logger that serf and
// memberlist write to. Each Write is one line that starts with a level in
// brackets; the bridge logs the rest at that slog level.
type logBridge struct {
	log *slog.Logger
}

// newStdLogger returns a *log.Logger whose lines go to l.
func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(logBridge{log: l}, "", 0)
}

// levelPrefixes maps the bracketed level prefixes serf and memberlist use.
var levelPrefixes = []struct {
	prefix string
	level  slog.Level
}{
	{"[DEBUG]", slog.LevelDebug},
	{"[TRACE]", slog.LevelDebug - 4},
	{"[INFO]", slog.LevelInfo},
	{"[WARN]", slog.LevelWarn},
	{"[WARNING]", slog.LevelWarn},
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
}

// parseLogLine splits a serf/memberlist line into its level and message.
// A line without a known prefix is logged at Info.
func parseLogLine(p []byte) (slog.Level, []byte) {
	line := bytes.TrimSpace(p)
	for _, lp := range levelPrefixes {
		if rest, ok := bytes.CutPrefix(line, []byte(lp.prefix)); ok {
			return lp.level, bytes.TrimSpace(rest)
		}
	}
	return slog.LevelInfo, line
}

// Write logs one line. It always succeeds.
func (b logBridge) Write(p []byte) (int, error) {
	ctx := context.Background()
	level, msg := parseLogLine(p)
	if b.log.Enabled(ctx, level) {
		b.log.Log(ctx, level, string(msg))
	}
	return len(p), nil
}
