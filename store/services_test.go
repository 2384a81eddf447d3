package store

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/wiremesh/wiremesh/wire"
)

// Changed service definitions are versioned and audited; health alone is
// not versioned, but admins see it; netmaps never carry it.
func testServices(t *testing.T, e *engine) {
	ctx := context.Background()
	s, _ := e.open(t)
	a := mustEnroll(t, s, newJoinKey(t, s, wire.CreateJoinKeyRequest{}), EnrollParams{Name: "a"})
	allowed := func(string) string { return "" }
	before := mustVersion(t, s)
	ver, err := s.SetServices(ctx, a.node, []wire.Service{{Name: "web", Port: 80, Proto: wire.ServiceTCP, Health: "passing"}}, allowed)
	if err != nil || ver <= before {
		t.Fatalf("SetServices(new service) = %d, %v; want a version above %d", ver, err, before)
	}
	if diff := cmp.Diff([]wire.Service{{Name: "web", Port: 80, Health: "passing"}}, mustNodes(t, s)[0].Services); diff != "" {
		t.Errorf("admin view (-want +got):\n%s", diff)
	}
	st, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]wire.Service{{Name: "web", Port: 80}}, st.Nodes[0].Services); diff != "" {
		t.Errorf("state (netmaps) (-want +got):\n%s", diff)
	}

	before = mustVersion(t, s)
	if ver, err := s.SetServices(ctx, a.node, []wire.Service{{Name: "web", Port: 80, Health: "critical"}}, allowed); ver != 0 || err != nil {
		t.Errorf("SetServices(health only) = %d, %v; want 0, nil", ver, err)
	}
	if v := mustVersion(t, s); v != before {
		t.Errorf("a health report moved the version from %d to %d", before, v)
	}
	if got := mustNodes(t, s)[0].Services[0].Health; got != "critical" {
		t.Errorf("health after the report %q, want critical", got)
	}

	refused := func(sv string) string {
		if sv == "db" {
			return "not an owner"
		}
		return ""
	}
	if _, err := s.SetServices(ctx, a.node, []wire.Service{{Name: "db", Port: 5432}}, refused); err != nil {
		t.Fatal(err)
	}
	entries, err := s.Audit(ctx, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.Action+" "+e.Target] = e.Detail
	}
	if diff := cmp.Diff(map[string]string{"service.refused db": "tcp/5432: not an owner", "service.remove web": "tcp/80"}, got); diff != "" {
		t.Errorf("audit of the change (-want +got):\n%s", diff)
	}
	if _, err := s.SetServices(ctx, a.node, []wire.Service{{Name: "Web", Port: 1}}, allowed); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad service name: %v, want ErrInvalid", err)
	}
}

// FuzzServicesReport: any report body either fails to decode, is refused
// with ErrInvalid, or yields definitions that validate again unchanged
// (the canonical form is a fixed point) and fit the limits.
func FuzzServicesReport(f *testing.F) {
	f.Add(`{"public_key": "k", "services": [{"name": "web", "port": 8080, "tags": ["v2"], "health": "passing", "checks": [{"id": "web:1", "status": "passing", "output": "ok"}]}]}`)
	f.Add(`{"services": [{"name": "db", "port": 5432, "proto": "udp"}, {"name": "db", "port": 1}]}`)
	f.Add(`{"services": [{"name": "-x", "port": 0, "proto": "sctp", "tags": ["A"]}]}`)
	f.Fuzz(func(t *testing.T, body string) {
		var req wire.ServicesReport
		if json.Unmarshal([]byte(body), &req) != nil {
			return
		}
		defs, health, err := validServices(req.Services)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if len(defs) != len(health) || len(defs) > maxServices {
			t.Fatalf("%d definitions, %d health entries", len(defs), len(health))
		}
		again, _, err := validServices(defs)
		if err != nil || !cmp.Equal(again, defs) {
			t.Fatalf("canonical definitions do not validate unchanged: %v\n%v\n%v", err, defs, again)
		}
		for _, h := range health {
			for _, c := range h.Checks {
				if len(c.Output) > maxCheckOutput {
					t.Fatalf("check output of %d bytes kept", len(c.Output))
				}
			}
		}
	})
}
