package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wiremesh/wiremesh/wire"
)

// fakeAPI is an in-memory admin API with the wire conventions: bearer
// auth, wire.Error bodies, pagination by id with Link headers.
type fakeAPI struct {
	token string // the bearer secret it accepts

	mu       sync.Mutex
	nodes    []wire.Node // by id
	services []wire.CatalogService
	versions []wire.Policy // version i+1 at i
	keys     []wire.JoinKey
	audit    []wire.AuditEntry // newest first
	tokens   []wire.AdminToken
	calls    []string             // "METHOD /path?query" of every request
	expires  []wire.ExpireRequest // the body of every POST .../expire, none: zero
	failPut  bool                 // PUT policy answers 400 with a problem at line 1
	fail     int                  // answer every request with this status (0: no)
}

func newFakeAPI(token string) *fakeAPI { return &fakeAPI{token: token} }

// testTime is the fake's clock.
var testTime = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// seed fills the fake with n nodes, a service with checks, two policy
// versions, join keys and audit entries.
func (f *fakeAPI) seed(n int) *fakeAPI {
	for i := 1; i <= n; i++ {
		f.nodes = append(f.nodes, wire.Node{
			ID: int64(i), Name: fmt.Sprintf("node-%d", i), PublicKey: "cHVibGljLWtleS0wMDAwMDAwMDAwMDAwMDAwMDAwMDA=",
			Addresses: []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("100.64.%d.%d/32", i/250, i%250+1)), netip.MustParsePrefix(fmt.Sprintf("fd77:6d65:7368::%x/128", i))},
			Endpoints: []string{fmt.Sprintf("10.77.%d.%d:51820", i/250, i%250+1)}, Tags: []string{"tag:web"},
			Online: i%3 != 0, Created: testTime.Add(-time.Hour), LastSeen: testTime.Add(-time.Minute), Version: "0.5.0",
		})
	}
	if n > 0 {
		f.nodes[0].Connectivity = &wire.Connectivity{NAT: wire.NATHard, HomeRelay: "eu-1", Reported: testTime.Add(-30 * time.Second), Paths: []wire.PeerPath{
			{Peer: "node-2", Kind: wire.PathKindDirect, Addr: "203.0.113.7:41641", RTT: wire.Duration(1200 * time.Microsecond), Since: testTime.Add(-2 * time.Minute)},
			{Peer: "node-3", Kind: wire.PathKindRelay, Relay: "eu-1", RTT: wire.Duration(3 * time.Millisecond), Since: testTime.Add(-time.Minute), Why: "no answer from 2 candidates"},
		}}
	}
	f.services = []wire.CatalogService{{Name: "web", Instances: []wire.ServiceInstance{
		{Node: "node-1", Online: true, Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32")}, Service: wire.Service{
			Name: "web", Port: 8080, Tags: []string{"v1"}, Health: "passing",
			Checks: []wire.CheckStatus{{ID: "web-http", Status: "passing", Output: "HTTP GET http://127.0.0.1:8080/: 200 OK"}},
		}},
		{Node: "node-2", Online: true, Addresses: []netip.Prefix{netip.MustParsePrefix("100.64.0.3/32")}, Service: wire.Service{
			Name: "web", Port: 8080, Health: "critical",
			Checks: []wire.CheckStatus{{ID: "web-http", Status: "critical", Output: "connection refused"}},
		}},
	}}}
	f.versions = []wire.Policy{
		{Version: 1, Text: "{\n  \"acls\": [],\n}\n", Author: "ad0001", Created: testTime.Add(-2 * time.Hour)},
		{Version: 2, Text: "{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"svc:web\"]},\n  ],\n}\n", Author: "ad0001", Created: testTime.Add(-time.Hour)},
	}
	f.keys = []wire.JoinKey{
		{ID: "jk000000000001", Reusable: true, Tags: []string{"tag:web"}, Created: testTime.Add(-time.Hour), Uses: 3},
		{ID: "jk000000000002", Created: testTime.Add(-time.Hour), Revoked: testTime},
	}
	f.tokens = []wire.AdminToken{{ID: "ad0001", Comment: "ops laptop", Created: testTime.Add(-3 * time.Hour)}}
	for i := 1; i <= 30; i++ {
		f.audit = append([]wire.AuditEntry{{ID: int64(i), Time: testTime.Add(time.Duration(i) * time.Second), Actor: "ad0001", Action: "node.enroll", Target: fmt.Sprintf("node-%d", i)}}, f.audit...)
	}
	return f
}

// called reports whether a request with this prefix ("DELETE /v1/nodes")
// reached the fake.
func (f *fakeAPI) called(prefix string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return false
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.RequestURI())
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		apiError(w, http.StatusUnauthorized, "admin token required: unknown token", nil)
		return
	}
	if f.fail != 0 {
		apiError(w, f.fail, "the fake fails", nil)
		return
	}
	f.route(w, r)
}

// route serves r; f.mu is held.
func (f *fakeAPI) route(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case r.Method == "GET" && p == wire.PathNodes:
		f.nodesPage(w, r)
	case r.Method == "GET" && p == wire.PathServices:
		writeJSON(w, http.StatusOK, f.services)
	case r.Method == "GET" && p == wire.PathPolicy:
		f.getPolicy(w, r)
	case r.Method == "GET" && p == wire.PathPolicy+"/history":
		var h []wire.Policy
		for _, v := range f.versions {
			v.Text = ""
			h = append([]wire.Policy{v}, h...)
		}
		writeJSON(w, http.StatusOK, h)
	case r.Method == "POST" && p == wire.PathPolicy+"/check":
		f.checkPolicy(w, r)
	case r.Method == "PUT" && p == wire.PathPolicy:
		f.setPolicy(w, r)
	case r.Method == "POST" && p == wire.PathPolicy+"/rollback":
		f.rollback(w, r)
	case r.Method == "GET" && p == wire.PathJoinKeys:
		writeJSON(w, http.StatusOK, f.keys)
	case r.Method == "POST" && p == wire.PathJoinKeys:
		f.createKey(w, r)
	case r.Method == "DELETE" && strings.HasPrefix(p, wire.PathJoinKeys+"/"):
		w.WriteHeader(http.StatusNoContent)
	case r.Method == "GET" && p == wire.PathAudit:
		f.auditPage(w, r)
	case r.Method == "GET" && p == wire.PathAdminTokens:
		writeJSON(w, http.StatusOK, f.tokens)
	case strings.HasPrefix(p, wire.PathNodes+"/"):
		f.node(w, r)
	default:
		apiError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+p, nil)
	}
}

func apiError(w http.ResponseWriter, code int, msg string, detail any) {
	writeJSON(w, code, wire.Error{Error: msg, Detail: detail})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// pageOf is the part of items after the cursor, with the Link header.
// Items are sorted by id, descending if desc.
func pageOf[T any](w http.ResponseWriter, r *http.Request, items []T, id func(T) int64, desc bool) []T {
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit <= 0 {
		limit = wire.DefaultPageSize
	}
	out := []T{}
	for _, it := range items {
		if after != 0 && (desc && id(it) >= after || !desc && id(it) <= after) {
			continue
		}
		out = append(out, it)
		if len(out) == limit {
			w.Header().Set("Link", fmt.Sprintf("<%s?after=%d&limit=%d>; rel=\"next\"", r.URL.Path, id(it), limit))
			break
		}
	}
	return out
}

func (f *fakeAPI) nodesPage(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, pageOf(w, r, f.nodes, func(n wire.Node) int64 { return n.ID }, false))
}

func (f *fakeAPI) auditPage(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, pageOf(w, r, f.audit, func(e wire.AuditEntry) int64 { return e.ID }, true))
}

func (f *fakeAPI) getPolicy(w http.ResponseWriter, r *http.Request) {
	if v := r.URL.Query().Get("version"); v != "" {
		n, _ := strconv.Atoi(v)
		if n < 1 || n > len(f.versions) {
			apiError(w, http.StatusNotFound, "no policy version "+v, nil)
			return
		}
		writeJSON(w, http.StatusOK, f.versions[n-1])
		return
	}
	if len(f.versions) == 0 {
		writeJSON(w, http.StatusOK, wire.Policy{})
		return
	}
	writeJSON(w, http.StatusOK, f.versions[len(f.versions)-1])
}

// problems finds the fake's policy errors: every "oops" is one.
func problems(text string) []wire.PolicyError {
	var out []wire.PolicyError
	for i, line := range strings.Split(text, "\n") {
		if c := strings.Index(line, "oops"); c >= 0 {
			msg := `unknown key "oops"`
			out = append(out, wire.PolicyError{Line: i + 1, Column: c + 1, Message: msg, Text: fmt.Sprintf("policy.hujson:%d:%d: %s", i+1, c+1, msg)})
		}
	}
	return out
}

func (f *fakeAPI) checkPolicy(w http.ResponseWriter, r *http.Request) {
	var req wire.SetPolicyRequest
	json.NewDecoder(r.Body).Decode(&req)
	out := wire.PolicyCheck{ActiveVersion: uint64(len(f.versions)), Errors: problems(req.Text)}
	if out.Valid = len(out.Errors) == 0; out.Valid {
		out.Changes = []wire.AccessChange{{Gained: true, Src: "node-1", Dst: "node-2", Proto: "tcp", Text: "+ node-1 → node-2 tcp/8080"}}
		if strings.Contains(req.Text, `"services"`) {
			out.Providers = []wire.ProviderChange{{Allowed: false, Node: "node-2", Service: "web", Text: "- svc:web on node-2"}}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (f *fakeAPI) setPolicy(w http.ResponseWriter, r *http.Request) {
	var req wire.SetPolicyRequest
	json.NewDecoder(r.Body).Decode(&req)
	errs := problems(req.Text)
	if f.failPut {
		errs = []wire.PolicyError{{Line: 1, Column: 1, Message: "test failed: node-1 cannot reach node-2", Text: "policy.hujson:1:1: test failed: node-1 cannot reach node-2"}}
	}
	if len(errs) > 0 {
		writeJSON(w, http.StatusBadRequest, wire.Error{Code: wire.CodePolicyInvalid, Error: "policy rejected: " + errs[0].Text, Detail: errs})
		return
	}
	p := wire.Policy{Version: uint64(len(f.versions) + 1), Text: req.Text, Author: "ad0001", Created: testTime}
	f.versions = append(f.versions, p)
	writeJSON(w, http.StatusOK, p)
}

func (f *fakeAPI) rollback(w http.ResponseWriter, r *http.Request) {
	var req wire.RollbackRequest
	json.NewDecoder(r.Body).Decode(&req)
	if req.Version < 1 || int(req.Version) > len(f.versions) {
		apiError(w, http.StatusNotFound, "no such policy version", nil)
		return
	}
	p := f.versions[req.Version-1]
	p.Version, p.Comment = uint64(len(f.versions)+1), fmt.Sprintf("rollback to %d", req.Version)
	f.versions = append(f.versions, p)
	writeJSON(w, http.StatusOK, p)
}

func (f *fakeAPI) createKey(w http.ResponseWriter, r *http.Request) {
	var req wire.CreateJoinKeyRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		apiError(w, http.StatusBadRequest, "bad JSON", nil)
		return
	}
	k := wire.JoinKey{ID: fmt.Sprintf("jk%012d", len(f.keys)+1), Reusable: req.Reusable, Tags: req.Tags, Created: testTime,
		NodeExpiry: req.NodeExpiry, Ephemeral: req.Ephemeral}
	if req.Expiry != 0 {
		k.Expires = testTime.Add(time.Duration(req.Expiry))
	}
	f.keys = append(f.keys, k)
	writeJSON(w, http.StatusCreated, wire.CreateJoinKeyResponse{Key: k, JoinKey: "wmjoin1-SECRETJOINKEY" + k.ID})
}

// node serves the paths under /v1/nodes/NAME.
func (f *fakeAPI) node(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, wire.PathNodes+"/")
	name, suffix, _ := strings.Cut(rest, "/")
	i := -1
	for j, n := range f.nodes {
		if n.Name == name {
			i = j
		}
	}
	if i < 0 {
		apiError(w, http.StatusNotFound, fmt.Sprintf("node %q: not found", name), nil)
		return
	}
	switch {
	case r.Method == "GET" && suffix == "":
		n := f.nodes[i]
		n.Services = []wire.Service{f.services[0].Instances[0].Service}
		writeJSON(w, http.StatusOK, wire.NodeDetail{Node: n, Peers: []string{"node-2"},
			Reaches:   []wire.Access{{Node: "node-2", Proto: "tcp", Ports: []wire.PortRange{{First: 8080, Last: 8080}}, Text: "node-2 tcp/8080"}},
			ReachedBy: []wire.Access{{Node: "node-3", Proto: "icmp", Text: "node-3 icmp"}}})
	case r.Method == "DELETE" && suffix == "":
		f.nodes = append(f.nodes[:i], f.nodes[i+1:]...)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == "PUT" && suffix == "tags":
		var req wire.SetTagsRequest
		json.NewDecoder(r.Body).Decode(&req)
		for _, t := range req.Tags {
			if strings.ContainsAny(t, "<>") {
				apiError(w, http.StatusBadRequest, fmt.Sprintf("bad tag %q", t), nil)
				return
			}
		}
		f.nodes[i].Tags = req.Tags
		w.WriteHeader(http.StatusNoContent)
	case r.Method == "POST" && suffix == "expire":
		f.expire(w, r, &f.nodes[i])
	default:
		apiError(w, http.StatusNotFound, "no such endpoint", nil)
	}
}

// expire serves POST /v1/nodes/NAME/expire as the coordinator does: an
// empty body or a past time expires n now, a future one schedules it,
// never clears a future expiry and conflicts with a past one.
func (f *fakeAPI) expire(w http.ResponseWriter, r *http.Request, n *wire.Node) {
	var req wire.ExpireRequest
	if r.ContentLength != 0 {
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			apiError(w, http.StatusBadRequest, "bad JSON", nil)
			return
		}
	}
	f.expires = append(f.expires, req)
	expired := !n.Expires.IsZero() && !testTime.Before(n.Expires)
	switch {
	case req.Never && !req.At.IsZero():
		apiError(w, http.StatusBadRequest, `give "at" or "never", not both`, nil)
		return
	case req.Never && expired:
		apiError(w, http.StatusConflict, fmt.Sprintf("node %q expired at %s; it must enroll again", n.Name, n.Expires.Format(time.RFC3339)), nil)
		return
	case expired:
	case req.Never:
		n.Expires = time.Time{}
	case req.At.After(testTime):
		n.Expires = req.At
	default:
		n.Expires = testTime
	}
	writeJSON(w, http.StatusOK, n)
}

// fakeSessions keeps sessions in memory with the semantics of the
// store's (store.Session): expiry on its clock, a limit that drops the
// sessions that expire first. fail, if set, fails every call.
type fakeSessions struct {
	now func() time.Time

	mu   sync.Mutex
	byID map[string]Session
	fail error
}

func newFakeSessions(now func() time.Time) *fakeSessions {
	return &fakeSessions{now: now, byID: map[string]Session{}}
}

func (f *fakeSessions) CreateSession(_ context.Context, s Session, limit int) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return "", f.fail
	}
	now := f.now()
	for id, old := range f.byID {
		if !now.Before(old.Expires) {
			delete(f.byID, id)
		}
	}
	for len(f.byID) >= limit {
		var oldest Session
		for _, old := range f.byID {
			if oldest.ID == "" || old.Expires.Before(oldest.Expires) {
				oldest = old
			}
		}
		delete(f.byID, oldest.ID)
	}
	s.ID = randomToken()
	f.byID[s.ID] = s
	return s.ID, nil
}

func (f *fakeSessions) Session(_ context.Context, id string) (Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return Session{}, f.fail
	}
	s, ok := f.byID[id]
	if !ok || !f.now().Before(s.Expires) {
		return Session{}, ErrNoSession
	}
	return s, nil
}

func (f *fakeSessions) SetSessionFlash(_ context.Context, id, msg string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if s, ok := f.byID[id]; ok {
		s.Flash = msg
		f.byID[id] = s
	}
	return nil
}

func (f *fakeSessions) TakeSessionFlash(_ context.Context, id, msg string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return false, f.fail
	}
	s, ok := f.byID[id]
	if !ok || msg == "" || s.Flash != msg {
		return false, nil
	}
	s.Flash = ""
	f.byID[id] = s
	return true, nil
}

func (f *fakeSessions) DeleteSession(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	delete(f.byID, id)
	return nil
}

// len returns the number of sessions kept.
func (f *fakeSessions) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.byID)
}

// setFail makes every call fail with err (nil: succeed again).
func (f *fakeSessions) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}
