package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wiremesh/wiremesh/internal/pgtest"
	"github.com/wiremesh/wiremesh/wire"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// scaleAgents is the mesh size of BenchmarkScale; WIREMESH_SCALE
// overrides it.
const scaleAgents = 10000

// BenchmarkScale measures what a change costs in a mesh of 10,000 agents
// in teams (the storm's policy: ~200 peers each), on three coordinators
// on one PostgreSQL and, side by side in the same run, on one coordinator
// on SQLite. After the connect storm (BenchmarkConnectStorm's), it times
// and counts, at the agents:
//   - a policy change that touches every node's rules (the platform team
//     reaches everyone on a new port): from the PUT to each agent's netmap
//     carrying the new policy (p50, p99, max; target p99 < 2 s), the
//     bytes each agent received for it, and how many got a whole netmap
//     (the target: none, the rules alone);
//   - a policy change between two teams: how many agents outside them
//     received anything (target: none);
//   - a join: how many agents received anything, and at most how many
//     bytes (target: only the new node's peers, < 2 KiB each);
//   - the new node's endpoints: how many agents received anything
//     (target: only its peers).
//
// "Received nothing" is read 2 s after the last agent that should have
// received the change did.
func BenchmarkScale(b *testing.B) {
	n := scaleAgents
	if env := os.Getenv("WIREMESH_SCALE"); env != "" {
		v, err := strconv.Atoi(env)
		if err != nil || v < 3*stormTeam {
			b.Fatalf("WIREMESH_SCALE=%q: want a size of at least %d", env, 3*stormTeam)
		}
		n = v
	}
	raiseFileLimit(b, uint64(n+512))
	bin := build(b, b.TempDir(), "wiremesh", "github.com/wiremesh/wiremesh/cmd/wiremesh")
	var rows [][]string
	for _, engine := range []string{"postgres", "sqlite"} {
		db, coordinators := "", 1
		if engine == "postgres" {
			db, coordinators = pgtest.Start(b).Database(b), 3
		}
		m := runStorm(b, bin, n, db, coordinators)
		label := fmt.Sprintf("%s, %d coordinator(s)", engine, coordinators)
		rows = append(rows, []string{label + ": connect storm of " + strconv.Itoa(n) + ": time / coordinator CPU",
			fmt.Sprintf("%.1f s / %.1f s", m.result.wall.Seconds(), m.result.cpu), "", "–", "–"})
		rows = append(rows, m.scaleChanges(b, label)...)
		m.close()
	}
	fmt.Println()
	fmt.Printf("Changes in a mesh of %d agents, teams of %d (%s, load %s)\n", n, stormTeam, time.Now().Format(time.DateOnly), loadAvg())
	figureTable(rows)
}

// close ends the mesh's coordinators before the next one starts (its
// agents' streams end with them).
func (m *stormMesh) close() {
	for _, c := range m.coords {
		c.stop()
	}
}

// scaleChanges makes the four changes and returns their rows.
func (m *stormMesh) scaleChanges(b *testing.B, label string) [][]string {
	var rows [][]string
	n := len(m.agents)
	lc := m.coords[0]
	base := stormPolicy(n)
	setPolicy := func(text string) (uint64, time.Time) {
		for _, a := range m.agents {
			a.mark()
		}
		start := time.Now()
		var p wire.Policy
		if err := callJSON(context.Background(), lc.admin, http.MethodPut, lc.url+wire.PathPolicy, lc.token, wire.SetPolicyRequest{Text: text}, &p); err != nil {
			b.Fatal(err)
		}
		return p.Version, start
	}
	policyAt := func(v uint64) func(*stormAgent) bool {
		return func(a *stormAgent) bool { nm := a.netmap(); return nm != nil && nm.PolicyVersion >= v }
	}

	// 1. Everyone's rules: the platform reaches every node on 9100.
	everyone := strings.Replace(base, `{"acls": [`, `{"acls": [{"action": "accept", "src": ["tag:t000"], "dst": ["*:9100"]}, `, 1)
	v, start := setPolicy(everyone)
	m.waitAll(b, "the policy change at every agent", m.errs, time.Minute, policyAt(v))
	var lat []float64
	var bytes []float64
	whole := 0
	for _, a := range m.agents {
		c := a.mark()
		lat = append(lat, c.at.Sub(start).Seconds())
		bytes = append(bytes, float64(c.bytes))
		whole += c.whole
	}
	slices.Sort(lat)
	slices.Sort(bytes)
	res := "FAIL"
	if quantile(lat, 0.99) < 2 {
		res = "pass"
	}
	rows = append(rows, []string{label + ": policy change for every node → applied by all: p50 / p99 / max",
		fmt.Sprintf("%.2f / %.2f / %.2f s", quantile(lat, 0.5), quantile(lat, 0.99), lat[len(lat)-1]), "", "p99 < 2 s", res})
	rows = append(rows, []string{label + ": bytes each agent received for it: median / max; whole netmaps",
		fmt.Sprintf("%.0f / %.0f B; %d", quantile(bytes, 0.5), bytes[len(bytes)-1], whole), "", "rules only, no peer list", map[bool]string{true: "pass", false: "FAIL"}[whole == 0]})

	// 2. Two teams: t001 may reach t002's database.
	two := strings.Replace(everyone, `{"acls": [`, `{"acls": [{"action": "accept", "src": ["tag:t001"], "dst": ["tag:t002:5432"]}, `, 1)
	inTwo := func(a *stormAgent) bool { return a.team == 1 || a.team == 2 }
	setPolicy(two) // t002's rules change, and both teams get each other as peers
	m.waitAll(b, "the two-team change at its teams", m.errs, time.Minute, func(a *stormAgent) bool { return !inTwo(a) || a.received() })
	time.Sleep(2 * time.Second)
	others := 0
	for _, a := range m.agents {
		if c := a.mark(); c.msgs > 0 && !inTwo(a) {
			others++
		}
	}
	rows = append(rows, []string{label + ": policy change between two teams: agents outside them that received anything",
		strconv.Itoa(others), "", "0", map[bool]string{true: "pass", false: "FAIL"}[others == 0]})

	// 3. A join into team 5: only its peers (team 5 and the platform)
	// hear of it.
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		b.Fatal(err)
	}
	var jk wire.CreateJoinKeyResponse
	if err := callJSON(context.Background(), lc.admin, http.MethodPost, lc.url+wire.PathJoinKeys, lc.token, wire.CreateJoinKeyRequest{Tags: []string{"tag:t005"}}, &jk); err != nil {
		b.Fatal(err)
	}
	peerOfNew := func(a *stormAgent) bool { return a.team == 5 || a.team == 0 }
	var er wire.EnrollResponse
	if err := callJSON(context.Background(), lc.admin, http.MethodPost, lc.url+wire.PathEnroll, jk.JoinKey, wire.EnrollRequest{ProtocolVersion: wire.ProtocolVersion, PublicKey: key.PublicKey().String(), Name: "newcomer"}, &er); err != nil {
		b.Fatal(err)
	}
	hasNew := func(a *stormAgent) bool {
		nm := a.netmap()
		return nm != nil && slices.ContainsFunc(nm.Peers, func(p wire.Node) bool { return p.ID == er.Node.ID })
	}
	m.waitAll(b, "the join at the new node's peers", m.errs, time.Minute, func(a *stormAgent) bool { return !peerOfNew(a) || hasNew(a) })
	time.Sleep(2 * time.Second)
	got, maxBytes, strangers := 0, 0, 0
	for _, a := range m.agents {
		c := a.mark()
		if c.msgs > 0 {
			got++
			maxBytes = max(maxBytes, c.bytes)
			if !peerOfNew(a) {
				strangers++
			}
		}
	}
	rows = append(rows, []string{label + ": a join: agents that received anything (of them not its peers); max bytes each",
		fmt.Sprintf("%d (%d); %d B", got, strangers, maxBytes), "", "its peers only, < 2 KiB", map[bool]string{true: "pass", false: "FAIL"}[strangers == 0 && maxBytes < 2048]})

	// 4. The newcomer connects from an endpoint: only its peers hear.
	na := &stormAgent{team: 5}
	sa, err := newSimAgent(n, lc.pins)
	if err != nil {
		b.Fatal(err)
	}
	sa.key, sa.pub, sa.name, sa.cred, sa.ckey = key, key.PublicKey().String(), "newcomer", er.Credential, er.CoordinatorKey
	na.simAgent = sa
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Go(func() { na.stormStream(ctx, lc.url) })
	located := func(a *stormAgent) bool {
		nm := a.netmap()
		return nm != nil && slices.ContainsFunc(nm.Peers, func(p wire.Node) bool { return p.ID == er.Node.ID && len(p.Endpoints) > 0 })
	}
	m.waitAll(b, "the newcomer's endpoints at its peers", m.errs, time.Minute, func(a *stormAgent) bool { return !peerOfNew(a) || located(a) })
	time.Sleep(2 * time.Second)
	got, strangers = 0, 0
	for _, a := range m.agents {
		if c := a.mark(); c.msgs > 0 {
			got++
			if !peerOfNew(a) {
				strangers++
			}
		}
	}
	rows = append(rows, []string{label + ": an endpoint change: agents that received anything (of them not its peers)",
		fmt.Sprintf("%d (%d)", got, strangers), "", "its peers only", map[bool]string{true: "pass", false: "FAIL"}[strangers == 0]})
	return rows
}
