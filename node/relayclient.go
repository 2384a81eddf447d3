package node

import (
	"fmt"
	"log/slog"

	"github.com/wiremesh/wiremesh/credential"
	"github.com/wiremesh/wiremesh/relay"
	"github.com/wiremesh/wiremesh/wire"
)

// dialRelayClient is the agent's dialRelay: a relay.Client that trusts
// the relay by the pins of its relay map entry.
func dialRelayClient(w wire.Relay, key [32]byte, onPacket func(src [32]byte, pkt []byte), log *slog.Logger) (relayConn, error) {
	pins, err := credential.ParsePins(w.Pins)
	if err != nil {
		return nil, fmt.Errorf("relay %s: pins: %w", w.Name, err)
	}
	return relay.NewClient(relay.ClientConfig{URL: w.URL, Pins: pins, RelayKey: w.Key, NodeKey: key, Logger: log, OnPacket: onPacket})
}
