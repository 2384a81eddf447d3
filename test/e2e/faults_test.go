package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestLinkCut: a host cut off from the network for 30 s is marked failed
// by its peers within 5 s and leaves their DNS answers; once healed it
// rejoins gossip, returns to the answers and carries traffic again, with
// nobody doing anything.
func TestLinkCut(t *testing.T) {
	m := newBareMesh(t)
	m.setPolicy(servicePolicy)
	f := servicesFile(t, `{"services": [{"name": "web", "port": 8080}]}`)
	var webs []*agent
	for i := range 3 {
		webs = append(webs, m.addAgent(fmt.Sprintf("h%d", i+1), "--config", f))
	}
	const name = "web.service.mesh.internal."
	answers := func(a *agent) []string {
		r, err := a.tryDig(name, "A")
		if err != nil {
			return nil
		}
		return addrs(r.answer)
	}
	all := sorted(webs[0].addr(t, false).String(), webs[1].addr(t, false).String(), webs[2].addr(t, false).String())
	waitFor(t, 20*time.Second, "three instances everywhere", func() bool {
		return !slices.ContainsFunc(webs, func(a *agent) bool { return !slices.Equal(answers(a), all) })
	})
	cut, cutAddr := webs[1], webs[1].addr(t, false).String()
	others := []*agent{webs[0], webs[2]}
	gone := func() bool {
		return !slices.ContainsFunc(others, func(a *agent) bool { return slices.Contains(answers(a), cutAddr) })
	}

	if err := cut.host.SetLinkUp(false); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, 5*time.Second, "the cut-off host gone from its peers' answers", gone)
	t.Logf("link down → gone from the others' answers after %s", took.Round(time.Millisecond))
	for _, o := range others {
		for _, p := range o.status(t).Peers {
			if p.Name == cut.name && p.Gossip != "failed" {
				t.Errorf("%s sees %s as %q in gossip, want failed", o.name, cut.name, p.Gossip)
			}
		}
	}
	time.Sleep(30*time.Second - took) // the outage lasts 30 s
	if !gone() {
		t.Fatal("the cut-off host came back into answers while its link was down")
	}

	if err := cut.host.SetLinkUp(true); err != nil {
		t.Fatal(err)
	}
	took = waitFor(t, 20*time.Second, "the healed host back in every answer", func() bool {
		return !slices.ContainsFunc(webs, func(a *agent) bool { return !slices.Equal(answers(a), all) })
	})
	t.Logf("link up → back in every agent's answers after %s", took.Round(time.Millisecond))
	webs[0].ping(t, cut.addr(t, false), 3, "0.2")
}
