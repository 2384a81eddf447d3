package acl

import (
	"slices"
	"strings"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

func TestParseServiceOwners(t *testing.T) {
	p, err := Parse("policy.hujson", []byte(`{
  "services": {"api": ["tag:api"], "db": ["tag:db", "node:db-legacy"], "retired": []},
  "acls": [{"action": "accept", "src": ["svc:api"], "dst": ["svc:db"]}],
}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, name := range sortedKeys(p.Services) {
		var owners []string
		for _, o := range p.Services[name] {
			owners = append(owners, o.String())
		}
		got = append(got, name+"="+strings.Join(owners, ","))
	}
	if want := []string{"api=tag:api", "db=tag:db,node:db-legacy", "retired="}; !slices.Equal(got, want) {
		t.Errorf("services: %q, want %q", got, want)
	}
	if p, err := Parse("p", []byte(`{}`)); err != nil || p.Services != nil {
		t.Errorf("without a section: Services = %v, %v; want nil (the tag rule applies)", p.Services, err)
	}
}

func TestParseServiceOwnersErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		src  string
		want []string
		at   []string // the text each error points at
	}{{
		name: "names are DNS labels",
		src:  `{"services": {"svc:api": ["tag:api"], "API": [], "a_b": []}}`,
		want: []string{
			`policy.hujson:1:15: bad service name "svc:api" in "services": want a DNS label (lowercase letters, digits, '-'), without "svc:"`,
			`policy.hujson:1:39: bad service name "API" in "services": want a DNS label (lowercase letters, digits, '-'), without "svc:"`,
			`policy.hujson:1:50: bad service name "a_b" in "services": want a DNS label (lowercase letters, digits, '-'), without "svc:"`,
		},
		at: []string{`"svc:api"`, `"API"`, `"a_b"`},
	}, {
		name: "owners are tags and nodes",
		src: `{"services": {
  "api": ["*", "group:ops", "svc:web", "10.0.0.1", "web-hosts", "tag:API", "node:"],
}}`,
		want: []string{
			`policy.hujson:2:11: bad owner "*" of service "api": want tag:NAME or node:NAME (only a node's identity may provide a service)`,
			`policy.hujson:2:16: bad owner "group:ops" of service "api": want tag:NAME or node:NAME (only a node's identity may provide a service)`,
			`policy.hujson:2:29: bad owner "svc:web" of service "api": want tag:NAME or node:NAME (only a node's identity may provide a service)`,
			`policy.hujson:2:40: bad owner "10.0.0.1" of service "api": want tag:NAME or node:NAME (only a node's identity may provide a service)`,
			`policy.hujson:2:52: bad owner "web-hosts" of service "api": want tag:NAME or node:NAME (only a node's identity may provide a service)`,
			`policy.hujson:2:65: bad tag "tag:API": want tag:NAME (lowercase letters, digits, '-')`,
			`policy.hujson:2:76: bad node name in "node:": want node:NAME (lowercase letters, digits, '-')`,
		},
		at: []string{`"*"`, `"group:ops"`, `"svc:web"`, `"10.0.0.1"`, `"web-hosts"`, `"tag:API"`, `"node:"`},
	}, {
		name: "shapes",
		src:  `{"services": {"api": "tag:api", "db": [1]}}`,
		want: []string{
			`policy.hujson:1:22: service "api" must be a list, not a string`,
			`policy.hujson:1:40: a service owner must be a string, not a number`,
		},
	}, {
		name: "a section names every service the rules use",
		src: `{
  "services": {"api": ["tag:api"], "db": ["tag:db"]},
  "groups": {"group:g": ["svc:web"]},
  "acls": [{"action": "accept", "src": ["svc:apu"], "dst": ["svc:db", "svc:dv:5432"]}],
  "tests": [{"src": "svc:api", "accept": ["svc:cache"]}],
}`,
		want: []string{
			`policy.hujson:3:26: unknown service "svc:web": with a "services" section, only the services it lists have providers`,
			`policy.hujson:4:41: unknown service "svc:apu": with a "services" section, only the services it lists have providers (did you mean "svc:api"?)`,
			`policy.hujson:4:71: unknown service "svc:dv": with a "services" section, only the services it lists have providers (did you mean "svc:db"?)`,
			`policy.hujson:5:43: unknown service "svc:cache": with a "services" section, only the services it lists have providers`,
		},
		at: []string{`"svc:web"`, `"svc:apu"`, `"svc:dv:5432"`, `"svc:cache"`},
	}, {
		name: "a misspelt section",
		src:  `{"service": {}}`,
		want: []string{`policy.hujson:1:2: unknown key "service" in the policy (did you mean "services"?) (want groups, hosts, services, acls, tests)`},
	}} {
		t.Run(tt.name, func(t *testing.T) {
			got := parseErrors(t, tt.src)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("errors:\n%s\nwant:\n%s", lines(got), lines(tt.want))
			}
			if tt.at == nil {
				return
			}
			_, err := Parse("policy.hujson", []byte(tt.src))
			for i, e := range err.(ErrorList) {
				if got := textAt(tt.src, e.Pos.Line, e.Pos.Col); !strings.HasPrefix(got, tt.at[i]) {
					t.Errorf("error %d (%s) points at %q, want the text %q", i+1, e, got, tt.at[i])
				}
			}
		})
	}
}

func TestRefused(t *testing.T) {
	owners, err := Parse("p", []byte(`{"services": {"api": ["tag:api"], "db": ["tag:db", "node:db-legacy"], "retired": []}}`))
	if err != nil {
		t.Fatal(err)
	}
	noSection, err := Parse("p", []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		p       *Policy
		node    string
		tags    []string
		service string
		want    string // "" allowed
	}{
		{owners, "api-1", []string{"tag:api"}, "api", ""},
		{owners, "ci-1", []string{"tag:ci"}, "api", `not allowed: only tag:api may provide api`},
		{owners, "db-legacy", nil, "db", ""},
		{owners, "db-2", []string{"tag:db"}, "db", ""},
		{owners, "api-1", []string{"tag:api"}, "db", `not allowed: only tag:db, node:db-legacy may provide db`},
		{owners, "web-1", []string{"tag:web"}, "web", `not allowed: the policy's "services" does not list web, so no node may provide it`},
		{owners, "old", []string{"tag:retired"}, "retired", `not allowed: the policy's "services" lists no owner of retired`},
		// Without a section (and without a policy): the tag named like the service.
		{noSection, "api-1", []string{"tag:web", "tag:api"}, "api", ""},
		{noSection, "ci-1", []string{"tag:ci"}, "api", `not allowed: the policy has no "services" section, and only a node tagged tag:api may provide api`},
		{noSection, "api", nil, "api", `not allowed: the policy has no "services" section, and only a node tagged tag:api may provide api`},
		{nil, "api-1", []string{"tag:api"}, "api", ""},
		{nil, "ci-1", []string{"tag:ci"}, "api", `not allowed: the policy has no "services" section, and only a node tagged tag:api may provide api`},
	} {
		if got := tt.p.Refused(tt.node, tt.tags, tt.service); got != tt.want {
			t.Errorf("Refused(%s %v, %s) = %q, want %q", tt.node, tt.tags, tt.service, got, tt.want)
		}
	}
}

// ownersInventory: a genuine api node, a CI node that says it runs api
// too (on another port), a database and a web client.
func ownersInventory() []Node {
	return []Node{
		{ID: 1, Name: "api-1", Tags: []string{"tag:api"}, Addrs: testNode(1, "").Addrs, Services: []NodeService{tcp("api", 443)}},
		{ID: 2, Name: "ci-1", Tags: []string{"tag:ci"}, Addrs: testNode(2, "").Addrs, Services: []NodeService{tcp("api", 8443)}},
		testNode(3, "db-1", "tag:db"),
		testNode(4, "web-1", "tag:web"),
	}
}

const ownersPolicy = `{
  "services": {"api": ["tag:api"]},
  "acls": [
    {"action": "accept", "src": ["svc:api"], "dst": ["tag:db:5432"], "proto": "tcp"},
    {"action": "accept", "src": ["tag:web"], "dst": ["svc:api"], "proto": "tcp"},
  ],
}`

// TestCompileOwners: a service reported by a node the policy does not let
// provide it matches no svc: selector, as a source or a destination, and
// the tests do not see it.
func TestCompileOwners(t *testing.T) {
	const api, ci, db, web = 1, 2, 3, 4
	nodes := ownersInventory()
	for _, text := range []string{
		ownersPolicy,
		strings.Replace(ownersPolicy, `"services": {"api": ["tag:api"]},`, "", 1), // the tag rule
	} {
		c := mustCompile(t, text, nodes)
		for _, tt := range []struct {
			src, dst int64
			port     uint16
			want     bool
		}{
			{api, db, 5432, true}, {ci, db, 5432, false}, // svc:api as a source
			{web, api, 443, true}, {web, ci, 8443, false}, // svc:api as a destination
		} {
			if got, _ := c.Allows(tt.src, tt.dst, wire.ProtoTCP, tt.port); got != tt.want {
				t.Errorf("Allows(%s → %s tcp/%d) = %v, want %v", nodes[tt.src-1].Name, nodes[tt.dst-1].Name, tt.port, got, tt.want)
			}
		}
		if got := peerNames(c, nodes, ci); got != nil {
			t.Errorf("ci-1's peers: %v, want none", got)
		}
		if r := resolved(c, ci); r != nil {
			t.Errorf("ci-1's rules: %v, want none", r)
		}
		if got, want := peerNames(c, nodes, db), []string{"api-1"}; !slices.Equal(got, want) {
			t.Errorf("db-1's peers: %v, want %v", got, want)
		}
		// Every instance of svc:api is reachable from web-1 on its port:
		// ci-1's 8443, which nothing opens, is not an instance.
		withTests := mustCompile(t, strings.Replace(text, `"acls"`, `"tests": [{"src": "tag:web", "accept": ["svc:api"]}, {"src": "tag:ci", "deny": ["tag:db:5432"]}], "acls"`, 1), nodes)
		if err := withTests.RunTests(); err != nil {
			t.Errorf("RunTests: %v", err)
		}
	}
	// Without owners applied, the same test fails: ci-1 would be an
	// instance nobody may reach.
	c := mustCompile(t, `{"services": {"api": ["tag:api", "tag:ci"]}, "acls": [{"action": "accept", "src": ["tag:web"], "dst": ["svc:api:443"]}], "tests": [{"src": "tag:web", "accept": ["svc:api"]}]}`, nodes)
	if err := c.RunTests(); err == nil || !strings.Contains(err.Error(), "web-1 → ci-1 on tcp/8443 is denied") {
		t.Errorf("RunTests with tag:ci an owner: %v, want web-1 → ci-1 denied", err)
	}
}

func TestProviderChanges(t *testing.T) {
	nodes := ownersInventory()
	nodes = append(nodes, Node{ID: 5, Name: "db-legacy", Addrs: testNode(5, "").Addrs, Services: []NodeService{tcp("db", 5432), udp("db", 5432)}})
	old := mustCompile(t, `{}`, nodes) // the tag rule: api-1 provides api
	new := mustCompile(t, `{"services": {"api": ["tag:ci"], "db": ["node:db-legacy"]}}`, nodes)
	var got []string
	for _, ch := range ProviderChanges(old, new) {
		got = append(got, ch.String())
	}
	if want := []string{"- svc:api on api-1", "+ svc:api on ci-1", "+ svc:db on db-legacy"}; !slices.Equal(got, want) {
		t.Errorf("ProviderChanges:\n%s\nwant:\n%s", lines(got), lines(want))
	}
	if chs := ProviderChanges(new, new); chs != nil {
		t.Errorf("ProviderChanges of a policy with itself: %v, want none", chs)
	}
	// Diff shows the access that moves with the providers.
	old = mustCompile(t, ownersPolicy, nodes)
	new = mustCompile(t, strings.Replace(ownersPolicy, `["tag:api"]`, `["tag:ci"]`, 1), nodes)
	want := []string{"- api-1 → db-1 tcp/5432", "+ ci-1 → db-1 tcp/5432", "- web-1 → api-1 tcp/443", "+ web-1 → ci-1 tcp/8443"}
	if got := diffStrings(t, old, new); !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("Diff:\n%s\nwant:\n%s", lines(got), lines(want))
	}
}
