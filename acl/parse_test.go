package acl

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

// parseErrors parses src as "policy.hujson" and returns its errors as
// text, one per problem, or nil when the policy is valid.
func parseErrors(t *testing.T, src string) []string {
	t.Helper()
	p, err := Parse("policy.hujson", []byte(src))
	if err == nil {
		if p == nil {
			t.Fatal("Parse returned neither a policy nor an error")
		}
		return nil
	}
	if p != nil {
		t.Errorf("Parse returned a policy and an error")
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("Parse error is %T, want ErrorList", err)
	}
	var out []string
	for _, e := range list {
		out = append(out, e.Error())
	}
	if got, want := err.Error(), strings.Join(out, "\n"); got != want {
		t.Errorf("ErrorList.Error() =\n%s\nwant the errors one a line:\n%s", got, want)
	}
	return out
}

// lines renders a list for a failure message.
func lines(ss []string) string {
	if len(ss) == 0 {
		return "\t(none)"
	}
	return "\t" + strings.Join(ss, "\n\t")
}

// textAt returns the text of src from a 1-based line and byte column.
func textAt(src string, line, col int) string {
	ls := strings.Split(src, "\n")
	if line < 1 || line > len(ls) || col < 1 || col > len(ls[line-1])+1 {
		return ""
	}
	return ls[line-1][col-1:]
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		src  string
		want []string
		// at, if set, is the text each error's position must point at
		// (the offending value as written, opening quote included).
		at []string
	}{{
		name: "syntax error",
		src: `{
  "acls": [
    {"action": "accept",, "src": ["*"]},
  ],
}`,
		want: []string{`policy.hujson:3:25: syntax error: invalid character ',' at start of value`},
		at:   []string{`, "src"`},
	}, {
		name: "unexpected end",
		src:  `{"acls": [`,
		want: []string{`policy.hujson:1:11: syntax error: parsing value: unexpected EOF`},
	}, {
		name: "text after the policy",
		src:  "{}\n  x",
		want: []string{`policy.hujson:2:3: syntax error: invalid character 'x' after top-level value`},
		at:   []string{`x`},
	}, {
		name: "empty",
		src:  ``,
		want: []string{`policy.hujson:1:1: syntax error: parsing value: unexpected EOF`},
	}, {
		name: "not an object",
		src:  `["acls"]`,
		want: []string{`policy.hujson:1:1: the policy must be an object, not a list`},
	}, {
		name: "unknown top-level key",
		src: `{
  // the rules
  "acl": [],
  "tests": [],
}`,
		want: []string{`policy.hujson:3:3: unknown key "acl" in the policy (did you mean "acls"?) (want groups, hosts, services, acls, tests)`},
		at:   []string{`"acl"`},
	}, {
		name: "unknown top-level key, nothing close",
		src:  `{"derp": {}}`,
		want: []string{`policy.hujson:1:2: unknown key "derp" in the policy (want groups, hosts, services, acls, tests)`},
	}, {
		name: "duplicate top-level key",
		src: `{
  "acls": [],
  "acls": [],
}`,
		want: []string{`policy.hujson:3:3: duplicate key "acls" in the policy`},
	}, {
		name: "wrong section types",
		src: `{
  "groups": [],
  "hosts": "x",
  "acls": {},
  "tests": null,
}`,
		want: []string{
			`policy.hujson:2:13: "groups" must be an object, not a list`,
			`policy.hujson:3:12: "hosts" must be an object, not a string`,
			`policy.hujson:4:11: "acls" must be a list, not an object`,
			`policy.hujson:5:12: "tests" must be a list, not null`,
		},
	}, {
		name: "unknown rule key",
		src: `{
  "acls": [
    {
      "action": "accept",
      "src": ["*"],
      "dst": ["*:80"],
      "ports": "80",
      "protocol": "tcp",
    },
  ],
}`,
		want: []string{
			`policy.hujson:7:7: unknown key "ports" in rule 1 of "acls" (want action, src, dst, proto)`,
			`policy.hujson:8:7: unknown key "protocol" in rule 1 of "acls" (want action, src, dst, proto)`,
		},
		at: []string{`"ports"`, `"protocol"`},
	}, {
		name: "unknown rule key, close to a known one",
		src:  `{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:80"], "prot": "tcp"}]}`,
		want: []string{`policy.hujson:1:63: unknown key "prot" in rule 1 of "acls" (did you mean "proto"?) (want action, src, dst, proto)`},
		at:   []string{`"prot"`},
	}, {
		name: "duplicate rule key",
		src: `{"acls": [
  {"action": "accept", "src": ["*"], "src": ["tag:a"], "dst": ["*:80"]},
]}`,
		want: []string{`policy.hujson:2:38: duplicate key "src" in rule 1 of "acls"`},
		at:   []string{`"src": ["tag:a"]`},
	}, {
		// The message of the issue, at the same place.
		name: "unknown group, did you mean",
		src: `{
  "groups": {
    "group:frontends": ["tag:web"],
    "group:backends": ["tag:api"],
  },
  "acls": [
    {
      "action": "accept",
      "src": ["tag:x"],
      "dst": ["group:backends:443"],
    }, {
      "src": ["tag:x", "group:frontend"],
      "action": "accept",
      "dst": ["group:backend:80"],
    },
  ],
}`,
		want: []string{
			`policy.hujson:12:24: unknown group "group:frontend" (did you mean "group:frontends"?)`,
			`policy.hujson:14:15: unknown group "group:backend" (did you mean "group:backends"?)`,
		},
		at: []string{`"group:frontend"`, `"group:backend:80"`},
	}, {
		name: "unknown group, nothing close",
		src: `{
  "groups": {"group:ops": ["node:a"]},
  "acls": [{"action": "accept", "src": ["group:marketing"], "dst": ["*:*"]}],
}`,
		want: []string{`policy.hujson:3:41: unknown group "group:marketing"`},
		at:   []string{`"group:marketing"`},
	}, {
		name: "unknown group in a group, in a test",
		src: `{
  "groups": {
    "group:ops": ["group:security"],
  },
  "tests": [
    {"src": "group:opz", "accept": ["group:op:22"]},
  ],
}`,
		want: []string{
			`policy.hujson:3:19: unknown group "group:security"`,
			`policy.hujson:6:13: unknown group "group:opz" (did you mean "group:ops"?)`,
			`policy.hujson:6:37: unknown group "group:op" (did you mean "group:ops"?)`,
		},
		at: []string{`"group:security"`, `"group:opz"`, `"group:op:22"`},
	}, {
		name: "unknown host, did you mean",
		src: `{
  "hosts": {
    "db-main": "10.0.0.5",
    "printer": "10.0.9.0/24",
  },
  "acls": [{
    "action": "accept",
    "src": [
      "db-mian",
      "scanner",
    ],
    "dst": ["printr:631"],
  }],
}`,
		want: []string{
			`policy.hujson:9:7: unknown host "db-mian" (did you mean "db-main"?) (hosts are defined in "hosts"; nodes are node:NAME)`,
			`policy.hujson:10:7: unknown host "scanner" (hosts are defined in "hosts"; nodes are node:NAME)`,
			`policy.hujson:12:13: unknown host "printr" (did you mean "printer"?) (hosts are defined in "hosts"; nodes are node:NAME)`,
		},
		at: []string{`"db-mian"`, `"scanner"`, `"printr:631"`},
	}, {
		// Each destination on its own line, so that the column of the
		// ports is 7 (the quote) + 1 + len("tag:a:") = 14.
		name: "bad ports",
		src: `{
  "acls": [{
    "action": "accept",
    "src": ["*"],
    "dst": [
      "tag:a:0",
      "tag:a:70000",
      "tag:a:90-80",
      "tag:a:",
      "tag:a:abc",
      "tag:a:22,",
      "tag:a:*-5",
      "tag:a:-5",
      "tag:a:1-65536",
      "[fd00::1]:0",
    ],
  }],
}`,
		want: []string{
			`policy.hujson:6:14: bad ports "0" in "tag:a:0": "0" is not a port (1-65535)`,
			`policy.hujson:7:14: bad ports "70000" in "tag:a:70000": "70000" is not a port (1-65535)`,
			`policy.hujson:8:14: bad ports "90-80" in "tag:a:90-80": range 90-80 is backwards`,
			`policy.hujson:9:14: bad ports "" in "tag:a:": no ports (want *, N, N-M or a comma list)`,
			`policy.hujson:10:14: bad ports "abc" in "tag:a:abc": "abc" is not a port (1-65535)`,
			`policy.hujson:11:14: bad ports "22," in "tag:a:22,": "" is not a port (1-65535)`,
			`policy.hujson:12:14: bad ports "*-5" in "tag:a:*-5": "*" is not a port (1-65535)`,
			`policy.hujson:13:14: bad ports "-5" in "tag:a:-5": "" is not a port (1-65535)`,
			`policy.hujson:14:14: bad ports "1-65536" in "tag:a:1-65536": "65536" is not a port (1-65535)`,
			`policy.hujson:15:18: bad ports "0" in "[fd00::1]:0": "0" is not a port (1-65535)`,
		},
		at: []string{`0"`, `70000"`, `90-80"`, `"`, `abc"`, `22,"`, `*-5"`, `-5"`, `1-65536"`, `0"`},
	}, {
		name: "bad CIDR",
		src: `{
  "hosts": {
    "lan": "192.168.1.1/24",
  },
  "acls": [{
    "action": "accept",
    "src": [
      "10.0.0.1/8",
      "fd00::1/64",
      "10.0.0.300",
      "10.0.0.0/33",
      "not/a/cidr",
      "10",
    ],
    "dst": ["10.1.2.3/16:443"],
  }],
}`,
		want: []string{
			`policy.hujson:3:12: host "lan": bad address or prefix "192.168.1.1/24"`,
			`policy.hujson:8:7: bad CIDR "10.0.0.1/8": prefix 10.0.0.1/8 has host bits set (did you mean 10.0.0.0/8?)`,
			`policy.hujson:9:7: bad CIDR "fd00::1/64": prefix fd00::1/64 has host bits set (did you mean fd00::/64?)`,
			`policy.hujson:10:7: bad address or CIDR "10.0.0.300"`,
			`policy.hujson:11:7: bad address or CIDR "10.0.0.0/33"`,
			`policy.hujson:12:7: bad address or CIDR "not/a/cidr"`,
			`policy.hujson:13:7: bad address or CIDR "10"`,
			`policy.hujson:15:13: bad CIDR "10.1.2.3/16": prefix 10.1.2.3/16 has host bits set (did you mean 10.1.0.0/16?)`,
		},
		at: []string{`"192.168.1.1/24"`, `"10.0.0.1/8"`, `"fd00::1/64"`, `"10.0.0.300"`, `"10.0.0.0/33"`, `"not/a/cidr"`, `"10"`, `"10.1.2.3/16:443"`},
	}, {
		name: "group cycle",
		src: `{
  "groups": {
    "group:a": ["group:b"],
    "group:b": ["group:a"],
  },
}`,
		want: []string{`policy.hujson:4:17: group cycle: group:a → group:b → group:a`},
		at:   []string{`"group:a"]`},
	}, {
		name: "group self-cycle",
		src: `{
  "groups": {
    "group:self": ["tag:x", "group:self"],
  },
}`,
		want: []string{`policy.hujson:3:29: group cycle: group:self → group:self`},
		at:   []string{`"group:self"]`},
	}, {
		name: "long group cycle, and a group that leads into it",
		src: `{
  "groups": {
    "group:a": ["group:b"],
    "group:b": ["group:c"],
    "group:c": ["group:a"],
    "group:d": ["group:a"],
  },
}`,
		want: []string{`policy.hujson:5:17: group cycle: group:a → group:b → group:c → group:a`},
	}, {
		name: "dst without ports",
		src: `{
  "acls": [{
    "action": "accept",
    "src": ["*"],
    "dst": [
      "tag:api",
      "node:x",
      "10.0.0.1",
      "group:g",
      "*",
      "db",
      "[fd00::1]",
    ],
  }],
}`,
		want: []string{
			`policy.hujson:6:7: destination "tag:api" has no ports: want tag:api:PORTS, e.g. tag:api:443 or tag:api:*`,
			`policy.hujson:7:7: destination "node:x" has no ports: want node:x:PORTS, e.g. node:x:443 or node:x:*`,
			`policy.hujson:8:7: destination "10.0.0.1" has no ports: want 10.0.0.1:PORTS, e.g. 10.0.0.1:443 or 10.0.0.1:*`,
			`policy.hujson:9:7: destination "group:g" has no ports: want group:g:PORTS, e.g. group:g:443 or group:g:*`,
			`policy.hujson:10:7: destination "*" has no ports: want *:PORTS, e.g. *:443 or *:*`,
			`policy.hujson:11:7: destination "db" has no ports: want db:PORTS, e.g. db:443 or db:*`,
			`policy.hujson:12:7: bad destination "[fd00::1]": want [IPv6]:PORTS`,
		},
	}, {
		name: "IPv6 destination without brackets",
		src:  `{"acls": [{"action": "accept", "src": ["*"], "dst": ["fd77:6d65:7368::5:22"]}]}`,
		want: []string{`policy.hujson:1:54: bad destination "fd77:6d65:7368::5:22": write IPv6 addresses as [ADDR]:PORTS`},
		at:   []string{`"fd77:6d65:7368::5:22"`},
	}, {
		name: "duplicate group names",
		src: `{
  "groups": {
    "group:ops": ["tag:a"],
    "group:ops": ["tag:b"],
  },
  "hosts": {
    "db": "10.0.0.1",
    "db": "10.0.0.2",
  },
}`,
		want: []string{
			`policy.hujson:4:5: duplicate key "group:ops" in "groups"`,
			`policy.hujson:8:5: duplicate key "db" in "hosts"`,
		},
		at: []string{`"group:ops": ["tag:b"]`, `"db": "10.0.0.2"`},
	}, {
		name: "bad names",
		src: `{
  "groups": {"ops": [], "group:Ops": []},
  "hosts": {"DB": "10.0.0.1"},
  "acls": [{"action": "accept", "src": ["tag:Web", "node:web_1", "web_1"], "dst": ["*:*"]}],
}`,
		want: []string{
			`policy.hujson:2:14: bad group name "ops": want group:NAME (lowercase letters, digits, '-')`,
			`policy.hujson:2:25: bad group name "group:Ops": want group:NAME (lowercase letters, digits, '-')`,
			`policy.hujson:3:13: bad host name "DB": want lowercase letters, digits and '-'`,
			`policy.hujson:4:41: bad tag "tag:Web": want tag:NAME (lowercase letters, digits, '-')`,
			`policy.hujson:4:52: bad node name in "node:web_1": want node:NAME (lowercase letters, digits, '-')`,
			`policy.hujson:4:66: bad selector "web_1": want *, node:NAME, tag:NAME, group:NAME, a host name or a CIDR`,
		},
	}, {
		// Each destination on its own line: the column of the ports is
		// 7 (the quote) + 1 + len("svc:web:") = 16.
		name: "bad services",
		src: `{
  "groups": {"group:g": ["svc:Web"]},
  "acls": [{
    "action": "accept",
    "src": ["svc:", "svc:web:80"],
    "dst": [
      "svc:web_1",
      "svc:web_1:80",
      "svc:a:b:80",
      "svc:web:",
      "svc:web:0",
      "svc:web:90-80",
      "svc",
    ],
  }],
  "tests": [{"src": "svc:-x", "accept": ["svc:"]}],
}`,
		want: []string{
			`policy.hujson:2:26: bad service "svc:Web": want svc:NAME (lowercase letters, digits, '-')`,
			`policy.hujson:5:13: bad service "svc:": want svc:NAME (lowercase letters, digits, '-')`,
			`policy.hujson:5:21: bad service "svc:web:80": want svc:NAME (lowercase letters, digits, '-')`,
			`policy.hujson:7:7: bad service "svc:web_1": want svc:NAME (lowercase letters, digits, '-')`,
			`policy.hujson:8:7: bad service "svc:web_1": want svc:NAME (lowercase letters, digits, '-')`,
			`policy.hujson:9:7: bad service "svc:a:b": want svc:NAME (lowercase letters, digits, '-')`,
			`policy.hujson:10:16: bad ports "" in "svc:web:": no ports (want *, N, N-M or a comma list)`,
			`policy.hujson:11:16: bad ports "0" in "svc:web:0": "0" is not a port (1-65535)`,
			`policy.hujson:12:16: bad ports "90-80" in "svc:web:90-80": range 90-80 is backwards`,
			`policy.hujson:13:7: destination "svc" has no ports: want svc:PORTS, e.g. svc:443 or svc:*`,
			`policy.hujson:16:13: test 1 of "tests" has no "src"`,
			`policy.hujson:16:21: bad service "svc:-x": want svc:NAME (lowercase letters, digits, '-')`,
			`policy.hujson:16:42: bad service "svc:": want svc:NAME (lowercase letters, digits, '-')`,
		},
		at: []string{`"svc:Web"`, `"svc:"`, `"svc:web:80"`, `"svc:web_1"`, `"svc:web_1:80"`, `"svc:a:b:80"`, `"`, `0"`, `90-80"`, `"svc"`, `{"src"`, `"svc:-x"`, `"svc:"`},
	}, {
		name: "bad action",
		src: `{"acls": [
  {
    "action": "deny",
    "src": ["*"],
    "dst": ["*:22"],
  },
  {"action": true, "src": ["*"], "dst": ["*:22"]},
]}`,
		want: []string{
			`policy.hujson:3:15: bad action "deny": rules only accept (want "accept"); what no rule accepts is denied`,
			`policy.hujson:7:14: "action" must be a string, not a boolean`,
		},
		at: []string{`"deny"`, `true`},
	}, {
		name: "bad proto",
		src: `{"acls": [
  {"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "tpc"},
  {"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "tcpp"},
  {"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": 256},
  {"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": -1},
  {"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": true},
  {"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": ["tcp"]},
]}`,
		want: []string{
			`policy.hujson:2:63: bad proto "tpc": want tcp, udp, icmp or a protocol number 0-255`,
			`policy.hujson:3:63: bad proto "tcpp": want tcp, udp, icmp or a protocol number 0-255 (did you mean "tcp"?)`,
			`policy.hujson:4:63: bad proto "256": want tcp, udp, icmp or a protocol number 0-255`,
			`policy.hujson:5:63: bad proto "-1": want tcp, udp, icmp or a protocol number 0-255`,
			`policy.hujson:6:63: bad proto "true": want tcp, udp, icmp or a protocol number 0-255`,
			`policy.hujson:7:63: "proto" must be a string or a number, not a list`,
		},
	}, {
		name: "missing src, dst, action",
		src: `{"acls": [
  {"src": ["*"], "dst": ["*:*"]},
  {"action": "accept", "dst": ["*:*"]},
  {"action": "accept", "src": ["*"]},
  {},
]}`,
		want: []string{
			`policy.hujson:2:3: rule 1 of "acls" has no "action" (want "action": "accept")`,
			`policy.hujson:3:3: rule 2 of "acls" has no "src"`,
			`policy.hujson:4:3: rule 3 of "acls" has no "dst"`,
			`policy.hujson:5:3: rule 4 of "acls" has no "action" (want "action": "accept")`,
			`policy.hujson:5:3: rule 4 of "acls" has no "src"`,
			`policy.hujson:5:3: rule 4 of "acls" has no "dst"`,
		},
	}, {
		name: "non-string members",
		src: `{
  "groups": {"group:a": [1, null, ["tag:x"], "*"]},
  "hosts": {"db": 5},
  "acls": [{"action": "accept", "src": [1, "tag:x"], "dst": [true, "*:*"]}],
  "tests": [{"src": 5, "accept": [{}]}],
}`,
		want: []string{
			`policy.hujson:2:26: a group member must be a string, not a number`,
			`policy.hujson:2:29: a group member must be a string, not null`,
			`policy.hujson:2:35: a group member must be a string, not a list`,
			`policy.hujson:2:46: "*" cannot be a group member; use "*" in the rule instead`,
			`policy.hujson:3:19: host "db" must be a string, not a number`,
			`policy.hujson:4:41: a source must be a string, not a number`,
			`policy.hujson:4:62: a destination must be a string, not a boolean`,
			`policy.hujson:5:13: test 1 of "tests" has no "src"`,
			`policy.hujson:5:21: "src" must be a string, not a number`,
			`policy.hujson:5:35: a destination must be a string, not an object`,
		},
	}, {
		name: "test errors",
		src: `{"tests": [
  {"src": "tag:a", "dst": ["tag:b:80"], "deny": ["tag:b"], "proto": "sctp"},
]}`,
		want: []string{
			`policy.hujson:2:20: unknown key "dst" in test 1 of "tests" (want src, proto, accept, deny)`,
			`policy.hujson:2:50: destination "tag:b" has no ports: want tag:b:PORTS, e.g. tag:b:443 or tag:b:*`,
			`policy.hujson:2:69: bad proto "sctp": want tcp, udp, icmp or a protocol number 0-255`,
		},
	}, {
		name: "errors from both passes come in text order",
		src: `{
  "acls": [{"action": "accept", "src": ["group:nope"], "dst": ["tag:a:0"]}],
  "groups": {"group:x": ["group:y"]},
  "derp": 1,
}`,
		want: []string{
			`policy.hujson:2:41: unknown group "group:nope"`,
			`policy.hujson:2:71: bad ports "0" in "tag:a:0": "0" is not a port (1-65535)`,
			`policy.hujson:3:26: unknown group "group:y" (did you mean "group:x"?)`,
			`policy.hujson:4:3: unknown key "derp" in the policy (want groups, hosts, services, acls, tests)`,
		},
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
			list := err.(ErrorList)
			for i, at := range tt.at {
				e := list[i]
				if got := textAt(tt.src, e.Pos.Line, e.Pos.Col); !strings.HasPrefix(got, at) {
					t.Errorf("error %d (%s) points at %q, want the text %q", i+1, e, got, at)
				}
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	src := "{}" + strings.Repeat(" ", MaxPolicySize)
	got := parseErrors(t, src)
	want := []string{fmt.Sprintf("policy.hujson: policy is %d bytes; the limit is %d", MaxPolicySize+2, MaxPolicySize)}
	if !slices.Equal(got, want) {
		t.Fatalf("errors:\n%s\nwant:\n%s", lines(got), lines(want))
	}
	if err := parseErrors(t, "{}"+strings.Repeat(" ", MaxPolicySize-2)); err != nil {
		t.Errorf("a policy of exactly MaxPolicySize bytes: %v", err)
	}
}

// TestParseUnbracketedIPv6WithoutPorts: an IPv6 address given as a
// destination without brackets and without ports must be reported as what
// it is, naming the text written, not as a bad address made of its first
// half ("fd00:").
func TestParseUnbracketedIPv6WithoutPorts(t *testing.T) {
	for _, dst := range []string{"fd00::1", "::1", "fd00::"} {
		src := `{"acls": [{"action": "accept", "src": ["*"], "dst": ["` + dst + `"]}]}`
		got := parseErrors(t, src)
		if len(got) != 1 || !strings.Contains(got[0], strconv.Quote(dst)) || !strings.Contains(got[0], "PORTS") {
			t.Errorf("dst %q: errors\n%s\nwant one error naming %q and saying how to write ports ([ADDR]:PORTS)", dst, lines(got), dst)
		}
	}
}

// examplePolicy exercises every section, comments and trailing commas.
const examplePolicy = `// wiremesh policy
{
  /* named sets of nodes */
  "groups": {
    "group:frontends": ["tag:web", "node:edge-1"],
    "group:all-apps": ["group:frontends", "tag:api",], // trailing comma
  },
  "hosts": {
    "office": "192.0.2.0/24",
    "backup": "fd00:b::7",
  },
  "acls": [
    // web to api
    {
      "action": "accept",
      "src": ["group:frontends"],
      "dst": ["tag:api:443,8080-8090", "node:db-1:5432"],
    },
    {"action": "accept", "src": ["office", "10.1.0.0/16"], "dst": ["tag:web:*"], "proto": "tcp"},
    {"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "icmp"},
    {"action": "accept", "src": ["backup"], "dst": ["[fd77:6d65:7368::/48]:873", "backup:22"], "proto": 17},
  ],
  "tests": [
    {"src": "tag:web", "accept": ["tag:api:443"], "deny": ["tag:api:22"]},
    {"src": "node:edge-1", "proto": "udp", "deny": ["node:db-1:5432"],},
  ],
}
`

// describe renders a policy's structure, one line per element.
func describe(p *Policy) string {
	var b strings.Builder
	sel := func(s Selector) string {
		kind := map[SelectorKind]string{SelAny: "any", SelNode: "node", SelTag: "tag", SelGroup: "group", SelHost: "host", SelCIDR: "cidr", SelSvc: "svc"}[s.Kind]
		out := fmt.Sprintf("%s(%s)@%d:%d", kind, s.String(), s.Pos.Line, s.Pos.Col)
		if s.Prefix.IsValid() {
			out += "=" + s.Prefix.String()
		}
		return out
	}
	dests := func(ds []Dest) string {
		var out []string
		for _, d := range ds {
			if d.Ports == nil {
				out = append(out, sel(d.Sel)+" own ports")
				continue
			}
			out = append(out, sel(d.Sel)+" ports "+portsText(d.Ports))
		}
		return strings.Join(out, "; ")
	}
	for _, name := range sortedKeys(p.Groups) {
		var ms []string
		for _, m := range p.Groups[name] {
			ms = append(ms, sel(m))
		}
		fmt.Fprintf(&b, "group %s: %s\n", name, strings.Join(ms, ", "))
	}
	for _, name := range sortedKeys(p.Hosts) {
		fmt.Fprintf(&b, "host %s: %s\n", name, p.Hosts[name])
	}
	for i, r := range p.ACLs {
		var ss []string
		for _, s := range r.Src {
			ss = append(ss, sel(s))
		}
		fmt.Fprintf(&b, "rule %d @%d:%d protos %v\n  src %s\n  dst %s\n", i+1, r.Pos.Line, r.Pos.Col, r.Protos, strings.Join(ss, ", "), dests(r.Dst))
	}
	for i, t := range p.Tests {
		fmt.Fprintf(&b, "test %d @%d:%d protos %v src %s\n  accept %s\n  deny %s\n", i+1, t.Pos.Line, t.Pos.Col, t.Protos, sel(t.Src), dests(t.Accept), dests(t.Deny))
	}
	return b.String()
}

// portsText renders port ranges independently of the package's own
// formatting: "*" for every port, "N" or "N-M".
func portsText(ps []wire.PortRange) string {
	var out []string
	for _, p := range ps {
		switch {
		case p == wire.AllPorts:
			out = append(out, "*")
		case p.First == p.Last:
			out = append(out, fmt.Sprint(p.First))
		default:
			out = append(out, fmt.Sprintf("%d-%d", p.First, p.Last))
		}
	}
	return strings.Join(out, ",")
}

func TestParseExample(t *testing.T) {
	p, err := Parse("policy.hujson", []byte(examplePolicy))
	if err != nil {
		t.Fatal(err)
	}
	want := `group group:all-apps: group(group:frontends)@6:24, tag(tag:api)@6:43
group group:frontends: tag(tag:web)@5:25, node(node:edge-1)@5:36
host backup: fd00:b::7/128
host office: 192.0.2.0/24
rule 1 @14:5 protos []
  src group(group:frontends)@16:15
  dst tag(tag:api)@17:15 ports 443,8080-8090; node(node:db-1)@17:40 ports 5432
rule 2 @19:5 protos [6]
  src host(office)@19:34=192.0.2.0/24, cidr(10.1.0.0/16)@19:44=10.1.0.0/16
  dst tag(tag:web)@19:68 ports *
rule 3 @20:5 protos [1 58]
  src any(*)@20:34
  dst any(*)@20:48 ports *
rule 4 @21:5 protos [17]
  src host(backup)@21:34=fd00:b::7/128
  dst cidr(fd77:6d65:7368::/48)@21:53=fd77:6d65:7368::/48 ports 873; host(backup)@21:82=fd00:b::7/128 ports 22
test 1 @24:5 protos [] src tag(tag:web)@24:13
  accept tag(tag:api)@24:35 ports 443
  deny tag(tag:api)@24:60 ports 22
test 2 @25:5 protos [17] src node(node:edge-1)@25:13
  accept 
  deny node(node:db-1)@25:53 ports 5432
`
	if got := describe(p); got != want {
		t.Errorf("structure:\n%s\nwant:\n%s", got, want)
	}
	if p.ACLs[0].Protos != nil || p.Tests[0].Protos != nil {
		t.Errorf("absent proto must be nil: rule %v, test %v", p.ACLs[0].Protos, p.Tests[0].Protos)
	}
	if p.File != "policy.hujson" || string(p.Text) != examplePolicy {
		t.Errorf("File %q, Text of %d bytes: want the name and text given", p.File, len(p.Text))
	}
}

// pr is the port range first-last.
func pr(first, last uint16) wire.PortRange { return wire.PortRange{First: first, Last: last} }

func TestParsePorts(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []wire.PortRange
	}{
		{"*", []wire.PortRange{wire.AllPorts}},
		{"1", []wire.PortRange{pr(1, 1)}},
		{"65535", []wire.PortRange{pr(65535, 65535)}},
		{"1-65535", []wire.PortRange{pr(1, 65535)}},
		{"80-80", []wire.PortRange{pr(80, 80)}},
		{"443,80,8000-8100", []wire.PortRange{pr(443, 443), pr(80, 80), pr(8000, 8100)}},
		{"*,22", []wire.PortRange{wire.AllPorts, pr(22, 22)}},
	} {
		got, err := parsePorts(tt.in)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("parsePorts(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestSelectorString(t *testing.T) {
	p, err := Parse("p", []byte(`{"hosts": {"db": "10.0.0.1"}, "groups": {"group:g": []}, "acls": [{"action": "accept",
		"src": ["*", "node:a", "tag:b", "group:g", "db", "10.0.0.0/8", "10.0.0.1", "10.0.0.1/32", "fd00::/8", "fd00::1"], "dst": ["*:1"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range p.ACLs[0].Src {
		got = append(got, s.String())
	}
	want := []string{"*", "node:a", "tag:b", "group:g", "db", "10.0.0.0/8", "10.0.0.1", "10.0.0.1", "fd00::/8", "fd00::1"}
	if !slices.Equal(got, want) {
		t.Errorf("selectors:\n%q\nwant\n%q", got, want)
	}
	if s := (Selector{Kind: SelCIDR, Prefix: netip.MustParsePrefix("10.0.0.0/8")}); s.String() != "10.0.0.0/8" {
		t.Errorf("String() = %q", s.String())
	}
}

// TestDestStringIPv6 checks that a destination renders as it is written,
// which for an IPv6 address means in brackets: "fd00::1:22" reads as the
// address fd00::1:22 and cannot be parsed back.
func TestDestStringIPv6(t *testing.T) {
	for _, in := range []string{"[fd00::1]:22", "[fd00::/64]:80,443", "10.0.0.1:22", "tag:api:443,8080-8090"} {
		p, err := Parse("p", []byte(`{"acls": [{"action": "accept", "src": ["*"], "dst": ["`+in+`"]}]}`))
		if err != nil {
			t.Fatal(err)
		}
		if got := p.ACLs[0].Dst[0].String(); got != in {
			t.Errorf("Dest(%q).String() = %q, want %q", in, got, in)
		}
	}
}

// servicesPolicy has svc: selectors wherever they may be.
const servicesPolicy = `{
  "groups": {"group:dbs": ["svc:db", "tag:db"]},
  "acls": [
    {"action": "accept", "src": ["tag:web", "svc:web"], "dst": ["svc:api", "svc:db:5432,6000-6010", "svc:db:*"], "proto": "tcp"},
    {"action": "accept", "src": ["group:dbs"], "dst": ["svc:unknown"]},
  ],
  "tests": [
    {"src": "svc:api", "accept": ["svc:db"], "deny": ["svc:db:22"]},
  ],
}`

func TestParseServices(t *testing.T) {
	p, err := Parse("policy.hujson", []byte(servicesPolicy))
	if err != nil {
		t.Fatal(err)
	}
	want := `group group:dbs: svc(svc:db)@2:28, tag(tag:db)@2:38
rule 1 @4:5 protos [6]
  src tag(tag:web)@4:34, svc(svc:web)@4:45
  dst svc(svc:api)@4:65 own ports; svc(svc:db)@4:76 ports 5432,6000-6010; svc(svc:db)@4:101 ports *
rule 2 @5:5 protos []
  src group(group:dbs)@5:34
  dst svc(svc:unknown)@5:56 own ports
test 1 @8:5 protos [] src svc(svc:api)@8:13
  accept svc(svc:db)@8:35 own ports
  deny svc(svc:db)@8:55 ports 22
`
	if got := describe(p); got != want {
		t.Errorf("structure:\n%s\nwant:\n%s", got, want)
	}
	d := p.ACLs[0].Dst
	if !d[0].OwnPorts() || d[1].OwnPorts() || d[2].OwnPorts() || d[0].Ports != nil {
		t.Errorf("OwnPorts of %v: %v %v %v, want true false false", d, d[0].OwnPorts(), d[1].OwnPorts(), d[2].OwnPorts())
	}
	if (Dest{Sel: Selector{Kind: SelTag, Name: "tag:x"}}).OwnPorts() {
		t.Error("a tag destination without ports has OwnPorts")
	}
}

// TestDestStringServices: a svc: destination renders as written, with
// its ports or without.
func TestDestStringServices(t *testing.T) {
	for _, in := range []string{"svc:api", "svc:db:5432", "svc:db:80,443,8000-8100", "svc:web-2:*"} {
		name, _, _ := strings.Cut(strings.TrimPrefix(in, "svc:"), ":")
		src := "svc:" + name
		p, err := Parse("p", []byte(`{"acls": [{"action": "accept", "src": ["`+src+`"], "dst": ["`+in+`"]}]}`))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if got := p.ACLs[0].Dst[0].String(); got != in {
			t.Errorf("Dest(%q).String() = %q, want %q", in, got, in)
		}
		if s := p.ACLs[0].Src[0]; s.Kind != SelSvc || s.String() != src || s.Name != src {
			t.Errorf("source %q: kind %d, String() %q, Name %q", src, s.Kind, s.String(), s.Name)
		}
	}
}

func TestSuggest(t *testing.T) {
	for _, tt := range []struct {
		s    string
		cand []string
		want string
	}{
		{"group:frontend", []string{"group:backends", "group:frontends"}, ` (did you mean "group:frontends"?)`},
		{"acl", []string{"groups", "hosts", "acls", "tests"}, ` (did you mean "acls"?)`},
		{"xyz", []string{"groups", "hosts", "acls", "tests"}, ``},
		{"a", nil, ``},
	} {
		if got := suggest(tt.s, tt.cand); got != tt.want {
			t.Errorf("suggest(%q, %q) = %q, want %q", tt.s, tt.cand, got, tt.want)
		}
	}
}
