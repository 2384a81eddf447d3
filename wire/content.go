package wire

import (
	"encoding/json"
	"fmt"
)

// ServicesContent is the encoding of a services report's Services that
// its ContentProof covers: their JSON as encoding/json writes it, after
// one round trip through it. The round trip makes the agent's bytes those
// the coordinator gets from re-encoding what it decoded (it replaces
// invalid UTF-8, for one); a field the coordinator does not know is lost
// in its decoding, so a report with one fails the proof.
func ServicesContent(services []Service) ([]byte, error) {
	b, err := json.Marshal(services)
	if err != nil {
		return nil, fmt.Errorf("encode services: %w", err)
	}
	var back []Service
	if err := json.Unmarshal(b, &back); err != nil {
		return nil, fmt.Errorf("decode services: %w", err)
	}
	return json.Marshal(back)
}
