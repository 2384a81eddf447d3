package ui

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

//go:embed templates/*.html static/*
var assets embed.FS

// view is what every page's template gets.
type view struct {
	Title   string
	Nav     string // the menu entry to mark current
	CSRF    string // the session's CSRF token; empty when logged out
	TokenID string // the id (not the secret) of the session's admin token
	Flash   string
	PollMS  int64
	Now     time.Time
	Data    any
}

// parsePages parses every page template together with the layout.
func parsePages() (map[string]*template.Template, error) {
	files, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, f := range files {
		name := strings.TrimSuffix(path.Base(f), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "templates/layout.html", f)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", f, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// render writes a whole page. s is nil when logged out.
func (u *UI) render(w http.ResponseWriter, r *http.Request, s *session, code int, page, title string, data any) {
	u.execute(w, r, s, code, page, "layout", title, data)
}

// renderFragment writes one named part of a page, for the live script.
func (u *UI) renderFragment(w http.ResponseWriter, r *http.Request, s *session, page, fragment string, data any) {
	u.execute(w, r, s, http.StatusOK, page, fragment, "", data)
}

func (u *UI) execute(w http.ResponseWriter, r *http.Request, s *session, code int, page, tmpl, title string, data any) {
	t := u.pages[page]
	if t == nil {
		http.Error(w, "no such page template: "+page, http.StatusInternalServerError)
		return
	}
	v := view{Title: title, Nav: navOf(page), PollMS: u.cfg.PollInterval.Milliseconds(), Now: u.cfg.Now(), Data: data}
	if s != nil {
		v.CSRF, v.TokenID = s.csrf, s.tokenID
		if tmpl == "layout" {
			v.Flash = u.takeFlash(r, s)
		}
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, tmpl, v); err != nil {
		u.log.Error("ui: render", "page", page, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// navOf is the menu entry a page belongs to.
func navOf(page string) string {
	switch page {
	case "node", "tags", "tags-confirm", "node-confirm":
		return "nodes"
	case "history", "version", "rollback":
		return "policy"
	case "key-confirm":
		return "keys"
	}
	return page
}

// funcs are the helpers templates may call.
var funcs = template.FuncMap{
	"addrs":     addrsText,
	"join":      strings.Join,
	"when":      whenText,
	"ago":       agoText,
	"ports":     portsText,
	"first":     firstOr,
	"add":       func(a, b int) int { return a + b },
	"health":    healthClass,
	"nonzero":   func(t time.Time) bool { return !t.IsZero() },
	"keystate":  keyState,
	"textrows":  textRows,
	"nodestate": nodeState,
	"until":     untilText,
	"upcoming":  upcoming,
	"lifetime":  lifetimeText,
	"rtt":       rttText,
}

// upcoming reports whether t is set and after now: an expiry still to
// come.
func upcoming(now, t time.Time) bool {
	return !t.IsZero() && t.After(now)
}

// nodeState is "expired", "online" or "offline".
func nodeState(now time.Time, n wire.Node) string {
	switch {
	case !n.Expires.IsZero() && !now.Before(n.Expires):
		return "expired"
	case n.Online:
		return "online"
	}
	return "offline"
}

// textRows is a textarea height that fits text: 12 to 40 lines.
func textRows(text string) int {
	return min(max(strings.Count(text, "\n")+3, 12), 40)
}

// keyState says whether a join key still admits nodes: "valid",
// "revoked", "expired" or "used".
func keyState(now time.Time, k wire.JoinKey) string {
	switch {
	case !k.Revoked.IsZero():
		return "revoked"
	case !k.Expires.IsZero() && !now.Before(k.Expires):
		return "expired"
	case !k.Reusable && k.Uses > 0:
		return "used"
	}
	return "valid"
}

// addrsText lists overlay addresses without their /32 and /128.
func addrsText(ps []netip.Prefix) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		if p.IsSingleIP() {
			out[i] = p.Addr().String()
		} else {
			out[i] = p.String()
		}
	}
	return strings.Join(out, " ")
}

// whenText is a time for a table: UTC, to the second; "never" for zero.
func whenText(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// agoText says how long before now t was: "12s ago", "3h ago" (as the
// CLI says it: wire.Ago).
func agoText(now, t time.Time) string { return wire.Ago(t, now) }

// untilText says how long after now t is: "in 12s", "in 3h", "in 7d".
func untilText(now, t time.Time) string {
	d := t.Sub(now)
	switch {
	case d <= 0:
		return "now"
	case d < time.Minute:
		return fmt.Sprintf("in %ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("in %dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("in %dh", int(d.Hours()))
	default:
		return fmt.Sprintf("in %dd", int(d.Hours()/24))
	}
}

// lifetimeText writes a node lifetime: "none", "1 hour", "7 days", or
// the Go duration when it is not a whole number of hours ("1h30m0s").
func lifetimeText(d wire.Duration) string {
	td := time.Duration(d)
	plural := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit
		}
		return fmt.Sprintf("%d %ss", n, unit)
	}
	switch {
	case td <= 0:
		return "none"
	case td%(24*time.Hour) == 0:
		return plural(int64(td/(24*time.Hour)), "day")
	case td%time.Hour == 0:
		return plural(int64(td/time.Hour), "hour")
	}
	return td.String()
}

// portsText writes port ranges as "443,8000-8080".
func portsText(ps []wire.PortRange) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		if p.First == p.Last {
			out[i] = fmt.Sprint(p.First)
		} else {
			out[i] = fmt.Sprintf("%d-%d", p.First, p.Last)
		}
	}
	return strings.Join(out, ",")
}

func firstOr(s []string, def string) string {
	if len(s) == 0 {
		return def
	}
	return s[0]
}

// healthClass is the CSS class of a health state.
func healthClass(h string) string {
	switch h {
	case "passing", "warning", "critical":
		return h
	default:
		return "unknown"
	}
}

// rttText is a round-trip time as people read one: 1.2ms, 35ms, 1.1s.
func rttText(d wire.Duration) string {
	return time.Duration(d).Round(100 * time.Microsecond).String()
}
