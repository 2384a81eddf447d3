package ui

import (
	"math"
	"net/http"
	"sort"

	"github.com/wiremesh/wiremesh/wire"
)

// mapMaxNodes is the most nodes the mesh map draws; past it the page says
// so and lists the counts only.
const mapMaxNodes = 200

// mapNode is a node placed on the mesh map.
type mapNode struct {
	Name   string
	NAT    string // "" when the node has not reported
	Online bool
	X, Y   float64
}

// mapEdge is the path between two nodes, as they reported it: direct if
// both (or the one that reported) go direct, relay if either relays.
type mapEdge struct {
	A, B           string
	X1, Y1, X2, Y2 float64
	Kind           string // wire.PathKindDirect or wire.PathKindRelay
	Label          string // the relay's name, or the direct address
}

// meshMapData is the mesh map page's data.
type meshMapData struct {
	Nodes           []mapNode
	Edges           []mapEdge
	Size            float64 // the SVG's width and height
	Direct, Relayed int
	TooMany         int // the node count, when above mapMaxNodes
}

// meshMap places nodes on a circle, ordered by name, and joins the pairs
// that reported a path to each other.
func meshMap(nodes []wire.Node) meshMapData {
	d := meshMapData{Size: 640}
	if len(nodes) > mapMaxNodes {
		d.TooMany = len(nodes)
		return d
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	at := map[string]int{}
	r := d.Size/2 - 90
	for i, n := range nodes {
		a := 2*math.Pi*float64(i)/float64(max(len(nodes), 1)) - math.Pi/2
		mn := mapNode{Name: n.Name, Online: n.Online, X: d.Size/2 + r*math.Cos(a), Y: d.Size/2 + r*math.Sin(a)}
		if n.Connectivity != nil {
			mn.NAT = n.Connectivity.NAT
		}
		at[n.Name] = len(d.Nodes)
		d.Nodes = append(d.Nodes, mn)
	}
	type pair struct{ a, b string }
	edges := map[pair]*mapEdge{}
	var order []pair
	for _, n := range nodes {
		if n.Connectivity == nil {
			continue
		}
		for _, p := range n.Connectivity.Paths {
			j, ok := at[p.Peer]
			if !ok || p.Kind == wire.PathKindNone || p.Peer == n.Name {
				continue
			}
			k := pair{n.Name, p.Peer}
			if k.b < k.a {
				k.a, k.b = k.b, k.a
			}
			label := p.Addr
			if p.Kind == wire.PathKindRelay {
				label = p.Relay
			}
			e, seen := edges[k]
			if !seen {
				i := at[n.Name]
				e = &mapEdge{A: k.a, B: k.b, X1: d.Nodes[i].X, Y1: d.Nodes[i].Y, X2: d.Nodes[j].X, Y2: d.Nodes[j].Y, Kind: p.Kind, Label: label}
				edges[k] = e
				order = append(order, k)
			} else if p.Kind == wire.PathKindRelay && e.Kind != wire.PathKindRelay {
				e.Kind, e.Label = p.Kind, label // one side relays: the pair is relayed
			}
		}
	}
	for _, k := range order {
		e := edges[k]
		if e.Kind == wire.PathKindDirect {
			d.Direct++
		} else {
			d.Relayed++
		}
		d.Edges = append(d.Edges, *e)
	}
	return d
}

func (u *UI) handleMap(w http.ResponseWriter, r *http.Request, s *session) {
	var nodes []wire.Node
	if _, err := u.api.call(r.Context(), s.token, http.MethodGet, pagePath(wire.PathNodes, mapMaxNodes+1, ""), nil, &nodes); err != nil {
		u.apiFailed(w, r, s, err)
		return
	}
	u.render(w, r, s, http.StatusOK, "map", "Mesh map", meshMap(nodes))
}
