package wire

import (
	"fmt"
	"slices"
)

// Apply returns nm with d applied, sharing nothing that d changes with
// nm. A peer of d that nm does not have is an error: the stream is out of
// step, and the agent must open a new one.
func (d *NetmapDelta) Apply(nm *Netmap) (*Netmap, error) {
	out := *nm
	out.Version = d.Version
	if d.Self != nil {
		if d.Self.ID != nm.Self.ID {
			return nil, fmt.Errorf("netmap delta %d: self is node %d, not %d", d.Version, d.Self.ID, nm.Self.ID)
		}
		out.Self = *d.Self
	}
	if len(d.Peers) > 0 {
		at := make(map[int64]int, len(nm.Peers))
		for i, p := range nm.Peers {
			at[p.ID] = i
		}
		out.Peers = slices.Clone(nm.Peers)
		for _, p := range d.Peers {
			i, ok := at[p.ID]
			if !ok {
				return nil, fmt.Errorf("netmap delta %d: peer %d (%s) is not in netmap %d", d.Version, p.ID, p.Name, nm.Version)
			}
			out.Peers[i] = p
		}
	}
	return &out, nil
}
