package coordinator

import (
	"fmt"
	"net/http"

	"github.com/wiremesh/wiremesh/wire"
)

// checkProtocol refuses (400) an agent whose protocol version is outside
// wire.MinProtocolVersion..wire.ProtocolVersion, with a message that
// names the versions to run, and returns false; true if it is inside.
func (c *Coordinator) checkProtocol(w http.ResponseWriter, v int) bool {
	d := wire.ProtocolRefusal{Agent: v, Min: wire.MinProtocolVersion, Max: wire.ProtocolVersion, CoordinatorVersion: c.cfg.Version}
	speaks := fmt.Sprintf("this coordinator speaks protocol %d and accepts agents of protocol %d to %d", d.Max, d.Min, d.Max)
	if c.cfg.Version != "" {
		speaks = fmt.Sprintf("this coordinator (wiremesh %s) speaks protocol %d and accepts agents of protocol %d to %d", c.cfg.Version, d.Max, d.Min, d.Max)
	}
	switch {
	case v < wire.MinProtocolVersion:
		writeError(w, http.StatusBadRequest, wire.CodeProtocolTooOld,
			fmt.Sprintf("agent protocol %d is too old: %s; upgrade the agent%s", v, speaks, sameVersion(c.cfg.Version)), d)
		return false
	case v > wire.ProtocolVersion:
		writeError(w, http.StatusBadRequest, wire.CodeProtocolTooNew,
			fmt.Sprintf("agent protocol %d is too new: %s; upgrade the coordinator first, or run an older agent%s", v, speaks, sameVersion(c.cfg.Version)), d)
		return false
	}
	return true
}

// sameVersion suggests the coordinator's own version, if known.
func sameVersion(v string) string {
	if v == "" {
		return ""
	}
	return " (wiremesh " + v + " works)"
}
