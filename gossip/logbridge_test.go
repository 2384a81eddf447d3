package gossip

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLogBridge(t *testing.T) {
	var buf bytes.Buffer
	l := newStdLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level: slog.LevelDebug - 4,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})))
	l.Printf("[DEBUG] memberlist: Stream connection from=127.0.0.1:1")
	l.Printf("[INFO] serf: EventMemberJoin: n1 10.0.0.1")
	l.Printf("[WARN] serf: Shutdown without a Leave")
	l.Printf("[ERR] memberlist: failed to receive: No installed keys could decrypt the message")
	l.Printf("no level at all")
	l.Printf("[TRACE] noisy")
	want := `level=DEBUG msg="memberlist: Stream connection from=127.0.0.1:1"
level=INFO msg="serf: EventMemberJoin: n1 10.0.0.1"
level=WARN msg="serf: Shutdown without a Leave"
level=ERROR msg="memberlist: failed to receive: No installed keys could decrypt the message"
level=INFO msg="no level at all"
level=DEBUG-4 msg=noisy
`
	if got := buf.String(); got != want {
		t.Errorf("bridged logs:\n%s\nwant:\n%s", got, want)
	}

	buf.Reset()
	quiet := newStdLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	quiet.Printf("[DEBUG] dropped")
	quiet.Printf("[INFO] dropped")
	quiet.Printf("[WARN] kept")
	if got := buf.String(); strings.Contains(got, "dropped") || !strings.Contains(got, "kept") {
		t.Errorf("level filtering: %q", got)
	}
}
