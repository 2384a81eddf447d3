package wire

import (
	"cmp"
	"fmt"
	"slices"
)

// Apply returns nm with d applied, sharing nothing that d changes with
// nm; its peers stay ordered by ID, as the coordinator orders them. A
// removal of a peer that nm does not have is an error, as is a Self of
// another node: the stream is out of step, and the agent must open a new
// one.
func (d *NetmapDelta) Apply(nm *Netmap) (*Netmap, error) {
	out := *nm
	out.Version = d.Version
	if d.Self != nil {
		if d.Self.ID != nm.Self.ID {
			return nil, fmt.Errorf("netmap delta %d: self is node %d, not %d", d.Version, d.Self.ID, nm.Self.ID)
		}
		out.Self = *d.Self
	}
	if d.Policy != nil {
		out.PolicyVersion, out.Rules = d.Policy.Version, d.Policy.Rules
	}
	if len(d.Peers) == 0 && len(d.Removed) == 0 {
		return &out, nil
	}
	at := make(map[int64]int, len(nm.Peers))
	for i, p := range nm.Peers {
		at[p.ID] = i
	}
	out.Peers = slices.Clone(nm.Peers)
	gone := make(map[int64]bool, len(d.Removed))
	for _, id := range d.Removed {
		if _, ok := at[id]; !ok {
			return nil, fmt.Errorf("netmap delta %d: removed peer %d is not in netmap %d", d.Version, id, nm.Version)
		}
		gone[id] = true
	}
	added := false
	for _, p := range d.Peers {
		if p.ID == out.Self.ID {
			return nil, fmt.Errorf("netmap delta %d: peer %d is the node itself", d.Version, p.ID)
		}
		if i, ok := at[p.ID]; ok {
			out.Peers[i] = p
		} else {
			at[p.ID] = len(out.Peers)
			out.Peers = append(out.Peers, p)
			added = true
		}
	}
	if len(gone) > 0 {
		out.Peers = slices.DeleteFunc(out.Peers, func(p Node) bool { return gone[p.ID] })
	}
	if added {
		slices.SortFunc(out.Peers, func(a, b Node) int { return cmp.Compare(a.ID, b.ID) })
	}
	return &out, nil
}
