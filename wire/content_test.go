package wire_test

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/wiremesh/wiremesh/wire"
)

// TestServicesContent: the content an agent computes from its services is
// the content the coordinator computes from what it decodes of the body,
// also for strings JSON cannot carry as they are.
func TestServicesContent(t *testing.T) {
	for _, svs := range [][]wire.Service{
		nil,
		{},
		{{Name: "api", Port: 443, Tags: []string{"v1"}, Health: "passing", Checks: []wire.CheckStatus{{ID: "http", Status: "passing", Output: "<ok> & done"}}}},
		{{Name: "db", Port: 5432, Checks: []wire.CheckStatus{{ID: "tcp", Status: "critical", Output: "bad \xff\xfe utf-8 \u2028"}}}},
	} {
		agent, err := wire.ServicesContent(svs)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(wire.ServicesReport{PublicKey: "k", Services: svs})
		var got wire.ServicesReport
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		coord, err := wire.ServicesContent(got.Services)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(agent, coord) {
			t.Errorf("services %+v: the agent's content %q, the coordinator's %q", svs, agent, coord)
		}
	}
}
