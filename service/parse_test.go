package service

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const exampleFile = `{
  "services": [
    {"name": "web", "port": 8080, "tags": ["v2", "primary"],
     "checks": [
       {"http": "http://127.0.0.1:8080/healthz", "interval": "2s", "timeout": "1s"},
       {"tcp": "127.0.0.1:8080", "interval": "1s"},
     ]},
  ],
}
`

// parseErrors parses src as "services.hujson" and returns its errors one
// per problem, or nil when it is valid.
func parseErrors(t *testing.T, parse func(string, []byte) ([]Definition, error), src string) []string {
	t.Helper()
	defs, err := parse("services.hujson", []byte(src))
	if err == nil {
		return nil
	}
	if defs != nil {
		t.Errorf("got definitions and an error")
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error is %T, want ErrorList", err)
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

func lines(ss []string) string {
	if len(ss) == 0 {
		return "\t(none)"
	}
	return "\t" + strings.Join(ss, "\n\t")
}

func TestParseExample(t *testing.T) {
	defs, err := Parse("services.hujson", []byte(exampleFile))
	if err != nil {
		t.Fatal(err)
	}
	want := []Definition{{
		Name: "web", Port: 8080, Protocol: TCP, Tags: []string{"v2", "primary"},
		Checks: []CheckDef{
			{ID: "web:1", Kind: KindHTTP, Target: "http://127.0.0.1:8080/healthz", Interval: 2 * time.Second, Timeout: time.Second, SuccessBeforePassing: 1, FailuresBeforeCritical: 1},
			{ID: "web:2", Kind: KindTCP, Target: "127.0.0.1:8080", Interval: time.Second, Timeout: time.Second, SuccessBeforePassing: 1, FailuresBeforeCritical: 1},
		},
	}}
	if !reflect.DeepEqual(defs, want) {
		t.Errorf("got\n%+v\nwant\n%+v", defs, want)
	}
}

func TestParseKinds(t *testing.T) {
	src := `{"services": [
	  {"name": "db", "port": 5432, "protocol": "udp", "checks": [
	    {"id": "db-ping", "exec": ["/usr/bin/pg_isready", "-q"], "interval": "30s",
	     "success_before_passing": 2, "failures_before_critical": 3},
	    {"ttl": "15s"},
	    {"http": "https://db.local/health", "interval": "1m"},
	  ]},
	  {"name": "bare", "port": 1},
	]}`
	defs, err := Parse("services.hujson", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []Definition{{
		Name: "db", Port: 5432, Protocol: UDP,
		Checks: []CheckDef{
			{ID: "db-ping", Kind: KindExec, Args: []string{"/usr/bin/pg_isready", "-q"}, Interval: 30 * time.Second, Timeout: 10 * time.Second, SuccessBeforePassing: 2, FailuresBeforeCritical: 3},
			{ID: "db:2", Kind: KindTTL, TTL: 15 * time.Second, SuccessBeforePassing: 1, FailuresBeforeCritical: 1},
			{ID: "db:3", Kind: KindHTTP, Target: "https://db.local/health", Interval: time.Minute, Timeout: 10 * time.Second, SuccessBeforePassing: 1, FailuresBeforeCritical: 1},
		},
	}, {Name: "bare", Port: 1, Protocol: TCP}}
	if !reflect.DeepEqual(defs, want) {
		t.Errorf("got\n%+v\nwant\n%+v", defs, want)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, src := range []string{`{}`, `{"services": []}`, "// nothing yet\n{\n}\n"} {
		defs, err := Parse("services.hujson", []byte(src))
		if err != nil || len(defs) != 0 {
			t.Errorf("Parse(%q) = %v, %v; want no services", src, defs, err)
		}
	}
}

func TestParseRegistration(t *testing.T) {
	one := `{"name": "api", "port": 9000, "checks": [{"ttl": "10s"}]}`
	defs, err := ParseRegistration("api.hujson", []byte(one))
	if err != nil || len(defs) != 1 || defs[0].Name != "api" || defs[0].Checks[0].ID != "api:1" {
		t.Errorf("single service: %+v, %v", defs, err)
	}
	defs, err = ParseRegistration("services.hujson", []byte(exampleFile))
	if err != nil || len(defs) != 1 || defs[0].Name != "web" {
		t.Errorf("services file: %+v, %v", defs, err)
	}
	for _, tc := range []struct{ src, want string }{
		{`{"name": "api", "prt": 1}`, `services.hujson:1:1: service "api" has no "port"` + "\n" +
			`services.hujson:1:17: unknown key "prt" in service "api" (did you mean "port"?)`},
		{`[1]`, `services.hujson:1:1: a registration must be a service object or an object with "services", not a list`},
		{`{"port": 1}`, `services.hujson:1:1: the service has no "name"`},
	} {
		if got := strings.Join(parseErrors(t, ParseRegistration, tc.src), "\n"); got != tc.want {
			t.Errorf("ParseRegistration(%s):\n%s\nwant\n%s", tc.src, got, tc.want)
		}
	}
}

// svc wraps service objects into a services file whose first service
// starts on line 2, column 3.
func svc(objs ...string) string {
	return "{\"services\": [\n  " + strings.Join(objs, ",\n  ") + "\n]}"
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"syntax", "{\"services\": [\n  {\"name\": \"web\" \"port\": 1}]}", []string{
			`services.hujson:2:18: syntax error: invalid character '"' after object value (expecting ',' or '}')`}},
		{"not an object", `[]`, []string{
			`services.hujson:1:1: the services file must be an object, not a list`}},
		{"services not a list", `{"services": {}}`, []string{
			`services.hujson:1:14: "services" must be a list, not an object`}},
		{"unknown top key", `{"service": []}`, []string{
			`services.hujson:1:2: unknown key "service" in the services file (did you mean "services"?)`}},
		{"unknown key, suggestion", "{\n  \"services\": [\n    {\"name\": \"web\", \"port\": 8080,\n           \"prot\": \"udp\"},\n  ],\n}\n", []string{
			`services.hujson:4:12: unknown key "prot" in service "web" (did you mean "protocol"?)`}},
		{"unknown key, no suggestion", svc(`{"name": "web", "port": 80, "weight": 3}`), []string{
			`services.hujson:2:31: unknown key "weight" in service "web" (want name, port, protocol, tags, checks)`}},
		{"duplicate key", svc(`{"name": "web", "port": 80, "port": 81}`), []string{
			`services.hujson:2:31: duplicate key "port" in service "web"`}},
		{"missing name and port", svc(`{"tags": []}`), []string{
			`services.hujson:2:3: service #1 has no "name"`,
			`services.hujson:2:3: service #1 has no "port"`}},
		{"wrong types", svc(`{"name": 7, "port": "80", "tags": "v1", "checks": {}}`), []string{
			`services.hujson:2:12: "name" of a service must be a string, not a number`,
			`services.hujson:2:23: "port" of service #1 must be a number, not a string`,
			`services.hujson:2:37: "tags" of service #1 must be a list, not a string`,
			`services.hujson:2:53: "checks" of service #1 must be a list, not an object`}},
		{"service not an object", svc(`"web"`), []string{
			`services.hujson:2:3: service #1 must be an object, not a string`}},
		{"bad name", svc(`{"name": "Web_1", "port": 80}`), []string{
			`services.hujson:2:12: bad service name "Web_1": want a DNS label (lowercase letters, digits and '-')`}},
		{"duplicate service", svc(`{"name": "web", "port": 80}`, `{"name": "web", "port": 81}`), []string{
			`services.hujson:3:12: duplicate service "web" (first at 2:12)`}},
		{"bad ports", svc(`{"name": "a", "port": 0}`, `{"name": "b", "port": 65536}`, `{"name": "c", "port": 80.5}`, `{"name": "d", "port": -1}`), []string{
			`services.hujson:2:25: bad port 0 in service "a": want 1-65535`,
			`services.hujson:3:25: bad port 65536 in service "b": want 1-65535`,
			`services.hujson:4:25: bad port 80.5 in service "c": want 1-65535`,
			`services.hujson:5:25: bad port -1 in service "d": want 1-65535`}},
		{"bad protocol", svc(`{"name": "web", "port": 80, "protocol": "tpc"}`), []string{
			`services.hujson:2:43: bad protocol "tpc" in service "web": want "tcp" or "udp" (did you mean "tcp"?)`}},
		{"bad tags", svc(`{"name": "web", "port": 80, "tags": ["v2", "V2", "v2", 3]}`), []string{
			`services.hujson:2:46: bad tag "V2" in service "web": want a DNS label (lowercase letters, digits and '-')`,
			`services.hujson:2:52: duplicate tag "v2" in service "web"`,
			`services.hujson:2:58: a tag must be a string, not a number`}},
		{"check without kind", svc(`{"name": "web", "port": 80, "checks": [{"interval": "1s"}]}`), []string{
			`services.hujson:2:42: check "web:1" has no "http", "tcp", "exec" or "ttl"`}},
		{"check with two kinds", svc(`{"name": "web", "port": 80, "checks": [{"tcp": "h:1", "http": "http://h/", "interval": "1s"}]}`), []string{
			`services.hujson:2:57: check "web:1" has both "tcp" and "http"; want exactly one`}},
		{"unknown check key", svc(`{"name": "web", "port": 80, "checks": [{"tcp": "h:1", "intreval": "1s"}]}`), []string{
			`services.hujson:2:42: check "web:1" has no "interval"`,
			`services.hujson:2:57: unknown key "intreval" in check "web:1" (did you mean "interval"?)`}},
		{"bad http URLs", svc(`{"name": "web", "port": 80, "checks": [
    {"http": "ftp://h/", "interval": "1s"},
    {"http": "http://", "interval": "1s"},
    {"http": "127.0.0.1:80/health", "interval": "1s"}]}`), []string{
			`services.hujson:3:14: bad http URL "ftp://h/" in check "web:1": want http://HOST[:PORT]/PATH or https://…`,
			`services.hujson:4:14: bad http URL "http://" in check "web:2": want http://HOST[:PORT]/PATH or https://…`,
			`services.hujson:5:14: bad http URL "127.0.0.1:80/health" in check "web:3": want http://HOST[:PORT]/PATH or https://…`}},
		{"bad tcp addresses", svc(`{"name": "web", "port": 80, "checks": [
    {"tcp": "localhost", "interval": "1s"},
    {"tcp": ":80", "interval": "1s"},
    {"tcp": "h:0", "interval": "1s"},
    {"tcp": "h:http", "interval": "1s"}]}`), []string{
			`services.hujson:3:13: bad tcp address "localhost" in check "web:1": want HOST:PORT with a port from 1 to 65535`,
			`services.hujson:4:13: bad tcp address ":80" in check "web:2": want HOST:PORT with a port from 1 to 65535`,
			`services.hujson:5:13: bad tcp address "h:0" in check "web:3": want HOST:PORT with a port from 1 to 65535`,
			`services.hujson:6:13: bad tcp address "h:http" in check "web:4": want HOST:PORT with a port from 1 to 65535`}},
		{"bad exec", svc(`{"name": "web", "port": 80, "checks": [
    {"exec": [], "interval": "1s"},
    {"exec": ["", "x"], "interval": "1s"},
    {"exec": "/bin/check", "interval": "1s"},
    {"exec": ["/bin/check", 1], "interval": "1s"}]}`), []string{
			`services.hujson:3:14: "exec" of check "web:1" is empty: want ["PROGRAM", "ARG", …]`,
			`services.hujson:4:15: empty program name in check "web:2"`,
			`services.hujson:5:14: "exec" of check "web:3" must be a list, not a string`,
			`services.hujson:6:29: an exec argument must be a string, not a number`}},
		{"bad durations", svc(`{"name": "web", "port": 80, "checks": [
    {"tcp": "h:1", "interval": "2x"},
    {"tcp": "h:1", "interval": "500ms"},
    {"tcp": "h:1", "interval": "1s", "timeout": "0s"},
    {"tcp": "h:1", "interval": 5},
    {"ttl": "10"},
    {"ttl": "100ms"},
    {"tcp": "h:1", "interval": "0s", "timeout": "-1s"}]}`), []string{
			`services.hujson:3:32: bad interval "2x" in check "web:1": want a duration like "10s" or "1m30s"`,
			`services.hujson:4:32: interval of check "web:2" is 500ms; the minimum is 1s`,
			`services.hujson:5:49: timeout of check "web:3" is 0s; it must be positive`,
			`services.hujson:6:32: "interval" of check "web:4" must be a string, not a number`,
			`services.hujson:7:13: bad ttl "10" in check "web:5": want a duration like "10s" or "1m30s"`,
			`services.hujson:8:13: ttl of check "web:6" is 100ms; the minimum is 1s`,
			`services.hujson:9:32: interval of check "web:7" is 0s; the minimum is 1s`,
			`services.hujson:9:49: timeout of check "web:7" is -1s; it must be positive`}},
		{"bad thresholds", svc(`{"name": "web", "port": 80, "checks": [
    {"tcp": "h:1", "interval": "1s", "success_before_passing": 0, "failures_before_critical": 101},
    {"tcp": "h:1", "interval": "1s", "success_before_passing": "2"}]}`), []string{
			`services.hujson:3:64: bad success_before_passing 0 in check "web:1": want a whole number from 1 to 100`,
			`services.hujson:3:95: bad failures_before_critical 101 in check "web:1": want a whole number from 1 to 100`,
			`services.hujson:4:64: "success_before_passing" of check "web:2" must be a number, not a string`}},
		{"ttl with probe settings", svc(`{"name": "web", "port": 80, "checks": [
    {"ttl": "10s", "interval": "1s", "failures_before_critical": 2}]}`), []string{
			`services.hujson:3:20: check "web:1" is a ttl check; it takes no "interval"`,
			`services.hujson:3:38: check "web:1" is a ttl check; it takes no "failures_before_critical"`}},
		{"check IDs", svc(`{"name": "web", "port": 80, "checks": [
    {"id": "web:2", "ttl": "10s"},
    {"ttl": "10s"},
    {"id": "has space", "ttl": "10s"}]}`,
			`{"name": "api", "port": 81, "checks": [{"id": "web:2", "ttl": "10s"}]}`), []string{
			`services.hujson:4:5: duplicate check ID "web:2" (first at 3:12)`,
			`services.hujson:5:12: bad check ID "has space": want letters, digits and '.', ':', '_', '-' (at most 128)`,
			`services.hujson:6:49: duplicate check ID "web:2" (first at 3:12)`}},
		{"check of a nameless service", svc(`{"port": 80, "checks": [{"tcp": "h:1"}]}`), []string{
			`services.hujson:2:3: service #1 has no "name"`,
			`services.hujson:2:27: check #1 of service #1 has no "interval"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := parseErrors(t, Parse, tc.src)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("source:\n%s\ngot errors:\n%s\nwant:\n%s", tc.src, lines(got), lines(tc.want))
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	text := []byte("{" + strings.Repeat(" ", MaxFileSize) + "}")
	got := parseErrors(t, Parse, string(text))
	want := fmt.Sprintf("services.hujson: the file is %d bytes; the limit is %d", len(text), MaxFileSize)
	if len(got) != 1 || got[0] != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestCheckDefEqual guards Equal against fields added later: changing any
// one field must make two checks unequal.
func TestCheckDefEqual(t *testing.T) {
	base := CheckDef{ID: "a", Kind: KindExec, Target: "t", Args: []string{"x"}, TTL: 1, Interval: 1, Timeout: 1, SuccessBeforePassing: 1, FailuresBeforeCritical: 1}
	if !base.Equal(base) {
		t.Fatal("a check is not equal to itself")
	}
	rt := reflect.TypeOf(base)
	for i := range rt.NumField() {
		c := base
		c.Args = []string{"x"}
		f := reflect.ValueOf(&c).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("changed")
		case reflect.Int, reflect.Int64:
			f.SetInt(2)
		case reflect.Slice:
			f.Set(reflect.ValueOf([]string{"y"}))
		default:
			t.Fatalf("field %s: kind %s not handled", rt.Field(i).Name, f.Kind())
		}
		if base.Equal(c) {
			t.Errorf("Equal ignores field %s", rt.Field(i).Name)
		}
	}
}
