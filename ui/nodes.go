package ui

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// nodesData is the nodes page's data.
type nodesData struct {
	Nodes []wire.Node
	// After is this page's cursor ("": the first page); Next the next
	// page's ("": this is the last).
	After, Next string
	Limit       int
	// LiveURL is the fragment the script polls for the table's rows.
	LiveURL string
}

// maxPage bounds ?limit= of a listing page: a page of 1,000 nodes takes
// about 20 ms to render, and the script fetches it again every 2 s.
const maxPage = 1000

// pageParams reads ?limit= and ?after= of a listing page.
func (u *UI) pageParams(r *http.Request) (limit int, after string) {
	q := r.URL.Query()
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit <= 0 {
		limit = u.cfg.PageSize
	}
	return min(limit, maxPage), q.Get("after")
}

func (u *UI) handleNodes(w http.ResponseWriter, r *http.Request, s *session) {
	limit, after := u.pageParams(r)
	var nodes []wire.Node
	h, err := u.api.call(r.Context(), s.token, http.MethodGet, pagePath(wire.PathNodes, limit, after), nil, &nodes)
	if err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	live := url.Values{"fragment": {"rows"}, "limit": {strconv.Itoa(limit)}}
	if after != "" {
		live.Set("after", after)
	}
	d := nodesData{Nodes: nodes, After: after, Next: nextCursor(h), Limit: limit, LiveURL: "/ui/nodes?" + live.Encode()}
	if r.URL.Query().Get("fragment") == "rows" {
		u.renderFragment(w, r, s, "nodes", "rows", d)
		return
	}
	u.render(w, r, s, http.StatusOK, "nodes", "Nodes", d)
}

// nodePath is the API path of one node, with suffix ("", "/tags", …).
func nodePath(name, suffix string) string {
	return wire.PathNodes + "/" + url.PathEscape(name) + suffix
}

// nodeDetail fetches one node with its peers and access.
func (u *UI) nodeDetail(r *http.Request, s *session) (wire.NodeDetail, error) {
	var d wire.NodeDetail
	_, err := u.api.call(r.Context(), s.token, http.MethodGet, nodePath(r.PathValue("name"), ""), nil, &d)
	return d, err
}

// expireChoices are the expiries, from now, that the node page offers.
var expireChoices = []durationChoice{
	{"1h", "in 1 hour", time.Hour},
	{"24h", "in 1 day", 24 * time.Hour},
	{"168h", "in 7 days", 7 * 24 * time.Hour},
	{"720h", "in 30 days", 30 * 24 * time.Hour},
}

// nodeData is the node page's data.
type nodeData struct {
	wire.NodeDetail
	ExpireIn []durationChoice // expireChoices, for the expiry form
	Message  string           // an API error about the expiry form
}

func (u *UI) handleNode(w http.ResponseWriter, r *http.Request, s *session) {
	u.nodePage(w, r, s, http.StatusOK, "")
}

// nodePage renders the node page, with msg (if any) at the expiry form.
func (u *UI) nodePage(w http.ResponseWriter, r *http.Request, s *session, code int, msg string) {
	d, err := u.nodeDetail(r, s)
	if err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	u.render(w, r, s, code, "node", d.Node.Name, nodeData{NodeDetail: d, ExpireIn: expireChoices, Message: msg})
}

// handleSetExpiry schedules the node's expiry (the form's "in", one of
// expireChoices) or clears a future one ("in" = "never").
func (u *UI) handleSetExpiry(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	var req wire.ExpireRequest
	if in := r.PostForm.Get("in"); in == "never" {
		req.Never = true
	} else if d, ok := choose(expireChoices, in); ok {
		req.At = u.cfg.Now().Add(d).UTC().Truncate(time.Second)
	} else {
		u.nodePage(w, r, s, http.StatusBadRequest, "choose when the node expires from the list")
		return
	}
	var n wire.Node
	_, err := u.api.call(r.Context(), s.token, http.MethodPost, nodePath(name, "/expire"), req, &n)
	if st := formStatus(err); st != 0 {
		u.nodePage(w, r, s, st, err.Error())
		return
	}
	if err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	u.log.Info("ui: node changed", "node", name, "action", "expiry", "token", s.tokenID)
	switch now := u.cfg.Now(); {
	case n.Expires.IsZero():
		u.setFlash(r, s, "Node "+name+" no longer expires.")
	case upcoming(now, n.Expires):
		u.setFlash(r, s, "Node "+name+" expires "+untilText(now, n.Expires)+" ("+whenText(n.Expires)+"): it is then cut off until it enrolls again.")
	default:
		u.setFlash(r, s, "Node "+name+" has expired.")
	}
	http.Redirect(w, r, "/ui/nodes/"+url.PathEscape(name), http.StatusSeeOther)
}

// formStatus is the status of an API error that a form shows next to
// its fields (a refused value, a conflict), or 0 for the others: no
// error, not an API error, 401 (the session ends) and 404 (an error
// page).
func formStatus(err error) int {
	if st := statusOf(err); st >= 400 && st < 500 && st != http.StatusUnauthorized && st != http.StatusNotFound {
		return st
	}
	return 0
}

// tagsData is the data of the tag form and its confirmation.
type tagsData struct {
	Node    wire.Node
	Text    string   // the tags as typed
	Tags    []string // the tags that will be set
	Message string   // an API error
}

func (u *UI) handleTagsForm(w http.ResponseWriter, r *http.Request, s *session) {
	d, err := u.nodeDetail(r, s)
	if err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	u.render(w, r, s, http.StatusOK, "tags", "Tags of "+d.Node.Name, tagsData{Node: d.Node, Text: strings.Join(d.Node.Tags, " ")})
}

// parseTags reads tags separated by spaces or commas; "web" means
// "tag:web".
func parseTags(text string) []string {
	tags := []string{}
	for _, f := range strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' }) {
		f = wire.NormalizeTag(f)
		if !slices.Contains(tags, f) {
			tags = append(tags, f)
		}
	}
	return tags
}

// handleSetTags shows the change for confirmation, and makes it once
// confirmed.
func (u *UI) handleSetTags(w http.ResponseWriter, r *http.Request, s *session) {
	d, err := u.nodeDetail(r, s)
	if err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	td := tagsData{Node: d.Node, Text: r.PostForm.Get("tags"), Tags: parseTags(r.PostForm.Get("tags"))}
	if r.PostForm.Get("confirm") != "yes" {
		u.render(w, r, s, http.StatusOK, "tags-confirm", "Set tags of "+d.Node.Name+"?", td)
		return
	}
	_, err = u.api.call(r.Context(), s.token, http.MethodPut, nodePath(d.Node.Name, "/tags"), wire.SetTagsRequest{Tags: td.Tags}, nil)
	if st := formStatus(err); st != 0 {
		td.Message = err.Error()
		u.render(w, r, s, st, "tags", "Tags of "+d.Node.Name, td)
		return
	}
	if err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	u.setFlash(r, s, "Tags of "+d.Node.Name+" set to "+tagList(td.Tags)+".")
	http.Redirect(w, r, "/ui/nodes/"+url.PathEscape(d.Node.Name), http.StatusSeeOther)
}

func tagList(tags []string) string {
	if len(tags) == 0 {
		return "none"
	}
	return strings.Join(tags, " ")
}

// nodeActions are the node changes that need a confirmation, by the
// path element that names them.
var nodeActions = map[string]struct{ verb, method, suffix, done string }{
	"delete": {"Delete", http.MethodDelete, "", "deleted: its peers drop it and its credential is refused"},
	"expire": {"Expire", http.MethodPost, "/expire", "expired: it is cut off until it enrolls again"},
}

// confirmData is a confirmation page's data.
type confirmData struct {
	Node   wire.Node
	Action string // the path element
	Verb   string
}

func (u *UI) handleNodeConfirm(w http.ResponseWriter, r *http.Request, s *session) {
	act, ok := nodeActions[r.PathValue("action")]
	if !ok {
		u.handleNotFound(w, r)
		return
	}
	d, err := u.nodeDetail(r, s)
	if err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	u.render(w, r, s, http.StatusOK, "node-confirm", act.verb+" "+d.Node.Name+"?", confirmData{Node: d.Node, Action: r.PathValue("action"), Verb: act.verb})
}

func (u *UI) handleNodeAction(w http.ResponseWriter, r *http.Request, s *session) {
	act, ok := nodeActions[r.PathValue("action")]
	if !ok {
		u.handleNotFound(w, r)
		return
	}
	name := r.PathValue("name")
	if _, err := u.api.call(r.Context(), s.token, act.method, nodePath(name, act.suffix), nil, nil); err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	u.log.Info("ui: node changed", "node", name, "action", r.PathValue("action"), "token", s.tokenID)
	u.setFlash(r, s, "Node "+name+" "+act.done+".")
	next := "/ui/nodes"
	if r.PathValue("action") == "expire" {
		next += "/" + url.PathEscape(name)
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (u *UI) handleNotFound(w http.ResponseWriter, r *http.Request) {
	s, _ := u.session(r)
	u.render(w, r, s, http.StatusNotFound, "error", "Not found", errorData{Message: "No such page: " + r.URL.Path})
}
